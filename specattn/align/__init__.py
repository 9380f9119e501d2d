"""Offline draft-to-verifier layer alignment (``experiment=align``, ``layer_map=auto``).

Names resolve on first use (PEP 562): the run's pre-run checks read ``similarity_metrics.METRICS`` without
importing the model code that ``similarity`` needs (transformers), which kept ``python run.py`` seconds slower to
start and to refuse bad input."""

import importlib

_WHERE = {"monotonic_alignment": ".dp", "AlignSettings": ".similarity", "METRICS": ".similarity_metrics",
          "row_similarity": ".similarity_metrics"}
__all__ = list(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name], __name__), name)
