"""Model loading: draft/verifier pairs from the hub, local folders, GGUF files or random init."""

from .pair import ModelPair, load_pair

__all__ = ["ModelPair", "load_pair"]
