"""Sweeps on a real Slurm: Slurm 22.05 on this host as a single node, with job accounting
(``scripts/local_slurm.py`` through the ``slurm_cluster`` fixture), driven by ``python run.py -m
hydra/launcher=slurm ...`` exactly as a user runs it (hydra-submitit-launcher, sbatch, srun).

A sweep gives the basic launcher's tables; a job requeued while running (``scontrol requeue``, as
a preemption does) resumes from its finished samples; a finished sweep submitted again submits no
job; a bad value anywhere in a grid is refused before any job is submitted; the cluster script
leaves no process behind, even with a job running. Marked ``slurm``; skipped without root or the
packages (``.ci/run`` installs them).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from .conftest import ROOT, require_local_slurm, run_cli
from .conftest import tiny_sweep_args as tiny

pytestmark = pytest.mark.slurm

#: what a one-node CPU cluster needs on the command line (README: what a GPU cluster needs)
SLURM = ["hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.gpus_per_node=0",
         "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2"]
GRID = ["p=0.6,0.8", "chunk_size=4,8"]  # 4 runs


def env(cluster, outputs: Path) -> dict[str, str]:
    return {"SLURM_CONF": str(cluster.conf), "SPECATTN_OUTPUTS": str(outputs)}


def controller_jobs(cluster) -> set[str]:
    """Every job the controller knows: pending, running, and finished ones (MinJobAge is an hour)."""
    return set(cluster.client("squeue", "-h", "-t", "all", "-o", "%i").split())


def wait_for(condition, timeout: float, failure: str):
    """Poll ``condition()`` until it returns something truthy (returned); fail with ``failure``."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"{failure} (waited {timeout:.0f} s)")
        time.sleep(0.1)
    return value


def finished_history(cluster, job: str) -> list[str] | None:
    """The states accounting recorded for each run of ``job`` (``sacct -D``: requeued runs too),
    once its last run has completed; None before."""
    states = cluster.client("sacct", "-D", "-X", "-n", "-P", "-j", job.split("_")[0], "-o", "State").splitlines()
    return states if states[-1:] == ["COMPLETED"] else None


def tables(outputs: Path) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """Run folder name -> (summary, results without the wall-clock ``sample_seconds``)."""
    return {run.name: (pd.read_parquet(run / "summary.parquet"),
                       pd.read_parquet(run / "results.parquet").drop(columns="sample_seconds"))
            for run in sorted(path.parent for path in outputs.glob("ppl/*/results.parquet"))}


def assert_same_tables(got: Path, expected: Path) -> None:
    got_tables, expected_tables = tables(got), tables(expected)
    assert got_tables.keys() == expected_tables.keys()
    for name, (summary, results) in expected_tables.items():
        pd.testing.assert_frame_equal(got_tables[name][0], summary, check_exact=True, obj=f"{name} summary")
        pd.testing.assert_frame_equal(got_tables[name][1], results, check_exact=True, obj=f"{name} results")


def files(outputs: Path) -> dict[str, int]:
    """Every file under ``outputs`` except the sweep's multirun.yaml -> its mtime (ns)."""
    return {str(path): path.stat().st_mtime_ns for path in outputs.rglob("*")
            if path.is_file() and path.name != "multirun.yaml"}


@pytest.fixture(scope="module")
def slurm_sweep(slurm_cluster, tiny_model_dir, tmp_path_factory):
    """The 4-run grid through the basic launcher and through Slurm: ``(basic outputs, Slurm
    outputs, the Slurm sweep's result, the jobs it submitted)``."""
    basic, slurm = tmp_path_factory.mktemp("basic"), tmp_path_factory.mktemp("slurm")
    args = tiny(tiny_model_dir, "logger=none", *GRID)
    reference = run_cli("-m", *args, env={"SPECATTN_OUTPUTS": str(basic)})
    assert reference.returncode == 0, reference.stderr
    before = controller_jobs(slurm_cluster)
    result = run_cli("-m", *SLURM, *args, env=env(slurm_cluster, slurm))
    assert result.returncode == 0, result.stdout + result.stderr
    return basic, slurm, result, controller_jobs(slurm_cluster) - before


def test_a_slurm_sweep_gives_the_basic_launchers_tables(slurm_sweep, slurm_cluster):
    basic, slurm, result, submitted = slurm_sweep
    assert len(submitted) == 4 and len({job.split("_")[0] for job in submitted}) == 1  # one array, 4 tasks
    assert len(tables(slurm)) == 4
    assert_same_tables(slurm, basic)
    assert {path.name for path in (slurm / "ppl" / ".submitit").iterdir()} >= submitted
    assert "sacct" not in result.stdout + result.stderr  # accounting on: submitit's polling works quietly
    wait_for(lambda: {job for job, state in slurm_cluster.accounted_jobs() if state == "COMPLETED"} >= submitted,
             60, f"sacct never showed all of {sorted(submitted)} COMPLETED")  # records reach slurmdbd with a lag


def test_a_finished_sweep_submitted_again_submits_no_job(slurm_sweep, slurm_cluster, tiny_model_dir):
    slurm = slurm_sweep[1]
    before_jobs, before_files = controller_jobs(slurm_cluster), files(slurm)
    again = run_cli("-m", *SLURM, *tiny(tiny_model_dir, "logger=none", *GRID), env=env(slurm_cluster, slurm))
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("results exist, skipping (rerun=true recomputes): ") == 4
    assert "nothing to launch: all 4 runs of the sweep have results" in again.stdout
    assert controller_jobs(slurm_cluster) == before_jobs  # no sbatch
    assert files(slurm) == before_files  # no run file and no submitit file written


def test_a_bad_value_in_the_grid_is_refused_before_any_job_is_submitted(slurm_cluster, tiny_model_dir, tmp_path):
    before = controller_jobs(slurm_cluster)
    result = run_cli("-m", *SLURM, *tiny(tiny_model_dir, "logger=none", "p=0.6,1.5", "chunk_size=4,8"),
                     env=env(slurm_cluster, tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: job #2 (p=1.5 chunk_size=4) of the sweep: p=1.5 is outside (0, 1]: the nucleus mass must be "
        "a number with 0 < p <= 1 (e.g. p=0.95)"]
    assert controller_jobs(slurm_cluster) == before
    assert not (tmp_path / "out").exists()


def test_a_job_requeued_while_running_resumes_from_its_finished_samples(slurm_cluster, tiny_model_dir, tmp_path):
    """8 samples of 2048 tokens (about 1-2 s each on 2 cores): requeued once its first sample is
    written, the job is killed (SIGTERM, then SIGKILL after KillWait=2 s), waits cred_expire=10 s,
    runs again from the start and computes only the samples it had not written."""
    args = ["model=tiny_random", f"model.verifier.path={tiny_model_dir}", "dataset.context_len=2048",
            "dataset.num_samples=8", "p=0.7", "logger=none", "progress=false"]
    outputs, log = tmp_path / "slurm", tmp_path / "sweep.log"
    before_jobs = controller_jobs(slurm_cluster)
    with open(log, "w") as out:
        sweep = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "-m", *SLURM, *args], cwd=ROOT,
                                 env={**os.environ, "WANDB_SILENT": "true", **env(slurm_cluster, outputs)},
                                 stdout=out, stderr=subprocess.STDOUT)
    try:
        first = wait_for(lambda: sorted(outputs.glob("ppl/*/parts/sample-*.parquet")), 300,
                         "the Slurm job wrote no sample")
        run_dir = first[0].parent.parent
        parts = {path.name: path.stat().st_mtime_ns for path in run_dir.glob("parts/*.parquet")}
        finished_early = (run_dir / "results.parquet").exists()
        (job,) = controller_jobs(slurm_cluster) - before_jobs
        slurm_cluster.client("scontrol", "requeue", job)
        sweep.wait(timeout=600)
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait()
    assert sweep.returncode == 0, log.read_text()
    assert not finished_early and len(parts) < 8, "the run finished before it could be requeued"
    history = wait_for(lambda: finished_history(slurm_cluster, job), 60, "sacct never showed the job completed")
    assert history == ["REQUEUED", "COMPLETED"]
    (submitit_log,) = (outputs / "ppl" / ".submitit").glob("*/*_log.out")
    assert submitit_log.read_text().count("Starting with JobEnvironment") == 2  # ran, was killed, ran again
    after = {path.name: path.stat().st_mtime_ns for path in run_dir.glob("parts/*.parquet")}
    assert len(after) == 8 and {name: after[name] for name in parts} == parts  # finished samples not recomputed
    basic = run_cli("-m", *args, env={"SPECATTN_OUTPUTS": str(tmp_path / "basic")})
    assert basic.returncode == 0, basic.stderr
    assert_same_tables(outputs, tmp_path / "basic")


def test_the_cluster_script_stops_everything_it_started_even_with_a_job_running():
    """``scripts/local_slurm.py start`` and ``stop`` as a user runs them, with a job still running at
    ``stop``: afterwards none of the daemons, the job's slurmstepd or the job's process is alive."""
    local_slurm = require_local_slurm()
    script = ROOT / "scripts" / "local_slurm.py"
    folder = Path(tempfile.mkdtemp(prefix="slurm-stop-test-"))  # not under tmp_path: munged must reach it
    started = subprocess.run([sys.executable, str(script), "start", str(folder)], capture_output=True, text=True,
                             timeout=300)
    try:
        assert started.returncode == 0, started.stderr
        assert started.stdout.strip() == f"export SLURM_CONF={folder}/slurm.conf"
        cluster = local_slurm.LocalSlurm(folder)
        pid_file = folder / "job.pid"
        cluster.client("sbatch", "-o", "/dev/null", "--wrap", f"echo $$ > {pid_file}; exec sleep 600")
        job_pid = int(wait_for(lambda: pid_file.is_file() and pid_file.read_text().strip(), 120, "the job never ran"))
        processes = {**cluster.daemons(), "job": (job_pid, local_slurm.start_time(job_pid))}
        marked = cluster.marked_processes()
        assert marked, "no process carries the cluster's marker (the job's slurmstepd should)"
    finally:
        stopped = subprocess.run([sys.executable, str(script), "stop", str(folder)], capture_output=True, text=True,
                                 timeout=300)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.startswith(f"stopped and removed {folder}")
    assert not folder.exists()
    alive = {name for name, (pid, start) in processes.items() if local_slurm.start_time(pid) == start}
    assert not alive, f"still running after stop: {alive}"
    assert set(local_slurm.DAEMONS) <= processes.keys()
    assert all(local_slurm.start_time(pid) is None for pid in marked)
