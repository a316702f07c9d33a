"""docs/notebooks/quickstart.ipynb: a valid notebook whose imports resolve and whose stored
outputs come from one clean run (fast), and that runs top to bottom in a fresh kernel (slow)."""

import ast
import importlib
import importlib.util
import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "docs" / "notebooks" / "quickstart.ipynb"


def _code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def test_notebook_is_valid_and_its_imports_resolve():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    cells = _code_cells(nb)
    assert len(cells) >= 4
    for cell in cells:
        tree = ast.parse(cell.source)  # plain Python: no magics
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert importlib.util.find_spec(alias.name) is not None, alias.name
            elif isinstance(node, ast.ImportFrom):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    name = f"{node.module}.{alias.name}"
                    found = hasattr(module, alias.name) or importlib.util.find_spec(name)
                    assert found, name


def test_stored_outputs_come_from_one_clean_run():
    """The outputs shown on the docs site: every code cell run once, in order, without errors,
    both figures present, and no machine-specific path in them."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    cells = _code_cells(nb)
    assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1))
    outputs = [o for c in cells for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 2
    text = "".join(
        o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in outputs
    )
    assert not re.search(r"/tmp/|/home/|/root/|/Users/", text)


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(tmp_path):
    """Executed in a fresh kernel (under tests/conftest.py's environment: no compilation cache,
    XLA at optimisation level 0): no cell fails, both figures are drawn, the CartPole population
    nears the horizon's return before its switch and loses most of it at the switch."""
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    text = "".join(o.get("text", "") for c in _code_cells(nb) for o in c.outputs)
    assert sum("image/png" in o.get("data", {}) for c in _code_cells(nb) for o in c.outputs) == 2
    m = re.search(r"switch at 15: level ([\d.]+), drop ([\d.]+)", text)
    assert m is not None, text
    level, drop = map(float, m.groups())
    assert level > 150 and drop > 0.5 * level  # CartPole's horizon is 200
    assert re.search(r"final best -?\d+", text)
    assert list(tmp_path.iterdir()) == []  # progress=False, no results folder: nothing written
