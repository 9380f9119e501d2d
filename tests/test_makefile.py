"""The Makefile's targets run the venv it builds, and the docs' ``pytest -n`` has its plugin declared."""

import re
import subprocess
import tomllib

import pytest

from .conftest import ROOT


def plan(target: str) -> list[str]:
    """The commands ``make target`` would run, in order (sub-makes' included)."""
    out = subprocess.run(["make", "-n", "--no-print-directory", target], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout  # (under `make test` itself make would print its directory)
    return out.strip().splitlines()


def installs_first(lines: list[str], command: str) -> bool:
    install = next(i for i, line in enumerate(lines) if line.startswith('.venv/bin/pip install -q -e ".[dev]"'))
    return install < lines.index(command)


@pytest.mark.parametrize("target,command", [
    ("run", ".venv/bin/python run.py"),
    ("test-gpu", ".venv/bin/python -m pytest -q -m gpu tests"),
    ("notebook", ".venv/bin/python -m specattn.results notebook"),
])
def test_each_target_installs_first_and_runs_the_venvs_python(target, command):
    lines = plan(target)
    assert lines[-1] == command and installs_first(lines, command)


def test_the_test_target_runs_the_suite_then_the_kernels_without_a_gpu():
    lines = plan("test")
    suite = "OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q -n 2 --dist loadfile tests"
    interpreter = f"TRITON_INTERPRET=1 {suite.replace('loadfile', 'loadfile -m interpreter')}"
    compile_check = ".venv/bin/python -m specattn.gpu.kernels.aot_check"
    assert installs_first(lines, suite)
    assert lines.index(suite) < lines.index(interpreter) < lines.index(compile_check)
    assert any('pip install -q "triton==3.6.0"' in line for line in lines[lines.index(suite):])  # after the suite


def test_pytest_n_in_the_docs_has_pytest_xdist_in_the_dev_extra():
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    using = [doc.name for doc in docs if re.search(r"pytest[^\n`]* -n \d", doc.read_text())]
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    assert using and any(requirement.startswith("pytest-xdist") for requirement in dev), using
