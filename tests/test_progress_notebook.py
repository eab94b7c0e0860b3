"""run_multiple in a Jupyter notebook shows a tqdm widget, without being asked.

The notebook is written with nbformat, executed with ``jupyter nbconvert --execute --to
notebook`` on a python3 kernel that imports this worktree's xetrack_c (PYTHONPATH), and
the saved notebook's outputs are read back.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
from conftest import ROOT, child_env

pytestmark = pytest.mark.slow  # starts a Jupyter kernel


def _missing(*modules: str) -> list:
    return [name for name in modules if importlib.util.find_spec(name) is None]


WIDGET = "application/vnd.jupyter.widget-view+json"

CELL = """
import xetrack_c
from xetrack_c import ExperimentSpec, run_multiple

def double(config):
    return config["x"] * 2

results = run_multiple([ExperimentSpec(function=double, config={"x": i}) for i in range(5)], 2)
print("statuses", [r.status for r in results])
print("xetrack_c from", xetrack_c.__file__)
"""


@pytest.mark.skipif(bool(_missing("nbconvert", "nbformat")),
                    reason="nbconvert is not installed (pip install nbconvert)")
@pytest.mark.skipif(bool(_missing("ipykernel")),
                    reason="no Jupyter kernel: ipykernel is not installed (pip install ipykernel)")
@pytest.mark.skipif(bool(_missing("ipywidgets")),
                    reason="ipywidgets is not installed: tqdm cannot show a widget")
@pytest.mark.skipif(bool(_missing("tqdm")), reason="tqdm is not installed")
def test_notebook_shows_a_tqdm_widget_by_default(tmp_path):
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(CELL)]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    nbformat.write(notebook, str(tmp_path / "progress.ipynb"))

    proc = subprocess.run(
        [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
         "--ExecutePreprocessor.timeout=120", "--output", "executed.ipynb", "progress.ipynb"],
        cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 and "No such kernel" in proc.stderr:
        pytest.skip("no python3 Jupyter kernel is registered (python -m ipykernel install)")
    assert proc.returncode == 0, proc.stderr[-3000:]

    outputs = nbformat.read(str(tmp_path / "executed.ipynb"), as_version=4).cells[0].outputs
    widgets = [output for output in outputs if WIDGET in output.get("data", {})]
    assert widgets, outputs
    assert "run_multiple" in widgets[0]["data"].get("text/plain", "")
    printed = "".join(output.get("text", "") for output in outputs
                      if output.get("output_type") == "stream" and output.get("name") == "stdout")
    assert "statuses ['completed', 'completed', 'completed', 'completed', 'completed']" in printed
    assert f"xetrack_c from {ROOT}" in printed  # the kernel ran this worktree's build
    stderr = "".join(output.get("text", "") for output in outputs
                     if output.get("output_type") == "stream" and output.get("name") == "stderr")
    assert "run_multiple" not in stderr  # the widget, not a text bar as well
