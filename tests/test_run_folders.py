"""A run folder never mixes results of two configs, of two versions of the input data or of two
versions of the code, and a run that stops (kill -9, Ctrl-C, a full disk, a damaged file) says so in one
line and resumes or recovers with the same command. Real runs of the tiny pair; assertions on the
result tables."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from specattn.core.errors import SpecAttnError
from specattn.data.gutenberg import GutenbergBooks
from specattn.data.sources import Document, TextFiles
from specattn.data.windows import token_windows
from specattn.runs.data_fingerprint import data_fingerprint
from specattn.runs.code_version import code_files
from specattn.runs.outputs import readable, write_config, write_table
from specattn.runs.run_folder import Identity, claimed, finished, recorded
from specattn.runs.signature import signature

from .conftest import CONF, ROOT, compose_config, fill, run_cli
from .conftest import tiny_sweep_args as tiny
from .test_bad_input import refusal

LONG = ["dataset.context_len=400", "dataset.num_samples=60"]  # a run still going when the test acts on it


def start(args: list[str], env: dict) -> subprocess.Popen:
    """``python run.py *args`` in the background, in its own process group."""
    return subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT, text=True,
                            env={**os.environ, "WANDB_SILENT": "true", **env}, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            # an xdist worker ignores SIGINT and a child would inherit that: give it Ctrl-C back
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def finish(running: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = running.communicate(timeout=300)
    return subprocess.CompletedProcess(running.args, running.returncode, out, err)


def wait_for(pattern: str, root: Path, running: subprocess.Popen, timeout: float = 300) -> Path:
    """The first file under ``root`` matching ``pattern``, once it exists (the run is then midway)."""
    deadline = time.monotonic() + timeout
    while not (found := sorted(root.glob(pattern))):
        assert running.poll() is None, running.communicate()
        assert time.monotonic() < deadline, f"{root}/{pattern} never appeared"
        time.sleep(0.05)
    return found[0]


def one_line(result) -> str:
    """The single stderr line of a refused or stopped run."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def table(folder: Path) -> pd.DataFrame:
    """A run's results without the timing column (the rest is deterministic)."""
    return pd.read_parquet(folder / "results.parquet").drop(columns="sample_seconds")


def test_two_configs_in_one_folder_never_mix(tiny_model_dir, tmp_path):
    """Two configs pointed at one ``hydra.run.dir``: while one runs, after it is killed, and once the
    other finished, neither reads or skips on the other's results; rerun=true replaces them."""
    folder, env = tmp_path / "shared", {"SPECATTN_OUTPUTS": str(tmp_path / "out")}
    a = tiny(tiny_model_dir, "logger=none", f"hydra.run.dir={folder}", "p=0.5", *LONG)
    b = tiny(tiny_model_dir, "logger=none", f"hydra.run.dir={folder}", "p=0.9", "dataset.num_samples=2")
    running = start(a, env)
    wait_for("parts/sample-00000.parquet", folder, running)
    os.killpg(running.pid, signal.SIGSTOP)  # midway, and it stays there however slowly the others start
    other, same = finish(start(b, env)), finish(start(a, env))  # both while the first one holds the folder
    assert other.returncode == 2 and "holds the run of another config" in one_line(other)
    assert same.returncode == 2 and f"run folder {folder} is in use by another run (pid {running.pid})" in one_line(same)
    os.killpg(running.pid, signal.SIGKILL)
    running.wait()
    after_kill = run_cli(*b, env=env)
    assert after_kill.returncode == 2 and "holds the run of another config" in one_line(after_kill)
    assert not (folder / "results.parquet").exists()
    replaced = run_cli(*b, "rerun=true", env=env)
    assert replaced.returncode == 0, replaced.stderr
    results = table(folder)
    assert len(results) == 2 * 2 and sorted(results["sample"].unique()) == [0, 1]
    assert set(results.setting) == {"dense", "specattn p=0.9"} and set(results.p.dropna()) == {0.9}
    assert set(results.context_len) == {100}
    finished_other = run_cli(*a, env=env)
    assert finished_other.returncode == 2 and "holds the run of another config" in one_line(finished_other)
    assert "results exist" not in finished_other.stdout
    pd.testing.assert_frame_equal(table(folder), results)


def test_a_changed_input_file_is_recomputed(tiny_model_dir, tmp_path):
    text = tmp_path / "book.txt"
    readme = (ROOT / "README.md").read_text()
    args = tiny(tiny_model_dir, "logger=none", "dataset=text_files", f"dataset.source.paths=[{text}]")
    text.write_text(readme[:2000])
    first = run_cli(*args, env={"SPECATTN_OUTPUTS": str(tmp_path / "out")})
    folder = Path(first.stdout.strip().splitlines()[-1].removeprefix("results: ")).parent
    before = table(folder)
    text.write_text(readme[2000:4000])  # same length, other words
    second = run_cli(*args, env={"SPECATTN_OUTPUTS": str(tmp_path / "out")})
    assert second.returncode == 0, second.stderr
    assert f"recomputing {folder}: its results are stale: dataset.source changed since they were computed" \
           in second.stdout and "results exist" not in second.stdout
    after = table(folder)
    assert not after.ppl.equals(before.ppl)
    fresh = run_cli(*args, env={"SPECATTN_OUTPUTS": str(tmp_path / "fresh")})
    assert fresh.returncode == 0, fresh.stderr
    pd.testing.assert_frame_equal(table(tmp_path / "fresh" / folder.relative_to(tmp_path / "out")), after)


@pytest.fixture(scope="module")
def finished_tiny(tiny_model_dir, tmp_path_factory) -> tuple[Path, list[str]]:
    """One finished run of the tiny pair (``logger=none``): ``(outputs, its arguments but paths.outputs)``."""
    outputs = tmp_path_factory.mktemp("finished")
    args = tiny(tiny_model_dir, "logger=none")
    result = run_cli(*args, f"paths.outputs={outputs}")
    assert result.returncode == 0, result.stderr
    return outputs, args


def copy_of(finished: tuple[Path, list[str]], tmp_path: Path) -> tuple[Path, list[str]]:
    """A copy of the finished run: ``(its folder, the arguments that name it)``."""
    outputs, args = finished
    shutil.copytree(outputs, tmp_path / "out")
    (folder,) = (tmp_path / "out" / "ppl").iterdir()
    return folder, [*args, f"paths.outputs={tmp_path / 'out'}"]


def test_a_damaged_results_table_is_refused_under_a_sweep_too(capsys, finished_tiny, tmp_path):
    """With or without ``-m``, a finished run whose results.parquet is damaged is refused in one line,
    never skipped as done (the sweeper skips only results it can read)."""
    folder, args = copy_of(finished_tiny, tmp_path)
    (folder / "results.parquet").write_bytes(b"PAR1 not a table")
    for flags in ([], ["-m"]):
        line = refusal(capsys, *flags, *args)
        assert line.startswith(f"error: {folder}/results.parquet is unreadable (ArrowInvalid: ") and \
            line.endswith("): rerun=true recomputes the run"), line
    assert not readable(folder) and (folder / "results.parquet").read_bytes() == b"PAR1 not a table"


def test_a_damaged_run_record_is_named_as_such(capsys, finished_tiny, tmp_path):
    """A damaged run.json in the run's own folder (no hydra.run.dir given) is called damaged, not
    another config's run."""
    folder, args = copy_of(finished_tiny, tmp_path)
    (folder / "run.json").write_text('{"signature": "')
    assert refusal(capsys, *args) == f"error: run folder {folder} has a damaged run record (run.json: JSONDecodeError): " \
                                     "whose results it holds is unknown: rerun=true recomputes the run there"


def test_a_refused_run_leaves_the_folders_hydra_record_alone(finished_tiny, tmp_path):
    """A run refused in its folder (here past run.py's checks: --config-dir skips them) leaves the
    folder's .hydra/ naming the config whose results are there."""
    folder, args = copy_of(finished_tiny, tmp_path)
    record = {path.name: path.read_text() for path in (folder / ".hydra").iterdir()}
    assert "- dataset.context_len=100" in record["overrides.yaml"]
    refused = run_cli("--config-dir", str(CONF), *args, "p=0.5", f"hydra.run.dir={folder}")
    assert refused.returncode == 2 and "holds the run of another config" in one_line(refused)
    assert {path.name: path.read_text() for path in (folder / ".hydra").iterdir()} == record


def repo_copy(tmp_path: Path) -> Path:
    """The package, its configs and run.py copied: code a test may edit."""
    copy = tmp_path / "repo"
    for name in ("specattn", "conf", "hydra_plugins"):
        shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "run.py", copy / "run.py")
    return copy


def run_copy(copy: Path, *args: str) -> subprocess.CompletedProcess:
    """``python run.py *args`` of the copy, importing the copy's package."""
    env = {**os.environ, "PYTHONPATH": str(copy), "WANDB_SILENT": "true"}
    return subprocess.run([sys.executable, str(copy / "run.py"), *args], cwd=copy, env=env, capture_output=True,
                          text=True, timeout=600)


def test_results_of_other_code_are_never_reused(tiny_model_dir, tmp_path):
    """Edit SpecAttn's selection rule and run the same command: refused, naming the file (a docstring or
    comment edit is no other code); rerun=true recomputes under the new code, as another W&B run."""
    copy = repo_copy(tmp_path)
    args = tiny(tiny_model_dir, "logger=wandb", "p=0.5", "chunk_size=8", f"paths.outputs={tmp_path / 'out'}")
    first = run_copy(copy, *args)
    assert first.returncode == 0, first.stderr
    folder = Path(first.stdout.strip().splitlines()[-1].removeprefix("results: ")).parent
    before, (first_wandb,) = table(folder), list((folder / "wandb").glob("offline-run-*"))
    method = copy / "specattn" / "methods" / "specattn.py"
    method.write_text(method.read_text().replace('"""SpecAttn (arXiv', '"""SpecAttn, as published (arXiv', 1)
                      .replace("    def selector(self) -> Nucleus:\n", "    def selector(self) -> Nucleus:  # the nucleus\n"))
    reworded = run_copy(copy, *args)
    assert reworded.returncode == 0 and f"results exist, skipping (rerun=true recomputes): {folder}" in reworded.stdout
    method.write_text(method.read_text().replace("return Nucleus(self.p)", "return Nucleus(self.p ** 2)"))
    changed = run_copy(copy, *args)
    assert changed.returncode == 2 and one_line(changed) == f"error: results in {folder} were computed by other " \
        "code: specattn/methods/specattn.py differs: rerun=true recomputes them"
    assert "results exist" not in changed.stdout
    pd.testing.assert_frame_equal(table(folder), before)
    recomputed = run_copy(copy, *args, "rerun=true")
    assert recomputed.returncode == 0, recomputed.stderr
    after = table(folder)
    assert after.kv_reduction.iloc[-1] > before.kv_reduction.iloc[-1]  # p ** 2 keeps fewer chunks
    (wandb_run,) = (folder / "wandb").glob("offline-run-*")
    assert wandb_run.name.rsplit("-", 2)[1:] != first_wandb.name.rsplit("-", 2)[1:]  # same signature, other id
    assert wandb_run.name.rsplit("-", 2)[1] == first_wandb.name.rsplit("-", 2)[1] == folder.name.rsplit("-", 1)[1]


def test_damaged_results_and_parts_are_one_line_and_rerun_recovers(tiny_model_dir, tmp_path):
    folder, env = tmp_path / "run", {"SPECATTN_OUTPUTS": str(tmp_path / "out")}
    args = tiny(tiny_model_dir, "logger=none", f"hydra.run.dir={folder}", "dataset.num_samples=2")
    assert run_cli(*args, env=env).returncode == 0
    good = table(folder)
    (folder / "results.parquet").unlink()  # as if killed after its samples
    (folder / "parts" / "sample-00001.parquet").write_bytes(b"")
    damaged = run_cli(*args, env=env)
    assert damaged.returncode == 2 and one_line(damaged) == f"error: {folder}/parts/sample-00001.parquet is " \
        "unreadable (ArrowInvalid: Could not open Parquet input source it: Parquet file size is 0 bytes): delete it " \
        "to recompute that sample, or rerun=true to recompute the run"
    (folder / "results.parquet").write_bytes(b"PAR1 not a table")
    damaged = run_cli(*args, env=env)
    assert damaged.returncode == 2 and one_line(damaged) == f"error: {folder}/results.parquet is unreadable " \
        "(ArrowInvalid: Could not open Parquet input source it: Parquet magic bytes not found in footer. Either the " \
        "file is corrupted or this is not a parquet file.): rerun=true recomputes the run"
    assert run_cli(*args, "rerun=true", env=env).returncode == 0
    pd.testing.assert_frame_equal(table(folder), good)


def test_a_full_disk_midway_leaves_no_partial_file_and_the_run_resumes(tiny_model_dir, tmp_path, small_disk):
    """The disk fills while the run is held (SIGSTOP) after its first sample, however slowly this test is scheduled
    (unheld, a busy 2-core machine once let the run write all its samples before the disk was full)."""
    args = tiny(tiny_model_dir, "logger=none", "dataset.context_len=300", "dataset.num_samples=8",
                f"paths.outputs={small_disk / 'out'}")
    running = start(args, {})
    folder = wait_for("out/ppl/*/parts/sample-00000.parquet", small_disk, running).parents[1]
    os.killpg(running.pid, signal.SIGSTOP)
    written = len(list((folder / "parts").glob("sample-*.parquet")))
    filler = fill(small_disk)
    os.killpg(running.pid, signal.SIGCONT)
    stopped = finish(running)
    assert written < 8, "the run wrote all 8 samples before the test could hold it"
    assert stopped.returncode == 2, stopped.stderr
    line = one_line(stopped)
    assert line.startswith(f"error: cannot write {folder}/parts/sample-0000") and "No space left on device" in line
    assert line.endswith("then run the same command again (finished samples are kept)")
    written = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and ".hydra" not in p.parts}
    assert not (folder / "results.parquet").exists()
    assert all(not name.rsplit("/", 1)[-1].startswith(".") or name == ".lock" for name in written), written
    first_part = (folder / "parts" / "sample-00000.parquet").stat().st_mtime_ns
    filler.unlink()
    resumed = run_cli(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert (folder / "parts" / "sample-00000.parquet").stat().st_mtime_ns == first_part  # not recomputed
    reference = run_cli(*args[:-1], f"paths.outputs={tmp_path / 'reference'}")
    assert reference.returncode == 0, reference.stderr
    pd.testing.assert_frame_equal(table(folder), table(tmp_path / "reference" / "ppl" / folder.name))


def test_ctrl_c_is_one_line_and_the_same_command_resumes_with_one_wandb_run(tiny_model_dir, tmp_path):
    """Ctrl-C midway: one line, exit 130, the finished samples kept; the same command resumes them. A run that
    outruns this process (all 60 samples written before it is held: a busy machine can deschedule the test that
    long) has not been interrupted midway: that attempt says nothing and the next starts afresh (three at most)."""
    for attempt in range(3):
        folder, env = tmp_path / f"run{attempt}", {"SPECATTN_OUTPUTS": str(tmp_path / f"out{attempt}")}
        args = tiny(tiny_model_dir, "logger=wandb", f"hydra.run.dir={folder}", *LONG)  # 60 samples: far from done
        running = start(args, env)
        wait_for("parts/sample-00000.parquet", folder, running)
        os.killpg(running.pid, signal.SIGSTOP)  # held midway however slowly this process gets scheduled
        written = len(list((folder / "parts").glob("sample-*.parquet")))
        os.killpg(running.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
        os.killpg(running.pid, signal.SIGCONT)
        stopped = finish(running)
        if written < 60:  # held midway: what follows is the behaviour under test
            break
    assert written < 60, "the run finished its 60 samples before the test could hold it, three times"
    assert stopped.returncode == 130, (written, stopped.stderr[-400:])
    assert one_line(stopped) == "interrupted: run the same command again to resume (finished samples are kept)"
    assert not (folder / "results.parquet").exists()
    first_part = (folder / "parts" / "sample-00000.parquet").stat().st_mtime_ns
    resumed = run_cli(*args, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert (folder / "parts" / "sample-00000.parquet").stat().st_mtime_ns == first_part
    assert sorted(table(folder)["sample"].unique()) == list(range(60))
    assert len(list((folder / "wandb").glob("offline-run-*"))) == 1  # `wandb sync` uploads one run


def test_a_folder_that_holds_no_run_is_never_cleared(tmp_path, capsys):
    """``hydra.run.dir`` pointed at a folder of one's own files: refused, even with rerun=true."""
    (tmp_path / "notes.txt").write_text("mine")
    for rerun in (False, True):
        with pytest.raises(SpecAttnError, match=f"run folder {tmp_path} holds files that are not a specattn run "
                                                "\\(e.g. notes.txt\\): give the run an empty or new folder"):
            with claimed(tmp_path, Identity("abc", {}, {}), rerun=rerun, wait=False):
                pass
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_results_of_unknown_code_are_refused_until_rerun(tmp_path):
    """A folder an older specattn wrote (config.yaml and results, no run.json) is this config's run by
    unknown code: refused, never skipped or resumed; one of another config is refused as such; rerun=true
    clears it."""
    cfg = compose_config("p=0.9")
    write_config(cfg, tmp_path)
    write_table(pd.DataFrame({"ppl": [1.0]}), tmp_path / "results.parquet")
    ours = Identity(signature(cfg), {"dataset.source": "x"}, code_files())
    with pytest.raises(SpecAttnError, match=f"holds the run of another config \\(signature {ours.signature}"):
        with claimed(tmp_path, Identity("other", {}, code_files()), rerun=False, wait=False):
            pass
    with pytest.raises(SpecAttnError, match=f"^results in {tmp_path} were computed by unknown code \\(the folder "
                                            "records none: an older specattn wrote it\\): rerun=true recomputes them$"):
        with claimed(tmp_path, ours, rerun=False, wait=False):
            pass
    assert not finished(tmp_path, ours) and (tmp_path / "results.parquet").exists()
    with claimed(tmp_path, ours, rerun=True, wait=False) as done:
        assert not done and not (tmp_path / "results.parquet").exists()
    write_table(pd.DataFrame({"ppl": [1.0]}), tmp_path / "results.parquet")
    assert finished(tmp_path, ours) and not finished(tmp_path, Identity(ours.signature, {"dataset.source": "y"}, ours.code))


def test_parts_of_other_code_are_never_resumed(tmp_path):
    """A killed run's ``parts/`` computed by other code are not mixed into a resumed run: refused naming
    the files that differ, kept until rerun=true."""
    code = code_files()
    older = {**code, "specattn/methods/quest.py": "0" * 12, "conf/method/quest.yaml": "1" * 12}
    with claimed(tmp_path, Identity("abc", {}, older), rerun=False, wait=False):
        write_table(pd.DataFrame({"ppl": [1.0]}), tmp_path / "parts" / "sample-00000.parquet")
    with pytest.raises(SpecAttnError, match=f"^results in {tmp_path} were computed by other code: "
                                            "conf/method/quest.yaml, specattn/methods/quest.py differ: rerun=true "
                                            "recomputes them$"):
        with claimed(tmp_path, Identity("abc", {}, code), rerun=False, wait=False):
            pass
    assert (tmp_path / "parts" / "sample-00000.parquet").exists()
    with claimed(tmp_path, Identity("abc", {}, code), rerun=True, wait=False) as done:
        assert not done and not (tmp_path / "parts").exists()
    assert json.loads((tmp_path / "run.json").read_text())["code"] == code


def test_documents_sharing_a_name_keep_their_own_text(tiny_pair):
    """Two files with one stem (a/x.txt, b/x.txt) used to share one tokenisation cache entry."""
    first, second = Document("x", "a" * 300, "a/x.txt"), Document("x", "b" * 300, "b/x.txt")
    samples = token_windows([first, second], tiny_pair.tokenizer, context_len=100, num_samples=2)
    assert not torch.equal(samples[0].input_ids, samples[1].input_ids)


def test_fingerprints_follow_the_files(tmp_path):
    text = tmp_path / "a.txt"
    text.write_text("one")
    source = TextFiles([str(tmp_path / "*.txt")])
    before = source.fingerprint()
    text.write_text("two")  # same size, same second
    changed = source.fingerprint()
    (tmp_path / "b.txt").write_text("three")
    assert len({before, changed, source.fingerprint()}) == 3
    assert GutenbergBooks().fingerprint() == GutenbergBooks().fingerprint() != GutenbergBooks("calibration").fingerprint()
    cfg = compose_config("model=smollm2", "dataset=text_files", f"dataset.source.paths=[{text}]",
                         f"layer_map={tmp_path / 'map.yaml'}")
    (tmp_path / "map.yaml").write_text("[0, 1]")
    stamps = data_fingerprint(cfg)
    assert set(stamps) == {"dataset.source", "layer_map", "model.verifier.path"}  # the verifier: a package's GGUF
    assert data_fingerprint(compose_config("model=smollm2", "experiment=align")).keys() == {
        "dataset.calibration", "model.verifier.path"}
    # qwen_coder's weights are pinned by size and SHA-256 in the config (part of the signature): no stamp
    assert data_fingerprint(compose_config("model=qwen_coder", "experiment=align")).keys() == {"dataset.calibration"}
    # decode_real's other maps: each file stamped (an edited one recomputes the run), a built-in name not
    real = compose_config("model=qwen_coder", "experiment=decode_real", "+experiment.layer_maps.prop=proportional",
                          f"+experiment.layer_maps.other={tmp_path / 'map.yaml'}")
    stamp = data_fingerprint(real)["experiment.layer_maps.other"]
    assert "experiment.layer_maps.prop" not in data_fingerprint(real)
    (tmp_path / "map.yaml").write_text("[0, 0]")  # same size, new entries
    assert data_fingerprint(real)["experiment.layer_maps.other"] != stamp


def test_parallel_jobs_of_one_run_compute_it_once(tiny_model_dir, tmp_path):
    """Quest reads no p: ``-m method=quest p=0.6,0.8`` is one run: the sweeper launches it once, even
    with a parallel launcher (two jobs that did reach one folder would take turns on its lock)."""
    result = run_cli("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                     *tiny(tiny_model_dir, "logger=none", "method=quest", "method.budget.token_budget=32", "p=0.6,0.8"),
                     env={"SPECATTN_OUTPUTS": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    (folder,) = tmp_path.glob("ppl/quest-*")
    assert result.stdout.count(f"job #1 is the same run as job #0 (same signature): {folder}") == 1
    assert result.stdout.count("results: ") == 1  # one job ran
    assert list(table(folder).setting) == ["dense", "quest token_budget=32"]


def test_an_unreadable_run_record_is_refused_until_rerun(tmp_path):
    (tmp_path / "run.json").write_text("{not json")
    (tmp_path / "parts").mkdir()
    with pytest.raises(SpecAttnError, match=f"^run folder {tmp_path} has a damaged run record \\(run.json: "
                                            "JSONDecodeError\\): whose results it holds is unknown: rerun=true "
                                            "recomputes the run there$"):
        with claimed(tmp_path, Identity("abc", {}, {}), rerun=False, wait=False):
            pass
    with claimed(tmp_path, Identity("abc", {}, {}), rerun=True, wait=False) as done:
        assert not done and not (tmp_path / "parts").exists()
    assert finished(tmp_path, Identity("abc", {}, {})) is False and recorded(tmp_path) == Identity("abc", {}, {})
