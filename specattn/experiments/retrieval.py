"""``experiment=retrieval``: long-context retrieval and aggregation accuracy under each method.

Perplexity averages over every token, so a method that drops the one chunk holding an answer
barely moves it. This experiment asks questions whose answer lies in one (or a few) places of a long
haystack: the tasks of :mod:`specattn.retrieval.tasks` (single needle, multi-key, multi-value,
multi-query, variable tracking, common words, a two-place code question), generated from the shipped
texts at each context length and needle depth (:mod:`specattn.retrieval.generate`), answered by
greedy generation through the speculative decoder (:mod:`specattn.decode.engine`) under each method
from one shared prefill, and scored by exact match (:mod:`specattn.retrieval.scoring`).

Methods per sample: the rows of ``experiment.rows`` (:mod:`specattn.experiments.rows`, as in
``paper_table`` and ``decode_table``): by default dense speculative decoding (the verifier's own greedy
answer, always first), SpecAttn at ``experiment.p_values``, the oracle top-p at 0.95, and StreamingLLM
and Quest at the sparse-layer KV reduction SpecAttn ``p = match_p`` reached on that very sample.
Decoding is greedy (``decode.temperature`` is not read) and stops at the verifier's end-of-sequence
token or after the task's ``experiment.max_new_tokens``; the draft's own reads are ``decode.draft_*``.

Samples of one task and length are decoded ``experiment.batch`` at a time from one prefill (on a GPU the
per-step cost is shared; the engine gives a batch's prompts what single runs give them). Each sample's rows go
to ``parts/`` as soon as its batch finishes, so a killed run resumes.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..core.checks import SettingError, built, positive_int
from ..core.errors import SpecAttnError
from ..data.windows import Sample
from ..decode.decode_metrics import sequence_row
from ..decode.draft_reads import check_draft_reads
from ..decode.engine import SpeculativeDecoder, prepare_for_decoding
from ..decode.graph_traces import GraphPool, GraphTraceDecoder, graph_settings
from ..retrieval.generate import Item, RetrievalSample, SampleFactory, grid
from ..retrieval.report import (
    plot_heatmaps,
    plot_overview,
    summarise,
    summary_metrics,
    uninformative,
)
from ..retrieval.scoring import score
from ..retrieval.tasks import TASKS
from ..runs.context import ExperimentResult, RunContext
from ..runs.outputs import SampleParts
from .decode import eos_ids
from .evaluation import layer_mapping, load_pair_for, run_settings
from .rows import Row, check_table_keys, matched, table_rows

MIN_LENGTH = 256  # tokens: below this the template, question and needles leave no haystack
DROPPED = ("cont_nll", "dense_cont_nll", "cont_ppl")  # decode columns that mean nothing here
DECODERS = {"reference": SpeculativeDecoder, "graph": GraphTraceDecoder}  # experiment.decoder


def _list(value, key: str, example: str) -> list:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__") or not len(value):
        raise SettingError(key, value, "must be a non-empty list", example)
    return list(value)


def check(cfg) -> None:
    """Every ``experiment.*`` key of the retrieval experiment (run by ``validate`` before anything loads)."""
    tasks = _check_tasks(cfg.experiment)
    _check_grid(cfg, max(cfg.experiment.max_new_tokens[task] for task in tasks))
    _check_rows(cfg)


def _check_tasks(exp) -> list[str]:
    """``tasks``, their ``max_new_tokens`` and the ``haystacks`` they need."""
    tasks = _list(exp.tasks, "experiment.tasks", "[needle_code,vartrack]")
    for task in tasks:
        if task not in TASKS:
            raise SpecAttnError(f"experiment.tasks: {task!r} is no task: allowed are {', '.join(TASKS)}")
    if len(set(tasks)) < len(tasks):
        raise SettingError("experiment.tasks", tasks, "lists a task twice", "[needle_code,vartrack]")
    for task in tasks:
        if exp.max_new_tokens is None or exp.max_new_tokens.get(task) is None:
            raise SpecAttnError(f"experiment.max_new_tokens has no entry for task {task}: "
                                f"add experiment.max_new_tokens.{task}=16")
        positive_int(exp.max_new_tokens[task], f"experiment.max_new_tokens.{task}", "16")
    for kind in sorted({TASKS[task].haystack for task in tasks}):
        if exp.haystacks.get(kind) is None:
            raise SpecAttnError(f"experiment.haystacks.{kind} is not set, and tasks "
                                f"{', '.join(t for t in tasks if TASKS[t].haystack == kind)} need a {kind} haystack")
        built(exp.haystacks[kind], f"experiment.haystacks.{kind}")
    return tasks


def _check_grid(cfg, longest_answer: int) -> None:
    """``lengths`` (within the model's positions with the longest answer), ``depths``, ``samples``."""
    exp, max_positions = cfg.experiment, cfg.model.get("max_positions")
    for length in _list(exp.lengths, "experiment.lengths", "[2048,4096]"):
        positive_int(length, "experiment.lengths", "[2048,4096]")
        if length < MIN_LENGTH:
            raise SettingError("experiment.lengths", length, f"is below {MIN_LENGTH} tokens", "[2048,4096]")
        if max_positions is not None and length + longest_answer + 2 * (cfg.gamma + 1) > max_positions:
            raise SpecAttnError(f"experiment.lengths: {length} + the longest answer ({longest_answer} tokens, + 2 steps "
                                f"of gamma + 1) exceed what model={cfg.model.name} supports ({max_positions} positions)")
    for depth in _list(exp.depths, "experiment.depths", "[0.0,0.5,1.0]"):
        if isinstance(depth, bool) or not isinstance(depth, (int, float)) or not 0.0 <= depth <= 1.0:
            raise SettingError("experiment.depths", depth, "must be a number in [0, 1]", "[0.0,0.5,1.0]")
    positive_int(exp.samples, "experiment.samples", "2")
    positive_int(exp.batch, "experiment.batch", "16")


def _check_rows(cfg) -> list[Row]:
    """``p_values``, ``match_p``, every row of ``experiment.rows`` (:func:`specattn.experiments.rows.table_rows`),
    ``min_dense_accuracy`` and the draft's reads (``decode.draft_*``)."""
    value = cfg.experiment.min_dense_accuracy
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise SettingError("experiment.min_dense_accuracy", value, "must be a number in [0, 1]", "0.5")
    d = cfg.decode
    check_draft_reads(d.draft_reads, d.draft_p, d.draft_refresh, d.draft_window, d.draft_sinks, cfg.head_agg,
                      d.draft_refresh_below, d.get("draft_dense_layers"))
    rows = check_table_keys(cfg)  # composes each row's conf/method config
    decoder = cfg.experiment.get("decoder", "reference")
    if decoder not in DECODERS:
        raise SettingError("experiment.decoder", decoder, f"must be one of {', '.join(DECODERS)}", "graph")
    if decoder == "graph":
        settings = decoder_settings(cfg, ())  # the layer map is the pair's, known once it loads
        for row in rows:  # a matched row gets a fraction of the dense reads per sample
            graph_settings(row.method if row.match is None else matched(row, 0.5), settings)
    return rows


def decoder_settings(cfg, layer_map: tuple[int, ...]):
    """The decoders' settings (greedy, stopping at end of sequence); ``max_new_tokens`` is set per task."""
    return replace(run_settings(cfg, layer_map), temperature=0.0, top_k=0, top_p=1.0, stop_at_eos=True)


def batches(items: list[Item], size: int) -> list[list[int]]:
    """Indices of ``items`` (the grid's order) in groups of at most ``size`` that one prefill can decode
    together: the same task (its answer cap) and length (prompts exactly that long), taken in grid order, so a
    run stopped early has done the first samples of every task, as without batching."""
    groups, open_ = [], {}
    for index, item in enumerate(items):
        group = open_.setdefault((item.task, item.context_len), [])
        group.append(index)
        if len(group) == size:
            groups.append(open_.pop((item.task, item.context_len)))
        nxt = items[index + 1] if index + 1 < len(items) else None
        if nxt is None or nxt.context_len != item.context_len:  # a length's last sample: flush its groups
            groups += [g for (_, length), g in open_.items() if length == item.context_len]
            open_ = {key: g for key, g in open_.items() if key[1] != item.context_len}
    return groups


def sample_rows(cfg, index: int, sample: RetrievalSample, measured: list[tuple], prefill_seconds: float,
                decoder: SpeculativeDecoder, dataset: str, batch_size: int = 1) -> pd.DataFrame:
    """One row per method setting of one sample: the decoding row (:func:`specattn.decode.decode_metrics.sequence_row`:
    tokens, steps, KV reads and reductions, agreement with dense, times) and the retrieval columns."""
    item, instance, prompt = sample.item, sample.instance, sample.prompt
    tokenizer = decoder.pair.tokenizer
    ids = Sample(item.sample_id, torch.tensor(prompt.ids))
    reference = measured[0][1].tokens
    rows = []
    for method, trace, timing in measured:
        text = tokenizer.decode(trace.tokens, skip_special_tokens=True)
        row = sequence_row(cfg, index, ids, method, trace, reference, math.nan, math.nan, timing, batch_size,
                           prefill_seconds, text)
        for column in DROPPED:
            row.pop(column)
        scored = score(text, instance.answer, instance.expected, instance.universe)
        row.update({
            "task": item.task, "context_len": item.context_len, "depth": item.needle_depth, "sample": item.index,
            "seed": int(cfg.seed),
            "grid_depth": item.depth,
            "item": index, "dataset": dataset, "temperature": 0.0, "max_new_tokens": decoder.settings.max_new_tokens,
            "depth_actual": prompt.depth_of(0), "needle_position": prompt.needle_positions[0],
            "needles": len(instance.needles), "origin": sample.origin, "question": instance.question,
            "expected": ", ".join(instance.expected), "answer": ", ".join(scored.answer), "correct": scored.correct,
            "score": scored.score, "eos": bool(trace.tokens) and trace.tokens[-1] in decoder.eos_ids,
        })
        rows.append(row)
    return pd.DataFrame(rows)


def evaluate(cfg, decoder: SpeculativeDecoder, samples: list[RetrievalSample], indices: list[int], dataset: str,
             rows: list[Row]) -> list[pd.DataFrame]:
    """Prefill the samples' prompts (one task and length) once, together, decode them under every row (dense
    first; a matched row reads, per sample, the sparse-layer KV its target row read on that sample), return each
    sample's rows. Each sequence gets the seed and the method a run of its own gets (the decoder gives a batch's
    prompts what single runs give them: tested in float32; bfloat16 may round near-ties differently)."""
    prefill = decoder.prefill(torch.stack([torch.tensor(sample.prompt.ids) for sample in samples]))
    seeds = [int(cfg.seed) + index for index in indices]
    measured: list[list[tuple]] = [[] for _ in samples]
    traces: dict[str, list] = {}  # row label -> the samples' traces
    for row in rows:
        methods = [row.method if row.match is None else matched(row, trace.reads.sparse_layer_reduction)
                   for trace in traces.get(row.match, [None] * len(samples))]
        out = decoder.generate(prefill, methods, seeds)
        traces[row.method.label] = out.traces
        for mine, method, trace in zip(measured, methods, out.traces):
            mine.append((method, trace, out.timing))
    return [sample_rows(cfg, index, sample, mine, prefill.seconds, decoder, dataset, len(samples))
            for index, sample, mine in zip(indices, samples, measured)]


def run(ctx: RunContext) -> ExperimentResult:
    """Every sample of the grid, resuming from ``parts/``; the summary, heatmaps and the dense check."""
    cfg = ctx.cfg
    exp = cfg.experiment
    rows = table_rows(cfg)
    items = grid(list(exp.tasks), [int(n) for n in exp.lengths], [float(d) for d in exp.depths], int(exp.samples))
    kinds = sorted({TASKS[task].haystack for task in exp.tasks})
    sources = {kind: built(exp.haystacks[kind], f"experiment.haystacks.{kind}") for kind in kinds}
    documents = {kind: source.documents() for kind, source in sources.items()}  # before the weights load
    pair = load_pair_for(cfg)
    base = decoder_settings(cfg, layer_mapping(cfg, pair))
    make = DECODERS[exp.get("decoder", "reference")]
    longest = max(int(exp.max_new_tokens[task]) for task in exp.tasks)
    shared = {"pool": GraphPool(pair, longest)} if make is GraphTraceDecoder else {}  # one set of caches for all tasks
    decoders = {task: make(pair, replace(base, max_new_tokens=int(exp.max_new_tokens[task])), eos_ids(pair), **shared)
                for task in exp.tasks}
    if make is SpeculativeDecoder:
        prepare_for_decoding(pair)
    factory = SampleFactory(pair.tokenizer, documents, int(cfg.seed))
    parts = SampleParts(ctx.run_dir)
    frames, correct = {}, {}
    bar = tqdm(total=len(items), desc="retrieval", unit="sample", disable=not cfg.progress)
    for group in batches(items, int(exp.batch)):
        done = {index: parts.load(index) for index in group}
        todo = [index for index in group if done[index] is None]
        if todo:
            task = items[todo[0]].task
            start = time.perf_counter()
            made = evaluate(cfg, decoders[task], [factory.make(items[i]) for i in todo], todo,
                            sources[TASKS[task].haystack].name, rows)
            for index, frame in zip(todo, made):
                frame["sample_seconds"] = (time.perf_counter() - start) / len(todo)
                parts.save(index, frame)
                done[index] = frame
        for index in group:
            frame = frames[index] = done[index]
            for row in frame.itertuples():
                correct.setdefault(row.setting, []).append(float(row.correct))
            ctx.logger.log_metrics({"sample": index, **{f"correct/{row.setting}": float(row.correct)
                                                        for row in frame.itertuples()}})
        bar.update(len(group))
        bar.set_postfix({setting: f"{sum(values) / len(values):.2f}" for setting, values in list(correct.items())[:2]})
    bar.close()
    results = pd.concat([frames[index] for index in sorted(frames)], ignore_index=True)
    summary = summarise(results)
    artifacts = plot_heatmaps(results, ctx.run_dir, title=f"{cfg.model.name}: ")
    artifacts["heatmaps"] = plot_overview(results, ctx.run_dir / "heatmaps.png", f"{cfg.model.name}: exact match "
                                          "over depth x length (tasks with a depth axis)")
    for row in uninformative(summary, float(exp.min_dense_accuracy)).itertuples():
        print(f"dense verifier accuracy {row.accuracy:.0%} < experiment.min_dense_accuracy={exp.min_dense_accuracy} "
              f"on {row.task} at {row.context_len} tokens ({row.samples} samples): the task says little about the "
              "methods there (its rows stay in the table)")
    return ExperimentResult(results, summary, artifacts=artifacts, metrics=summary_metrics(summary))
