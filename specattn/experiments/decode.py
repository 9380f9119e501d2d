"""``experiment=decode`` and ``experiment=decode_table``: speculative decoding with sparse verification.

Prompts are the first ``decode.prompt_len`` tokens of each dataset sample; each is decoded for
``decode.max_new_tokens`` tokens (:mod:`specattn.decode.engine`), ``decode.batch_size`` prompts at a
time, once with dense verification (dense speculative decoding: the reference, and exactly the
verifier's own output under greedy decoding) and once per method setting, from one shared prefill.

* ``decode``: dense and the configured ``method``;
* ``decode_table``: dense, SpecAttn at ``experiment.p_values``, and the ``experiment.matched``
  baselines at the sparse-layer KV reduction SpecAttn ``p = match_p`` reached on that very prompt
  (the decoding counterpart of ``paper_table``).

Rows (:mod:`specattn.decode.decode_metrics`) go to ``parts/`` per prompt as soon as its batch finishes, so a
killed run resumes; ``generations.jsonl`` holds every generated text.
"""

from __future__ import annotations

import copy
import json

import pandas as pd
import torch
from hydra.utils import instantiate
from tqdm.auto import tqdm

from ..core.checks import SettingError, check_p, fraction, nonnegative_int, positive_int
from ..core.errors import SpecAttnError
from ..data.windows import token_windows
from ..decode.decode_metrics import (
    SUMMARY_COLUMNS,
    sequence_row,
    summarise,
    summary_metrics,
)
from ..decode.engine import DecodeSettings, SpeculativeDecoder, prepare_for_decoding
from ..methods import Budget, Dense, SpecAttn, instantiate_method
from ..runs.context import ExperimentResult, RunContext
from ..runs.outputs import SampleParts, atomic_write
from .evaluation import layer_mapping, load_pair_for


def check(cfg) -> None:
    """The ``decode.*`` settings (run by ``validate`` before anything loads)."""
    d = cfg.decode
    prompt_len = positive_int(d.prompt_len, "decode.prompt_len", "2048")
    if prompt_len < 2:
        raise SettingError("decode.prompt_len", prompt_len, "must be at least 2 (the last token starts decoding)", "2048")
    new = positive_int(d.max_new_tokens, "decode.max_new_tokens", "128")
    positive_int(d.batch_size, "decode.batch_size", "1")
    temperature = d.temperature
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature < 0:
        raise SettingError("decode.temperature", temperature, "must be a number >= 0 (0: greedy)", "0.7")
    nonnegative_int(d.top_k, "decode.top_k", "50")
    fraction(d.top_p, "decode.top_p", "0.9")
    max_positions = cfg.model.get("max_positions")
    if max_positions is not None and prompt_len + new + 2 * (cfg.gamma + 1) > max_positions:
        raise SpecAttnError(
            f"decode.prompt_len={prompt_len} + decode.max_new_tokens={new} (+ 2 steps of gamma + 1) exceed what "
            f"model={cfg.model.name} supports ({max_positions} positions): shorten them")
    if cfg.experiment.name == "decode_table":
        p_values = [check_p(p) for p in cfg.experiment.p_values]
        if check_p(cfg.experiment.match_p) not in p_values:
            raise SpecAttnError(f"experiment.match_p={cfg.experiment.match_p} is not one of "
                                f"experiment.p_values={p_values}")


def decode_settings(cfg, mapping: list[int]) -> DecodeSettings:
    d = cfg.decode
    return DecodeSettings(cfg.gamma, cfg.chunk_size, cfg.dense_layers, cfg.head_agg, tuple(mapping),
                          int(d.max_new_tokens), float(d.temperature), int(d.top_k), float(d.top_p),
                          bool(d.stop_at_eos), int(cfg.experiment.get("query_block", 512)))


def eos_ids(pair) -> tuple[int, ...]:
    """The verifier's end-of-sequence tokens (its tokenizer's and its generation config's)."""
    ids = set()
    for value in (pair.tokenizer.eos_token_id, getattr(pair.verifier.generation_config, "eos_token_id", None)):
        ids |= set(value if isinstance(value, (list, tuple)) else [value] if value is not None else [])
    return tuple(sorted(ids))


def load(cfg):
    """The pair (switched to decoding), the decoder and the prompts of a run."""
    documents = instantiate(cfg.dataset.source).documents()  # fails fast before weights load
    pair = load_pair_for(cfg)
    decoder = SpeculativeDecoder(pair, decode_settings(cfg, layer_mapping(cfg, pair)), eos_ids(pair))
    prepare_for_decoding(pair)
    prompts = token_windows(documents, pair.tokenizer, int(cfg.decode.prompt_len), cfg.dataset.num_samples,
                            cfg.dataset.name)
    return pair, decoder, prompts


def decode_prompts(ctx: RunContext, decoder: SpeculativeDecoder, samples, settings) -> pd.DataFrame:
    """Rows of every prompt, ``decode.batch_size`` prompts at a time, resuming from ``parts/``.

    ``settings(decoded)`` is a generator of settings to decode after the dense reference, each a
    list of fresh methods (one per sequence of the batch); ``decoded`` holds ``(methods, traces,
    timing, continuation NLLs)`` of every setting decoded so far, dense first, and grows as the
    generator is consumed (so a setting may depend on earlier ones' measurements).
    """
    cfg = ctx.cfg
    tokenizer = decoder.pair.tokenizer
    parts = SampleParts(ctx.run_dir)
    batch_size = int(cfg.decode.batch_size)
    frames: dict[int, pd.DataFrame] = {}
    bar = tqdm(total=len(samples), desc=f"{cfg.experiment.name}", unit="prompt", disable=not cfg.progress)
    for first in range(0, len(samples), batch_size):
        indices = list(range(first, min(first + batch_size, len(samples))))
        done = {i: parts.load(i) for i in indices}
        if all(frame is not None for frame in done.values()):
            frames.update(done)
            bar.update(len(indices))
            continue
        batch = [samples[i] for i in indices]
        prefill = decoder.prefill(torch.stack([s.input_ids for s in batch]))
        seed = cfg.seed + first
        dense_methods = [Dense() for _ in batch]
        dense = decoder.generate(prefill, dense_methods, seed)
        references = [trace.tokens for trace in dense.traces]
        dense_nll = decoder.continuation_nll(prefill, references)
        decoded = [(dense_methods, dense.traces, dense.timing, dense_nll)]
        for methods in settings(decoded):
            out = decoder.generate(prefill, methods, seed)
            decoded.append((methods, out.traces, out.timing,
                            decoder.continuation_nll(prefill, [t.tokens for t in out.traces])))
        for position, index in enumerate(indices):
            rows = [sequence_row(cfg, index, samples[index], methods[position], traces[position], references[position],
                                 nll[position], dense_nll[position], timing, len(batch), prefill.seconds,
                                 tokenizer.decode(traces[position].tokens))
                    for methods, traces, timing, nll in decoded]
            frames[index] = pd.DataFrame(rows)
            parts.save(index, frames[index])
        last = frames[indices[-1]].iloc[-1]
        tau = (last.kept + last.steps) / last.steps
        bar.update(len(indices))
        bar.set_postfix(tau=f"{tau:.2f}", kv_red=f"{last.kv_reduction:.1%}", match=f"{last.match_rate:.2f}")
        ctx.logger.log_metrics({"prompt": indices[-1], "tau": tau, "kv_reduction": last.kv_reduction,
                                "match_rate": last.match_rate})
    bar.close()
    return pd.concat([frames[i] for i in sorted(frames)], ignore_index=True)


def decode_result(ctx: RunContext, results: pd.DataFrame) -> ExperimentResult:
    """The table, its summary, the metrics and ``generations.jsonl``."""
    path = ctx.run_dir / "generations.jsonl"
    lines = [json.dumps({k: row[k] for k in ("sample", "sample_id", "method", "setting", "new_tokens", "text")},
                        default=str) for row in results.to_dict("records")]
    atomic_write(path, lambda tmp: tmp.write_text("\n".join(lines) + "\n"))
    summary = summarise(results)
    return ExperimentResult(results, summary[list(SUMMARY_COLUMNS)], artifacts={"generations": path},
                            metrics=summary_metrics(summary))


def run(ctx: RunContext) -> ExperimentResult:
    """``experiment=decode``: dense and the configured method."""
    cfg = ctx.cfg
    template = instantiate_method(cfg.method.selector, key_prefix="method.")
    _, decoder, samples = load(cfg)

    def settings(decoded):
        if not isinstance(template, Dense):
            yield [copy.deepcopy(template) for _ in decoded[0][0]]

    return decode_result(ctx, decode_prompts(ctx, decoder, samples, settings))


def run_table(ctx: RunContext) -> ExperimentResult:
    """``experiment=decode_table``: dense, SpecAttn at each p, the matched baselines."""
    cfg = ctx.cfg
    exp = cfg.experiment
    p_values = [float(p) for p in exp.p_values]
    target = p_values.index(float(exp.match_p))
    specs = list(exp.matched)
    for spec in specs:  # constructor errors before any model loads
        instantiate_method(spec, budget=Budget(kv_budget_frac=1.0))
    _, decoder, samples = load(cfg)

    def settings(decoded):
        batch = len(decoded[0][0])
        for p in p_values:
            yield [SpecAttn(p) for _ in range(batch)]
        matched = decoded[1 + target]
        budgets = [Budget(kv_budget_frac=1.0 - trace.reads.sparse_layer_reduction, matched_label=matched[0][0].label)
                   for trace in matched[1]]
        for spec in specs:
            yield [instantiate_method(spec, budget=budget) for budget in budgets]

    return decode_result(ctx, decode_prompts(ctx, decoder, samples, settings))
