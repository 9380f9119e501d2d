"""specattn: speculative sparse attention research framework (SpecAttn, arXiv 2510.27641).

The public API, imported on first use (``import specattn`` itself loads nothing heavy)::

    from specattn import SpecAttn, Settings, load_pair, evaluate_sample, SpeculativeDecoder

Layers and where everything lives: docs/architecture.md.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Settings": "specattn.core.settings",
    "SpecAttnError": "specattn.core.errors",
    "load_pair": "specattn.models.pair",
    "ModelPair": "specattn.models.pair",
    "Method": "specattn.methods",
    "SpecAttn": "specattn.methods",
    "Dense": "specattn.methods",
    "Quest": "specattn.methods",
    "StreamingLLM": "specattn.methods",
    "OracleTopP": "specattn.methods",
    "DraftTopK": "specattn.methods",
    "DraftSnapKV": "specattn.methods",
    "RandomChunks": "specattn.methods",
    "Budget": "specattn.methods",
    "evaluate_sample": "specattn.eval.perplexity",
    "SpeculativeDecoder": "specattn.decode.engine",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'specattn' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
