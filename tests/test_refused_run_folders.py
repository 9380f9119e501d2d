"""A run refused after its folder was claimed (weights or a hub dataset that cannot be had offline, too
little text) leaves no run folder; a folder holding computed samples is kept."""

import pytest

from specattn.runs.run_folder import discard_if_unstarted

from .conftest import run_cli
from .conftest import tiny_sweep_args as tiny


def run_folders(outputs):
    return sorted(path.parent for path in outputs.rglob("run.json")) + sorted(outputs.rglob(".hydra"))


def test_an_offline_hub_run_leaves_no_folder(tmp_path):
    """The README's paper setting without the hub (W&B logging on, as by default)."""
    outputs = tmp_path / "out"
    result = run_cli("model=llama", "dataset=pg19", env={"SPECATTN_OUTPUTS": str(outputs), "HF_HUB_OFFLINE": "1",
                                                         "WANDB_MODE": "offline"})
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert run_folders(outputs) == [] and not list(outputs.rglob("*.parquet"))
    assert not (outputs / "ppl").exists()  # nor an empty experiment folder


def test_too_little_text_leaves_no_folder(tiny_model_dir, tmp_path):
    """97 bytes could hold 101 tokens (the byte bound checked before the folder is claimed), so the refusal
    comes once the tokenizer has counted 97, with the folder claimed."""
    text = tmp_path / "short.txt"
    text.write_text("x" * 97)
    outputs = tmp_path / "out"
    result = run_cli(*tiny(tiny_model_dir, "dataset=text_files", f"dataset.source.paths=[{text}]"),
                     env={"SPECATTN_OUTPUTS": str(outputs)})
    assert result.returncode == 2 and "holds only 0 windows" in result.stderr
    assert run_folders(outputs) == []


@pytest.mark.parametrize("left,kept", [
    ([], False),
    (["run.json", "config.yaml", "wandb/offline-run-x/run.wandb", ".hydra/config.yaml", "run.log", ".lock"], False),
    (["run.json", "config.yaml", "parts/sample-00000.parquet"], True),  # a computed sample: the run resumes from it
    (["run.json", "config.yaml", "summary.parquet"], True),
    (["notes.txt"], True),  # not a run's file
])
def test_only_folders_with_nothing_computed_are_discarded(tmp_path, left, kept):
    folder = tmp_path / "run"
    folder.mkdir()
    for name in left:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("x")
    assert discard_if_unstarted(folder) is not kept
    assert folder.is_dir() is kept
