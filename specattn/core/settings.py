"""The settings every driver shares: how a sample's verification steps are formed and read, and (for
the decoder) how tokens are generated. One object, built once per run from the config."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    """gamma: drafted tokens per step; chunk_size: keys per chunk; dense_layers: the first verifier
    layers that read everything; head_agg: the draft's head aggregation; layer_map: draft layer of each
    verifier layer; query_block: query rows per masked-attention block (memory, not results).
    Evaluation: prefill_frac (densely prefilled share of a sample), impl (``parallel`` | ``parallel_mask`` | ``sequential``: :mod:`specattn.eval.perplexity`).
    Decoding: max_new_tokens, temperature (0: greedy), top_k / top_p (sampling; 0 / 1: off), stop_at_eos;
    the draft's own reads (:mod:`specattn.decode.draft_reads`): draft_reads (``dense`` | ``first_dense`` |
    ``reuse`` | ``window``), draft_p (nucleus mass of the draft's own selection: the run's ``p``),
    draft_refresh (reuse: a dense step every that many steps), draft_window / draft_sinks (window: keys),
    draft_refresh_below (reuse: a step after one that accepted fewer drafted tokens also refreshes; 0: off),
    draft_dense_layers (the first draft layers that read everything under a policy; None: dense_layers).
    """

    gamma: int
    chunk_size: int
    dense_layers: int
    head_agg: str
    layer_map: tuple[int, ...]
    query_block: int = 512
    prefill_frac: float = 0.1
    impl: str = "parallel"
    max_new_tokens: int = 128
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    stop_at_eos: bool = False
    draft_reads: str = "dense"
    draft_p: float = 0.95
    draft_refresh: int = 8
    draft_window: int = 1024
    draft_sinks: int = 16
    draft_refresh_below: int = 0
    draft_dense_layers: int | None = None

    @property
    def draft_dense(self) -> int:
        """The first draft layers that read densely under a draft read policy."""
        return self.dense_layers if self.draft_dense_layers is None else self.draft_dense_layers
