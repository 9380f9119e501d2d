"""Shared fixtures: composed configs, the tiny random pair saved through save_pretrained."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from specattn.models.pair import load_pair
from specattn.runs.validate import register_resolvers

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
register_resolvers()
torch.set_num_threads(min(2, torch.get_num_threads()))


#: test files whose session fixtures are the same long runs (``killed_sweep``: a 12-run sweep; ``paper_run``): under
#: ``--dist loadfile`` (``make test``) one pytest-xdist worker runs them all, so each run is made once, not in both
SHARED_RUNS = {"test_sweeps.py", "test_results_and_notebook.py", "test_paper_table.py"}


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: without it installed, no error
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile`` with the files of :data:`SHARED_RUNS` as one scope (xdist's ``loadgroup`` marks no longer
    reach its scheduler under pytest 9, whose node ids it cannot suffix); any other mode: xdist's own."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedRunsScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            return "shared runs" if Path(scope).name in SHARED_RUNS else scope

    return SharedRunsScheduling(config, log)


def compose_config(*overrides: str):
    """The config ``run.py`` would get for these overrides (with the Hydra node)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def run_cli(*args: str, cwd: Path = ROOT, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python run.py *args`` in a subprocess; outputs go wherever ``paths.outputs`` points."""
    full_env = {**os.environ, "WANDB_SILENT": "true", **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The ``tiny_random`` verifier, saved with ``save_pretrained`` (model + tokenizer)."""
    cfg = OmegaConf.load(CONF / "model" / "tiny_random.yaml")
    pair = load_pair(cfg, torch.device("cpu"), torch.float32, seed=0)
    folder = tmp_path_factory.mktemp("tiny_random")
    pair.verifier.save_pretrained(folder)
    pair.tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_pair(tiny_model_dir):
    """The tiny pair loaded back through the real loading path (a local folder)."""
    cfg = OmegaConf.load(CONF / "model" / "tiny_random.yaml")
    cfg.verifier.path = str(tiny_model_dir)
    return load_pair(cfg, torch.device("cpu"), torch.float32)


def tiny_sweep_args(model_dir, *extra) -> list[str]:
    """``run.py`` arguments for one quick run of the tiny pair (one 100-token sample)."""
    return ["model=tiny_random", f"model.verifier.path={model_dir}", "dataset=gutenberg", "dataset.context_len=100",
            "dataset.num_samples=1", "progress=false", *extra]


def finished_runs(outputs: Path) -> dict[str, int]:
    """Finished ``experiment=ppl`` run folders under ``outputs`` -> their results' mtime (ns)."""
    return {path.parent.name: path.stat().st_mtime_ns for path in outputs.glob("ppl/*/results.parquet")}


SWEEP_GRID = ["p=0.6,0.7,0.8,0.9", "chunk_size=4,8,16"]  # 12 runs


@pytest.fixture(scope="session")
def killed_sweep(tiny_model_dir, tmp_path_factory):
    """A 12-run sweep of the tiny pair killed (SIGKILL) once half its runs finished, then run again
    to the end: ``(outputs, finished before the kill, run folders started before it, stdout of the rerun)``."""
    outputs = tmp_path_factory.mktemp("sweep")
    env = {**os.environ, "SPECATTN_OUTPUTS": str(outputs), "WANDB_SILENT": "true"}
    command = [sys.executable, str(ROOT / "run.py"), "-m", *tiny_sweep_args(tiny_model_dir, "logger=none"), *SWEEP_GRID]
    first = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             start_new_session=True)
    deadline = time.monotonic() + 300
    while len(finished_runs(outputs)) < 6 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    before = finished_runs(outputs)
    started = {path.name for path in (outputs / "ppl").iterdir() if path.is_dir()}
    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    return outputs, before, started, again.stdout


def paper_table_args(model_dir, *extra) -> list[str]:
    return ["model=tiny_random", f"model.verifier.path={model_dir}", "dataset=gutenberg", "dataset.context_len=300",
            "chunk_size=8",
            "logger=none", "progress=false", *extra]


@pytest.fixture(scope="session")
def paper_run(tiny_model_dir, tmp_path_factory):
    """``experiment=paper_table`` on two samples of the tiny pair: ``(outputs, results path, stdout)``."""
    outputs = tmp_path_factory.mktemp("paper")
    result = run_cli("experiment=paper_table", *paper_table_args(tiny_model_dir, "dataset.num_samples=2"),
                     env={"SPECATTN_OUTPUTS": str(outputs)})
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    return outputs, Path(last.removeprefix("results: ")), result.stdout


def require_local_slurm():
    """``scripts/local_slurm.py`` as a module (``scripts/`` is not a package), once it is known to be
    able to run here; else the test skips, or fails under ``SPECATTN_REQUIRE_SLURM=1``."""
    spec = importlib.util.spec_from_file_location("local_slurm", ROOT / "scripts" / "local_slurm.py")
    local_slurm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(local_slurm)
    reason = local_slurm.missing()
    if reason and os.environ.get("SPECATTN_REQUIRE_SLURM") == "1":
        pytest.fail(f"no local Slurm cluster, and SPECATTN_REQUIRE_SLURM=1: {reason}")
    if reason:
        pytest.skip(f"no local Slurm cluster: {reason}")
    return local_slurm


@pytest.fixture(scope="session")
def slurm_cluster():
    """A single-node Slurm with job accounting (``scripts/local_slurm.py``) for the session: started on
    first use, stopped (jobs cancelled, daemons ended by their PIDs, folder removed) at the end of the
    session whatever the tests did. Skips the test where root or Debian's Slurm packages are missing,
    fails it instead under ``SPECATTN_REQUIRE_SLURM=1`` (set by ``.ci/run`` once it installed them)."""
    cluster = require_local_slurm().LocalSlurm.start()
    yield cluster
    cluster.stop()
    shutil.rmtree(cluster.folder)


@pytest.fixture
def small_disk(tmp_path) -> Path:
    """A real 16 MiB disk: a tmpfs mounted on a fresh folder (skipped where mounting is not permitted)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte (the file is deleted to free it again)."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as handle:
        try:
            while handle.write(b"\0" * 4096):
                pass
        except OSError:  # ENOSPC: full
            pass
    return filler
