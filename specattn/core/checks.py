"""The setting validators every config key and constructor uses: one line naming the key, the bad
value, what is allowed and an example (``run.py`` prints it and exits with code 2)."""

from __future__ import annotations

from collections.abc import Sequence

from hydra.utils import instantiate

from .errors import SpecAttnError, specattn_cause


class SettingError(SpecAttnError):
    """A bad setting: ``<key>=<value> <requirement> (e.g. <key>=<example>)``. ``key`` is relative to
    where the setting was checked; :meth:`under` re-raises it with the full config key."""

    def __init__(self, key: str, value, requirement: str, example: str):
        self.key, self.value, self.requirement, self.example = key, value, requirement, example
        super().__init__(f"{key}={value!r} {requirement} (e.g. {key}={example})")

    def under(self, prefix: str) -> "SettingError":
        """The same error for the key ``prefix + key`` (e.g. ``method.`` + ``token_budget``)."""
        return SettingError(prefix + self.key, self.value, self.requirement, self.example)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


#: the largest value an integer setting takes unless its check says otherwise: no count of tokens,
#: samples, layers or steps comes near it, and larger ones overflow the int32 indices of the kernels
MAX_INT = 2**31 - 1


def _at_most(value: int, key: str, example: str, maximum: int, why: str) -> int:
    if value > maximum:
        raise SettingError(key, value, f"exceeds {maximum}{f' ({why})' if why else ''}", example)
    return value


def positive_int(value, key: str, example: str, maximum: int = MAX_INT, why: str = "") -> int:
    """``value`` if it is an integer in ``[1, maximum]`` (``why``: the reason for the bound, for the message)."""
    if not _is_int(value) or value < 1:
        raise SettingError(key, value, "must be a positive integer", example)
    return _at_most(value, key, example, maximum, why)


def nonnegative_int(value, key: str, example: str, maximum: int = MAX_INT, why: str = "") -> int:
    """``value`` if it is an integer in ``[0, maximum]``."""
    if not _is_int(value) or value < 0:
        raise SettingError(key, value, "must be an integer >= 0", example)
    return _at_most(value, key, example, maximum, why)


def fraction(value, key: str, example: str, requirement: str = "must lie in (0, 1]") -> float:
    """``value`` as a float if it is a number in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) <= 1.0:
        raise SettingError(key, value, requirement, example)
    return float(value)


def fractions(values, key: str, example: str) -> list[float]:
    """``values`` as floats if it is a non-empty list of numbers in (0, 1]."""
    listed = list(values) if isinstance(values, Sequence) and not isinstance(values, str) else []
    if not listed or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < v <= 1.0 for v in listed):
        raise SettingError(key, values if not listed else listed, "must be a list of numbers in (0, 1]", example)
    return [float(v) for v in listed]


def check_p(p) -> float:
    """The nucleus mass ``p`` in (0, 1]."""
    return fraction(p, "p", "0.95", "is outside (0, 1]: the nucleus mass must be a number with 0 < p <= 1")


def flag(value, key: str) -> bool:
    """``value`` if it is true or false."""
    if not isinstance(value, bool):
        raise SettingError(key, value, "must be true or false", "true")
    return value


def built(spec, key: str, **kwargs):
    """``hydra.utils.instantiate(spec)`` for the config node at ``key`` (``""``: keys as the constructor
    names them); a :class:`SpecAttnError` a constructor raises surfaces as itself, one line (a
    :class:`SettingError` named by its full key)."""
    try:
        return instantiate(spec, **kwargs)
    except Exception as error:
        cause = specattn_cause(error)
        if isinstance(cause, SettingError):
            raise cause.under(f"{key}." if key else "") from None
        if cause is not None and cause is not error:
            raise cause from None
        raise
