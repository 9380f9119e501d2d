"""``experiment=ppl``: perplexity and KV reduction of a method against dense attention.

Per sample it evaluates the dense reference and the configured method (one draft forward shared
by the methods that use the draft), writes that sample's rows under ``parts/`` (so a killed run
resumes), and finally returns one row per sample and method setting.
"""

from __future__ import annotations

from ..eval.perplexity import evaluate_sample
from ..eval.ppl_metrics import sample_rows
from ..runs.context import ExperimentResult, RunContext
from .evaluation import (
    check_impl,
    configured_methods,
    evaluate_samples,
    load_run,
    ppl_result,
)


def check(cfg) -> None:
    """Pre-load checks of this experiment's keys (``specattn.runs.validate.validate`` runs them)."""
    check_impl(cfg)


def run(ctx: RunContext) -> ExperimentResult:
    cfg = ctx.cfg
    methods = configured_methods(cfg)
    pair, settings, samples = load_run(cfg)

    def evaluate(index, sample):
        scores = evaluate_sample(pair, sample.input_ids, methods, settings, seed=cfg.seed + index,
                                 progress=cfg.progress)
        return sample_rows(cfg, index, sample, methods, scores)

    return ppl_result(evaluate_samples(ctx, samples, evaluate, methods[-1].label), settings)
