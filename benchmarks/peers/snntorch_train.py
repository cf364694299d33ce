"""SHD-shaped surrogate-gradient training step in snnTorch (CPU PyTorch), as its tutorials
write it: ``nn.Linear`` → ``snn.Leaky`` (fast-sigmoid surrogate) → ``nn.Linear`` →
``snn.Leaky`` without reset as the leaky readout, a Python loop over the 100 steps, the
readout membrane's maximum over time into ``F.cross_entropy``, ``torch.optim.Adam``.
PyTorch uses its default intra-op threads (all cores).

    /tmp/peers/bin/python benchmarks/peers/snntorch_train.py --steps 3
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _train_common as c  # noqa: E402


def main(argv=None) -> int:
    p = c.parser(__doc__.split("\n\n")[0])
    p.set_defaults(warmup=1)
    args = p.parse_args(argv)

    import snntorch as snn
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    import torch.nn.functional as F
    from snntorch import surrogate
    from torch import nn

    start = time.perf_counter()
    torch.manual_seed(args.seed)
    x, labels = c.data(args.seed, args.batch, args.density)
    x = torch.from_numpy(x.transpose(1, 0, 2).copy())  # time-major for the loop
    labels = torch.from_numpy(labels).long()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(c.N_IN, c.N_HIDDEN, bias=False)
            nn.init.normal_(self.fc1.weight, std=c.INPUT_GAIN / c.N_IN**0.5)
            self.lif = snn.Leaky(beta=c.beta(c.TAU_M), threshold=c.THRESHOLD,
                                 spike_grad=surrogate.fast_sigmoid(slope=c.SURROGATE_SLOPE))
            self.fc2 = nn.Linear(c.N_HIDDEN, c.N_OUT)
            self.readout = snn.Leaky(beta=c.beta(c.TAU_OUT), reset_mechanism="none")

        def forward(self, x):
            mem1 = self.lif.init_leaky()
            mem2 = self.readout.init_leaky()
            out = []
            for t in range(x.shape[0]):
                spk1, mem1 = self.lif(self.fc1(x[t]), mem1)
                _, mem2 = self.readout(self.fc2(spk1), mem2)
                out.append(mem2)
            return torch.stack(out)

    net = Net()
    optimizer = torch.optim.Adam(net.parameters(), lr=c.LEARNING_RATE)

    def run_steps(k: int):
        times, cpu, loss = [], [], None
        for _ in range(k):
            t0, c0 = time.perf_counter(), time.process_time()
            readout = net(x)
            loss = F.cross_entropy(readout.max(dim=0).values, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        return times, float(loss), cpu

    run_steps(1 + args.warmup)
    info = {
        "simulator": "snntorch",
        "version": getattr(snn, "__version__", ""),
        "torch": torch.__version__,
        "mode": f"CPU, {torch.get_num_threads()} threads",
        "setup_s": time.perf_counter() - start,
    }
    return c.serve_or_repeat(args, info, run_steps)


if __name__ == "__main__":
    sys.exit(main())
