"""Every ``python run.py ...`` command of README.md and docs/*.md composes and passes the checks a run makes
before anything loads (``specattn.runs.preflight``): a renamed key or group, or a value the checks refuse,
fails here instead of in a reader's terminal. Commands that name files the reader supplies (``/models/...``,
``<sig>``) or need a GPU are left to the places that have them. Every ``python -m specattn...`` module the
docs name exists and answers ``--help``."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from specattn.runs.preflight import check_group_choices, check_job, jobs

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
READER_FILES = re.compile(r"<[a-z]+>|/models/|/data/|/path/|chosen\.parquet|XXXX|outputs/ppl/")
NEEDS_GPU = re.compile(r"device=cuda|kernel_bench|decode_bench|decode_real|hydra/launcher=slurm")


def doc_commands() -> list[tuple[str, str]]:
    """``(doc, command)`` for each ``python run.py`` line of the docs' code blocks (continuations joined,
    comments dropped)."""
    found = []
    for doc in DOCS:
        blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", (ROOT / doc).read_text(), flags=re.S)
        for block in blocks:
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split(" # ")[0].split("  #")[0].strip()
                if line.startswith(("python run.py", "python3 run.py")):
                    found.append((doc, line.removeprefix("python3 ").removeprefix("python ")))
    return found


def doc_modules() -> list[str]:
    """The ``specattn`` modules the docs run with ``python -m`` (in code blocks or inline)."""
    text = "\n".join((ROOT / doc).read_text() for doc in DOCS)
    return sorted(set(re.findall(r"python3? -m (specattn[\w.]*)", text)))


COMMANDS = doc_commands()


def test_the_docs_hold_the_commands_this_test_reads():
    assert len(COMMANDS) >= 25
    assert ("README.md", "run.py") in COMMANDS


@pytest.mark.parametrize("module", doc_modules())
def test_each_documented_module_exists_and_answers_help(module):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    if "No module named 'triton'" in done.stderr:
        pytest.skip("the docs say it needs triton (pip install triton)")
    assert done.returncode == 0 and "usage" in done.stdout.lower(), done.stderr[-500:]


@pytest.mark.parametrize("doc,command", COMMANDS, ids=[f"{d}:{c[7:55]}" for d, c in COMMANDS])
def test_each_documented_command_passes_the_checks_before_a_run(doc, command, tmp_path):
    if READER_FILES.search(command) or NEEDS_GPU.search(command):
        pytest.skip("names the reader's own files or needs a GPU")
    args = shlex.split(command)[1:]
    multirun = "-m" in args
    overrides = [a for a in args if a != "-m"] + [f"paths.outputs={tmp_path}"]
    check_group_choices(overrides, ROOT / "conf")
    for job, _ in jobs(overrides, multirun):
        check_job(job, ROOT / "conf", "config", multirun)
