"""A joblib sweep whose jobs running at once would not fit in memory is refused in one line, before any
job starts (specattn.runs.parallel_memory, called by the sweeper)."""

import os

import pytest
from omegaconf import OmegaConf

from specattn.core.errors import SpecAttnError
from specattn.runs.parallel_memory import available_gb, check_parallel_memory, parallel_jobs

from .conftest import compose_config, run_cli

JOBLIB = OmegaConf.create({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
                           "n_jobs": 4})


def jobs(*models: str):
    return [compose_config(f"model={model}") for model in models]


def test_jobs_that_do_not_fit_are_refused_with_an_n_jobs_that_fits():
    qwen = compose_config().launch.peak_memory_gb.qwen_coder
    with pytest.raises(SpecAttnError) as refused:
        check_parallel_memory(JOBLIB, jobs("qwen_coder", "qwen_coder", "qwen_coder"), available=2.5 * qwen)
    message = str(refused.value)
    assert message.startswith("hydra.launcher.n_jobs=4 would run 3 jobs at once")
    assert f"3 x model=qwen_coder at {qwen:g} GB" in message and message.endswith("use hydra.launcher.n_jobs=2")
    check_parallel_memory(JOBLIB, jobs("qwen_coder", "qwen_coder", "qwen_coder"), available=3.1 * qwen)  # fits


def test_the_largest_jobs_count_and_one_job_at_a_time_is_suggested_when_two_do_not_fit():
    small = compose_config().launch.peak_memory_gb.tiny_random
    big = compose_config().launch.peak_memory_gb.qwen_coder
    mixed = jobs("tiny_random", "tiny_random", "qwen_coder")
    two = OmegaConf.merge(JOBLIB, {"n_jobs": 2})
    check_parallel_memory(two, mixed, available=big + small + 0.01)
    with pytest.raises(SpecAttnError, match="use hydra.launcher.n_jobs=1 or drop hydra/launcher=joblib"):
        check_parallel_memory(two, mixed, available=big + small - 0.01)


def test_other_launchers_single_jobs_and_unmeasured_models_are_not_checked():
    basic = OmegaConf.create({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"})
    check_parallel_memory(basic, jobs("qwen_coder", "qwen_coder"), available=0.001)
    check_parallel_memory(JOBLIB, jobs("qwen_coder"), available=0.001)  # one job runs alone
    check_parallel_memory(JOBLIB, jobs("llama", "llama"), available=0.001)  # no measured peak


def test_n_jobs_as_joblib_reads_it():
    cpus = os.cpu_count()
    assert parallel_jobs(4, 3) == 3 and parallel_jobs(2, 5) == 2 and parallel_jobs(None, 5) == 1
    assert parallel_jobs(-1, 100) == cpus and parallel_jobs(-2, 100) == max(1, cpus - 1)
    with pytest.raises(SpecAttnError, match="hydra.launcher.n_jobs=0 must be a nonzero integer"):
        parallel_jobs(0, 3)
    bad = compose_config("model=llama", "+launch.peak_memory_gb.llama=lots")
    with pytest.raises(SpecAttnError, match="launch.peak_memory_gb.llama='lots' must be a number of GB > 0"):
        check_parallel_memory(JOBLIB, [bad, bad], available=100)
    assert available_gb() > 0


def test_the_readme_sweep_is_refused_before_any_folder_when_memory_is_short(tmp_path):
    """The README's parallel sweep, with a peak no machine has: one line, exit code 2, no sweep folder."""
    sweep = tmp_path / "sweep"
    result = run_cli("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4", "p=0.9,0.95,0.99",
                     "launch.peak_memory_gb.qwen_coder=1000000", f"hydra.sweep.dir={sweep}", "logger=none")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: hydra.launcher.n_jobs=4 would run 3 jobs at once")
    assert "3 x model=qwen_coder at 1e+06 GB" in lines[0] and lines[0].endswith("(one job at a time)")
    assert not sweep.exists()
