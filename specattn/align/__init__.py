"""Offline draft-to-verifier layer alignment (``experiment=align``, ``layer_map=auto``)."""

from .dp import monotonic_alignment
from .similarity import AlignSettings
from .similarity_metrics import METRICS, row_similarity

__all__ = ["monotonic_alignment", "METRICS", "row_similarity", "AlignSettings"]
