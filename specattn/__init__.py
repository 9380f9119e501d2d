"""specattn: speculative sparse attention research framework (SpecAttn, arXiv 2510.27641)."""

__version__ = "0.1.0"
