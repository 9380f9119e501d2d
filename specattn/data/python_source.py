"""The running interpreter's standard library sources as text (``dataset=python_source``).

Real code that is on every machine with Python and that nobody in this project wrote: the ``.py``
files under ``sysconfig.get_paths()["stdlib"]``, without test suites (``test/``, ``tests/``,
``idle_test/``), installed packages (``site-packages/``) and generated tables (``encodings/``).

The split is fixed by file name, not by chance: a file is in the calibration split when the first
byte of the SHA-1 of its path relative to the stdlib folder is below 26 (about 10% of files), in
the evaluation split otherwise. Documents are ordered by that hash, so the first samples mix
packages. Sample ids carry the Python version (``3.11/json/decoder.py``): another interpreter has
other files, hence other samples.
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


def _key(relative: str) -> bytes:
    return hashlib.sha1(relative.encode()).digest()


class PythonSource:
    """``.py`` files of one split of the interpreter's standard library (or of ``root``)."""

    def __init__(self, split: str = "eval", min_chars: int = 0, root: str | None = None,
                 name: str = "python_source"):
        if split not in SPLITS:
            raise SpecAttnError(f"dataset.source.split={split!r}: allowed are {', '.join(SPLITS)}")
        self.split, self.min_chars, self.name = split, int(min_chars), name
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
        return digest([version, *(f"{path.relative_to(self.root).as_posix()}:{path.stat().st_size}"
                                  for path in self.files())])

    def documents(self) -> list[Document]:
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        return [Document(f"{version}/{path.relative_to(self.root).as_posix()}", path.read_text(encoding="utf-8"))
                for path in self.files()]
