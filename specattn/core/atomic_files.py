"""Atomic file writes: readers never see a partial file; a full or read-only disk is one line naming the file."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from .errors import SpecAttnError

#: write errors that are about the disk, not the program: reported as one line naming the file
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def disk_error(path: Path, error: OSError) -> SpecAttnError:
    """The one-line error for a file that cannot be written (full, read-only, not permitted)."""
    reason = os.strerror(error.errno) if error.errno else str(error)
    return SpecAttnError(f"cannot write {path}: {reason}: free space or make it writable (or set paths.outputs=...), "
                         "then run the same command again (finished samples are kept)")


def atomic_write(path: Path, write) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers never see a partial file. A full
    or read-only disk raises :func:`disk_error` and leaves no file behind."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as error:
        raise disk_error(path, error) if error.errno in DISK_ERRORS else error
    os.close(handle)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual mode
        os.replace(tmp, path)
    except OSError as error:
        raise disk_error(path, error) if error.errno in DISK_ERRORS else error
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_probe(folder: Path) -> None:
    """Write and sync a page into an unnamed temporary file in ``folder``: raises the ``OSError`` a
    real write there would (read-only, not permitted, full)."""
    with tempfile.TemporaryFile(dir=folder) as probe:
        probe.write(b"\0" * 4096)
        probe.flush()
        os.fsync(probe.fileno())
