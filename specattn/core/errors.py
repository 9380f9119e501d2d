"""The one exception type users see: a one-line message naming the bad value and the fix."""


class SpecAttnError(Exception):
    """Bad input or an unusable environment; `run.py` prints it as one line and exits with code 2."""


def specattn_cause(error: BaseException) -> SpecAttnError | None:
    """The :class:`SpecAttnError` behind ``error`` (itself, or one it was raised from: OmegaConf
    and Hydra wrap errors raised by resolvers and constructors), or None."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, SpecAttnError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None
