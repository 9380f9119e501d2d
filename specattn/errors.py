"""The one exception type users see: a one-line message naming the bad value and the fix."""


class SpecAttnError(Exception):
    """Bad input or an unusable environment; `run.py` prints it as one line and exits with code 2."""
