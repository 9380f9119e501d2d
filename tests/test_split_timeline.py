"""``scripts/gpu/split_timeline.py``: the tree's split kernel with clock reads (patched at anchors that must each occur
once) and the summary of the programs' records (times relative to the first start, the low word's wrap, the fit of a
program's duration over its units). The timed kernel itself runs on the GPU only (inline PTX)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from .availability import needs_interpreter

GPU_SCRIPTS = str(Path(__file__).resolve().parents[1] / "scripts" / "gpu")


def timeline(monkeypatch):
    """scripts/gpu/split_timeline.py as a module (it imports the kernels: triton)."""
    monkeypatch.syspath_prepend(GPU_SCRIPTS)
    import split_timeline

    return split_timeline


@needs_interpreter
def test_the_timed_source_is_the_trees_with_its_clock_reads_and_a_moved_anchor_fails(monkeypatch):
    import specattn.gpu.kernels.sparse_attn as tree

    split_timeline = timeline(monkeypatch)
    source = Path(tree.__file__).read_text()
    timed = split_timeline.timed_source(source)
    split = timed[timed.index("def _split_kernel("):timed.index("def _own_keys(")]
    assert [line.strip().split(" = ")[0] for line in split.splitlines() if "_clock(" in line] == [
        "t_start, _", "t_lists, _", "t_end, sm"]
    assert "def _clock(after):" in timed and split.count("tl.store(rec") == 6
    untimed = timed.replace(split_timeline.CLOCK, "")  # only the helper and the split kernel's added lines
    for line in split.splitlines():
        if "_clock(" in line or "tl.store(rec" in line or "rec = tk_ptr" in line or line.strip() in (
                "done = 0", "taken = 0", "done += tl.maximum(u1 - u, 0)", "taken += 1"):
            untimed = untimed.replace(line + "\n", "", 1)
    assert untimed == source
    with pytest.raises(ValueError, match="anchor not found once"):
        split_timeline.timed_source(source.replace(split_timeline.UNITS, split_timeline.UNITS.replace("(r,", "(r ,")))
    module = split_timeline.timed_module()
    assert hasattr(module, "_clock") and module.MERGE_ROWS == tree.MERGE_ROWS


@needs_interpreter
def test_the_summary_recovers_a_programs_fixed_cost_and_unit_time_across_the_low_words_wrap(monkeypatch):
    split_timeline = timeline(monkeypatch)
    rng = np.random.default_rng(0)
    programs = 40
    units = rng.integers(1, 9, programs)
    units[-3:] = 0  # programs past the work: left out
    t0 = (1 << 32) - 2_000  # ns: the low word wraps 2 us after the first start
    start = t0 + rng.integers(0, 1_500, programs)
    lists = start + 700
    end = start + 3_000 + 5_000 * units  # a 3-us fixed cost, 5 us a unit
    sm = np.arange(programs) % 20  # SMs 0-16 hold two programs with work, 17-19 one (their second has none)
    rec = np.zeros((programs, split_timeline.SLOTS), dtype=np.int64)
    rec[:, 0], rec[:, 1], rec[:, 2], rec[:, 3], rec[:, 4], rec[:, 5] = start, lists, end, sm, units, 1 + units % 2
    rec = ((rec + (1 << 31)) % (1 << 32) - (1 << 31)).astype(np.int32)  # as the kernel stores them: int32 words
    table = split_timeline.programs(rec)  # the per-program rows behind the summary (and --dump's CSV)
    out = split_timeline.summary(table)
    live = units > 0
    assert out["programs"] == live.sum() and out["sms"] == len(set(sm[live].tolist()))
    assert out["fit"] == pytest.approx((3.0, 5.0), abs=1e-6)
    assert out["startup"] == pytest.approx((0.7, 0.7, 0.7))
    first = start[live].min()
    assert out["start"][0] == 0 and out["start"][2] == pytest.approx((start[live].max() - first) / 1e3)
    assert out["span"] == pytest.approx((end[live].max() - first) / 1e3)
    assert out["duration"][0] == pytest.approx(3.0 + 5.0 * units[live].min())
    assert out["ranges"] == (1.0, float(np.median(1 + units[live] % 2)), 2.0)
    alone = live & (sm >= 17)
    assert out["alone|shared"] == pytest.approx((float(np.median(3 + 5 * units[alone])),
                                                 float(np.median(3 + 5 * units[live & ~alone]))))
    assert table.shape == (live.sum(), len(split_timeline.COLUMNS))
    assert table[:, 0].tolist() == np.flatnonzero(live).tolist()  # each row names its program
    assert table[:, 1] == pytest.approx((start[live] - first) / 1e3)
    assert table[:, 3] - table[:, 1] == pytest.approx(3.0 + 5.0 * units[live])
    assert table[:, 4].tolist() == sm[live].tolist() and table[:, 5].tolist() == units[live].tolist()


@needs_interpreter
def test_sm_halves_tell_fixed_sm_speeds_from_ones_that_change_between_calls(monkeypatch):
    split_timeline = timeline(monkeypatch)
    rng = np.random.default_rng(1)
    sms, calls = 30, 6
    speed = rng.uniform(40, 53, sms)  # us a program takes on each SM

    def tables(durations):  # calls' (programs, 7) tables: two programs an SM, starting at 0
        out = []
        for d in durations:
            sm = np.repeat(np.arange(sms), 2).astype(float)
            dur = np.repeat(d, 2)
            out.append(np.column_stack([np.arange(2 * sms), np.zeros(2 * sms), np.full(2 * sms, 0.7), dur, sm,
                                        np.full(2 * sms, 8.0), np.ones(2 * sms)]))
        return out

    fixed = split_timeline.sm_halves(tables([speed + rng.normal(0, 0.3, sms) for _ in range(calls)]))
    drawn = split_timeline.sm_halves(tables([rng.permutation(speed) for _ in range(calls)]))
    assert fixed["sm r"] > 0.95 and abs(drawn["sm r"]) < 0.6
    assert fixed["sm medians"][0] == pytest.approx(speed.min(), abs=1.0)
    assert fixed["sm medians"][2] == pytest.approx(speed.max(), abs=1.0)
