"""``run.py`` end to end: results files, W&B offline files, skip on rerun, resume after a kill."""

from pathlib import Path

import pandas as pd
import pytest

from .conftest import run_cli

REQUIRED_COLUMNS = {"method", "p", "chunk_size", "gamma", "context_len", "sample", "tokens", "ppl", "dense_ppl",
                    "ppl_rel_increase", "kv_reduction", "kv_reduction_sparse_layers"}


def results_path(stdout: str) -> Path:
    last = stdout.strip().splitlines()[-1]
    assert last.startswith("results: "), stdout
    return Path(last.removeprefix("results: "))


def tiny_args(model_dir, *extra):
    return ["model=tiny_random", f"model.verifier.path={model_dir}", "dataset.context_len=200", "dataset.num_samples=3", "progress=false", *extra]


def test_tiny_run_writes_results_config_and_wandb(tiny_model_dir, tmp_path):
    env = {"SPECATTN_OUTPUTS": str(tmp_path)}
    result = run_cli(*tiny_args(tiny_model_dir, "p=0.8", "chunk_size=8"), env=env)
    assert result.returncode == 0, result.stderr
    path = results_path(result.stdout)
    run_dir = path.parent
    assert run_dir.parent == tmp_path / "ppl" and run_dir.name.startswith("specattn-p0.8-")
    frame = pd.read_parquet(path)
    assert REQUIRED_COLUMNS <= set(frame.columns)
    assert len(frame) == 6 and set(frame.method) == {"dense", "specattn"}
    assert (run_dir / "results.csv").is_file() and (run_dir / "summary.parquet").is_file()
    assert "p: 0.8" in (run_dir / "config.yaml").read_text()
    assert list((run_dir / "wandb").glob("offline-run-*"))
    sparse = frame[frame.method == "specattn"]
    assert (sparse.kv_reduction > 0).all() and (sparse.ppl.notna()).all()
    assert "ppl_rel_increase" in result.stdout and "specattn p=0.8" in result.stdout

    again = run_cli(*tiny_args(tiny_model_dir, "p=0.8", "chunk_size=8"), env=env)
    assert again.returncode == 0 and "skipping" in again.stdout
    assert results_path(again.stdout) == path
    assert pd.read_parquet(path).equals(frame)


def test_killed_run_resumes_from_its_sample_parts(tiny_model_dir, tmp_path):
    env = {"SPECATTN_OUTPUTS": str(tmp_path)}
    args = tiny_args(tiny_model_dir, "logger=none")
    first = run_cli(*args, env=env)
    path = results_path(first.stdout)
    complete = pd.read_parquet(path)
    # simulate a run killed after two samples: no final results, only the first two parts
    path.unlink()
    (path.parent / "parts" / "sample-00002.parquet").unlink()
    stamps = {p.name: p.stat().st_mtime_ns for p in (path.parent / "parts").glob("*.parquet")}
    resumed = run_cli(*args, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (path.parent / "parts").glob("*.parquet")
            if p.name in stamps} == stamps  # finished samples were not recomputed
    pd.testing.assert_frame_equal(pd.read_parquet(path).drop(columns="sample_seconds"),
                                  complete.drop(columns="sample_seconds"))


@pytest.mark.slow
def test_real_smollm2_pair_on_a_shipped_book(tmp_path):
    """SmolLM2-135M (self-speculative draft) on a short real sample of a shipped book."""
    result = run_cli("model=smollm2", "dataset=gutenberg", "dataset.context_len=320", "dataset.num_samples=1",
                     "logger=none", "progress=false",
                     env={"SPECATTN_OUTPUTS": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    frame = pd.read_parquet(results_path(result.stdout))
    dense = frame[frame.method == "dense"].iloc[0]
    sparse = frame[frame.method == "specattn"].iloc[0]
    assert sparse.sample_id == "melville-moby_dick#0" and sparse.tokens == 320 - 1 - 32
    assert 5 < dense.ppl < 200  # a real language model on real English text
    assert 0 < sparse.kv_reduction < 1 and sparse.ppl >= dense.ppl * 0.9
