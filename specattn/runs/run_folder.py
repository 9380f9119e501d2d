"""Whose results a run folder holds, and one run at a time in it.

A run records its identity in ``run.json`` when it starts: the run's signature (the config keys its
results depend on, :mod:`specattn.runs.signature`), the fingerprint of its input data
(:mod:`specattn.runs.data_fingerprint`) and the code that computes it (:mod:`specattn.runs.code_version`).
Results and ``parts/`` in a folder are only ever this identity's:

- a folder holding another signature's run is refused, unless ``rerun=true`` (which clears it);
- so is one whose results or parts other code computed (the refusal names the files that differ), or
  unknown code (a folder written before runs recorded their code), or whose ``run.json`` is damaged;
- results or parts computed from other input data (same signature and code) are stale: one line says
  so and the run recomputes;
- a folder holding files but no run (no ``run.json``, no ``config.yaml``) is refused: nothing in it
  is ever deleted;
- an exclusive lock (``fcntl.flock`` on ``.lock``, released when the process ends, even by kill -9)
  keeps a second process out while a run writes: it is refused with one line, or waits in a
  multirun (a grid whose jobs share a folder computes it once).

Clearing a run folder deletes everything in it but Hydra's own files (``.hydra/``, ``*.log``) and
the lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from omegaconf import DictConfig, OmegaConf

from ..core.atomic_files import DISK_ERRORS, atomic_write, disk_error, write_probe
from ..core.errors import SpecAttnError
from ..core.stamps import digest
from .code_version import code_files, code_version, differing
from .data_fingerprint import data_fingerprint
from .outputs import RESULTS
from .signature import signature

IDENTITY = "run.json"
LOCK = ".lock"
CONFIG = "config.yaml"


@dataclass(frozen=True)
class Identity:
    """What a run folder's results belong to: a signature, ``{config key: input data fingerprint}`` and
    ``{source file: hash}`` of the code (None: not recorded, as in folders written before they were);
    ``damaged``: why the folder's record could not be read."""

    signature: str
    data: dict[str, str] | None
    code: dict[str, str] | None
    damaged: str | None = None

    @property
    def tracking_id(self) -> str:
        """The id of the run's W&B run: the signature and a hash of the input data and the code, so a
        resumed run continues its W&B run and a recompute over other data or code starts another."""
        return f"{self.signature}-{digest([json.dumps(self.data, sort_keys=True), code_version(self.code or {})])[:8]}"


def run_identity(cfg: DictConfig) -> Identity:
    """The identity of the run ``cfg`` configures: its signature, its input data's fingerprint, this code."""
    return Identity(signature(cfg), data_fingerprint(cfg), code_files())


def recorded(run_dir: Path) -> Identity | None:
    """The identity a folder's run recorded (``run.json``; an older run's from its ``config.yaml``, with
    no data and no code record): None if the folder holds no run; signature ``unknown`` and ``damaged``
    saying why if its record cannot be read."""
    path = run_dir / IDENTITY
    source = path if path.is_file() else run_dir / CONFIG
    try:
        if path.is_file():
            record = json.loads(path.read_text())
            code = record.get("code")
            return Identity(str(record["signature"]), dict(record["data"]), None if code is None else dict(code))
        if source.is_file():
            return Identity(signature(OmegaConf.load(source)), None, None)
    except Exception as error:  # a damaged run.json, a config.yaml of another program or version: no known owner
        return Identity("unknown", None, None, f"{source.name}: {type(error).__name__}")
    return None


def _payload(run_dir: Path) -> list[Path]:
    """The folder's entries that a run wrote (all but Hydra's own files and the lock)."""
    if not run_dir.is_dir():
        return []
    return sorted(entry for entry in run_dir.iterdir()
                  if entry.name not in (".hydra", LOCK) and entry.suffix != ".log")


def _held(run_dir: Path) -> list[Path]:
    """What a run left in the folder besides its ``run.json``."""
    return [entry for entry in _payload(run_dir) if entry.name != IDENTITY]


def _other_code(run_dir: Path, old: dict[str, str] | None, new: dict[str, str]) -> SpecAttnError:
    if old is None:
        return SpecAttnError(f"results in {run_dir} were computed by unknown code (the folder records none: an "
                             "older specattn wrote it): rerun=true recomputes them")
    files = differing(old, new)
    more = f" and {len(files) - 4} more" if len(files) > 4 else ""
    return SpecAttnError(f"results in {run_dir} were computed by other code: {', '.join(files[:4])}{more} "
                         f"differ{'s' if len(files) == 1 else ''}: rerun=true recomputes them")


def check_owner(run_dir: Path, this: Identity, rerun: bool) -> None:
    """Refuse a folder holding files that are no run, and (unless ``rerun``) one holding the run of
    another signature, of other code, or under a damaged record."""
    held = _held(run_dir)
    if not held:
        return
    owner = recorded(run_dir)
    if owner is None:
        raise SpecAttnError(f"run folder {run_dir} holds files that are not a specattn run (e.g. {held[0].name}): "
                            "give the run an empty or new folder")
    if rerun:
        return
    if owner.damaged:
        raise SpecAttnError(f"run folder {run_dir} has a damaged run record ({owner.damaged}): whose results it holds "
                            "is unknown: rerun=true recomputes the run there")
    if owner.signature != this.signature:
        raise SpecAttnError(
            f"run folder {run_dir} holds the run of another config (signature {owner.signature}, this run's is "
            f"{this.signature}): drop hydra.run.dir so the run gets its own folder, or add rerun=true to replace that run")
    if owner.code != this.code:
        raise _other_code(run_dir, owner.code, this.code)


def clear(run_dir: Path) -> None:
    """Delete what the folder's run wrote."""
    for entry in _payload(run_dir):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _stale_reason(old: Identity | None, new: Identity) -> str | None:
    """Why a folder's results of this signature and code are not this run's (their input data
    changed), or None if they are."""
    if old is None or old.data == new.data:
        return None
    before = old.data or {}
    changed = sorted(key for key in before.keys() | new.data.keys() if before.get(key) != new.data.get(key))
    return f"{', '.join(changed)} changed since they were computed"


@contextmanager
def _locked(run_dir: Path, wait: bool) -> Iterator[None]:
    """Hold the folder's lock; refuse at once, or (``wait``) wait for the holder to finish."""
    try:
        handle = open(run_dir / LOCK, "a+")
    except OSError as error:
        raise disk_error(run_dir / LOCK, error) if error.errno in DISK_ERRORS else error
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            if not wait:
                raise SpecAttnError(f"run folder {run_dir} is in use by another run (pid {holder}): wait for it to "
                                    "finish, or give this run its own folder") from None
            print(f"waiting for run folder {run_dir}: another run (pid {holder}) is writing it", flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield


def check_unlocked(run_dir: Path) -> None:
    """Refuse a folder another process is running in (a quick look: the run takes the lock itself)."""
    if (run_dir / LOCK).is_file():
        with _locked(run_dir, wait=False):
            pass


@contextmanager
def claimed(run_dir: Path, identity: Identity, rerun: bool, wait: bool) -> Iterator[bool]:
    """Hold ``run_dir`` for the run of ``identity`` while the block runs; yields whether it holds
    this run's finished results. Another config's run, or other code's, is refused (``rerun``: cleared);
    results of other input data are cleared with one line saying so; ``rerun`` clears this run's own."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise disk_error(run_dir, error) from None
    with _locked(run_dir, wait):
        check_owner(run_dir, identity, rerun)
        stale = _stale_reason(recorded(run_dir), identity)
        if rerun:
            clear(run_dir)
        elif stale and _held(run_dir):
            print(f"recomputing {run_dir}: its results are stale: {stale}", flush=True)
            clear(run_dir)
        text = json.dumps({"signature": identity.signature, "data": identity.data, "code": identity.code}, indent=1,
                          sort_keys=True)
        atomic_write(run_dir / IDENTITY, lambda tmp: tmp.write_text(text + "\n"))
        yield finished(run_dir, identity)


def finished(run_dir: Path, identity: Identity) -> bool:
    """Whether ``run_dir`` holds finished results of exactly this identity (what a sweep skips)."""
    return (run_dir / RESULTS).is_file() and recorded(run_dir) == identity


def check_writable(run_dir: Path) -> None:
    """Refuse a run folder that cannot be written (read-only, not permitted, or a full disk): a
    page-sized write into the nearest existing folder on its path, in an unnamed temporary file."""
    existing = next(folder for folder in (run_dir, *run_dir.parents) if folder.exists())
    try:
        write_probe(existing)
    except OSError as error:
        raise SpecAttnError(f"cannot write the run folder {run_dir}: {existing} is not writable "
                            f"({error.strerror or error}): free space there or set paths.outputs=<a writable folder>"
                            ) from None

