"""SHD-shaped surrogate-gradient training step in Spyx 1.0 (Flax NNX), as its documentation
writes it: ``spyx.nn.Sequential(nnx.Linear, spyx.nn.LIF, nnx.Linear, spyx.nn.LI)`` run over
time with ``spyx.nn.run`` (a ``lax.scan``), ``nnx.Optimizer`` with Adam, one ``nnx.jit`` step.
``--functional`` compiles the same step with ``jax.jit`` on the split ``nnx`` state instead
(no per-call graph traversal in Python). The two LIF/LI decays are fixed (not trained), as in
the other libraries.

    /tmp/peers/bin/python benchmarks/peers/spyx_train.py --steps 20
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _train_common as c  # noqa: E402


def main(argv=None) -> int:
    p = c.parser(__doc__.split("\n\n")[0])
    p.add_argument("--functional", action="store_true", help="jax.jit on nnx.split state")
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import optax
    import spyx
    from flax import nnx

    start = time.perf_counter()
    x, labels = c.data(args.seed, args.batch, args.density)
    x = jnp.asarray(x.transpose(1, 0, 2))  # spyx.nn.run is time-major
    labels = jnp.asarray(labels)
    rngs = nnx.Rngs(args.seed)
    model = spyx.nn.Sequential(
        nnx.Linear(c.N_IN, c.N_HIDDEN, use_bias=False, rngs=rngs,
                   kernel_init=nnx.initializers.normal(c.INPUT_GAIN / c.N_IN**0.5)),
        spyx.nn.LIF((c.N_HIDDEN,), beta=c.beta(c.TAU_M), threshold=c.THRESHOLD,
                    activation=spyx.axn.superspike(c.SURROGATE_SLOPE), rngs=rngs),
        nnx.Linear(c.N_HIDDEN, c.N_OUT, rngs=rngs),
        spyx.nn.LI((c.N_OUT,), beta=c.beta(c.TAU_OUT), rngs=rngs),
    )
    # Train the weights and the bias only (the decays stay fixed, as in the other scripts).
    wrt = nnx.All(nnx.Param, nnx.Not(nnx.PathContains("beta")))
    optimizer = nnx.Optimizer(model, optax.adam(c.LEARNING_RATE), wrt=wrt)

    def loss_fn(model, x, labels):
        readout, _ = spyx.nn.run(model, x)
        logits = jnp.max(readout, axis=0)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    def train_step(model, optimizer, x, labels):
        loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, wrt))(model, x, labels)
        optimizer.update(model, grads)
        return loss

    if args.functional:
        graphdef, state = nnx.split((model, optimizer))

        @jax.jit
        def pure_step(state, x, labels):
            m, o = nnx.merge(graphdef, state)
            loss = train_step(m, o, x, labels)
            return nnx.state((m, o)), loss

        holder = {"state": state}

        def step():
            holder["state"], loss = pure_step(holder["state"], x, labels)
            return loss
    else:
        jitted = nnx.jit(train_step)

        def step():
            return jitted(model, optimizer, x, labels)

    def run_steps(k: int):
        times, cpu = [], []
        for _ in range(k):
            t0, c0 = time.perf_counter(), time.process_time()
            loss = float(jax.block_until_ready(step()))
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        return times, loss, cpu

    run_steps(1 + args.warmup)
    info = {
        "simulator": "spyx",
        "version": getattr(spyx, "__version__", ""),
        "jax": jax.__version__,
        "mode": "jax.jit(nnx.split)" if args.functional else "nnx.jit",
        "setup_s": time.perf_counter() - start,
    }
    return c.serve_or_repeat(args, info, run_steps)


if __name__ == "__main__":
    sys.exit(main())
