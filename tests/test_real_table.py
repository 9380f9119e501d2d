"""scripts/real_table.py pools the archived H100 runs into issue 23's real table: every point of 2K-32K x batch
1/4/16/32 once, six modes each, the later run winning a point two runs hold, each row naming its run and whether
its norms were folded."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("real_table", ROOT / "scripts" / "real_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_point_once_with_its_latest_run(tmp_path, capsys):
    script = load_script()
    assert script.main([str(tmp_path / "t.md")]) == 0
    lines = (tmp_path / "t.md").read_text().splitlines()[2:]
    points = [line.split(" | ")[0].removeprefix("| ") for line in lines if not line.startswith("|  |")]
    assert points == [f"{c}K, {b}" for b in (1, 4, 16, 32) for c in (32, 16, 8, 2)]
    assert len(lines) == 16 * 6  # AR, dense SD, SpecAttn p=0.9 and 0.95, StreamingLLM and Quest matched
    run_of = {}
    for line in lines:
        if not line.startswith("|  |"):
            point = line.split(" | ")[0].removeprefix("| ")
        run_of.setdefault(point, set()).add(tuple(line.rstrip(" |").split(" | ")[-2:]))
    assert all(len(runs) == 1 for runs in run_of.values())  # one run a point, all its modes
    # the thirtieth session's run over the twenty-ninth's and the twenty-seventh's (all three hold 32K, batch 16)
    assert run_of["32K, 16"] == run_of["32K, 32"] == {("h100-30th-32k-b16-b32", "yes")}
    assert run_of["16K, 32"] == {("h100-29th-b32", "yes")}  # a point only an older run holds keeps it
    assert set().union(*(r for p, r in run_of.items() if p.endswith(", 4"))) == {("h100-30th-b4", "yes")}
    assert all(folded == "yes" for runs in run_of.values() for _, folded in runs)  # no unfolded row left
    assert "table: " in capsys.readouterr().out


def test_a_missing_archive_file_is_named(tmp_path, monkeypatch):
    script = load_script()
    monkeypatch.setattr(script, "RUNS", [("gone", "h100-real-2026-12-06d/no_such_run")])
    try:
        script.lay_out(tmp_path)
    except FileNotFoundError as error:
        assert "no_such_run_modes.csv is missing" in str(error) and "gone" in str(error)
    else:
        raise AssertionError("a missing file passed")


def test_the_policy_table_holds_each_policy_point_with_its_own_run(tmp_path):
    script = load_script()
    assert script.main(["--policies", str(tmp_path / "p.md")]) == 0
    lines = (tmp_path / "p.md").read_text().splitlines()[2:]
    points = [line.split(" | ")[0].removeprefix("| ") for line in lines if not line.startswith("|  |")]
    assert points == ["32K, 16", "16K, 16", "8K, 16", "2K, 16", "32K, 32"]
    modes = [line.split(" | ")[1] for line in lines]
    assert modes == ["AR", "dense SD", "SpecAttn p=0.9", "SpecAttn p=0.95", "SpecAttn p=0.9 draft=first_window",
                     "SpecAttn p=0.9 draft=reuse"] * 5
    assert {line.rstrip(" |").split(" | ")[-2] for line in lines} == {f"h100-31st-{p}" for p in
                                                                   ("32k_b16", "16k_b16", "8k_b16", "2k_b16", "32k_b32")}
    assert script.main(["--policies"]) == 2  # no table path: the usage line
