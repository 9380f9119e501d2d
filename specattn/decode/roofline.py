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
* **draft** (speculative modes): ``gamma`` forwards, each reading the draft's weights and, in each draft
  layer, the keys its last row reads (and writing ``gamma`` tokens' K and V). Under ``draft_reads``
  (:mod:`specattn.decode.draft_reads`; the first ``dense_layers`` draft layers always read densely):

  - ``dense``: forward i reads ``P + 1 + i`` keys;
  - ``first_dense``: forward 0 reads ``P + 1``; forward ``i >= 1`` reads, in a policy layer,
    ``kept_keys(P, draft_kept)`` prefix keys plus its ``i + 1`` own keys;
  - ``reuse``: one step in ``draft_refresh`` reads as ``dense``, the others read ``kept_keys(P, draft_kept)
    + i + 1`` in every forward (``draft_kept`` as measured: the previous selection together with the
    chunks of the tokens accepted since), amortised over the period;
  - ``window``: every forward reads ``window_keys(P, draft_sinks, draft_window) + i + 1``;
  - ``first_window``: forward 0 reads ``P + 1``, forward ``i >= 1`` as under ``window``;
* **selection** (SpecAttn): the draft rows' recomputation reads the keys (K only) that the step's draft
  rows read in each needed draft layer once (``[0, P + gamma)`` when a row reads densely, as the row at
  ``P`` does under ``first_window``; ``window`` and ``reuse``'s sparse steps read only their keys, counted as in
  policy layers; with ``row0_from_scores`` the ``first_*`` policies' row at ``P`` comes from the float32 scores
  forward 0 saved, written and read once, and the other rows read their forwards' keys); the rows (float32,
  ``S x B x gamma x W``) are written once and read twice by the nucleus kernel; its chunk maxima (int32,
  one per chunk and row) are written and read once;
* **draft selection** (``first_dense``, ``reuse``): the same for the draft's own selection, over every
  policy layer (not only the needed ones): ``first_dense`` one row per layer (at ``P``, ``P + 1`` keys
  wide), ``reuse`` the step's ``gamma`` rows per layer (amortised as above). Under ``reuse`` a needed layer that
  is also a policy layer (``shared_layers``) has its rows computed and selected once, for both selections (the
  graph decoder's one row slot per layer), so the verifier's selection above counts only the other needed layers;
  under ``first_dense`` the draft's row at ``P`` is the first of the verifier's rows, counted in both (the
  nucleus runs on it twice: apart from its one extra write, that is what the decoder does).

Autoregressive decoding (gamma = 0) reads the verifier's weights and KV once per token. Activations,
logits and the selection's lists are small and not counted. Tokens per step: ``B * tau`` (speculative,
tau = mean tokens a step adds) or ``B`` (autoregressive). The roofline throughput is tokens over
``bytes / bandwidth``; measured throughput over it is the fraction of the roofline reached.
"""

from __future__ import annotations

from dataclasses import dataclass

from .draft_reads import DENSE_FIRST, DRAFT_READS, WINDOWED

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


def window_keys(prefix: int, sinks: int, window: int, chunk_size: int) -> int:
    """Prefix keys of the chunks holding ``[0, sinks)`` or ``[max(0, prefix - window), prefix)``."""
    n_chunks = -(-prefix // chunk_size)
    sink_chunks = min(n_chunks, -(-sinks // chunk_size))
    first_recent = max(0, prefix - window) // chunk_size
    if first_recent <= sink_chunks:
        return prefix
    return sink_chunks * chunk_size + prefix - first_recent * chunk_size


def _draft_layer_keys(prefix: int, gamma: int, first_dense: bool, sparse_prefix: int) -> int:
    """Keys one draft layer reads over a step's ``gamma`` forwards when a sparse forward reads
    ``sparse_prefix`` prefix keys (plus its own), the first forward densely if ``first_dense``."""
    return sum(prefix + 1 if i == 0 and first_dense else sparse_prefix + i + 1 for i in range(gamma))


def step_bytes(verifier: ModelShape, draft: ModelShape | None, batch: int, prefix: int, gamma: int,
               kept: float | None = None, dense_layers: int = 2, needed_layers: int = 0, chunk_size: int = 16,
               row_width: int | None = None, draft_reads: str = "dense", draft_kept: float | None = None,
               draft_refresh: int = 8, draft_window: int = 1024, draft_sinks: int = 16,
               draft_dense_layers: int | None = None, row0_from_scores: bool = False,
               shared_layers: int = 0) -> dict[str, int]:
    """Bytes of one step by component (module docstring) and their ``total``.

    ``gamma = 0``: autoregressive; ``kept = None``: dense verification; else SpecAttn reading the fraction
    ``kept`` of the prefix chunks in the sparse layers, selecting from ``needed_layers`` draft layers'
    rows of ``row_width`` keys (default ``prefix + gamma``). ``draft_reads``: the draft's own reads, with
    ``draft_kept`` (``first_dense``, ``reuse``: the kept fraction of the prefix chunks in a sparse draft
    forward, e.g. the decode experiments' measured ``draft_kept``), ``draft_refresh`` (``reuse``) and
    ``draft_window``, ``draft_sinks`` (``window``); ``draft_dense_layers`` the first draft layers read densely under a
    policy (None: ``dense_layers``); ``row0_from_scores`` (``first_*``): the row at ``P`` from the scores forward 0's
    attention saves (``row0_scores``: float32 per query head and key, written and read once, in every layer that
    needs the row) instead of its keys, the other rows' keys then only what their forwards read; ``shared_layers``:
    how many of the ``needed_layers`` are also policy layers (``reuse``: their rows are the draft selection's, so the
    verifier's selection adds nothing for them). Amortised values (``reuse``) are rounded to bytes.
    """
    if draft_reads not in DRAFT_READS:
        raise ValueError(f"draft_reads={draft_reads!r}: use one of {', '.join(DRAFT_READS)}")
    if draft_reads in ("first_dense", "reuse") and draft_kept is None:
        raise ValueError(f"draft_reads={draft_reads} needs draft_kept (the draft's kept fraction)")
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
        dense_keys = _draft_layer_keys(prefix, gamma, False, prefix)
        sparse_prefix = (window_keys(prefix, draft_sinks, draft_window, chunk_size) if draft_reads in WINDOWED
                         else prefix if draft_reads == "dense" else kept_keys(prefix, draft_kept, chunk_size))
        policy_keys = _draft_layer_keys(prefix, gamma, draft_reads in DENSE_FIRST, sparse_prefix)
        scores_row0 = row0_from_scores and draft_reads in DENSE_FIRST
        row0_layer_scores = batch * (prefix + 1) * draft.heads * 2 * ROW_BYTES  # one layer's row at P, written + read
        row_keys = (prefix + gamma if draft_reads == "dense" or draft_reads in DENSE_FIRST and not scores_row0
                    else sparse_prefix + gamma)
        if draft_reads == "reuse":  # a dense step every draft_refresh steps
            policy_keys = (dense_keys + (draft_refresh - 1) * policy_keys) / draft_refresh
            row_keys = (prefix + gamma + (draft_refresh - 1) * row_keys) / draft_refresh
        n_dense = min(dense_layers if draft_dense_layers is None else draft_dense_layers, draft.layers)
        n_policy = draft.layers - n_dense
        layer_kv = 2 * draft.k_bytes_per_token_layer
        out["draft_weights"] = gamma * draft.weight_bytes
        out["draft_kv"] = round(batch * (n_dense * dense_keys + n_policy * policy_keys + gamma * draft.layers) * layer_kv)
        if draft_reads in ("first_dense", "reuse"):
            rows, keys, width = ((n_policy * batch, prefix + 1, prefix + 1) if draft_reads == "first_dense"
                                 else (n_policy * batch * gamma, row_keys, prefix + gamma))
            if draft_reads == "first_dense" and scores_row0:  # the row at P: its saved scores, not its keys
                out["row0_scores"] = n_policy * row0_layer_scores
            else:
                out["draft_select_k"] = round(n_policy * batch * keys * draft.k_bytes_per_token_layer)
            out["draft_select"] = rows * width * 3 * ROW_BYTES + rows * -(-width // chunk_size) * 2 * KEY_BYTES
    if kept is not None and gamma:
        if not 0 <= shared_layers <= min(needed_layers, n_policy if draft_reads != "dense" else 0):
            raise ValueError(f"shared_layers={shared_layers}: at most the needed layers ({needed_layers}) "
                             "and the policy layers")
        own = needed_layers - (shared_layers if draft_reads == "reuse" else 0)
        width = row_width if row_width is not None else prefix + gamma
        rows = own * batch * gamma
        out["draft_rows_k"] = round(own * batch * row_keys * draft.k_bytes_per_token_layer)
        if draft_reads == "first_window" and scores_row0:
            out["row0_scores"] = needed_layers * row0_layer_scores
        out["selection"] = rows * width * 3 * ROW_BYTES + rows * -(-width // chunk_size) * 2 * KEY_BYTES
    out["total"] = sum(out.values())
    return out


def roofline_tokens_per_s(total_bytes: float, tokens_per_step: float, bandwidth: float) -> float:
    """Tokens per second if a step took exactly ``total_bytes / bandwidth`` (bytes/s)."""
    return tokens_per_step * bandwidth / total_bytes
