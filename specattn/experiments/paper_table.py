"""``experiment=paper_table``: the structure of the paper's PG-19 table on any pair and dataset.

Rows: dense; SpecAttn at each of ``p_values``; the ``matched`` baselines (StreamingLLM and Quest by
default) at the KV reduction SpecAttn ``p = match_p`` measured; the oracle top-p at each of
``p_values`` (``oracle: false`` leaves it out). Columns as ``experiment=ppl``.

Matching happens per sample, in two passes over the sample: the first evaluates dense, SpecAttn
and the oracle (one draft forward shared by the SpecAttn settings); the second evaluates the
matched baselines with ``kv_budget_frac = 1 - r``, ``r`` being the sparse-layer KV reduction SpecAttn
``p = match_p`` measured on that very sample. Every sample has the same length, so the baselines'
overall reduction matches SpecAttn's up to the budgets' rounding to whole chunks. Samples are
written to ``parts/`` as they finish, so a killed run resumes.
"""

from __future__ import annotations

from ..core.checks import fraction, fractions
from ..core.errors import SpecAttnError
from ..eval.perplexity import evaluate_sample
from ..eval.ppl_metrics import sample_rows
from ..methods import Budget, Dense, OracleTopP, SpecAttn, instantiate_method
from ..runs.context import ExperimentResult, RunContext
from .evaluation import check_impl, evaluate_samples, load_run, ppl_result


def first_pass_methods(cfg) -> tuple[list, SpecAttn]:
    """Dense, SpecAttn at each p, the oracle at each p; and the SpecAttn setting to match."""
    exp = cfg.experiment
    p_values = fractions(exp.p_values, "experiment.p_values", "[0.95,0.97,0.99]")
    match_p = fraction(exp.match_p, "experiment.match_p", "0.95")
    if match_p not in p_values:
        raise SpecAttnError(f"experiment.match_p={match_p} is not one of experiment.p_values={p_values}")
    specattn = [SpecAttn(p) for p in p_values]
    oracle = [OracleTopP(p) for p in p_values] if exp.oracle else []
    return [Dense(), *specattn, *oracle], specattn[p_values.index(match_p)]


def check(cfg) -> None:
    """Pre-load checks of this experiment's keys (``specattn.runs.validate.validate`` runs them)."""
    check_impl(cfg)
    first_pass_methods(cfg)
    for index, spec in enumerate(cfg.experiment.matched):
        instantiate_method(spec, key_prefix=f"experiment.matched.{index}.", budget=Budget(kv_budget_frac=1.0))


def run(ctx: RunContext) -> ExperimentResult:
    cfg = ctx.cfg
    first, target = first_pass_methods(cfg)
    specs = list(cfg.experiment.matched)
    pair, settings, samples = load_run(cfg)

    def evaluate(index, sample):
        seed = cfg.seed + index
        scores = evaluate_sample(pair, sample.input_ids, first, settings, seed=seed, progress=cfg.progress)
        reduction = scores[first.index(target)].reads.sparse_layer_reduction
        budget = Budget(kv_budget_frac=1.0 - reduction, matched_label=target.label)
        matched = [instantiate_method(spec, budget=budget) for spec in specs]
        matched_scores = evaluate_sample(pair, sample.input_ids, matched, settings, seed=seed, progress=cfg.progress)
        # the paper's row order: dense, the matched baselines, SpecAttn, the oracle
        return sample_rows(cfg, index, sample, [first[0], *matched, *first[1:]],
                           [scores[0], *matched_scores, *scores[1:]])

    return ppl_result(evaluate_samples(ctx, samples, evaluate, "paper table"), settings)
