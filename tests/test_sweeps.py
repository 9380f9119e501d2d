"""Sweeps at scale: grids as users write them, the checked sweeper (a bad value anywhere in a grid
refuses it before anything runs; finished runs are not launched again), a killed 12-run sweep that
restarts without recomputing finished runs, the joblib launcher (W&B id = signature, group = the
sweep), the Slurm launcher config (composes; the same submitit path runs locally; the real Slurm
tests are in test_slurm.py), and collecting every run."""

from pathlib import Path

import pandas as pd
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate

from specattn.results.collect import collect
from specattn.results.collect import main as results_main
from specattn.runs.signature import signature
from specattn.runs.validate import check_group_choices, validate

from .conftest import CONF, SWEEP_GRID, compose_config, finished_runs, run_cli
from .conftest import tiny_sweep_args as tiny


def expand(overrides: list[str]) -> list[list[str]]:
    """The jobs Hydra's basic sweeper makes of a multirun command line."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    parsed = OverridesParser.create().parse_overrides(overrides)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def test_the_readme_grid_composes_into_18_jobs_and_12_distinct_runs():
    overrides = ["method=specattn,quest", "p=0.9,0.95,0.99", "chunk_size=8,16,32"]
    check_group_choices(overrides, CONF)
    jobs = expand(overrides)
    assert len(jobs) == 18
    signatures = set()
    for job in jobs:
        cfg = compose_config(*job)
        validate(cfg)
        signatures.add(signature(cfg))
        assert cfg.hydra.sweep.subdir.endswith(signature(cfg))
    assert len(signatures) == 9 + 3  # quest reads no p: its three p values are one run each


def test_killed_sweep_restarts_without_recomputing_finished_runs(killed_sweep):
    outputs, before, started, stdout = killed_sweep
    assert 6 <= len(before) < 12, "the sweep was not killed halfway"
    after = finished_runs(outputs)
    assert len(after) == 12
    assert {name: after[name] for name in before} == before  # finished runs were not rewritten
    assert stdout.count("results exist, skipping") == len(before)  # the sweeper's line per finished run
    assert f"Launching {12 - len(before)} jobs locally" in stdout  # finished runs were not even launched
    for name in set(after) - set(before):  # the rest ran now, the one killed midway included
        assert after[name] > max(before.values())
    assert started - set(before) <= set(after)  # a run killed midway left no results and was recomputed


def run_files(outputs: Path) -> dict[str, int]:
    """Every file in every run folder of ``outputs`` -> its mtime (ns)."""
    return {str(path): path.stat().st_mtime_ns for path in outputs.glob("ppl/*/**/*") if path.is_file()}


def test_a_bad_value_in_the_middle_of_a_grid_refuses_the_sweep_before_any_run(tiny_model_dir, tmp_path):
    result = run_cli("-m", *tiny(tiny_model_dir, "logger=none", "p=0.9,1.5,0.95", "chunk_size=8"),
                     env={"SPECATTN_OUTPUTS": str(tmp_path / "out")})
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: job #1 (p=1.5) of the sweep: p=1.5 is outside (0, 1]: the nucleus mass must be a number "
        "with 0 < p <= 1 (e.g. p=0.95)"]
    assert "Launching" not in result.stdout
    assert not (tmp_path / "out").exists()  # not even the sweep folder: p=0.9, before 1.5, did not run


def test_a_finished_sweep_run_again_launches_nothing(killed_sweep, tiny_model_dir):
    outputs = killed_sweep[0]
    files = run_files(outputs)
    again = run_cli("-m", *tiny(tiny_model_dir, "logger=none"), *SWEEP_GRID,
                    env={"SPECATTN_OUTPUTS": str(outputs)})
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("results exist, skipping (rerun=true recomputes): ") == 12
    assert "nothing to launch: all 12 runs of the sweep have results" in again.stdout
    assert "Launching" not in again.stdout
    assert run_files(outputs) == files  # no file of any run folder was written


def test_rerun_true_launches_finished_runs_again(tiny_model_dir, tmp_path):
    args = ["-m", *tiny(tiny_model_dir, "logger=none", "p=0.6")]
    assert run_cli(*args, env={"SPECATTN_OUTPUTS": str(tmp_path)}).returncode == 0
    before = finished_runs(tmp_path)
    again = run_cli(*args, "rerun=true", env={"SPECATTN_OUTPUTS": str(tmp_path)})
    assert again.returncode == 0, again.stderr
    assert "skipping" not in again.stdout and "Launching 1 jobs locally" in again.stdout
    after = finished_runs(tmp_path)
    assert after.keys() == before.keys() and all(after[name] > before[name] for name in before)


def test_collect_gathers_every_run_with_config_columns(killed_sweep, tmp_path, capsys):
    outputs = killed_sweep[0]
    table = collect(outputs)
    assert len(table) == 12 * 2 and table.run.nunique() == 12  # one sample, dense + specattn per run
    assert {("specattn", p, c) for p in (0.6, 0.7, 0.8, 0.9) for c in (4, 8, 16)} == set(
        table[table.method == "specattn"][["method", "config.p", "config.chunk_size"]].itertuples(index=False, name=None))
    assert (table["config.model.name"] == "tiny_random").all()
    assert table["config.model.draft.layers"].iloc[0] == "[0, 2, 4, 5]"
    assert (table.signature == table.run.str.rsplit("-", n=1).str[-1]).all()
    unfinished = outputs / "ppl" / "specattn-p0.5-0000000000"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text("p: 0.5\n")  # a run that never finished
    out = tmp_path / "all.parquet"
    assert results_main(["collect", str(outputs), "-o", str(out)]) == 0
    assert "collected 24 rows from 12 runs (1 unfinished left out)" in capsys.readouterr().out
    pd.testing.assert_frame_equal(pd.read_parquet(out), table)
    assert results_main(["collect", str(tmp_path / "nothing")]) == 2
    assert "no such outputs folder" in capsys.readouterr().err


def wandb_records(path: Path):
    """Payloads of a ``.wandb`` file: W&B's 7-byte header, then a LevelDB-format log (32 KiB blocks of
    records with a 7-byte header: crc32, length, type 1 full / 2 first / 3 middle / 4 last)."""
    data, pos, block, pending = path.read_bytes(), 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4: pos + 6], "little"), data[pos + 6]
        payload, pos = data[pos + 7: pos + 7 + length], pos + 7 + length
        pending = payload if kind in (1, 2) else pending + payload
        if kind in (1, 4):
            yield pending


def wandb_runs(outputs: Path) -> list[tuple[str, str]]:
    """``(run id, group)`` of every offline W&B run under ``outputs``, read back from its records."""
    from wandb.proto import wandb_internal_pb2

    found = []
    for path in outputs.rglob("run-*.wandb"):
        for data in wandb_records(path):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(data)
            if record.WhichOneof("record_type") == "run":
                found.append((record.run.run_id, record.run.run_group))
                break
    return found


def test_joblib_launcher_runs_the_sweep_in_parallel_and_wandb_ids_start_with_signatures(tiny_model_dir, tmp_path):
    result = run_cli("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweep.dir=" + str(tmp_path / "sw1"),
                     *tiny(tiny_model_dir, "p=0.6,0.8"), env={"SPECATTN_OUTPUTS": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    runs = sorted(path.parent for path in (tmp_path / "sw1").glob("*/results.parquet"))
    assert [run.name.split("-")[1] for run in runs] == ["p0.6", "p0.8"]
    ids = sorted((run_id.rsplit("-", 1)[0], group) for run_id, group in wandb_runs(tmp_path / "sw1"))
    assert ids == sorted((run.name.rsplit("-", 1)[1], "sw1") for run in runs)  # id: signature-<data and code hash>


def test_slurm_launcher_config_composes():
    cfg = compose_config("hydra/launcher=slurm", "hydra.launcher.partition=gpu", "p=0.9")
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher.partition == "gpu" and launcher.gpus_per_node == 1 and launcher.max_num_timeout == 3
    assert launcher.submitit_folder == f"{cfg.hydra.sweep.dir}/.submitit/%j"
    slurm = instantiate(launcher)
    assert slurm.params["partition"] == "gpu" and slurm.params["timeout_min"] == 240


def test_the_submitit_path_runs_a_sweep(tiny_model_dir, tmp_path):
    """The Slurm launcher's code path (submitit pickles the job, a worker process runs it) with
    submitit's local executor instead of sbatch."""
    result = run_cli("-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
                     *tiny(tiny_model_dir, "logger=none", "p=0.6,0.8"), env={"SPECATTN_OUTPUTS": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert len(list(tmp_path.glob("ppl/*/results.parquet"))) == 2
