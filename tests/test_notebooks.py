"""Execute every notebook in ``notebooks/`` in fast mode; any cell error fails the test.

The kernel is the interpreter running pytest (``sys.executable``), launched from a kernel spec
written into a temporary folder, so the notebooks see exactly the brainsim under test whatever
kernels are installed on the machine. Notebooks read ``BRAINSIM_FAST=1`` to shrink networks
and durations.

matplotlib runs with the inline backend (``matplotlib_inline``, as in Jupyter): every figure a
cell shows or leaves open comes back as an ``image/png`` output of that cell, so the test can
check that each cell that plots produced a figure. The printed text is checked too: no
``nan`` anywhere, and each notebook's printed conclusions agree with its text
(:data:`CLAIMS`).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 900  # generous: a cold compile of a batched network on 2 cores takes minutes
KERNEL_NAME = "brainsim-test"
# A cell plots when it calls pyplot, brainsim.plotting or an Axes drawing method.
PLOTS = re.compile(r"\bplt\.|\bplotting\.|\.(plot|imshow|hist|scatter|semilogy|stairs)\(")
NAN = re.compile(r"\bnan\b", re.IGNORECASE)


def _acc_bwt(text: str) -> dict[str, tuple[float, float | None]]:
    """``{run: (ACC, BWT or None)}`` from notebook 04's lines ``"  HLOP: ACC 0.730   BWT -0.014"``."""
    found = re.findall(r"^\s*(\w+): ACC ([\d.]+)\s+BWT ([+-][\d.]+|n/a)", text, re.MULTILINE)
    return {name: (float(a), None if b == "n/a" else float(b)) for name, a, b in found}


def _claims_04(text: str) -> None:
    # The text: HLOP forgets less than plain sequential training and ends with more accuracy;
    # the jointly trained model is the upper bound.
    runs = _acc_bwt(text)
    assert set(runs) == {"sequential", "HLOP", "multitask"}, runs
    (acc_seq, bwt_seq), (acc_hlop, bwt_hlop) = runs["sequential"], runs["HLOP"]
    assert bwt_hlop > bwt_seq and acc_hlop > acc_seq, runs
    assert runs["multitask"][0] > acc_seq, runs


def _claims_03(text: str) -> None:
    # The histogram titled "bimodal" must be: many more weights near a bound than the 20 % of
    # the uniform start.
    (near,) = re.findall(r"additive: (\d+)% of the weights within 10 % of a bound", text)
    assert int(near) >= 40, text


def _claims_02(text: str) -> None:
    # The text: a rate close to Brian2's 21.6 Hz and irregular, bursty firing (ISI CV above 1).
    (rate,) = re.findall(r"^\s*all\s+([\d.]+)\s+\(Brian2", text, re.MULTILINE)
    assert abs(float(rate) / 21.6 - 1) < 0.15, text
    cvs = re.findall(r"^\s*[EI]\s+[\d.]+\s+([\d.]+)$", text, re.MULTILINE)
    assert len(cvs) == 2 and all(float(cv) > 1.0 for cv in cvs), text


def _claims_07(text: str) -> None:
    # The text: one trained pattern gives an ideal detector (100 % for every seed); two patterns'
    # accuracy falls to 1/3 once they overlap enough.
    seeds = re.findall(r"^\s*\d+\s+(\d+)%\s+\d+%\s+\d+%$", text, re.MULTILINE)
    assert seeds and all(a == "100" for a in seeds), text
    rows = re.findall(r"^\s*(0\.\d+)\s+\d+\s+([\d.]+) ± [\d.]+\s+([\d.]+) ± ", text, re.MULTILINE)
    assert rows[0][1:] == ("1.000", "1.000") and rows[-1][1:] == ("0.333", "0.333"), rows


def _claims_05(text: str) -> None:
    # The text: float64 fits reach exact agreement; L-BFGS recovers the HH conductances.
    errors = re.findall(r"^(g_Na|g_K|g_L)\s+[\d.]+\s+true\s+[\d.]+\s+error ([\d.]+) %", text,
                        re.MULTILINE)
    assert len(errors) == 3 and all(float(e) < 0.01 for _, e in errors), text


def _claims_06(text: str) -> None:
    # The text: the network learns to classify the digits (chance is 0.1).
    (before,) = re.findall(r"before training: test accuracy ([\d.]+)", text)
    (after,) = re.findall(r"updates: test accuracy ([\d.]+)", text)
    assert float(before) < 0.2 and float(after) > 0.8, text


CLAIMS = {
    "02_balanced_network.ipynb": _claims_02,
    "03_stdp.ipynb": _claims_03,
    "04_hlop_continual_learning.ipynb": _claims_04,
    "05_fitting_neuron_parameters.ipynb": _claims_05,
    "06_training_snn.ipynb": _claims_06,
    "07_stdp_pattern_detector.ipynb": _claims_07,
}


def _text(output) -> str:
    if output.output_type == "stream":
        return output.text
    return output.get("data", {}).get("text/plain", "")


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
        "env": {"BRAINSIM_FAST": "1", "MPLBACKEND": "module://matplotlib_inline.backend_inline"},
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
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or not PLOTS.search(cell.source):
            continue
        images = [o for o in cell.outputs if "image/png" in o.get("data", {})]
        assert images, f"{path.name}: cell {i} plots but produced no figure:\n{cell.source}"
    text = "\n".join(_text(o) for c in ran for o in c.outputs)
    assert not NAN.search(text), f"{path.name} printed a NaN:\n{text}"
    if path.name in CLAIMS:
        CLAIMS[path.name](text)


@pytest.mark.parametrize("widgets", [True, False], ids=["widget", "text"])
def test_progress_bar_in_a_notebook_kernel(widgets, kernel_manager_factory, tmp_path):
    """``progress=None`` in a notebook shows a bar: the ipywidgets front end when it is
    installed (a widget output), else tqdm's text bar on stderr, without tqdm's warning about
    the missing widget. The bar ends at the run's length and biological time."""
    import nbformat
    from nbclient import NotebookClient

    pytest.importorskip("ipywidgets")
    hide = "" if widgets else "import sys; sys.modules['ipywidgets'] = None\n"
    source = hide + (
        "import jax, brainsim as bs\n"
        "lif = bs.LIF(C_m=250.0, tau_m=10.0, E_L=-70.0, V_th=-55.0, V_reset=-70.0, I_e=400.0)\n"
        "net = bs.Network([bs.Population('E', 4, lif)], dt=0.1)\n"
        "result = bs.simulate(net, 50.0, key=jax.random.key(0), "
        "progress=bs.Progress(every_ms=10.0))\n"
        "print('steps', result.n_steps)\n"
    )
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    NotebookClient(nb, km=kernel_manager_factory(), timeout=CELL_TIMEOUT_S,
                   startup_timeout=120, allow_errors=False).execute()  # fmt: skip
    outputs = nb.cells[0].outputs
    stdout = "".join(o.text for o in outputs if o.get("name") == "stdout")
    stderr = "".join(o.text for o in outputs if o.get("name") == "stderr")
    assert "steps 500" in stdout
    assert "IProgress not found" not in stderr and "Warning" not in stderr, stderr
    views = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    if widgets:
        assert views, outputs
    else:
        assert not views
        last = stderr.replace("\r", "\n").strip().splitlines()[-1]
        assert "500/500" in last and "t = 0.050/0.050 s" in last, stderr
