"""scripts/real_table.py pools the archived H100 runs into issue 23's real table: every point of 2K-32K x batch
1/4/16/32 once, seven modes each (six where an older run lacks the first_window draft), the later run winning a point
two runs hold, each row naming its run, whether its norms were folded and whether the draft's projections ran as one
launches."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from matplotlib.image import imread

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("real_table", ROOT / "scripts" / "real_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_point_once_with_its_latest_run(tmp_path, capsys):
    script = load_script()
    assert script.main(["--figures", str(tmp_path / "figures"), str(tmp_path / "t.md")]) == 0
    lines = (tmp_path / "t.md").read_text().splitlines()[2:]
    # the figures kept: by context, a row of panels a batch (4.4 inches a row at 120 dpi)
    assert imread(tmp_path / "figures" / "decoding_by_context.png").shape[0] == round(4 * 4.4 * 120)
    assert (tmp_path / "figures" / "policy_tradeoff.png").is_file()
    points = [line.split(" | ")[0].removeprefix("| ") for line in lines if not line.startswith("|  |")]
    assert points == [f"{c}K, {b}" for b in (1, 4, 16, 32) for c in (32, 16, 8, 2)]
    modes = [line.split(" | ")[1] for line in lines]
    # AR, dense SD, SpecAttn p=0.9 and 0.95, StreamingLLM and Quest matched, and SpecAttn p=0.9 with the draft's
    # first_window policy at every point (the thirty-eighth to fortieth sessions' runs)
    assert len(lines) == 16 * 7 and modes.count("SpecAttn p=0.9 draft=first_window") == 16
    run_of = runs_by_point(lines)
    assert all(len(runs) == 1 for runs in run_of.values())  # one run a point, all its modes
    # the thirty-eighth to fortieth sessions' runs (the draft's one launches) over the older ones that hold the
    # same points (the thirtieth's, the twenty-ninth's and the twenty-seventh's)
    assert run_of["32K, 16"] == {("h100-38th-32k-b16", "yes", "yes")}
    assert run_of["32K, 32"] == {("h100-38th-32k-b32", "yes", "yes")}
    assert run_of["16K, 16"] == {("h100-39th-16k-b16", "yes", "yes")}
    assert run_of["2K, 1"] == {("h100-39th-2k-b1", "yes", "yes")}
    assert run_of["16K, 32"] == {("h100-40th-16k-b32", "yes", "yes")}
    assert run_of["32K, 1"] == {("h100-40th-32k-b1", "yes", "yes")}
    assert {p: r for p, r in run_of.items() if p.endswith(", 4")} == {
        f"{c}K, 4": {(f"h100-39th-{c}k-b4", "yes", "yes")} for c in (32, 16, 8, 2)}
    assert {cells[1:] for runs in run_of.values() for cells in runs} == {("yes", "yes")}  # folded, one launches
    assert "table: " in capsys.readouterr().out


def runs_by_point(lines: list[str]) -> dict[str, set[tuple[str, str, str]]]:
    """The table's (run, norms folded, draft one launches) cells by point."""
    run_of, point = {}, None
    for line in lines:
        if not line.startswith("|  |"):
            point = line.split(" | ")[0].removeprefix("| ")
        run_of.setdefault(point, set()).add(tuple(line.rstrip(" |").split(" | ")[-3:]))
    return run_of


def test_a_point_only_an_older_run_holds_keeps_it(tmp_path, monkeypatch, capsys):
    script = load_script()
    runs = dict(script.RUNS)
    monkeypatch.setattr(script, "RUNS", [(name, runs[name]) for name in ("h100-29th-b32", "h100-40th-16k-b32")])
    assert script.main([str(tmp_path / "t.md")]) == 0
    run_of = runs_by_point((tmp_path / "t.md").read_text().splitlines()[2:])
    assert run_of == {"16K, 32": {("h100-40th-16k-b32", "yes", "yes")},  # the later run wins the point both hold
                      "8K, 32": {("h100-29th-b32", "yes", "no")}, "2K, 32": {("h100-29th-b32", "yes", "no")}}


def test_a_missing_archive_file_is_named(tmp_path, monkeypatch):
    script = load_script()
    monkeypatch.setattr(script, "RUNS", [("gone", "h100-real-2026-12-06d/no_such_run")])
    try:
        script.lay_out(tmp_path)
    except FileNotFoundError as error:
        assert "no_such_run_modes.csv is missing" in str(error) and "gone" in str(error)
    else:
        raise AssertionError("a missing file passed")


def test_the_policy_table_holds_each_policy_point_with_its_own_run(tmp_path, capsys):
    script = load_script()
    assert script.main(["--policies", str(tmp_path / "p.md")]) == 0
    lines = (tmp_path / "p.md").read_text().splitlines()[2:]
    points = [line.split(" | ")[0].removeprefix("| ") for line in lines if not line.startswith("|  |")]
    assert points == ["32K, 16", "16K, 16", "8K, 16", "2K, 16", "32K, 32"]
    modes = [line.split(" | ")[1] for line in lines]
    assert modes == ["AR", "dense SD", "SpecAttn p=0.9", "SpecAttn p=0.95", "SpecAttn p=0.9 draft=first_window",
                     "SpecAttn p=0.9 draft=reuse"] * 5
    assert {line.rstrip(" |").split(" | ")[-3] for line in lines} == {f"h100-31st-{p}" for p in
                                                                   ("32k_b16", "16k_b16", "8k_b16", "2k_b16", "32k_b32")}
    capsys.readouterr()
    with pytest.raises(SystemExit) as refused:  # no table path: argparse's usage line and exit status 2
        script.main(["--policies"])
    assert refused.value.code == 2 and "required: table" in capsys.readouterr().err


def test_a_launch_ab_of_two_archived_runs_pairs_each_mode_with_itself(tmp_path, capsys):
    """`python -m specattn.results decoding A B --tags two one --versus two` on the thirty-sixth session's archived
    runs (32K batch 16, the draft's projections in two launches, then in one): each mode's step against the same
    mode's, and tau paired over the 32 prompts; it reads the flattened files by their prefix. A wrong --versus, or
    --versus without --tags, is one line naming it."""
    from specattn.results.collect import main as results

    data = ROOT / "docs" / "data" / "h100-real-2026-12-07"
    two, one = (str(data / f"decode_real_js_32k_b16_first_window_{arm}_run1") for arm in ("default", "one_launch"))
    assert results(["decoding", two, one, "-o", str(tmp_path), "--tags", "two", "one", "--versus", "two"]) == 0
    out = capsys.readouterr().out
    table = out.split("[one] against [two]")[1].splitlines()
    row = {line.split()[2]: line.split() for line in table if line.strip().startswith("32768")}
    # context batch mode step_ms_ref step_ms step_change ...: dense SD 20.375 -> 20.226 ms in that session
    assert float(row["dense"][3]) == 20.3752 and float(row["dense"][4]) == 20.2255
    assert -0.008 < float(row["dense"][5]) < -0.007 and float(row["ar"][9]) == 1.0  # AR: the same tokens
    low, high = float(row["dense"][10]), float(row["dense"][11])
    assert low < 1.0 < high  # dense SD's tau moved by chance only: its interval holds 1
    assert results(["decoding", two, one, "-o", str(tmp_path), "--tags", "two", "one", "--versus", "three"]) == 2
    assert "--versus three is not one of --tags two one" in capsys.readouterr().err
    assert results(["decoding", two, one, "-o", str(tmp_path), "--versus", "two"]) == 2
    assert "--versus two needs --tags" in capsys.readouterr().err


def test_a_run_archived_by_the_cli_reads_as_its_folder_and_is_never_overwritten(tmp_path, capsys):
    """`python -m specattn.results archive RUN PREFIX` copies a decode_real run's tables (not its parquet copies, parts
    or figures) to PREFIX_<name>; `decoding PREFIX` then prints what `decoding RUN` prints; a second archive to the same
    prefix, or a folder that is no decode_real run, is one line naming it, and nothing is written."""
    from specattn.results.collect import main as results
    from specattn.results.run_files import ARCHIVED

    script = load_script()
    archived = "h100-real-2026-12-07c/decode_real_js_32k_b32_one_launch_matched"
    run = script.lay_out(tmp_path / "runs", [("b32", archived)])[0]
    (run / "summary.md").write_text("the run's own summary\n")
    (run / "results.parquet").write_bytes(b"PAR1")
    (run / "parts").mkdir()
    prefix = tmp_path / "docs" / "data" / "b32"
    assert results(["archive", str(run), str(prefix)]) == 0
    written = sorted(p.name for p in prefix.parent.iterdir())
    assert written == sorted(f"b32_{name}" for name in ARCHIVED if (run / name).is_file())
    assert {"b32_modes.csv", "b32_prompts.csv", "b32_config.yaml", "b32_summary.md"} <= set(written)
    assert (prefix.parent / "b32_prompts.csv").read_bytes() == (run / "prompts.csv").read_bytes()
    capsys.readouterr()
    tables = []
    for source in (run, prefix):
        assert results(["decoding", str(source), "-o", str(tmp_path / "fig")]) == 0
        tables.append(capsys.readouterr().out.split("figure:")[0])
    assert tables[0] == tables[1] and "specattn p=0.9" in tables[0]
    (prefix.parent / "b32_modes.csv").write_text("kept\n")
    assert results(["archive", str(run), str(prefix)]) == 2
    assert "exist already" in capsys.readouterr().err and (prefix.parent / "b32_modes.csv").read_text() == "kept\n"
    assert results(["archive", str(run / "parts"), str(tmp_path / "other")]) == 2
    assert "has no modes.csv" in capsys.readouterr().err and not (tmp_path / "other_config.yaml").exists()


def test_runs_over_other_windows_pool_by_window_not_by_position(tmp_path, capsys):
    """The table's 32K batch-4 run (windows 0-15) and the forty-second session's held-out run of the same point
    (`dataset.first_sample=30`: windows 30-45) pool into 32 prompts, each paired with dense speculative decoding on
    its own window (before, the second run's prompts 0-15 replaced the first's as duplicates); a prompt's group is
    still its position in its own run."""
    from specattn.results.collect import main as results
    from specattn.results.run_files import read_prompts

    table = ROOT / "docs" / "data" / "h100-real-2026-12-07d" / "decode_real_js_32k_b4_one_launch_matched"
    held_out = ROOT / "docs" / "data" / "h100-real-2026-12-07f" / "decode_real_js_32k_b4_first30"
    own, later = read_prompts(table), read_prompts(held_out)
    assert sorted(set(own["prompt"])) == list(range(16)) and sorted(set(later["prompt"])) == list(range(30, 46))
    assert set(later["first_sample"]) == {30}
    assert results(["decoding", str(table), str(held_out), "-o", str(tmp_path)]) == 0
    head, out = capsys.readouterr().out.split("paired over prompts")
    assert f"32768 tokens, batch 4: measured by {table.name}, {held_out.name}; each mode's timings from the" in head
    counts = re.findall(r"^\s*32768\s+4\s+specattn p=0.9\s+(\d+)\s", out, re.M)  # mode, then its prompts
    assert counts == ["32"], out  # 16 + 16 windows
