"""Write the snnTorch side of brainsim's NIR cross-simulator test (``tests/test_nir.py``).

Builds a two-layer snnTorch network (``Linear`` 20 → 40, ``Leaky``, ``Linear`` 40 → 10,
``Leaky``; β = 0.9 and 0.8, threshold 1, subtractive reset applied in the step of the spike:
``reset_delay=False``), runs it on fixed random input spikes, exports it with
``snntorch.export_nir.export_to_nir`` and writes

* ``<out>/snntorch_leaky.nir``: the graph as snnTorch writes it (``nir.write``);
* ``<out>/snntorch_leaky.npz``: the input ``x`` ``(T, 20)``, snnTorch's spikes of both layers
  (``hidden`` ``(T, 40)``, ``output`` ``(T, 10)``) and the versions that made them.

Run it in a separate environment with snnTorch (it needs PyTorch, too large for brainsim's
test environment)::

    python -m venv /tmp/snntorch && /tmp/snntorch/bin/pip install snntorch nir nirtorch torch
    /tmp/snntorch/bin/python benchmarks/peers/snntorch_nir_export.py --out tests/data

The weights and inputs are drawn with NumPy from fixed seeds, scaled so that no membrane is still
above the threshold after its reset (there snnTorch subtracts the threshold again before the
next step's threshold test, and undoes it when no spike follows, where a plain subtractive
reset does not).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nir
import numpy as np
import snntorch as snn
import torch
from snntorch.export_nir import export_to_nir

N_IN, N_HIDDEN, N_OUT, T = 20, 40, 10, 200


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the .nir and .npz")
    args = parser.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(3)
    fc1 = torch.nn.Linear(N_IN, N_HIDDEN, bias=False)
    fc2 = torch.nn.Linear(N_HIDDEN, N_OUT, bias=False)
    with torch.no_grad():
        fc1.weight.copy_(torch.tensor(rng.normal(0.05, 0.07, (N_HIDDEN, N_IN)), dtype=torch.float32))
        fc2.weight.copy_(torch.tensor(rng.normal(0.05, 0.06, (N_OUT, N_HIDDEN)), dtype=torch.float32))
    # Per-neuron beta and threshold: with scalars the exported LIF nodes have no shape and
    # snnTorch's own type inference refuses the graph.
    lif1 = snn.Leaky(beta=torch.full((N_HIDDEN,), 0.9), threshold=torch.ones(N_HIDDEN),
                     init_hidden=True, reset_delay=False)
    lif2 = snn.Leaky(beta=torch.full((N_OUT,), 0.8), threshold=torch.ones(N_OUT),
                     init_hidden=True, reset_delay=False)
    net = torch.nn.Sequential(fc1, lif1, fc2, lif2)
    x = (np.random.default_rng(7).random((T, N_IN)) < 0.15).astype(np.float32)

    lif1.reset_hidden()
    lif2.reset_hidden()
    hidden, output, peak = [], [], 0.0
    with torch.no_grad():
        for t in range(T):
            h = lif1(fc1(torch.tensor(x[t : t + 1])))
            o = lif2(fc2(h))
            peak = max(peak, float(lif1.mem.max()), float(lif2.mem.max()))
            hidden.append(h.numpy()[0])
            output.append(o.numpy()[0])
    hidden, output = np.asarray(hidden), np.asarray(output)
    if peak >= 1.0:
        raise SystemExit(f"a membrane reached {peak:.2f} after its reset; lower the weights")

    graph = export_to_nir(net, torch.tensor(x[:1]), ignore_dims=[0])
    args.out.mkdir(parents=True, exist_ok=True)
    nir.write(args.out / "snntorch_leaky.nir", graph)
    np.savez_compressed(
        args.out / "snntorch_leaky.npz",
        x=x,
        hidden=hidden,
        output=output,
        versions=np.asarray(
            [f"snntorch {snn.__version__}", f"torch {torch.__version__}", f"nir {nir.__version__}"]
        ),
    )
    print(
        f"spikes: hidden {int(hidden.sum())}, output {int(output.sum())}; nodes "
        f"{sorted(graph.nodes)}; written to {args.out}"
    )


if __name__ == "__main__":
    main()
