"""The code a run's results were computed by: ``{source file: hash}``, recorded in the run folder's
``run.json`` beside the signature, so results of other code are never reused, skipped over or
resumed (:mod:`specattn.runs.run_folder`).

What counts: every ``specattn/**/*.py`` and the ``conf/**/*.yaml`` configs are composed from (table
experiments read ``conf/method/*.yaml`` by name too), except ``conf/hydra``, ``conf/logger`` and
``conf/paths``, which say how and where a run goes, not what it computes. The package's own files,
not git's state: it works alike in a clone with uncommitted edits and in a pip install.

Each file counts by what it does, not how it is written: a module by its syntax tree without
docstrings (``ast.unparse``: comments, blank lines and layout drop out too), a yaml file by its parsed
values. Editing a comment, a docstring or the formatting keeps a run's results; any other edit of any
module counts, even one that cannot change a number (an error message, a plot), which errs on the
safe side. A file that does not parse counts by its bytes.
"""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

import yaml

from .signature import NON_RESULT_KEYS

PACKAGE = Path(__file__).resolve().parents[1]
ROOT = PACKAGE.parent
CONF = ROOT / "conf"
_hashes: dict[tuple[Path, int, int], str] = {}  # (file, mtime_ns, size) -> hash: each file is read once per edit


def _without_docstrings(tree: ast.Module) -> ast.Module:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body \
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return tree


def _normalised(path: Path) -> bytes:
    """What of a file counts: a module's code without docstrings, a yaml file's values."""
    data = path.read_bytes()
    try:
        if path.suffix == ".py":
            return ast.unparse(_without_docstrings(ast.parse(data))).encode()
        return json.dumps(yaml.safe_load(data), sort_keys=True, default=str).encode()
    except (SyntaxError, ValueError, yaml.YAMLError):
        return data


def _hash(path: Path) -> str:
    stat = path.stat()
    key = (path, stat.st_mtime_ns, stat.st_size)
    if key not in _hashes:
        _hashes[key] = hashlib.sha256(_normalised(path)).hexdigest()[:12]
    return _hashes[key]


def code_files() -> dict[str, str]:
    """``{path relative to the package's parent: 12-hex hash}`` of every file that counts."""
    files = sorted(PACKAGE.rglob("*.py"))
    files += sorted(path for path in CONF.rglob("*.yaml") if path.relative_to(CONF).parts[0] not in NON_RESULT_KEYS)
    return {path.relative_to(ROOT).as_posix(): _hash(path) for path in files}


def code_version(files: dict[str, str]) -> str:
    """A 12-hex hash of a ``{file: hash}`` record."""
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:12]


def differing(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """The files whose code differs between two records (changed, added or removed), sorted."""
    return sorted(name for name in old.keys() | new.keys() if old.get(name) != new.get(name))
