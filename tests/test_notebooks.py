"""Every notebook runs top to bottom, so none rots (the first half by name; the second half is
in test_notebooks_second_half.py, so the two pytest workers run them side by side)."""
import pytest
from notebook_runner import NOTEBOOKS, execute_notebook

FIRST_HALF = NOTEBOOKS[:(len(NOTEBOOKS) + 1) // 2]


@pytest.mark.parametrize("path", FIRST_HALF, ids=[p.name for p in FIRST_HALF])
def test_notebook_executes(path, monkeypatch):
    execute_notebook(path, monkeypatch)


def test_there_is_a_quickstart():
    assert any(p.name == "quickstart.ipynb" for p in NOTEBOOKS)
