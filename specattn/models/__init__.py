"""Model loading: draft/verifier pairs from the hub, local folders, GGUF files or random init.

``ModelPair`` and ``load_pair`` are imported on first use, so that the light modules of this package
(``staging``: run on the GPU machine at every call) start without importing torch or transformers.
"""

__all__ = ["ModelPair", "load_pair"]


def __getattr__(name: str):
    if name in __all__:
        from . import pair

        return getattr(pair, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
