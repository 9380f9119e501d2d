"""The decoding experiments' metrics, in one place: each sequence's row (raw sums kept so summaries
aggregate exactly), the summary, its columns and the names logged to W&B.

Definitions (README, "Decoding"):

* ``tau``: mean tokens a verification step adds, the bonus/correction token included:
  ``(kept + steps) / steps``; ``acceptance``: ``kept / drafted`` (drafted tokens the verifier keeps);
* ``kv_reduction`` / ``kv_reduction_sparse_layers``: as in the perplexity experiments
  (:mod:`specattn.core.kv_reads`), over every verification step the sequence took;
* ``draft_kv_reduction`` / ``draft_kv_reduction_sparse_layers``: the same for the draft's own forwards
  under ``decode.draft_reads`` (:mod:`specattn.decode.draft_reads`; all draft layers / the draft layers
  ``>= dense_layers``), and ``draft_kept``: the share of the prefix keys the forwards that read a draft
  layer sparsely read there (NaN for ``dense``: the roofline's ``draft_kept``);
* agreement with dense verification (the same prompt decoded by dense speculative decoding, the
  verifier's own output): ``first_divergence`` (tokens before the first difference; the whole
  length when none) and ``match_rate`` (share of positions with the same token);
* ``cont_ppl``: the dense verifier's perplexity of the generated continuation given the prompt
  (what sparsity did to the output; the dense row's value is the reference);
* times (seconds, wall): ``prefill`` (shared by the methods of a batch), ``draft``, ``verify``,
  ``accept``; a sequence of a batch of ``B`` gets ``1 / B`` of its batch's decoding time, and
  ``tokens_per_s`` is new tokens over decoding time (prefill excluded).
"""

from __future__ import annotations

import math

import pandas as pd

SUMMARY_COLUMNS = ("method", "setting", "samples", "new_tokens", "tau", "acceptance", "kv_reduction",
                   "kv_reduction_sparse_layers", "draft_kv_reduction", "draft_kv_reduction_sparse_layers", "draft_kept",
                   "match_rate", "first_divergence", "cont_ppl", "dense_cont_ppl", "tokens_per_s", "draft_s", "verify_s")
LOGGED = ("tau", "acceptance", "kv_reduction", "match_rate", "cont_ppl", "tokens_per_s")


def agreement(tokens: list[int], reference: list[int]) -> tuple[int, int, int]:
    """``(first_divergence, matches, compared)`` of ``tokens`` against ``reference`` over the shorter length."""
    n = min(len(tokens), len(reference))
    same = [a == b for a, b in zip(tokens[:n], reference[:n])]
    return (same.index(False) if False in same else n), sum(same), n


def sequence_row(cfg, index: int, sample, method, trace, reference: list[int], cont_nll: float,
                 dense_cont_nll: float, timing, batch_size: int, prefill_seconds: float, text: str) -> dict:
    """One sequence decoded by one method (``reference``: the dense run's tokens for this prompt,
    ``dense_cont_nll`` their summed NLL)."""
    first, matches, compared = agreement(trace.tokens, reference)
    reads, draft, n = trace.reads, trace.draft_reads, len(trace.tokens)
    share = 1.0 / batch_size
    return {
        "method": method.name, "setting": method.label, "p": method.params().get("p", math.nan),
        "sample": index, "sample_id": sample.sample_id, "prompt_len": int(sample.input_ids.numel()),
        "new_tokens": n, "steps": trace.steps, "drafted": trace.drafted, "kept": trace.kept,
        "kv_reads": reads.reads, "kv_dense_reads": reads.dense_reads,
        "kv_reads_sparse_layers": reads.sparse_layer_reads, "kv_dense_reads_sparse_layers": reads.sparse_layer_dense_reads,
        "kv_reduction": reads.reduction, "kv_reduction_sparse_layers": reads.sparse_layer_reduction,
        "draft_reads": str(cfg.decode.draft_reads), "draft_kv_reads": draft.reads, "draft_kv_dense_reads": draft.dense_reads,
        "draft_kv_reads_sparse_layers": draft.sparse_layer_reads,
        "draft_kv_dense_reads_sparse_layers": draft.sparse_layer_dense_reads,
        "draft_sparse_forward_reads": draft.sparse_forward_reads, "draft_sparse_forward_prefix": draft.sparse_forward_prefix,
        "draft_kv_reduction": draft.reduction, "draft_kv_reduction_sparse_layers": draft.sparse_layer_reduction,
        "draft_kept": draft.kept,
        "first_divergence": first, "matches": matches, "compared": compared,
        "match_rate": matches / compared if compared else 1.0, "cont_nll": cont_nll,
        "dense_cont_nll": dense_cont_nll, "dense_new_tokens": len(reference),
        "cont_ppl": math.exp(cont_nll / n) if n else math.nan,
        "prefill_s": prefill_seconds * share, "draft_s": timing.draft * share, "verify_s": timing.verify * share,
        "accept_s": timing.accept * share, "decode_s": timing.total * share, "batch_size": batch_size,
        "tokens_per_s": n / (timing.total * share) if timing.total else math.nan,
        "model": cfg.model.name, "dataset": cfg.dataset.name, "gamma": cfg.gamma, "chunk_size": cfg.chunk_size,
        "temperature": float(cfg.decode.temperature), "method_params": str(method.params()), "text": text,
    }


def _saved(reads: int, dense: int) -> float:
    """``1 - reads / dense`` (0 without reads)."""
    return 1.0 - reads / dense if dense else 0.0


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Per setting (first-seen order): sums, then the ratios of the module docstring."""
    rows = []
    for setting, group in results.groupby("setting", sort=False):
        steps, tokens = group.steps.sum(), group.new_tokens.sum()
        sparse_dense = group.kv_dense_reads_sparse_layers.sum()
        rows.append({
            "method": group.method.iloc[0], "setting": setting, "samples": len(group), "new_tokens": int(tokens),
            "tau": (group.kept.sum() + steps) / steps, "acceptance": group.kept.sum() / group.drafted.sum(),
            "kv_reduction": 1.0 - group.kv_reads.sum() / group.kv_dense_reads.sum(),
            "kv_reduction_sparse_layers": 1.0 - group.kv_reads_sparse_layers.sum() / sparse_dense if sparse_dense else 0.0,
            "draft_kv_reduction": _saved(group.draft_kv_reads.sum(), group.draft_kv_dense_reads.sum()),
            "draft_kv_reduction_sparse_layers": _saved(group.draft_kv_reads_sparse_layers.sum(),
                                                       group.draft_kv_dense_reads_sparse_layers.sum()),
            "draft_kept": (group.draft_sparse_forward_reads.sum() / group.draft_sparse_forward_prefix.sum()
                           if group.draft_sparse_forward_prefix.sum() else math.nan),
            "match_rate": group.matches.sum() / group.compared.sum(), "first_divergence": group.first_divergence.mean(),
            "cont_ppl": math.exp(group.cont_nll.sum() / tokens), "dense_cont_ppl": math.exp(group.dense_cont_nll.sum() / group.dense_new_tokens.sum()),
            "tokens_per_s": tokens / group.decode_s.sum(), "draft_s": group.draft_s.sum(), "verify_s": group.verify_s.sum(),
        })
    return pd.DataFrame(rows)


def summary_metrics(summary: pd.DataFrame) -> dict[str, float]:
    """``{"summary/<setting>/<metric>": value}`` for the :data:`LOGGED` metrics."""
    return {f"summary/{row['setting']}/{key}": row[key] for _, row in summary.iterrows() for key in LOGGED}
