"""Execute every notebook in ``notebooks/`` in fast mode; any cell error fails the test.

The kernel is the interpreter running pytest (``sys.executable``), launched from a kernel spec
written into a temporary folder, so the notebooks see exactly the brainsim under test whatever
kernels are installed on the machine. Notebooks read ``BRAINSIM_FAST=1`` to shrink networks
and durations; ``MPLBACKEND=Agg`` keeps matplotlib off any display.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 900  # generous: a cold compile of a batched network on 2 cores takes minutes
KERNEL_NAME = "brainsim-test"


@pytest.fixture(scope="module")
def kernel_manager_factory(tmp_path_factory):
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    kernels = tmp_path_factory.mktemp("kernels")
    spec = kernels / KERNEL_NAME
    spec.mkdir()
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "brainsim tests",
        "language": "python",
        "env": {"BRAINSIM_FAST": "1", "MPLBACKEND": "Agg"},
    }))
    specs = KernelSpecManager(kernel_dirs=[str(kernels)])
    return lambda: KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path):
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: clear the outputs of code cells {dirty} before committing"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, kernel_manager_factory):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, km=kernel_manager_factory(), timeout=CELL_TIMEOUT_S, startup_timeout=120,
        allow_errors=False, resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()  # raises CellExecutionError naming the cell and its traceback
    ran = [c for c in nb.cells if c.cell_type == "code" and c.get("execution_count")]
    assert ran, f"{path.name} has no code cell that ran"
