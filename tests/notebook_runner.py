"""Runs a notebook top to bottom as the test suite does: one epoch (``QUICKSTART_EPOCHS=1``),
no display, and fails on any cell's error."""
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def execute_notebook(path: Path, monkeypatch) -> None:
    monkeypatch.setenv("QUICKSTART_EPOCHS", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for cell in notebook.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
