"""Run ``notebooks/analysis.ipynb`` headless into a copy and print what it shows.

    python -m specattn.results notebook                          # -> outputs/analysis.ipynb, figures in outputs/figures/
    python -m specattn.results notebook --outputs runs/ -o /tmp/analysis.ipynb
    make notebook                                                # the same, with the venv `make` built

The tracked notebook is read, never written: the executed copy (tables and plots inside, for any notebook
viewer) goes to ``<outputs>/analysis.ipynb``, and each cell's text output (tables, messages) is printed
in order, with the path of each figure. The notebook reads the runs under ``--outputs`` (default:
``$SPECATTN_OUTPUTS`` or ``outputs``) and writes its PNGs to ``$SPECATTN_FIGURES`` (default
``<outputs>/figures``). Needs the ``dev`` extra (nbclient, ipykernel).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ..core.atomic_files import atomic_write
from ..core.errors import SpecAttnError

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "analysis.ipynb"


def execute(source: Path, out: Path, outputs: Path, timeout: int = 600):
    """Execute ``source`` (its cells run in its own folder, reading the runs under ``outputs``) and write
    the executed notebook to ``out``; returns it. A failing cell is one :class:`SpecAttnError`."""
    try:
        import nbformat
        from nbclient import NotebookClient
        from nbclient.exceptions import CellExecutionError
    except ImportError as error:
        raise SpecAttnError(f"running the notebook needs {error.name}: pip install -e '.[dev]' (or make notebook)"
                            ) from None
    source, out, outputs = Path(source).resolve(), Path(out).resolve(), Path(outputs).resolve()
    if out == source:
        raise SpecAttnError(f"-o {out} is the notebook itself: name a copy, e.g. -o outputs/analysis.ipynb")
    notebook = nbformat.read(source, as_version=4)
    os.environ["SPECATTN_OUTPUTS"] = str(outputs)  # the kernel inherits this process's environment
    # the kernel's own stderr (a transport warning) is dropped; what the cells print comes back as outputs
    try:
        NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(source.parent)}}).execute(stderr=subprocess.DEVNULL)
    except CellExecutionError as error:
        raise SpecAttnError(f"{source.name} stopped in a cell: {error.ename}: {error.evalue}") from None
    atomic_write(out, lambda tmp: nbformat.write(notebook, str(tmp)))
    return notebook


def shown(notebook) -> list[str]:
    """The text of every code cell's outputs, in order: streams, Markdown or plain text, and a marker
    line for each figure (the notebook names its file just before it)."""
    texts = []
    for cell in notebook.cells:
        if cell.cell_type == "markdown" and cell.source.startswith("#"):
            texts.append("\n" + cell.source.splitlines()[0])
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            data = output.get("data", {})
            if output.output_type == "stream":
                if output.name == "stdout":  # stderr: library warnings
                    texts.append(output.text.rstrip())
            elif "text/markdown" in data:
                texts.append(data["text/markdown"].rstrip())
            elif "image/png" in data:
                texts.append("[figure]")
            elif "text/plain" in data:
                texts.append(data["text/plain"].rstrip())
    return texts
