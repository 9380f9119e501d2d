"""The Makefile's targets run the venv it builds, and the docs' ``pytest -n`` has its plugin declared."""

import re
import subprocess
import tomllib

import pytest

from .conftest import ROOT


@pytest.mark.parametrize("target,command", [
    ("run", ".venv/bin/python run.py"),
    ("test", "OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q -n 2 --dist loadfile tests"),
    ("test-gpu", ".venv/bin/python -m pytest -q -m gpu tests"),
    ("notebook", ".venv/bin/python -m specattn.results notebook"),
])
def test_each_target_installs_first_and_runs_the_venvs_python(target, command):
    plan = subprocess.run(["make", "-n", "--no-print-directory", target], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout  # (under `make test` itself make would print its directory)
    lines = plan.strip().splitlines()
    assert lines[-1] == command
    assert any(line.startswith('.venv/bin/pip install -q -e ".[dev]"') for line in lines)  # `install` ran first


def test_pytest_n_in_the_docs_has_pytest_xdist_in_the_dev_extra():
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    using = [doc.name for doc in docs if re.search(r"pytest[^\n`]* -n \d", doc.read_text())]
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    assert using and any(requirement.startswith("pytest-xdist") for requirement in dev), using
