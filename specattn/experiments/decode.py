"""``experiment=decode`` and ``experiment=decode_table``: speculative decoding with sparse verification.

Prompts are :func:`~specattn.data.windows.token_windows` of ``decode.prompt_len`` tokens: the first
``decode.prompt_len`` tokens of each document that has that many, in the dataset's order (later rounds:
each document's next window); ``dataset.context_len`` plays no part. Each is decoded for
``decode.max_new_tokens`` tokens (:mod:`specattn.decode.engine`), ``decode.batch_size`` prompts at a
time, once with dense verification (dense speculative decoding: the reference, and exactly the
verifier's own output under greedy decoding) and once per method setting, from one shared prefill.

* ``decode``: dense and the configured ``method``;
* ``decode_table``: the rows of ``experiment.rows`` (:mod:`specattn.experiments.rows`): by default dense,
  SpecAttn at ``experiment.p_values``, and StreamingLLM and Quest at the sparse-layer KV reduction
  SpecAttn ``p = match_p`` reached on that very prompt (the decoding counterpart of ``paper_table``).

Rows (:mod:`specattn.decode.decode_metrics`) go to ``parts/`` per prompt as soon as its batch finishes, so a
killed run resumes; ``generations.jsonl`` holds every generated text.
"""

from __future__ import annotations

import json

import pandas as pd
import torch
from hydra.utils import instantiate
from tqdm.auto import tqdm

from ..core.checks import SettingError, built, flag, fraction, nonnegative_int, positive_int
from ..core.errors import SpecAttnError
from ..data.windows import check_enough_text, token_windows
from ..decode.decode_metrics import (
    SUMMARY_COLUMNS,
    sequence_row,
    summarise,
    summary_metrics,
)
from ..decode.draft_reads import check_draft_reads
from ..decode.engine import SpeculativeDecoder, prepare_for_decoding
from ..models.pair import load_tokenizer
from ..runs.context import ExperimentResult, RunContext
from ..runs.outputs import SampleParts, atomic_write
from .evaluation import configured_methods, layer_mapping, load_pair_for, run_settings
from .rows import Row, check_table_keys, matched, table_rows


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
    flag(d.stop_at_eos, "decode.stop_at_eos")
    check_enough_text(built(cfg.dataset.source, "dataset.source"), prompt_len, cfg.dataset.num_samples,
                      cfg.dataset.name, "decode.prompt_len", int(cfg.dataset.get("first_sample", 0)))
    check_draft_reads(d.draft_reads, d.draft_p, d.draft_refresh, d.draft_window, d.draft_sinks, cfg.head_agg,
                      d.draft_refresh_below, d.get("draft_dense_layers"))
    max_positions = cfg.model.get("max_positions")
    if max_positions is not None and prompt_len + new + 2 * (cfg.gamma + 1) > max_positions:
        raise SpecAttnError(
            f"decode.prompt_len={prompt_len} + decode.max_new_tokens={new} (+ 2 steps of gamma + 1) exceed what "
            f"model={cfg.model.name} supports ({max_positions} positions): shorten them")
    if "rows" in cfg.experiment:
        check_table_keys(cfg)


def eos_ids(pair) -> tuple[int, ...]:
    """The verifier's end-of-sequence tokens (its tokenizer's and its generation config's)."""
    ids = set()
    for value in (pair.tokenizer.eos_token_id, getattr(pair.verifier.generation_config, "eos_token_id", None)):
        ids |= set(value if isinstance(value, (list, tuple)) else [value] if value is not None else [])
    return tuple(sorted(ids))


def load(cfg):
    """The pair (switched to decoding), the decoder and the prompts of a run."""
    documents = instantiate(cfg.dataset.source).documents()  # read, cut and counted before any weights load
    prompts = token_windows(documents, load_tokenizer(cfg.model), int(cfg.decode.prompt_len), cfg.dataset.num_samples,
                            cfg.dataset.name, int(cfg.dataset.get("first_sample", 0)), length_key="decode.prompt_len")
    pair = load_pair_for(cfg)
    decoder = SpeculativeDecoder(pair, run_settings(cfg, layer_mapping(cfg, pair)), eos_ids(pair))
    prepare_for_decoding(pair)
    return pair, decoder, prompts


def decode_prompts(ctx: RunContext, decoder: SpeculativeDecoder, samples, rows: list[Row]) -> pd.DataFrame:
    """Rows of every prompt, ``decode.batch_size`` prompts at a time, resuming from ``parts/``.

    ``rows``: the dense reference first, then the methods to decode; a matched row gets, per prompt, the
    sparse-layer KV reduction its target row measured on that prompt (:func:`specattn.experiments.rows.matched`).
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
        decoded: dict[str, tuple] = {}  # row label -> (methods, traces, timing, continuation NLLs)
        for row in rows:
            methods = [row.method if row.match is None else matched(row, trace.reads.sparse_layer_reduction)
                       for trace in (decoded[row.match][1] if row.match is not None else batch)]
            out = decoder.generate(prefill, methods, seed)
            decoded[row.method.label] = (methods, out.traces, out.timing,
                                         decoder.continuation_nll(prefill, [t.tokens for t in out.traces]))
        _, dense_traces, _, dense_nll = decoded[rows[0].method.label]
        references = [trace.tokens for trace in dense_traces]
        for position, index in enumerate(indices):
            frames[index] = pd.DataFrame([
                sequence_row(cfg, index, samples[index], methods[position], traces[position], references[position],
                             nll[position], dense_nll[position], timing, len(batch), prefill.seconds,
                             tokenizer.decode(traces[position].tokens))
                for methods, traces, timing, nll in decoded.values()])
            parts.save(index, frames[index])
        last = frames[indices[-1]].iloc[-1]
        bar.update(len(indices))
        bar.set_postfix(tau=f"{last.tau:.2f}", kv_red=f"{last.kv_reduction:.1%}", match=f"{last.match_rate:.2f}")
        ctx.logger.log_metrics({"prompt": indices[-1], "tau": last.tau, "kv_reduction": last.kv_reduction,
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
    methods = configured_methods(ctx.cfg)
    _, decoder, samples = load(ctx.cfg)
    return decode_result(ctx, decode_prompts(ctx, decoder, samples, [Row(method) for method in methods]))


def run_table(ctx: RunContext) -> ExperimentResult:
    """``experiment=decode_table``: the table's rows (:mod:`specattn.experiments.rows`), matched per prompt."""
    rows = table_rows(ctx.cfg)
    _, decoder, samples = load(ctx.cfg)
    return decode_result(ctx, decode_prompts(ctx, decoder, samples, rows))
