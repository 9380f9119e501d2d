"""Roofline of speculative decoding: the bytes one step must move through device memory, per mode.

Decoding at small batch is memory-bound: a step's time is at least the bytes it must read (and write)
over the device's bandwidth. For one verification step of B sequences whose prefixes hold P tokens
(:func:`step_bytes`):

* **verifier weights**: every matrix and norm once, and the output head (the input embedding is only
  gathered, B x T rows, and is not counted unless it is tied to the head, which then counts once);
* **verifier KV**: each sequence reads the K and V of its prefix in every dense layer (the first
  ``dense_layers``, and all layers without SpecAttn) and of the kept chunks in every sparse layer
  (``round(kept * ceil(P / C))`` chunks of C keys, at least one), plus the T = gamma + 1 keys of the step
  (read, and written once);
* **draft** (speculative modes): ``gamma`` forwards, each reading the draft's weights and its whole KV
  densely (the first forward over ``P + 1`` keys, forward i over ``P + 1 + i``; SpecAttn needs the draft's
  own attention, so its KV cannot be cut);
* **selection** (SpecAttn): the draft rows' recomputation reads the keys (K only) of each needed draft
  layer once, ``[0, P + gamma)``; the rows (float32, ``S x B x gamma x W``) are written once and read twice
  by the nucleus kernel; its chunk maxima (int32, one per chunk and row) are written and read once.

Autoregressive decoding (gamma = 0) reads the verifier's weights and KV once per token. Activations,
logits and the selection's lists are small and not counted. Tokens per step: ``B * tau`` (speculative,
tau = mean tokens a step adds) or ``B`` (autoregressive). The roofline throughput is tokens over
``bytes / bandwidth``; measured throughput over it is the fraction of the roofline reached.
"""

from __future__ import annotations

from dataclasses import dataclass

ROW_BYTES = 4  # the draft rows are float32
KEY_BYTES = 4  # chunk maxima are int32 keys


@dataclass(frozen=True)
class ModelShape:
    """What the roofline needs of one decoder-only model (bytes per element: ``dtype_bytes``)."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    dtype_bytes: int = 2

    @classmethod
    def from_config(cls, config, dtype_bytes: int = 2) -> "ModelShape":
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return cls(config.num_hidden_layers, config.hidden_size, config.intermediate_size, heads,
                   config.num_key_value_heads, head_dim, config.vocab_size, bool(config.tie_word_embeddings),
                   dtype_bytes)

    @property
    def weight_bytes(self) -> int:
        """Bytes of the weights one forward reads (module docstring)."""
        h, q, kv = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim
        per_layer = h * q + 2 * h * kv + q * h + 3 * h * self.intermediate + 2 * h
        return (self.layers * per_layer + h + self.vocab * h) * self.dtype_bytes

    @property
    def k_bytes_per_token_layer(self) -> int:
        """Bytes of one token's keys in one layer."""
        return self.kv_heads * self.head_dim * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        """Bytes of one token's keys and values over all layers."""
        return 2 * self.layers * self.k_bytes_per_token_layer


def kept_keys(prefix: int, kept: float, chunk_size: int) -> int:
    """Prefix keys a sparse layer reads when it keeps the fraction ``kept`` of the prefix's chunks."""
    n_chunks = -(-prefix // chunk_size)
    return min(prefix, max(1, round(kept * n_chunks)) * chunk_size) if prefix else 0


def step_bytes(verifier: ModelShape, draft: ModelShape | None, batch: int, prefix: int, gamma: int,
               kept: float | None = None, dense_layers: int = 2, needed_layers: int = 0, chunk_size: int = 16,
               row_width: int | None = None) -> dict[str, int]:
    """Bytes of one step by component (module docstring) and their ``total``.

    ``gamma = 0``: autoregressive; ``kept = None``: dense verification; else SpecAttn reading the fraction
    ``kept`` of the prefix chunks in the sparse layers, selecting from ``needed_layers`` draft layers'
    rows of ``row_width`` keys (default ``prefix + gamma``).
    """
    t = gamma + 1
    layer_kv = 2 * verifier.k_bytes_per_token_layer  # K + V of one token in one layer
    if kept is None:
        keys = verifier.layers * (prefix + t)
    else:
        sparse = verifier.layers - dense_layers
        keys = dense_layers * (prefix + t) + sparse * (kept_keys(prefix, kept, chunk_size) + t)
    out = {"verifier_weights": verifier.weight_bytes,
           "verifier_kv": batch * (keys * layer_kv + t * verifier.kv_bytes_per_token)}
    if gamma:
        if draft is None:
            raise ValueError("speculative modes need the draft's shape")
        draft_keys = sum(prefix + 1 + i for i in range(gamma))
        out["draft_weights"] = gamma * draft.weight_bytes
        out["draft_kv"] = batch * (draft_keys + gamma) * draft.kv_bytes_per_token
    if kept is not None and gamma:
        width = row_width if row_width is not None else prefix + gamma
        rows = needed_layers * batch * gamma
        out["draft_rows_k"] = needed_layers * batch * (prefix + gamma) * draft.k_bytes_per_token_layer
        out["selection"] = rows * width * 3 * ROW_BYTES + rows * -(-width // chunk_size) * 2 * KEY_BYTES
    out["total"] = sum(out.values())
    return out


def roofline_tokens_per_s(total_bytes: float, tokens_per_step: float, bandwidth: float) -> float:
    """Tokens per second if a step took exactly ``total_bytes / bandwidth`` (bytes/s)."""
    return tokens_per_step * bandwidth / total_bytes
