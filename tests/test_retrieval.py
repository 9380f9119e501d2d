"""experiment=retrieval: samples are deterministic by seed, exactly as long as asked, with needles at their
depth that occur nowhere else and gold answers that are right by construction; answer extraction on
hand-written model outputs; the config checks; an interrupted run resumes; collect and plots take the table."""

import math
import re

import pandas as pd
import pytest
import torch

from specattn.core.errors import SpecAttnError
from specattn.data.gutenberg import GutenbergBooks
from specattn.data.python_source import PythonSource
from specattn.data.sources import Document
from specattn.models.byte_tokenizer import byte_tokenizer
from specattn.results.collect import collect
from specattn.results.plots import write_plots
from specattn.retrieval.draws import Draws, sample_rng
from specattn.retrieval.generate import Item, SampleFactory, grid
from specattn.retrieval.report import main as report_main
from specattn.retrieval.report import grid_markdown, paired_vs_dense, summarise
from specattn.retrieval.scoring import extract, score
from specattn.retrieval.tasks import TASKS
from specattn.runs.app import execute
from specattn.runs.data_fingerprint import data_fingerprint
from specattn.runs.validate import validate

from .conftest import compose_config

CHATML = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
THREADS = torch.get_num_threads()
LENGTH = 2500  # bytes: every task fits with room to spare under the byte tokenizer


@pytest.fixture(scope="module")
def sources():
    return {"code": PythonSource("eval", min_chars=4096).documents(), "prose": GutenbergBooks("eval").documents()}


@pytest.fixture(scope="module")
def chat_tokenizer():
    """The tiny pair's byte tokenizer with a ChatML template, as an Instruct model's has."""
    tokenizer = byte_tokenizer()
    tokenizer.chat_template = CHATML
    return tokenizer


def items(length=LENGTH, depths=(0.0, 0.3, 1.0)):
    return grid(list(TASKS), [length], list(depths), 1)


def test_samples_are_a_function_of_seed_task_length_depth_and_index(sources, chat_tokenizer):
    first, again, other = (SampleFactory(chat_tokenizer, sources, seed) for seed in (0, 0, 1))
    for item in items():
        a, b, c = first.make(item), again.make(item), other.make(item)
        assert a.prompt.ids == b.prompt.ids and a.instance == b.instance, item
        assert a.prompt.ids != c.prompt.ids and a.instance.expected != c.instance.expected, item
    made = [first.make(item).prompt.ids for item in items()]
    assert len(set(made)) == len(made)  # no two cells share a sample


def test_the_grid_gives_every_task_its_samples_per_length():
    cells = grid(["needle_code", "common_words"], [2048, 4096], [0.0, 0.5], 3)
    for length in (2048, 4096):
        code = [c for c in cells if c.task == "needle_code" and c.context_len == length]
        words = [c for c in cells if c.task == "common_words" and c.context_len == length]
        assert sorted((c.depth, c.index) for c in code) == [(d, i) for d in (0.0, 0.5) for i in range(3)]
        assert sorted((c.depth, c.index) for c in words) == [(d, i) for d in (0.0, 0.5) for i in range(3)]
        assert all(math.isnan(c.needle_depth) for c in words) and all(c.needle_depth == c.depth for c in code)
    assert [c.context_len for c in cells] == sorted(c.context_len for c in cells)  # shorter lengths first
    assert len({c.sample_id for c in cells}) == len(cells)


@pytest.mark.parametrize("length", [700, LENGTH, 4000])
def test_prompts_have_the_requested_length_and_the_template_around_them(sources, chat_tokenizer, length):
    factory = SampleFactory(chat_tokenizer, sources, 0)
    for item in items(length) if length > 700 else [i for i in items(length) if i.task != "common_words"]:
        sample = factory.make(item)
        ids, text = sample.prompt.ids, sample.prompt.text
        assert len(ids) == length, item
        assert chat_tokenizer.decode(list(ids)) == text  # the ids are the text
        assert text.startswith("<|im_start|>user\n" + sample.task.instruction + "\n\n")
        assert text.endswith(sample.instance.question + "<|im_end|>\n<|im_start|>assistant\n")
        if sample.task.haystack == "code":
            assert text.count("```") == 2  # the fence opens and closes once: no filler line breaks it


def test_a_prompt_too_short_for_its_task_is_one_line(sources, chat_tokenizer):
    with pytest.raises(SpecAttnError, match="experiment.lengths: task common_words: a context length of 300 tokens "
                                            "leaves -?[0-9]+ tokens of haystack .*: use longer lengths"):
        SampleFactory(chat_tokenizer, sources, 0).make(Item("common_words", 300, 0.5, 0))


def test_needles_lie_at_their_depth(chat_tokenizer):
    """Filler of 20-token lines: a needle lands within half a line of its depth (plus the needles
    placed before it), and its ids are in the prompt where it says."""
    lines = "".join(f"filler line {i:06d}\n" for i in range(20000))  # 20 bytes a line
    factory = SampleFactory(chat_tokenizer, {"code": [Document("lines", lines)], "prose": [Document("lines", lines)]}, 0)
    for item in items(3000, depths=(0.0, 0.1, 0.25, 0.5, 0.77, 1.0)):
        sample = factory.make(item)
        prompt, needles = sample.prompt, sample.instance.needles
        for i, needle in enumerate(needles):
            ids = tuple(chat_tokenizer(needle.text)["input_ids"])
            assert prompt.ids[prompt.needle_positions[i]:][: len(ids)] == ids, (item, i)
            offset = prompt.needle_positions[i] - prompt.haystack_start
            before = sum(len(n.text) for j, n in enumerate(needles) if prompt.needle_positions[j] < prompt.needle_positions[i])
            filler = prompt.haystack_len - sum(len(n.text) for n in needles)
            assert abs(offset - before - needle.depth * filler) <= 10, (item, i, offset, needle.depth)
        if not sample.task.spread:
            assert needles[0].depth == item.depth
            assert abs(prompt.depth_of(0) - item.depth) <= (10 + sum(len(n.text) for n in needles)) / prompt.haystack_len


def test_needles_occur_nowhere_else_in_the_prompt(sources, chat_tokenizer):
    factory = SampleFactory(chat_tokenizer, sources, 3)
    for item in items(4000):
        sample = factory.make(item)
        rest = sample.prompt.text.replace(sample.instance.question, "")
        for needle in sample.instance.needles:
            rest = rest.replace(needle.text, "", 1)
        planted = re.findall(r"[A-Za-z]+(?:[_-][A-Za-z]+)+|\d{7}", "".join(n.text for n in sample.instance.needles))
        for token in set(planted + list(sample.instance.expected)):
            if token != "get":
                assert token.casefold() not in rest.casefold(), (item, token)


def test_a_drawn_word_that_occurs_in_the_haystack_is_drawn_again():
    first = Draws(sample_rng(0, "t", 100, 0.5, 0), "").word()
    redrawn = Draws(sample_rng(0, "t", 100, 0.5, 0), f"some text with {first.upper()} in it").word()
    assert redrawn != first and redrawn.casefold() not in first


def namespace(sample) -> dict:
    """The planted code, executed in prompt order."""
    order = sorted(range(len(sample.instance.needles)), key=lambda i: sample.prompt.needle_positions[i])
    scope: dict = {}
    for i in order:
        exec(sample.instance.needles[i].text, scope)  # noqa: S102 - our own generated assignments
    return scope


def gold(sample) -> set[str]:
    """The answer to the question, worked out from the prompt's text alone."""
    task, text, question = sample.task.name, sample.prompt.text, sample.instance.question
    if task in ("needle_prose", "multikey", "multivalue"):
        key = re.search(r"magic numbers? for (\S+) mentioned", question).group(1)
        return set(re.findall(rf"special magic numbers for {re.escape(key)} is: (\d+)\.", text))
    if task == "common_words":
        counts = pd.Series(re.findall(r"^Keyword: (\w+)$", text, flags=re.M)).value_counts()
        assert counts.iloc[2] > counts.iloc[3]  # the top 3 are well defined
        return set(counts.index[:3])
    scope = namespace(sample)
    if task == "vartrack":
        value = int(re.search(r"hold the value (\d+)", question).group(1))
        return {name for name, bound in scope.items() if bound == value and name.isupper()}
    if task == "code_two_hop":
        return {str(scope[re.search(r"calling (\w+)\(\)", question).group(1)]())}
    asked = re.findall(r"\b([A-Z]+_[A-Z]+)\b", question)
    return {str(scope[name]) for name in asked}


def test_gold_answers_are_right_by_construction(sources, chat_tokenizer):
    factory = SampleFactory(chat_tokenizer, sources, 5)
    seen = set()
    for item in items(3000, depths=(0.0, 0.5, 0.9, 1.0)):
        sample = factory.make(item)
        assert gold(sample) == set(sample.instance.expected), item
        seen.add(item.task)
    assert seen == set(TASKS)


@pytest.mark.parametrize("text,rule,expected,correct,partial", [
    ("7345912", "number", ("7345912",), True, 1.0),
    ("The value is 7345912.", "number", ("7345912",), True, 1.0),
    ("```python\nVOREK_TALUMIS = 7345912\n```", "number", ("7345912",), True, 1.0),
    ("**7,345,912**", "number", ("7345912",), True, 1.0),
    ("`7345912`", "number", ("7345912",), True, 1.0),
    ("1. 7345912", "number", ("7345912",), True, 1.0),  # list markers are no answers
    ("The value is 7345913.", "number", ("7345912",), False, 0.0),
    ("It is 1234567, or maybe 7345912", "number", ("7345912",), False, 1.0),  # the first number counts
    ("I cannot find it.", "number", ("7345912",), False, 0.0),
    ("", "number", ("7345912",), False, 0.0),
    ("2222222, 1111111", "numbers", ("1111111", "2222222"), True, 1.0),
    ("1111111,2222222", "numbers", ("1111111", "2222222"), True, 1.0),
    ("The numbers are:\n- 1111111\n- 2222222", "numbers", ("1111111", "2222222"), True, 1.0),
    ("1111111, 2222222, 3333333", "numbers", ("1111111", "2222222"), False, 1.0),  # an extra number
    ("1111111", "numbers", ("1111111", "2222222"), False, 0.5),
    ("VOREK_TALUMIS, KIPAN_MOSET", "names", ("VOREK_TALUMIS", "KIPAN_MOSET"), True, 1.0),
    ("`vorek_talumis`, `kipan_moset`", "names", ("VOREK_TALUMIS", "KIPAN_MOSET"), True, 1.0),
    ("The constants are **VOREK_TALUMIS** and KIPAN_MOSET.", "names", ("VOREK_TALUMIS", "KIPAN_MOSET"), True, 1.0),
    ("```\nVOREK_TALUMIS\nKIPAN_MOSET\n```", "names", ("VOREK_TALUMIS", "KIPAN_MOSET"), True, 1.0),
    ("VOREK_TALUMIS", "names", ("VOREK_TALUMIS", "KIPAN_MOSET"), False, 0.5),
    ("VOREK_TALUMIS, KIPAN_MOSET, DEFAULT_TIMEOUT", "names", ("VOREK_TALUMIS", "KIPAN_MOSET"), False, 1.0),
    ("VOREK TALUMIS, KIPAN MOSET", "names", ("VOREK_TALUMIS", "KIPAN_MOSET"), False, 0.0),
])
def test_answer_extraction_on_model_outputs(text, rule, expected, correct, partial):
    result = score(text, rule, expected)
    assert (result.correct, result.score) == (correct, partial), result


@pytest.mark.parametrize("text,correct,partial", [
    ("zorvel, kiptan, mubex", True, 1.0),
    ("The three most common keywords are: Zorvel, Kiptan and Mubex.", True, 1.0),
    ("1. zorvel\n2. kiptan\n3. mubex", True, 1.0),
    ("zorvel, kiptan, dorap", False, 2 / 3),  # a planted word that is not among the top 3
    ("zorvel, kiptan", False, 2 / 3),
])
def test_common_words_count_planted_words_only(text, correct, partial):
    universe = ("zorvel", "kiptan", "mubex", "dorap", "lifen")
    result = score(text, "words", ("zorvel", "kiptan", "mubex"), universe)
    assert (result.correct, result.score) == (correct, pytest.approx(partial)), result
    assert extract("Keywords: ZORVEL, the end", "words", universe) == ("zorvel",)


@pytest.mark.parametrize("override,fragment", [
    ("experiment.tasks=[needle_code,nope]", "experiment.tasks: 'nope' is no task: allowed are needle_code"),
    ("experiment.tasks=[]", "experiment.tasks=[] must be a non-empty list"),
    ("experiment.lengths=[100]", "experiment.lengths=100 is below 256 tokens"),
    ("experiment.lengths=[40000]", "experiment.lengths: 40000 + the longest answer (48 tokens"),
    ("experiment.depths=[0.5,1.5]", "experiment.depths=1.5 must be a number in [0, 1]"),
    ("experiment.samples=0", "experiment.samples=0 must be a positive integer"),
    ("experiment.batch=0", "experiment.batch=0 must be a positive integer"),
    ("experiment.max_new_tokens.vartrack=0", "experiment.max_new_tokens.vartrack=0 must be a positive integer"),
    ("~experiment.max_new_tokens.vartrack", "experiment.max_new_tokens has no entry for task vartrack"),
    ("experiment.match_p=0.99", "experiment.rows: streaming matches 'specattn p=0.99', which is no unmatched row"),
    ("experiment.p_values=[1.5]", "experiment.p_values"),
    ("experiment.rows=[dense,nope]", "row method 'nope' is not a conf/method config"),
    ("decode.draft_reads=nope", "decode.draft_reads='nope' is unknown"),
    ("experiment.min_dense_accuracy=2", "experiment.min_dense_accuracy=2 must be a number in [0, 1]"),
    ("experiment.haystacks.code=null", "experiment.haystacks.code is not set, and tasks needle_code"),
    ("experiment.decoder=nope", "experiment.decoder='nope' must be one of reference, graph"),
])
def test_bad_settings_are_one_line_before_anything_loads(override, fragment):
    with pytest.raises(SpecAttnError) as error:
        validate(compose_config("experiment=retrieval", override))
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_rows_the_graph_decoder_cannot_run_are_refused_before_anything_loads():
    cfg = compose_config("experiment=retrieval", "experiment.decoder=graph", "experiment.extra_rows=[draft_topk]")
    with pytest.raises(SpecAttnError, match="method 'draft_topk' .* does not run in the graph decoder"):
        validate(cfg)
    validate(compose_config("experiment=retrieval", "experiment.decoder=graph"))  # the default rows, the oracle too


def test_the_haystacks_are_the_runs_input_data():
    stamps = data_fingerprint(compose_config("experiment=retrieval"))
    assert set(stamps) >= {"experiment.haystacks.code", "experiment.haystacks.prose"}
    assert stamps["experiment.haystacks.prose"] == GutenbergBooks("eval").fingerprint()


COLUMNS = {"task", "context_len", "depth", "sample", "method", "setting", "correct", "score", "answer", "expected",
           "new_tokens", "steps", "accepted", "drafted", "tau", "tau_steps", "kv_reduction", "kv_reduction_sparse_layers", "kv_reads",
           "kv_dense_reads", "depth_actual", "needle_position", "text", "question", "eos", "sample_seconds"}


ROWS = "experiment.rows=[dense,{method:specattn,p:0.95},{method:streaming,match:'specattn p=0.95'}]"
GRAPH_ROWS = ("experiment.rows=[dense,{method:specattn,p:0.95},{method:oracle_topp,p:0.9},"
              "{method:quest,match:'specattn p=0.95'}]")


def run_config(model_dir, outputs, *more):
    """A small retrieval run of the tiny pair whose folder is ``outputs`` (no Hydra app: in-process)."""
    return compose_config("experiment=retrieval", "model=tiny_random", f"model.verifier.path={model_dir}",
                          "chunk_size=8", "experiment.tasks=[needle_code,vartrack]", "experiment.lengths=[700]",
                          "experiment.depths=[0.0,1.0]", "experiment.samples=1", "experiment.max_new_tokens.vartrack=12",
                          ROWS, "logger=none", "progress=false", f"paths.outputs={outputs}", *more)


def test_batches_keep_one_task_and_length_and_the_grid_order():
    from specattn.experiments.retrieval import batches

    cells = grid(["needle_code", "vartrack"], [700, 900], [0.0, 0.5, 1.0], 2)
    groups = batches(cells, 4)
    assert sorted(i for g in groups for i in g) == list(range(len(cells)))  # each sample once
    for group in groups:
        assert len(group) <= 4 and len({(cells[i].task, cells[i].context_len) for i in group}) == 1
        assert group == sorted(group)
    assert [cells[g[0]].context_len for g in groups] == sorted(cells[g[0]].context_len for g in groups)
    assert [len(g) for g in groups] == [4, 4, 2, 2] * 2 and batches(cells, 1) == [[i] for i in range(len(cells))]


def test_a_batched_run_gives_each_sample_what_a_run_of_its_own_gives(tiny_model_dir, tmp_path):
    """experiment.batch=2 decodes the two samples of each task from one prefill (float32): the same answers,
    tokens, steps and reads as one sample at a time, the matched row reading per sample what its target read."""
    torch.set_num_threads(1)
    try:
        single = execute(run_config(tiny_model_dir, tmp_path / "one"))
        together = execute(run_config(tiny_model_dir, tmp_path / "two", "experiment.batch=2"))
    finally:
        torch.set_num_threads(THREADS)
    a, b = (pd.read_parquet(path) for path in (single, together))
    timing = ["sample_seconds", "prefill_s", "draft_s", "verify_s", "accept_s", "decode_s", "tokens_per_s", "batch_size"]
    assert (a.batch_size == 1).all() and (b.batch_size == 2).all()
    pd.testing.assert_frame_equal(a.drop(columns=timing), b.drop(columns=timing))


def test_the_graph_decoder_gives_the_reference_decoders_table(tiny_model_dir, tmp_path):
    """experiment.decoder=graph (the graph decoder's eager CPU path, float32, batches of 2): every row equal to
    the reference decoder's but the times and the draft's reads (which the graph decoder does not count)."""
    torch.set_num_threads(1)
    try:
        reference = execute(run_config(tiny_model_dir, tmp_path / "ref", "experiment.batch=2", GRAPH_ROWS))
        graph = execute(run_config(tiny_model_dir, tmp_path / "graph", "experiment.batch=2", "experiment.decoder=graph",
                                   GRAPH_ROWS))
    finally:
        torch.set_num_threads(THREADS)
    a, b = (pd.read_parquet(path) for path in (reference, graph))
    skip = [c for c in a if c.startswith("draft_") and c not in ("draft_reads",) or c in (
        "sample_seconds", "prefill_s", "verify_s", "accept_s", "decode_s", "tokens_per_s")]
    assert set(a.method) == {"dense", "specattn", "oracle_topp", "quest"}
    assert (b.draft_kv_dense_reads == 0).all() and (a.draft_kv_dense_reads > 0).all()
    assert (b.kv_reduction_sparse_layers[b.method != "dense"] > 0).all()
    pd.testing.assert_frame_equal(a.drop(columns=skip), b.drop(columns=skip))


def test_an_interrupted_run_resumes_and_its_table_collects_and_plots(tiny_model_dir, tmp_path, capsys):
    """Generation, scoring and resume on the tiny pair, in-process (to keep CI short): a finished run's folder
    loses its results and its last samples' parts, as a run killed after two samples leaves it (the kill
    itself, atomic parts and the stale lock are the run plumbing's, tested with SIGKILL in test_run_folders);
    the run again keeps the finished parts and recomputes the rest to the same rows."""
    folder = tmp_path / "out" / "retrieval" / "run"
    torch.set_num_threads(1)  # small ops: one thread is faster
    try:
        execute(run_config(tiny_model_dir, folder))
        first = pd.read_parquet(folder / "results.parquet")
        (folder / "results.parquet").unlink()
        for index in (2, 3):
            (folder / "parts" / f"sample-{index:05d}.parquet").unlink()
        kept = {p.name: p.stat().st_mtime_ns for p in (folder / "parts").glob("*.parquet")}
        assert len(kept) == 2
        capsys.readouterr()
        execute(run_config(tiny_model_dir, folder))
    finally:
        torch.set_num_threads(THREADS)
    printed = capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in (folder / "parts").glob("*.parquet") if p.name in kept} == kept
    results = pd.read_parquet(folder / "results.parquet")
    timing = ["sample_seconds", "prefill_s", "draft_s", "verify_s", "accept_s", "decode_s", "tokens_per_s"]
    pd.testing.assert_frame_equal(results.drop(columns=timing), first.drop(columns=timing))  # resumed = uninterrupted
    assert COLUMNS <= set(results.columns)
    assert list(results.setting.unique()) == ["dense", "specattn p=0.95", "streaming match=specattn p=0.95 n_sinks=4"]
    assert len(results) == 2 * 2 * 3 and set(results.context_len) == {700} and set(results.depth) == {0.0, 1.0}
    assert set(results.grid_depth) == {0.0, 1.0} and (results.prompt_len == 700).all()
    assert results.groupby(["task", "depth", "sample"]).expected.nunique().eq(1).all()
    dense = results[results.method == "dense"]
    assert (dense.kv_reduction == 0).all() and (dense.match_rate == 1).all() and (dense.new_tokens <= dense.max_new_tokens).all()
    assert (results[results.task == "vartrack"].new_tokens <= 12).all()
    for sample, rows in results.groupby("item"):  # the baseline reads what SpecAttn p=0.95 read on that sample
        target = rows[rows.setting == "specattn p=0.95"].kv_reduction_sparse_layers.iloc[0]
        streaming = rows[rows.method == "streaming"].kv_reduction_sparse_layers.iloc[0]
        assert target > 0 and abs(streaming - target) < 0.1, sample
    rules = {"needle_code": "number", "vartrack": "names"}
    for row in results.itertuples():  # each row is its text's score
        assert row.correct == score(row.text, rules[row.task], tuple(row.expected.split(", "))).correct
    assert "dense verifier accuracy 0% < experiment.min_dense_accuracy=0.5 on needle_code at 700 tokens" in printed
    assert (folder / "heatmaps.png").is_file() and (folder / "heatmap-specattn_p_0.95.png").is_file()

    collected = collect(tmp_path / "out")
    summary = summarise(collected)
    assert set(summary.task) == {"needle_code", "vartrack", "all"}
    assert "| vartrack | 700 | 2 |" in grid_markdown(summary)
    collected.to_parquet(tmp_path / "collected.parquet")
    assert report_main([str(tmp_path / "collected.parquet")]) == 0
    printed = capsys.readouterr().out
    assert "tiny_random: exact match" in printed and "tiny_random: tau" in printed and "| all | 700 | 4 |" in printed
    written = write_plots(collected, tmp_path / "figures")
    assert {"retrieval-tiny_random", "retrieval-tiny_random-dense"} <= set(written)
    assert all(path.is_file() for path in written.values())


def _rows(correct: dict[str, list[bool]], length: int = 8192, task: str = "needle_code", start: int = 0) -> pd.DataFrame:
    """Retrieval-like rows: one per (setting, sample), ``correct[setting][i]`` for sample ``start + i``."""
    method = {"dense": "dense", "specattn p=0.95": "specattn", "streaming": "streaming"}
    return pd.DataFrame([{"model": "m", "task": task, "context_len": length, "sample_id": f"{task}/{length}/#{start + i}",
                          "setting": setting, "method": method[setting], "correct": ok, "score": float(ok),
                          "steps": 2, "new_tokens": 8, "drafted": 8, "accepted": 6, "kv_reads": 50, "kv_dense_reads": 100,
                          "kv_reads_sparse_layers": 40, "kv_dense_reads_sparse_layers": 90}
                         for setting, values in correct.items() for i, ok in enumerate(values)])


def test_the_paired_difference_to_dense_and_its_interval():
    rows = _rows({"dense": [True] * 8, "specattn p=0.95": [True] * 8, "streaming": [True, False] * 4})
    paired = paired_vs_dense(rows).set_index(["task", "setting"])
    streaming = paired.loc[("needle_code", "streaming")]
    assert streaming.samples == 8 and streaming.vs_dense == pytest.approx(-0.5)
    assert -1.0 <= streaming.vs_dense_low < -0.5 < streaming.vs_dense_high <= 0.0  # the interval holds the mean
    same = paired.loc[("needle_code", "specattn p=0.95")]
    assert same.vs_dense == same.vs_dense_low == same.vs_dense_high == 0.0
    assert set(paired.index.get_level_values("task")) == {"needle_code", "all"}
    # pairing is by sample: a setting that answered other samples than dense is compared on the shared ones only
    shifted = pd.concat([_rows({"dense": [True] * 4}), _rows({"streaming": [False] * 4}, start=2)])
    assert paired_vs_dense(shifted).set_index("task").loc["needle_code"].samples == 2


def test_the_report_reads_cut_runs_and_sample_files_and_pools_them(tmp_path, capsys):
    cut = tmp_path / "run"
    (cut / "parts").mkdir(parents=True)
    first = _rows({"dense": [True] * 3, "specattn p=0.95": [True, True, False], "streaming": [False] * 3})
    for i, (_, group) in enumerate(first.groupby("sample_id")):
        group.to_parquet(cut / "parts" / f"sample-{i:05d}.parquet")
    later = _rows({"dense": [True] * 2, "specattn p=0.95": [True] * 2, "streaming": [True] * 2}, start=3)
    later.to_csv(tmp_path / "later_samples.csv", index=False)
    assert report_main([str(cut), str(tmp_path / "later_samples.csv")]) == 0
    printed = capsys.readouterr().out
    assert "| needle_code | 8192 | 5 | 100% | 80% | 40% |" in printed  # 5 samples pooled: 4/5 and 2/5 right
    assert "| needle_code | 8192 | 5 | -20 [" in printed  # SpecAttn 20 points below dense, with its interval
    # the same samples twice are refused in one line, as is a folder that is no retrieval run
    assert report_main([str(cut), str(cut)]) == 2
    assert "in both" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert report_main([str(tmp_path / "empty")]) == 2
    assert "not a retrieval run" in capsys.readouterr().err


def test_runs_under_other_seeds_pool_as_other_samples_and_the_report_draws_them(tmp_path, capsys):
    rows = _rows({"dense": [True, True], "specattn p=0.95": [True, False]}).assign(depth=0.5, grid_depth=0.5)
    rows.assign(seed=0).to_csv(tmp_path / "seed0.csv", index=False)
    rows.assign(seed=1).to_csv(tmp_path / "seed1.csv", index=False)  # the same ids, drawn under another seed
    figures = tmp_path / "figures"
    assert report_main([str(tmp_path / "seed0.csv"), str(tmp_path / "seed1.csv"), "--figures", str(figures)]) == 0
    printed = capsys.readouterr().out
    assert "| needle_code | 8192 | 4 | -50 [" in printed  # 4 samples paired, not 2 collapsed into one id each
    names = sorted(path.name for path in figures.glob("*.png"))
    assert names[-1].startswith("retrieval-overview") and len(names) == 3  # and a heatmap per setting
    assert report_main([str(tmp_path / "seed1.csv"), str(tmp_path / "seed1.csv")]) == 2


def test_pooled_settings_with_fewer_samples_say_their_own_count(tmp_path, capsys):
    """Seeds 0 and 1 ran dense, SpecAttn and StreamingLLM; seed 2 only dense and SpecAttn: the table's samples
    column is the most of any setting and StreamingLLM's cells say they rest on fewer."""
    three = _rows({"dense": [True, True], "specattn p=0.95": [True, False], "streaming": [False, False]})
    two = _rows({"dense": [True, False], "specattn p=0.95": [True, True]})
    three.assign(seed=0).to_csv(tmp_path / "seed0.csv", index=False)
    two.assign(seed=2).to_csv(tmp_path / "seed2.csv", index=False)
    assert report_main([str(tmp_path / "seed0.csv"), str(tmp_path / "seed2.csv")]) == 0
    printed = capsys.readouterr().out
    assert "| needle_code | 8192 | 4 | 75% | 75% | 0% (n=2) |" in printed  # dense 3/4, SpecAttn 3/4, streaming 0/2
    assert "| needle_code | 8192 | 4 | +0 [" in printed and "-100 [-100, -100] (n=2) |" in printed
