"""Offline draft-to-verifier layer alignment (``experiment=align``, ``layer_map=auto``)."""

from .dp import monotonic_alignment
from .metrics import METRICS, row_similarity
from .similarity import AlignSettings

__all__ = ["monotonic_alignment", "METRICS", "row_similarity", "AlignSettings"]
