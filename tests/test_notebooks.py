"""The analyst notebooks: stored without outputs, and each runs from top to bottom.

Each notebook is executed with nbclient on a kernel that runs this interpreter (the project's
virtual environment), from a kernel spec written into a temporary folder, so that whatever
``python3`` kernel is installed elsewhere plays no part.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from traitlets.config import Config

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
EXPECTED = ("01_replay_and_compare", "02_demand_response", "03_v2g_depot")
KERNEL = "ampflow-test"
TIMEOUT_S = 600  # per cell; the slowest cell (every policy on the Caltech week) takes ~30 s


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Jupyter data folder holding one kernel spec: this interpreter running ipykernel."""
    folder = tmp_path_factory.mktemp("jupyter")
    spec = folder / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    doc = {"argv": argv, "display_name": "ampflow (test)", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(doc), encoding="utf-8")
    return folder


def test_the_three_notebooks_are_there() -> None:
    assert tuple(sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))) == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_is_stored_without_outputs(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)  # type: ignore[no-untyped-call]
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    for cell in code:
        assert cell.outputs == [], cell.source[:60]
        assert cell.execution_count is None, cell.source[:60]


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_runs(
    name: str, kernel_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)  # type: ignore[no-untyped-call]
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_dir))  # searched before any installed kernel
    # Talk to the kernel over Unix sockets in a temporary folder: no TCP port is opened.
    config = Config({"KernelManager": {"transport": "ipc", "ip": str(tmp_path / "kernel")}})
    client = NotebookClient(
        nb,
        kernel_name=KERNEL,
        config=config,
        timeout=TIMEOUT_S,
        allow_errors=False,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    plot_cells = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith("plot_")]
    assert plot_cells
    assert len(figures) == len(plot_cells)  # every plot cell shows its figure
    tables = [o for o in outputs if "text/html" in o.get("data", {})]
    assert tables  # and the metrics tables render
