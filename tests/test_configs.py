"""Every config composes, and each bad input is one clear line (exit code 2) before any work."""

import time
from pathlib import Path

import pytest

from specattn.core.errors import SpecAttnError
from specattn.runs.signature import signature
from specattn.runs.validate import validate

from .conftest import CONF, compose_config, run_cli

GROUPS = ("model", "dataset", "method", "experiment", "logger")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


#: what an option needs besides itself to be a complete run
NEEDS = {("dataset", "text_files"): [f"dataset.source.paths=[{CONF.parent / 'README.md'}]"]}


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_validates(group, option):
    cfg = compose_config(f"{group}={option}", *NEEDS.get((group, option), []))
    assert cfg[group] is not None
    validate(cfg)
    assert cfg.hydra.run.dir.endswith(f"-{signature(cfg)}")


def test_signature_ignores_logger_and_paths_but_not_results_keys():
    base = signature(compose_config())
    assert signature(compose_config("logger=none", "paths.outputs=/elsewhere", "rerun=true")) == base
    assert signature(compose_config("p=0.9")) != base
    assert signature(compose_config("method=dense")) != base


def test_the_launch_memory_table_never_forks_a_run():
    """``launch.peak_memory_gb`` only gates parallel launches: kernel_bench (identified by its whole config,
    no ``depends_on``) and the default keep their folders when it changes."""
    for experiment in ("experiment=ppl", "experiment=kernel_bench"):
        base = signature(compose_config(experiment))
        assert signature(compose_config(experiment, "launch.peak_memory_gb.qwen_coder=99")) == base


def test_method_p_follows_the_top_level_key():
    cfg = compose_config("p=0.97")
    assert cfg.method.p == 0.97 and cfg.experiment.run_label == "specattn-p0.97"


@pytest.mark.parametrize("override,fragment", [
    ("p=1.5", "p=1.5 is outside (0, 1]"),
    ("p=0", "p=0 is outside (0, 1]"),
    ("chunk_size=0", "chunk_size=0 must be a positive integer"),
    ("gamma=0", "gamma=0 must be a positive integer"),
    ("dense_layers=-1", "dense_layers=-1 must be an integer >= 0"),
    ("head_agg=median", "head_agg='median' is unknown"),
    ("dataset.context_len=40000", "dataset.context_len=40000 exceeds what model=qwen_coder supports (32768 tokens)"),
    ("dataset.prefill_frac=1.5", "dataset.prefill_frac=1.5 must lie in (0, 1)"),
    ("device=tpu", "device='tpu' is unknown"),
])
def test_bad_values_are_refused_in_validation(override, fragment):
    with pytest.raises(SpecAttnError) as error:
        validate(compose_config(override))
    assert fragment in str(error.value)


@pytest.mark.parametrize("args,fragment", [
    (["model=gpt5"], "model=gpt5 is unknown: allowed are llama, llama3, qwen25, qwen_coder, smollm2, tiny_random"),
    (["-m", "method=specattn,nope"], "method=nope is unknown"),
    (["p=1.5"], "p=1.5 is outside (0, 1]"),
    (["chunk_size=0"], "chunk_size=0"),
    (["device=cuda"], "device=cuda but no CUDA GPU is visible"),
    (["model=llama", "dataset=gutenberg", "dataset.context_len=4096"], "exceeds what model=llama supports (2048"),
])
def test_cli_prints_one_line_and_exits_2(tmp_path, args, fragment):
    import torch

    if "device=cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    start = time.perf_counter()
    result = run_cli(*args, "logger=none", env={"SPECATTN_OUTPUTS": str(tmp_path)})
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr
    assert time.perf_counter() - start < 60  # refused before any model or data loads
    assert not any(Path(tmp_path).rglob("results.parquet"))


def test_decode_real_takes_the_draft_launch_settings_tuned_for_its_model():
    """experiment.draft_epilogue_rows / draft_down_split default to experiment.draft_launch's entry for model.name
    (0 for a model without one); a command-line value wins; the resolved value is what the signature hashes, so the
    default and the same value typed out name one run."""
    tuned = compose_config("experiment=decode_real", "model=qwen_coder")
    assert (tuned.experiment.draft_epilogue_rows, tuned.experiment.draft_down_split) == (16, 8)
    untuned = compose_config("experiment=decode_real", "model=llama3")
    assert (untuned.experiment.draft_epilogue_rows, untuned.experiment.draft_down_split) == (0, 0)
    off = compose_config("experiment=decode_real", "model=qwen_coder", "experiment.draft_down_split=0")
    assert (off.experiment.draft_epilogue_rows, off.experiment.draft_down_split) == (16, 0)
    assert signature(off) != signature(tuned)
    assert signature(compose_config("experiment=decode_real", "model=qwen_coder", "experiment.draft_down_split=8",
                                    "experiment.draft_epilogue_rows=16")) == signature(tuned)
