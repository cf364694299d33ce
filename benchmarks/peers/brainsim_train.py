"""SHD-shaped surrogate-gradient training step in brainsim, the way a user writes it:
``brainsim.fit.SpikingRNN`` (700 → 128 LIF → 20 leaky readout), the weights selected with
``brainsim.fit.Trainable``, the loss from ``brainsim.fit.membrane_cross_entropy`` and the
optax loop ``brainsim.fit.fit`` (Adam). Each step's wall time is read from the fit's own
history (``history["time"]``: the compiled step plus the driver's bookkeeping, waited for);
the CPU time is that of each whole ``fit`` call divided by its steps.

    python benchmarks/peers/brainsim_train.py --steps 20
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _train_common as c  # noqa: E402


def main(argv=None) -> int:
    p = c.parser(__doc__.split("\n\n")[0])
    p.add_argument("--all-leaves", action="store_true",
                   help="train every floating-point leaf of the model (neuron constants too)")
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import brainsim as bs
    from brainsim import fit

    start = time.perf_counter()
    x, labels = c.data(args.seed, args.batch, args.density)
    data = (jnp.asarray(x), jnp.asarray(labels))
    neuron = bs.LIF(C_m=1.0, tau_m=c.TAU_M, E_L=0.0, V_th=c.THRESHOLD, V_reset=0.0, t_ref=0.0,
                    surrogate=bs.surrogate.FastSigmoid(c.SURROGATE_SLOPE))
    model = fit.SpikingRNN(c.N_IN, c.N_HIDDEN, c.N_OUT, key=jax.random.key(args.seed),
                           neuron=neuron, tau_out=c.TAU_OUT, input_gain=c.INPUT_GAIN)
    if args.all_leaves:
        build, params = (lambda m: m), model
    else:
        trainable = fit.Trainable(model, where=lambda m: (m.w_in, m.w_out, m.b_out))
        build, params = trainable.build, trainable.init()

    def loss(params, batch, key):
        inputs, y = batch
        _, readout = jax.vmap(lambda s: build(params)(s, c.DT))(inputs)
        return fit.membrane_cross_entropy(readout, y)

    optimizer = optax.adam(c.LEARNING_RATE)
    state = {"params": params}

    def run_steps(k: int):
        c0 = time.process_time()
        result = fit.fit(loss, state["params"], optimizer, steps=k, data=data, progress=False)
        cpu = (time.process_time() - c0) / k  # the whole fit call, spread over its steps
        state["params"] = result.last_params
        times = np.diff(np.concatenate([[0.0], result.history["time"]]))
        return [float(t) for t in times], float(result.history["loss"][-1]), [cpu] * k

    run_steps(1 + args.warmup)  # compilation and warm-up
    info = {
        "simulator": "brainsim",
        "version": getattr(bs, "__version__", ""),
        "jax": jax.__version__,
        "mode": "fit.fit + SpikingRNN" + (", all leaves" if args.all_leaves else ", weights"),
        "setup_s": time.perf_counter() - start,
    }
    return c.serve_or_repeat(args, info, run_steps)


if __name__ == "__main__":
    sys.exit(main())
