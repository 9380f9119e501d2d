"""Calling transformers models across versions: the cache keyword and a fresh dynamic cache."""

from __future__ import annotations

import inspect

from transformers import DynamicCache


def cache_kwargs(model, cache) -> dict:
    """``{cache_kwarg: cache}`` for this transformers version (``cache`` from 5.2x, else ``past_key_values``)."""
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    return {name: cache, "use_cache": True}


def new_cache(model) -> DynamicCache:
    """An empty dynamic cache for ``model`` (with its config where this transformers version takes one)."""
    try:
        return DynamicCache(config=model.config)
    except TypeError:
        return DynamicCache()
