"""The second half of the notebooks by name (see test_notebooks.py)."""
import pytest
from notebook_runner import NOTEBOOKS, execute_notebook

SECOND_HALF = NOTEBOOKS[(len(NOTEBOOKS) + 1) // 2:]


@pytest.mark.parametrize("path", SECOND_HALF, ids=[p.name for p in SECOND_HALF])
def test_notebook_executes(path, monkeypatch):
    execute_notebook(path, monkeypatch)
