"""Decoding metrics over the tokens kept (tau, acceptance) next to the per-step ones (tau_steps,
acceptance_steps), and the prompts decoding takes (windows of decode.prompt_len tokens)."""

import json

import pandas as pd
import pytest

from specattn.decode.decode_metrics import drafts_to_output_end

from .conftest import run_cli


def test_a_last_step_past_the_output_counts_only_its_kept_drafts():
    # steps add 3, 5, 2 tokens (10), the fourth 4 of which 2 fit: it kept 2 drafted tokens, both accepted
    assert drafts_to_output_end([2, 4, 1, 3], 12, gamma=4) == (4 + 4 + 4 + 2, 2 + 4 + 1 + 2)
    # the output ends with the last step's own token: the step counts in full (4 drafted, 3 accepted)
    assert drafts_to_output_end([2, 4, 1, 3], 14, gamma=4) == (16, 10)
    # a last step that rejected its first draft: its one token is the verifier's, 4 drafted, 0 accepted
    assert drafts_to_output_end([4, 0], 6, gamma=4) == (8, 4)
    # autoregressive decoding (gamma 0): nothing drafted
    assert drafts_to_output_end([0, 0, 0], 3, gamma=0) == (0, 0)
    with pytest.raises(ValueError, match="cannot end"):
        drafts_to_output_end([2, 4], 3, gamma=4)  # the last step would have added nothing


def test_tau_counts_the_tokens_kept_when_the_last_step_overshoots(tiny_model_dir, tmp_path):
    """The draft is the verifier itself (all 6 layers), so dense verification accepts every drafted token:
    3 steps of gamma + 1 = 5 tokens make 15, of which max_new_tokens=12 are kept. tau = 12 / 3 = 4, the
    documented new tokens per step; tau_steps = 15 / 3 = 5 counts the 3 thrown away."""
    result = run_cli("experiment=decode", "model=tiny_random", f"model.verifier.path={tiny_model_dir}",
                     "model.draft.layers=[0,1,2,3,4,5]", "method=dense", "dataset.num_samples=1", "gamma=4",
                     "decode.prompt_len=80", "decode.max_new_tokens=12", "logger=none", "progress=false",
                     env={"SPECATTN_OUTPUTS": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    run_dir = next((tmp_path / "decode").iterdir())
    row = pd.read_parquet(run_dir / "results.parquet").iloc[0]
    assert (row.new_tokens, row.steps, row.accepted_steps, row.drafted_steps) == (12, 3, 12, 12)
    assert row.tau == 4.0 and row.tau_steps == 5.0
    # the last step kept 2 of its 4 accepted drafts: up to the output's end 4 + 4 + 2 drafted, all accepted
    assert (row.drafted, row.accepted) == (10, 10)
    summary = pd.read_parquet(run_dir / "summary.parquet").iloc[0]
    assert summary.tau == 4.0 and summary.acceptance == 1.0
    assert "tau_steps" not in summary  # the printed summary holds the measures over the tokens kept


def test_prompts_are_windows_of_prompt_len_from_files_long_enough(tiny_model_dir, tmp_path):
    """decode.prompt_len, not dataset.context_len, cuts the prompts: a file shorter than context_len but
    longer than prompt_len gives a prompt, and a file shorter than prompt_len gives none."""
    files = tmp_path / "files"
    files.mkdir()
    (files / "a_short.txt").write_text("x" * 30)  # byte tokenizer: fewer than 80 tokens
    (files / "b_medium.txt").write_text("medium file " * 10)  # 120 bytes: a prompt, no 300-token window
    (files / "c_long.txt").write_text("a longer file " * 40)
    result = run_cli("experiment=decode", "model=tiny_random", f"model.verifier.path={tiny_model_dir}",
                     "dataset=text_files", f"dataset.source.paths=[{files}/*.txt]", "dataset.context_len=300",
                     "dataset.num_samples=2", "decode.prompt_len=80", "decode.max_new_tokens=4", "method=dense",
                     "logger=none", "progress=false", env={"SPECATTN_OUTPUTS": str(tmp_path / "out")})
    assert result.returncode == 0, result.stderr
    run_dir = next((tmp_path / "out" / "decode").iterdir())
    results = pd.read_parquet(run_dir / "results.parquet")
    assert results.sample_id.tolist() == ["b_medium#0", "c_long#0"] and (results.prompt_len == 80).all()
    lines = [json.loads(line) for line in (run_dir / "generations.jsonl").read_text().splitlines()]
    assert [line["sample_id"] for line in lines] == ["b_medium#0", "c_long#0"]
