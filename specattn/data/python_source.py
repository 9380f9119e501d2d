"""The running interpreter's standard library sources as text (``dataset=python_source``).

Real code that is on every machine with Python and that nobody in this project wrote: the ``.py``
files under ``sysconfig.get_paths()["stdlib"]``, without test suites (``test/``, ``tests/``,
``idle_test/``), installed packages (``site-packages/``) and generated tables (``encodings/``).

The split is fixed by file name, not by chance: a file is in the calibration split when the first
byte of the SHA-1 of its path relative to the stdlib folder is below 26 (about 10% of files), in
the evaluation split otherwise. Documents are ordered by that hash, so the first samples mix
packages. Sample ids carry the Python version (``3.11/json/decoder.py``): another interpreter has
other files, hence other samples.

``documents="package"`` joins each top-level package's files (``asyncio/...``) into one document, in
hash order, each file after a ``# file: <path>`` line; the modules outside any package form one more
document (``3.11/<modules>``). That is the long-context code source: one file rarely holds 32K tokens
(8 windows of 32768 in Python 3.12's evaluation split), a package often does.
"""

from __future__ import annotations

import hashlib
import os
import sys
import sysconfig
from pathlib import Path

from ..core.errors import SpecAttnError
from ..core.stamps import digest
from .sources import Document

EXCLUDED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "encodings", "__pycache__"})
CALIBRATION_BELOW = 26  # first SHA-1 byte of the relative path: < 26 -> calibration (~10%)
SPLITS = ("eval", "calibration")
GROUPINGS = ("file", "package")
MODULES = "<modules>"  # the document of the modules outside any package


def _key(relative: str) -> bytes:
    return hashlib.sha1(relative.encode()).digest()


class PythonSource:
    """``.py`` files of one split of the interpreter's standard library (or of ``root``)."""

    def __init__(self, split: str = "eval", min_chars: int = 0, root: str | None = None,
                 name: str = "python_source", documents: str = "file"):
        if split not in SPLITS:
            raise SpecAttnError(f"dataset.source.split={split!r}: allowed are {', '.join(SPLITS)}")
        if documents not in GROUPINGS:
            raise SpecAttnError(f"dataset.source.documents={documents!r}: allowed are {', '.join(GROUPINGS)} "
                                "(one document per file, or per top-level package)")
        self.split, self.min_chars, self.name, self.grouping = split, int(min_chars), name, documents
        self.root = Path(root) if root is not None else Path(sysconfig.get_paths()["stdlib"])

    def files(self) -> list[Path]:
        """The split's files, in hash order."""
        if not self.root.is_dir():
            raise SpecAttnError(f"dataset=python_source: no standard library folder at {self.root}")
        chosen = []
        for folder, subfolders, names in os.walk(self.root):
            subfolders[:] = [name for name in subfolders if name not in EXCLUDED_DIRS]  # not descended into
            for name in names:
                path = Path(folder) / name
                if not name.endswith(".py") or not path.is_file():
                    continue
                in_calibration = _key(path.relative_to(self.root).as_posix())[0] < CALIBRATION_BELOW
                if in_calibration == (self.split == "calibration") and path.stat().st_size >= self.min_chars:
                    chosen.append(path)
        return sorted(chosen, key=lambda p: _key(p.relative_to(self.root).as_posix()))

    def fingerprint(self) -> str:
        """The split's files and their sizes (the standard library changes with the interpreter, not in place)."""
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        grouping = [] if self.grouping == "file" else [self.grouping]  # the per-file fingerprint as it was
        return digest([version, *grouping, *(f"{path.relative_to(self.root).as_posix()}:{path.stat().st_size}"
                                             for path in self.files())])

    def documents(self) -> list[Document]:
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        files = [(path.relative_to(self.root).as_posix(), path) for path in self.files()]
        if self.grouping == "file":
            return [Document(f"{version}/{relative}", path.read_text(encoding="utf-8")) for relative, path in files]
        packages: dict[str, list[str]] = {}
        for relative, path in files:  # files in hash order, so each package's too
            package = relative.split("/")[0] if "/" in relative else MODULES
            packages.setdefault(package, []).append(f"# file: {relative}\n{path.read_text(encoding='utf-8')}")
        order = sorted(packages, key=_key)
        return [Document(f"{version}/{package}", "\n".join(packages[package]), origin=str(self.root / package))
                for package in order]
