"""A static KV cache for a batch of sequences that each have their own length.

One preallocated ``(B, Hkv, capacity, D)`` key and value buffer per layer (the layout of
transformers' attention functions) and ``lengths (B,)``: sequence ``b``'s valid keys are
``[0, lengths[b])``. A forward of ``T`` new tokens per sequence writes them at
``lengths[b] .. lengths[b] + T - 1`` (every layer, as transformers calls :meth:`update`); the
decoder then sets ``lengths`` to what it keeps (:meth:`set_lengths`): committing accepted tokens
and rolling back rejected ones is one assignment, and the buffers never move, so the GPU engine
can capture forwards in CUDA graphs over them.

It is duck-typed to what transformers' decoder layers call on a cache (``update``,
``get_seq_length``); masks are not built from it: the decoder passes precomputed (empty) masks and
specattn's attention functions read each sequence's rows from their plans.
"""

from __future__ import annotations

import torch

from ..core.errors import SpecAttnError


class SequenceKVCache:
    """Keys and values of ``n_layers`` layers for ``batch`` sequences of up to ``capacity`` tokens."""

    def __init__(self, n_layers: int, batch: int, n_kv_heads: int, head_dim: int, capacity: int,
                 dtype: torch.dtype, device: torch.device):
        shape = (n_layers, batch, n_kv_heads, capacity, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.lengths = torch.zeros(batch, dtype=torch.long, device=device)

    @classmethod
    def for_model(cls, model, batch: int, capacity: int) -> "SequenceKVCache":
        """An empty cache shaped for ``model``'s attention layers."""
        config = model.config
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return cls(config.num_hidden_layers, batch, config.num_key_value_heads, head_dim, capacity,
                   model.dtype, model.device)

    @property
    def capacity(self) -> int:
        return self.keys.shape[3]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        """Write ``(B, Hkv, T, D)`` new keys/values at each sequence's length; return the layer's
        whole buffers ``(B, Hkv, capacity, D)`` (valid up to ``lengths + T``)."""
        n_new = key_states.shape[2]
        # the check reads the lengths on the host: skipped while a CUDA graph is being captured (the
        # graph decoder checks the capacity on the host before each step instead)
        capturing = self.lengths.is_cuda and torch.cuda.is_current_stream_capturing()
        if not capturing and int(self.lengths.max()) + n_new > self.capacity:
            raise SpecAttnError(f"KV cache of {self.capacity} tokens is full: raise its capacity")
        slots = self.lengths[:, None] + torch.arange(n_new, device=self.lengths.device)  # (B, T)
        index = slots[:, None, :, None].expand_as(key_states)
        self.keys[layer_idx].scatter_(2, index, key_states.to(self.keys.dtype))
        self.values[layer_idx].scatter_(2, index, value_states.to(self.values.dtype))
        return self.keys[layer_idx], self.values[layer_idx]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """The longest sequence's length (transformers asks when no positions are given)."""
        return int(self.lengths.max())

    def set_lengths(self, lengths: torch.Tensor) -> None:
        """Keep keys ``[0, lengths[b])`` of each sequence (commit and roll back in one)."""
        self.lengths.copy_(lengths)

    def rows(self, start: int, stop: int) -> "SequenceKVCache":
        """Sequences ``[start, stop)`` as a cache of their own that shares this one's memory (a forward
        through it writes into these rows)."""
        view = object.__new__(SequenceKVCache)
        view.keys, view.values = self.keys[:, start:stop], self.values[:, start:stop]
        view.lengths = self.lengths[start:stop]
        return view

    def clone(self) -> "SequenceKVCache":
        """An independent copy (the same prefill serves several methods)."""
        copy = object.__new__(SequenceKVCache)
        copy.keys, copy.values, copy.lengths = self.keys.clone(), self.values.clone(), self.lengths.clone()
        return copy
