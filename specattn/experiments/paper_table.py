"""``experiment=paper_table``: the structure of the paper's PG-19 table on any pair and dataset.

Rows: ``experiment.rows`` (+ ``extra_rows``; :mod:`specattn.experiments.rows`): by default dense,
StreamingLLM and Quest matched to SpecAttn ``p = match_p``'s measured KV reduction, SpecAttn and the
oracle top-p at each of ``p_values``. Columns as ``experiment=ppl``.

Matching happens per sample, in two passes over the sample: the first evaluates the unmatched rows
(one draft forward shared by every method that reads the draft); the second evaluates the matched rows
with ``kv_budget_frac = 1 - r``, ``r`` being the sparse-layer KV reduction the matched row measured on
that very sample. Every sample has the same length, so a matched row's overall reduction matches its
target's up to the budgets' rounding to whole chunks. Samples are written to ``parts/`` as they
finish, so a killed run resumes.
"""

from __future__ import annotations

from ..eval.perplexity import evaluate_sample
from ..eval.ppl_metrics import sample_rows
from ..runs.context import ExperimentResult, RunContext
from .evaluation import check_impl, evaluate_samples, load_run, ppl_result
from .rows import check_table_keys, matched, table_rows


def check(cfg) -> None:
    """Pre-load checks of this experiment's keys (``specattn.runs.validate.validate`` runs them)."""
    check_impl(cfg)
    check_table_keys(cfg)


def run(ctx: RunContext) -> ExperimentResult:
    cfg = ctx.cfg
    rows = table_rows(cfg)
    pair, settings, samples = load_run(cfg)
    first = [row.method for row in rows if row.match is None]
    later = [row for row in rows if row.match is not None]

    def evaluate(index, sample):
        seed = cfg.seed + index
        scores = dict(zip([m.label for m in first],
                          evaluate_sample(pair, sample.input_ids, first, settings, seed=seed, progress=cfg.progress)))
        methods = {m.label: m for m in first}
        if later:
            second = [matched(row, scores[row.match].reads.sparse_layer_reduction) for row in later]
            for method, score in zip(second, evaluate_sample(pair, sample.input_ids, second, settings, seed=seed,
                                                             progress=cfg.progress)):
                methods[method.label], scores[method.label] = method, score
        order = [row.method.label if row.match is None else second[later.index(row)].label for row in rows]
        return sample_rows(cfg, index, sample, [methods[k] for k in order], [scores[k] for k in order])

    return ppl_result(evaluate_samples(ctx, samples, evaluate, "paper table"), settings)
