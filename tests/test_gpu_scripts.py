"""The GPU session's scripts (scripts/gpu/) run their experiments through ``spec`` in env.sh; with
``PRECHECK=FILE`` each run's overrides are written instead, and every one must pass the checks a run makes
before loading weights (``specattn.runs.preflight``, CUDA reported present): a typo in a part costs a device
session nothing when it fails here."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from specattn.runs.preflight import check_jobs
from specattn.runs.validate import register_resolvers

ROOT = Path(__file__).resolve().parents[1]
GPU = ROOT / "scripts" / "gpu"


def quality_parts() -> list[str]:
    return re.findall(r"^  ([a-z0-9_]+)\)", (GPU / "quality.sh").read_text(), flags=re.M)


def planned_runs(tmp_path: Path, *commands: list[str]) -> list[list[str]]:
    out = tmp_path / "runs.txt"
    env = dict(os.environ, PRECHECK=str(out), GPU_OUT=str(tmp_path / "gpu-out"))
    for command in commands:
        subprocess.run(["bash", *command], cwd=ROOT, env=env, check=True, capture_output=True, timeout=60)
    return [shlex.split(line) for line in out.read_text().splitlines() if line.strip()] if out.exists() else []


def assert_compose(runs: list[list[str]]) -> None:
    """Each planned run's overrides pass run.py's pre-run checks (composed, validated, planned; no weights)."""
    for overrides in runs:
        for job, error in check_jobs(["logger=none", "progress=false", *overrides], ROOT / "conf"):
            assert error is None, (job, error)


@pytest.fixture
def cuda_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    register_resolvers()


def test_the_quality_script_has_the_parts_the_docs_name():
    parts = quality_parts()
    assert {"long_rest", "prose_32k_rest", "prose_32k_last", "oracle_32k", "retrieval_long", "retrieval_graph",
            "retrieval_oracle", "kernel_fi", "kernel_fi_tuned", "long_low_p", "retrieval_seed2", "grid", "grid_rest",
            "align"} <= set(parts)
    assert len(parts) == len(set(parts))


def test_every_gpu_run_of_the_session_scripts_passes_the_pre_run_checks(tmp_path, cuda_present, monkeypatch):
    parts = quality_parts()
    monkeypatch.setenv("SPARSE", "experiment.sparse_split.ctas_per_sm=4 experiment.sparse_split.min_chunks=4")
    runs = planned_runs(tmp_path, ["scripts/gpu/quality.sh", *parts], ["scripts/gpu/decode.sh", "300"],
                        ["scripts/gpu/draft_sweep.sh", "300"], ["scripts/gpu/breadth.sh", "300"],
                        ["scripts/gpu/maps.sh", "300"], ["scripts/gpu/fused.sh", "300"],
                        ["scripts/gpu/decode.sh", "300", "experiment.contexts=[32768]", "experiment.batches=[16]"],
                        ["scripts/gpu/decode_launches.sh", "300", "experiment.split.warps=2",
                         "experiment.split.min_chunks=4", "experiment.rows.block_n=128", "experiment.rows.blocks=2"])
    assert len(runs) >= len(parts) + 17  # every part plans at least one run, decode_launches three, draft_sweep four,
    #                                     breadth five, maps one, fused one
    maps = [r for r in runs if any(o.startswith("+experiment.layer_maps.max7=") for o in r)]
    assert len(maps) == 1 and sum(o.startswith("+experiment.layer_maps.") for o in maps[0]) == 3
    fused = [r for r in runs if "experiment.sparse_split.fused_merge=true" in r]
    assert len(fused) == 1 and sum(o.endswith("fused_merge=true") for o in fused[0]) == 3
    for overrides in runs:
        if any(".gpu_inputs" in o for o in overrides) and not (ROOT / ".gpu_inputs").is_dir():
            continue  # `agree` reads the CPU reference's files, carried to the GPU for that part only
        assert_compose([overrides])


def test_breadth_takes_its_points_and_overrides_from_the_environment(tmp_path, cuda_present):
    runs = planned_runs(tmp_path, ["-c", 'POINTS="32768 4;16384 32" EXTRA="experiment.match_p=0.9" REFRESH16=0 '
                                         "bash scripts/gpu/breadth.sh 300"])
    assert [[o for o in r if o.startswith(("experiment.contexts", "experiment.batches"))] for r in runs] == [
        ["experiment.contexts=[32768]", "experiment.batches=[4]"], ["experiment.contexts=[16384]", "experiment.batches=[32]"]]
    for overrides in runs:
        assert "experiment.match_p=0.9" in overrides and "experiment.draft_reads=[first_window,reuse]" in overrides
    assert_compose(runs)


CHAIN_TESTS = [["pytest", f"tests/{f}.py"] for f in (  # the chain's GPU test files, in order, after the last run
    "test_real_decode", "test_graph_methods", "test_graph_engine", "test_fused_llama", "test_attention_sparse",
    "test_draft_rows")]
PROFILE = [["profile_real.py", "32768", "16"]]  # the chain's first timed part: where the step's time goes (PROFILE_AB
# unset: no second profile)


def last(run: list[str], key: str) -> str:
    """The value Hydra applies: the last override of ``key`` (absent: the config's own)."""
    given = [o for o in run if o.startswith(key + "=")]
    return given[-1].split("=", 1)[1] if given else "(config)"


POLICY_POINTS = [("[32768]", "[16]"), ("[32768]", "[32]"), ("[16384]", "[16]"), ("[8192]", "[16]")]


def test_the_chain_plans_the_profile_run_a_then_the_draft_policies_then_the_tests(tmp_path, cuda_present):
    runs = planned_runs(tmp_path, ["scripts/gpu/chain.sh", "300"])
    profile, run_a, rest = runs[:len(PROFILE)], runs[len(PROFILE)], runs[len(PROFILE) + 1:]
    assert profile == PROFILE
    policies, tests = rest[:len(POLICY_POINTS)], rest[len(POLICY_POINTS):]
    assert tests == CHAIN_TESTS
    assert (last(run_a, "experiment.contexts"), last(run_a, "experiment.batches")) == ("[32768]", "[16]")
    assert last(run_a, "experiment.p_values") == "[0.9]" and "experiment.matched=false" not in run_a  # matched
    assert [(last(r, "experiment.contexts"), last(r, "experiment.batches")) for r in policies] == POLICY_POINTS
    for run in policies:  # both policies under SpecAttn p=0.9 at their best settings, 32 prompts, folded
        assert last(run, "experiment.draft_reads") == "[first_window,reuse]"
        assert last(run, "experiment.match_p") == "0.9" and last(run, "experiment.matched") == "false"
        assert last(run, "experiment.draft_window") == "2048" and last(run, "experiment.draft_dense_layers") == "0"
        assert last(run, "experiment.p_values") == "(config)"  # SpecAttn p=0.9 and 0.95 beside them
        assert last(run, "experiment.draft_refresh") == "(config)"  # REFRESH16=0: no refresh-16 run
    for run in (run_a, *policies):
        assert last(run, "experiment.prompts") == "32" and last(run, "experiment.fold_norms") == "(config)"
        assert "layer_map=docs/data/h200-real-2026-12-03e/layer_map_js_qwen_coder_16k.yaml" in run
        assert last(run, "experiment.lossless_prompts") == "0"  # the twenty-eighth session ran the check (folded)
    assert_compose([run_a, *policies])


def test_the_chain_on_an_h100_skips_run_a_and_plans_the_policies_and_the_tests(tmp_path, cuda_present):
    runs = planned_runs(tmp_path, ["-c", "FIRST=none bash scripts/gpu/chain.sh 300"])
    n = len(PROFILE)
    assert runs[:n] == PROFILE
    assert [(last(r, "experiment.contexts"), last(r, "experiment.batches")) for r in runs[n:n + 4]] == POLICY_POINTS
    assert runs[n + 4:] == CHAIN_TESTS


def test_the_waiter_starts_its_tests_only_after_the_marker_in_order(tmp_path):
    """scripts/gpu/after.sh waits for its marker (written here a second after it starts), then runs its test files in
    the order given and marks its own end (PRECHECK: the test runs are written down instead of run)."""
    gpu_out, planned = tmp_path / "gpu-out", tmp_path / "planned.txt"
    (gpu_out / "q").mkdir(parents=True)
    env = dict(os.environ, PRECHECK=str(planned), GPU_OUT=str(gpu_out), TESTS="test_step test_draft_rows")
    waiter = subprocess.Popen(["bash", "scripts/gpu/after.sh", "breadth.done"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1.0)
    assert waiter.poll() is None and not planned.exists()  # still waiting: nothing ran before the marker
    (gpu_out / "q" / "breadth.done").touch()
    out, _ = waiter.communicate(timeout=30)
    assert waiter.returncode == 0, out
    assert planned.read_text().splitlines() == ["pytest tests/test_step.py", "pytest tests/test_draft_rows.py"]
    assert (gpu_out / "q" / "after.done").exists()


def test_a_bad_override_in_a_part_is_caught(tmp_path, cuda_present):
    from specattn.core.errors import SpecAttnError

    script = tmp_path / "bad.sh"
    script.write_text(f"cd {ROOT}; source scripts/gpu/env.sh; spec 10 model=qwen_coder device=cuda "
                      "experiment=paper_table dataset.first_sample=-3\n")
    (overrides,) = planned_runs(tmp_path, [str(script)])
    ((_, error),) = check_jobs(overrides, ROOT / "conf")
    assert isinstance(error, SpecAttnError) and "first_sample=-3" in str(error)


def test_precheck_prints_ok_or_fail_per_job_and_its_exit_code():
    """scripts/gpu/precheck.py on a good and a bad hand-typed command (a process of its own: it reports CUDA)."""
    good = subprocess.run([sys.executable, "scripts/gpu/precheck.py", "model=qwen_coder", "device=cuda",
                           "experiment=paper_table", "logger=none"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert good.returncode == 0 and good.stdout.startswith("ok "), good.stdout + good.stderr
    bad = subprocess.run([sys.executable, "scripts/gpu/precheck.py", "-m", "model=qwen_coder", "device=cuda",
                          "experiment=paper_table", "dataset.first_sample=0,-3"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    lines = bad.stdout.splitlines()
    assert bad.returncode == 1 and lines[0].startswith("ok ") and lines[1].startswith("FAIL ") and "-3" in lines[1]


def test_poll_reports_each_run_and_packs_what_a_lost_machine_would_lose(tmp_path):
    import tarfile

    gpu_out, out = tmp_path / "gpu-out", tmp_path / "out"
    out.mkdir()
    done = gpu_out / "outputs" / "paper_table" / "paper_table-aa"
    cut = gpu_out / "outputs" / "retrieval" / "retrieval-bb"
    for run, n in ((done, 3), (cut, 2)):
        (run / "parts").mkdir(parents=True)
        for i in range(n):
            (run / "parts" / f"{i:05d}.parquet").write_bytes(b"x")
    (cut / "parts" / "point-00002").mkdir()  # decode_real's finished groups of its unfinished point
    (cut / "parts" / "point-00002" / "pass0-group0000.json").write_text("{}")
    (done / "results.parquet").write_bytes(b"r")
    (done / "model.safetensors").write_bytes(b"w")
    (gpu_out / "q").mkdir()
    (gpu_out / "q" / "grid.log").write_text("== grid 10:00:00\nUserWarning: noise\n")
    env = dict(os.environ, GPU_OUT=str(gpu_out), OUT=str(out))
    shown = subprocess.run(["bash", "scripts/gpu/poll.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                           check=True).stdout
    assert "grid.log: == grid 10:00:00" in shown  # the last line that is not a warning
    assert "outputs/paper_table/paper_table-aa: finished (3 samples)" in shown
    assert "outputs/retrieval/retrieval-bb: 2 samples so far (+ 1 groups)" in shown
    with tarfile.open(out / "poll.tar.gz") as tar:
        names = set(tar.getnames())
    assert "outputs/paper_table/paper_table-aa/results.parquet" in names and "q/grid.log" in names
    assert "outputs/retrieval/retrieval-bb/parts/00001.parquet" in names  # an unfinished run keeps its parts
    assert "outputs/retrieval/retrieval-bb/parts/point-00002/pass0-group0000.json" in names
    assert not any("paper_table-aa/parts/" in n or n.endswith(".safetensors") for n in names)


def test_poll_cuts_a_tarball_over_the_file_limit_into_pieces_that_join(tmp_path):
    """A call brings back files of at most 16 MiB: a bigger poll tarball comes back in pieces that ``cat`` joins."""
    import tarfile

    gpu_out, out = tmp_path / "gpu-out", tmp_path / "out"
    out.mkdir()
    run = gpu_out / "outputs" / "retrieval" / "retrieval-cc"
    (run / "parts").mkdir(parents=True)
    (run / "parts" / "00000.parquet").write_bytes(os.urandom(3 * 1024 * 1024))  # incompressible: 3 MiB packed
    (out / "poll.tar.gz.0").write_bytes(b"a piece of an older poll")
    env = dict(os.environ, GPU_OUT=str(gpu_out), OUT=str(out), POLL_PIECE_MIB="1")
    shown = subprocess.run(["bash", "scripts/gpu/poll.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                           check=True).stdout
    pieces = sorted(out.glob("poll.tar.gz.*"))
    assert "cut into 4 pieces" in shown and len(pieces) == 4 and not (out / "poll.tar.gz").exists()
    assert all(p.stat().st_size <= 1024 * 1024 for p in pieces)
    (tmp_path / "joined.tar.gz").write_bytes(b"".join(p.read_bytes() for p in pieces))
    with tarfile.open(tmp_path / "joined.tar.gz") as tar:
        member = tar.extractfile("outputs/retrieval/retrieval-cc/parts/00000.parquet")
        assert member is not None and len(member.read()) == 3 * 1024 * 1024


def test_stopping_a_job_stops_what_it_runs_under_its_time_limit(tmp_path):
    """env.sh's ``limit``: a job stopped as stop_background stops one (``kill -- -PGID``) takes its time-limited command
    with it (plain ``timeout`` would leave it running in a group of its own), and the limit still ends a command that
    runs too long."""
    marker = tmp_path / "alive"
    script = f'source scripts/gpu/env.sh; limit 60 bash -c "while true; do touch {marker}; sleep 0.2; done"'
    env = dict(os.environ, GPU_OUT=str(tmp_path / "gpu-out"))
    job = subprocess.Popen(["setsid", "bash", "-c", script], cwd=ROOT, env=env)
    deadline = time.time() + 20
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.1)
    assert marker.exists()
    os.killpg(job.pid, 15)
    job.wait(timeout=10)
    time.sleep(0.5)
    marker.unlink()
    time.sleep(1.0)
    assert not marker.exists()  # the loop under the limit stopped with its job
    started = time.time()
    done = subprocess.run(["bash", "-c", "source scripts/gpu/env.sh; limit 1 sleep 30"], cwd=ROOT, env=env, timeout=20)
    assert done.returncode == 124 and time.time() - started < 10


def test_the_chain_runs_fewer_policy_points_when_told(tmp_path, cuda_present):
    runs = planned_runs(tmp_path, ["-c", 'FIRST=none POLICY_POINTS="32768 16;32768 32" bash scripts/gpu/chain.sh 300'])
    n = len(PROFILE)
    assert runs[:n] == PROFILE
    assert [(last(r, "experiment.contexts"), last(r, "experiment.batches")) for r in runs[n:n + 2]] == POLICY_POINTS[:2]
    assert runs[n + 2:] == CHAIN_TESTS


def test_the_chain_profiles_the_points_it_is_given_and_skips_what_is_set_to_none(tmp_path, cuda_present):
    runs = planned_runs(tmp_path, ["-c", 'FIRST=none PROFILE_POINTS="32768 16;8192 1" POLICY_POINTS=none '
                                         "PROFILE_AB=none bash scripts/gpu/chain.sh 300"])
    assert runs == [PROFILE[0], ["profile_real.py", "8192", "1"], *CHAIN_TESTS]
    (tmp_path / "runs.txt").unlink()
    runs = planned_runs(tmp_path, ["-c", 'FIRST=none PROFILE_POINTS="8192 1" POLICY_POINTS=none '
                                         'PROFILE_AB="experiment.draft_epilogue_rows=16" '
                                         "bash scripts/gpu/chain.sh 300"])
    point = ["profile_real.py", "8192", "1"]
    assert runs == [point, [*point, "experiment.draft_epilogue_rows=16"], *CHAIN_TESTS]
    (tmp_path / "runs.txt").unlink()
    runs = planned_runs(tmp_path, ["-c", 'FIRST=none PROFILE_POINTS="8192 1" POLICY_POINTS=none '
                                         'PROFILE_AB="experiment.draft_down_split=2|experiment.draft_down_split=8 '
                                         'experiment.draft_epilogue_rows=8" bash scripts/gpu/chain.sh 300'])
    assert runs == [point, [*point, "experiment.draft_down_split=2"],
                    [*point, "experiment.draft_down_split=8", "experiment.draft_epilogue_rows=8"], *CHAIN_TESTS]
    (tmp_path / "runs.txt").unlink()
    runs = planned_runs(tmp_path, ["-c", "FIRST=none PROFILE_POINTS=none POLICY_POINTS=none "
                                         "bash scripts/gpu/chain.sh 1"])
    assert runs == CHAIN_TESTS


def test_the_profile_scripts_settings_pass_the_pre_run_checks(cuda_present):
    spec = importlib.util.spec_from_file_location("profile_real", GPU / "profile_real.py")
    profile_real = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(profile_real)
    base = ("model=qwen_coder", "dataset=python_packages", "device=cuda", "dtype=bfloat16", "experiment=decode_real")
    overrides = profile_real.overrides_with(base + profile_real.DEFAULTS, ["experiment.draft_window=1024", "seed=3",
                                                                           "experiment.draft_down_split=0"])
    assert last(overrides, "experiment.draft_window") == "1024" and "seed=3" in overrides
    assert sum(o.startswith("experiment.draft_window=") for o in overrides) == 1  # replaced, not repeated
    assert last(overrides, "experiment.draft_reads") == "[first_window]"
    assert last(overrides, "experiment.match_p") == "0.9"
    assert_compose([overrides])


def test_the_decode_ab_plans_the_point_as_it_stands_each_arm_then_the_lossless_check_with_the_last(
        tmp_path, cuda_present):
    runs = planned_runs(tmp_path, ["-c", 'ARMS="experiment.draft_down_split=2|experiment.draft_down_split=8 '
                                         'experiment.draft_epilogue_rows=8" bash scripts/gpu/decode_ab.sh 300'])
    assert len(runs) == 4
    assert all("experiment.contexts=[32768]" in r and "experiment.draft_reads=[first_window]" in r for r in runs[:3])
    assert not any("draft_down_split" in o or "draft_epilogue_rows" in o for o in runs[0])
    assert runs[1][-1] == "experiment.draft_down_split=2"
    assert runs[2][-2:] == runs[3][-2:] == ["experiment.draft_down_split=8", "experiment.draft_epilogue_rows=8"]
    assert "experiment.lossless_prompts=32" in runs[3] and "experiment.contexts=[2048]" in runs[3]
    assert all("experiment.lossless_prompts=0" in r for r in runs[:3])
    assert_compose(runs)


def test_the_decode_ab_moves_to_another_batch_and_skips_the_lossless_check_when_told(tmp_path, cuda_present):
    """BATCH / PROMPTS move the point (the one launches A/B'd at batch 4 and 1); LOSSLESS=0 plans no lossless run."""
    runs = planned_runs(tmp_path, ["-c", 'BATCH=1 PROMPTS=8 LOSSLESS=0 ARMS="experiment.draft_down_split=0 '
                                         'experiment.draft_epilogue_rows=0" bash scripts/gpu/decode_ab.sh 300'])
    assert len(runs) == 2
    assert all(last(r, "experiment.batches") == "[1]" and last(r, "experiment.prompts") == "8" for r in runs)
    assert all(last(r, "experiment.lossless_prompts") == "0" for r in runs)
    assert runs[1][-2:] == ["experiment.draft_down_split=0", "experiment.draft_epilogue_rows=0"]
    assert_compose(runs)


def test_the_real_points_plan_the_table_points_without_the_one_launches_each_with_its_prompts(tmp_path, cuda_present):
    """The default POINTS: the real table's points whose rows say "no" under "draft one launches", the largest batch
    first, then the longest context, every mode with the first_window draft, 8 prompts at batch 1, 16 at batch 4, 32
    otherwise; a table with none plans nothing; POINTS, PROMPTS and EXTRA replace them."""
    table = (ROOT / "docs/data/real_table.md").read_text().splitlines()
    two_launches = {"2K, 32", "32K, 1", "16K, 32", "8K, 4"}  # a table where these points ran with two launches
    marked, point = [], None
    for line in table:
        if line.startswith("| ") and line[2].isdigit():
            point = line.split(" | ")[0].removeprefix("| ")
        marked.append(line.removesuffix("| yes |") + "| no |" if point in two_launches else line)
    (tmp_path / "marked.md").write_text("\n".join(marked))
    (tmp_path / "runs").mkdir()
    runs = planned_runs(tmp_path / "runs", ["-c", f"TABLE={tmp_path}/marked.md bash scripts/gpu/real_points.sh 300"])
    points = [tuple(last(r, f"experiment.{key}") for key in ("contexts", "batches", "prompts")) for r in runs]
    # the largest batch first, then the longest context; 8 prompts at batch 1, 16 at batch 4, 32 otherwise
    assert points == [("[16384]", "[32]", "32"), ("[2048]", "[32]", "32"), ("[8192]", "[4]", "16"),
                      ("[32768]", "[1]", "8")]
    for r in runs:
        assert last(r, "experiment.matched") == "(config)" and last(r, "experiment.draft_reads") == "[first_window]"
        assert last(r, "experiment.lossless_prompts") == "0" and last(r, "experiment.match_p") == "0.9"
    assert_compose(runs)
    (tmp_path / "each").mkdir()  # the prompts by batch at points given by name
    each = planned_runs(tmp_path / "each", ["-c", 'POINTS="32768 4;2048 1;8192 16" '
                                                  "bash scripts/gpu/real_points.sh 300"])
    assert [last(r, "experiment.prompts") for r in each] == ["16", "8", "32"]
    done = tmp_path / "done.md"  # every point with the one launches: nothing to run
    done.write_text("\n".join(line.replace("| no |", "| yes |") for line in table))
    (tmp_path / "done").mkdir()
    assert planned_runs(tmp_path / "done", ["-c", f"TABLE={done} bash scripts/gpu/real_points.sh 300"]) == []
    # the real table's own points without the one launches (none since the fortieth session)
    (tmp_path / "real").mkdir()
    real = planned_runs(tmp_path / "real", ["scripts/gpu/real_points.sh", "300"])
    assert len(real) == sum(line.startswith("| ") and line[2].isdigit() and line.endswith("| no |") for line in table)
    (tmp_path / "told").mkdir()
    told = planned_runs(tmp_path / "told", ["-c", 'POINTS="32768 4" PROMPTS=4 EXTRA="experiment.repeats=1" '
                                                  "bash scripts/gpu/real_points.sh 300"])
    assert len(told) == 1 and last(told[0], "experiment.prompts") == "4" and last(told[0], "experiment.repeats") == "1"
    assert_compose(told)
    (tmp_path / "books").mkdir()  # DATASET: another dataset config (the shipped books), every other override the same
    books = planned_runs(tmp_path / "books", ["-c", 'DATASET=gutenberg POINTS="32768 16" '
                                                    "bash scripts/gpu/real_points.sh 300"])
    (tmp_path / "code").mkdir()
    code = planned_runs(tmp_path / "code", ["-c", 'POINTS="32768 16" bash scripts/gpu/real_points.sh 300'])
    assert len(books) == len(code) == 1 and last(books[0], "dataset") == "gutenberg"
    assert last(code[0], "dataset") == "python_packages"
    assert [o for o in books[0] if not o.startswith("dataset=")] == [o for o in code[0] if not o.startswith("dataset=")]
    assert_compose(books)
