"""The execution plan: merged groups and deliveries give the spikes of the unmerged network.

The reference is the same network stepped with a plan that merges nothing
(``build_plan(net, merge=False)``: one group per population, one delivery per projection,
exactly the per-population step). In float64 the merged plan must give the same spike
trains: merging changes only the order in which a neuron's synaptic inputs are summed
(ELL rows stacked by presynaptic population), a relative difference of about 1e-16 that
cannot move a spike across a step boundary in these short runs.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import brainsim as bs
from brainsim import connect
from brainsim._plan import build_plan, concat_members
from brainsim._propagation import PointwiseConnectivity
from brainsim._step import step


def _state_for(net, plan, state):
    """``state`` (the network's merged layout) in the layout of ``plan``, whose groups are
    either merged as the network's or single populations and merged sources."""
    if len(plan.groups) == len(net.layout().groups):
        return state
    flat = net.ungrouped(state)
    pops, receptors = {}, {}
    for g in plan.groups:
        pops[g.name] = concat_members([flat.populations[m.name] for m in g.members])
        if len(g.members) > 1 and not g.is_source:
            raise AssertionError("reference plans merge only spike sources")
        receptors[g.name] = {} if g.is_source else flat.receptors[g.members[0].name]
    return state._replace(populations=pops, receptors=receptors)


def _run(net, plan, n_steps, key, record=lambda state, spikes: spikes):
    """``record(state, spikes)`` of every step of ``plan`` (a plan of ``net``)."""
    state = _state_for(net, plan, net.init(key))

    def body(s, _):
        s, spikes = step(plan, s)
        return s, record(s, spikes)

    return jax.lax.scan(body, state, None, length=n_steps)[1]


def _compare(net, n_steps=400, key=0, reference_merge=False):
    merged = build_plan(net)
    unmerged = build_plan(net, merge=reference_merge)
    a = jax.jit(lambda: _run(net, merged, n_steps, jax.random.key(key)))()
    b = jax.jit(lambda: _run(net, unmerged, n_steps, jax.random.key(key)))()
    a, b = jax.tree.map(np.asarray, (a, b))
    total = 0
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=f"population {name}")
        total += a[name].sum()
    assert total > 20, "the test network must spike"
    return merged


def _mixed_network(layout, dt=0.1):
    """Three LIF populations with different parameters (merged into one group), per-synapse
    weights and heterogeneous delays, a spike source and a population with a different model
    (its own group)."""
    lif = dict(C_m=200.0, E_L=-65.0, V_reset=-65.0, V_th=-50.0, t_ref=2.0)
    rec = {
        "exc": bs.Receptor(bs.ExponentialSynapse(2.0), bs.CurrentBased()),
        "inh": bs.Receptor(bs.ExponentialSynapse(5.0), bs.CurrentBased()),
    }
    pops = [
        bs.Population("A", 60, bs.LIF(tau_m=10.0, I_e=420.0, **lif), receptors=rec,
                      initial={"v": bs.init.Uniform(-65.0, -50.0)}),
        bs.Population("B", 40, bs.LIF(tau_m=15.0, I_e=300.0, **lif), receptors=rec,
                      initial={"v": bs.init.Uniform(-65.0, -50.0)}),
        bs.Population("C", 25, bs.LIF(tau_m=8.0, I_e=np.linspace(300, 500, 25), **lif),
                      receptors=rec, currents=(bs.ConstantCurrent(50.0),)),
        bs.Population("X", 30, bs.PoissonSource(40.0)),
        bs.Population("Z", 20, bs.Izhikevich(), receptors={"exc": rec["exc"]}),
    ]
    projs = []
    for i, (pre, post, receptor, p, w) in enumerate([
        ("A", "A", "exc", 0.1, 40.0), ("A", "B", "exc", 0.3, 50.0),
        ("A", "C", "exc", 0.2, 30.0), ("B", "A", "inh", 0.3, -60.0),
        ("B", "C", "inh", 0.2, -40.0), ("C", "A", "exc", 0.4, 30.0),
        ("X", "B", "exc", 0.2, 80.0), ("X", "C", "exc", 0.5, 60.0),
        ("A", "Z", "exc", 0.2, 3.0),
    ]):
        n_pre = next(q.size for q in pops if q.name == pre)
        n_post = next(q.size for q in pops if q.name == post)
        edges = connect.fixed_probability(
            n_pre, n_post, p, weight=connect.Normal(w, abs(w) / 5),
            delay=connect.Uniform(0.0, 3.0), seed=[7, i],
        )
        projs.append(bs.Projection(pre, post, edges, receptor=receptor, layout=layout,
                                   round_delays=True))
    return bs.Network(pops, projs, dt=dt)


@pytest.mark.parametrize("layout", [bs.Sparse(), bs.CSR()], ids=["ell", "csr"])
def test_merged_plan_gives_the_unmerged_spikes(x64, layout):
    net = _mixed_network(layout)
    plan = _compare(net, reference_merge="sources")
    names = [g.name for g in plan.groups]
    assert names == ["A+B+C", "X", "Z"]
    into_abc = [d for d in plan.deliveries if d.group == 0]
    # 8 projections into two receptors of A+B+C become one delivery per receptor.
    assert len(into_abc) == 2
    assert sorted(b.population for d in into_abc for b in d.blocks) == ["A", "B", "C", "X"]


def test_coba_merges_populations_and_keeps_shared_weights(x64):
    net = bs.networks.coba(n_neurons=500)
    plan = _compare(net)
    assert [g.name for g in plan.groups] == ["E+I"]
    # E's two projections share one scalar weight (as do I's): each pair becomes one
    # delivery that keeps the scalar, not one weight per synapse.
    assert [[b.population for b in d.blocks] for d in plan.deliveries] == [["E"], ["I"]]
    assert all(jnp.ndim(d.conn.weights) == 0 for d in plan.deliveries)
    assert [d.conn.n_synapses for d in plan.deliveries] == [
        sum(p.connectivity.n_synapses for p in net.projections if p.pre == pre) for pre in "EI"
    ]


def test_dense_projections_with_different_shared_weights_stay_apart(x64):
    """Merging two dense projections with different scalar weights would store a weight per
    synapse; they are delivered apart, each with its scalar, while sparse ones (fewer
    synapses than twice the neurons) merge with per-synapse weights."""
    rec = {"exc": bs.Receptor(bs.ExponentialSynapse(2.0), bs.CurrentBased())}
    lif = bs.LIF(C_m=200.0, tau_m=10.0, E_L=-65.0, V_reset=-65.0, V_th=-50.0, I_e=380.0)
    pops = [bs.Population(n, 50, lif, receptors=rec,
                          initial={"v": bs.init.Uniform(-65.0, -50.0)}) for n in "ABC"]
    projs = [
        bs.Projection(pre, post, connect.fixed_probability(50, 50, p, weight=w, seed=i),
                      receptor="exc")
        for i, (pre, post, p, w) in enumerate([
            ("A", "B", 0.5, 20.0), ("A", "C", 0.5, 20.0),  # dense, the same weight
            ("B", "C", 0.5, 30.0),  # dense, its own weight
            ("C", "A", 0.02, 25.0), ("B", "A", 0.02, 35.0),  # sparse: merged with weights
        ])
    ]
    plan = _compare(bs.Network(pops, projs, dt=0.1))
    shapes = sorted(
        ([b.population for b in d.blocks], jnp.shape(d.conn.weights)) for d in plan.deliveries
    )
    assert [(blocks, len(shape)) for blocks, shape in shapes] == [
        (["A"], 0), (["B"], 0), (["B", "C"], 2)
    ], shapes


def test_potjans_diesmann_heterogeneous_delays(x64):
    net = bs.networks.potjans_diesmann(scale=0.02, k_scale=0.5)
    plan = _compare(net, n_steps=300, reference_merge="sources")
    assert [g.name for g in plan.groups][0] == "+".join(bs.networks.PD14_POPULATIONS)
    assert len(plan.groups) == 2  # the 8 cell populations and the 8 Poisson sources
    # 64 recurrent and 8 background projections: a handful of deliveries.
    assert len(plan.deliveries) <= 4, [len(d.blocks) for d in plan.deliveries]


def test_names_stay_views_of_groups(x64):
    net = _mixed_network(bs.Sparse())
    res = bs.simulate(net, 30.0, key=jax.random.key(1),
                      record=(bs.SpikeRaster(), bs.StateTrace("B", "v"),
                              bs.StateTrace("C", "exc.g")))
    state = res.state
    assert set(state.populations) == {"A+B+C", "X", "Z"}
    b = net.population_state(state, "B")
    np.testing.assert_array_equal(b.v, state.populations["A+B+C"].v[60:100])
    np.testing.assert_array_equal(res.trace("B", "v")[1].shape, (300, 40))
    assert net.receptor_states(state, "C")["exc"].kinetics.g.shape == (25,)
    # grouped() inverts ungrouped(), rings included.
    back = net.grouped(net.ungrouped(state))
    for x, y in zip(jax.tree.leaves(back), jax.tree.leaves(state), strict=True):
        if not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            np.testing.assert_array_equal(x, y)


def test_parameters_of_one_population_stay_fittable(x64):
    """The gradient with respect to one member's parameter reaches it through the merge: equal
    to the gradient of the unmerged step (same surrogate), and not zero."""
    net = _mixed_network(bs.Sparse())

    def loss(i_e, merge):
        model = eqx.tree_at(lambda n: n.populations[1].model.I_e, net, i_e)
        plan = build_plan(model, merge=merge)
        v = _run(model, plan, 50, jax.random.key(0),
                 record=lambda s, _: model.population_state(s, "B").v
                 if merge is True else s.populations["B"].v)
        return v.mean()

    merged = jax.grad(loss)(jnp.asarray(300.0), True)
    unmerged = jax.grad(loss)(jnp.asarray(300.0), "sources")
    assert merged > 0
    np.testing.assert_allclose(merged, unmerged, rtol=1e-12)


def _window_network():
    """Two LIF populations with the same model (one group once merged) fed through the window
    formats: Dense (homogeneous and per-pair delays), Procedural (fixed out-degree into A,
    fixed probability with uniform weights into B) and LearnableDelays (a fractional delay),
    plus a Poisson drive and a population of another model (its own group)."""
    lif = dict(C_m=200.0, E_L=-65.0, V_reset=-65.0, V_th=-50.0, t_ref=2.0)
    rec = {
        "exc": bs.Receptor(bs.ExponentialSynapse(2.0), bs.CurrentBased()),
        "inh": bs.Receptor(bs.ExponentialSynapse(5.0), bs.CurrentBased()),
    }
    pops = [
        bs.Population("X", 20, bs.PoissonSource(60.0)),
        bs.Population("A", 30, bs.LIF(tau_m=10.0, I_e=330.0, **lif), receptors=rec,
                      initial={"v": bs.init.Uniform(-65.0, -50.0)}),
        bs.Population("B", 25, bs.LIF(tau_m=15.0, I_e=np.linspace(250, 350, 25), **lif),
                      receptors=rec, initial={"v": bs.init.Uniform(-65.0, -50.0)}),
        bs.Population("Z", 10, bs.Izhikevich(), receptors={"exc": rec["exc"]}),
    ]
    rng = np.random.default_rng(3)
    per_pair = connect.from_arrays(
        np.repeat(np.arange(30), 25), np.tile(np.arange(25), 30), n_pre=30, n_post=25,
        weight=np.where(rng.random(750) < 0.2, 25.0, 0.0), delay=rng.integers(0, 4, 750) * 0.1,
    )
    projs = [
        bs.Projection("X", "A", connect.all_to_all(20, 30, weight=45.0, delay=0.2),
                      receptor="exc", layout=bs.Dense(), name="dense"),
        bs.Projection("A", "B", per_pair, receptor="exc", layout=bs.Dense()),
        bs.Projection("A", "A", connect.procedural_fixed_outdegree(30, 30, 5, weight=20.0,
                      delay=0.3, seed=4, allow_self=False), receptor="exc",
                      layout=bs.Procedural()),
        bs.Projection("X", "B", connect.procedural_fixed_probability(
                      20, 25, 0.3, weight=connect.Uniform(40.0, 80.0), delay=0.1, seed=5),
                      receptor="exc", layout=bs.Procedural()),
        bs.Projection("B", "A", connect.fixed_probability(25, 30, 0.3, weight=-50.0,
                      delay=1.0, seed=6), receptor="inh",
                      layout=bs.LearnableDelays(max_delay=2.0), name="learned"),
        bs.Projection("A", "Z", connect.fixed_probability(30, 10, 0.3, weight=2.0, seed=7),
                      receptor="exc", layout=bs.Dense()),
    ]
    return bs.Network(pops, projs, dt=0.1)


def test_window_formats_merge_and_give_the_unmerged_spikes(x64):
    """Populations fed by Dense, Procedural and LearnableDelays projections merge (their
    connectivities deliver into a window of the group's ring); spikes equal the unmerged
    plan's in float64, and gradients with respect to a dense weight and a learnable delay
    through the merged plan equal the unmerged ones."""
    net = _window_network()
    assert [(name, [m.name for m in members]) for name, members in net.layout().groups] == [
        ("X", ["X"]), ("A+B", ["A", "B"]), ("Z", ["Z"])]
    plan = _compare(net, reference_merge="sources")
    into_ab = [d for d in plan.deliveries if d.group == 1]
    assert len(into_ab) == 5  # none of these formats merges; each is placed into the ring
    offsets = {type(d.conn).__name__: d.conn.post_offset for d in into_ab}
    assert offsets == {"DenseConnectivity": 30, "ProceduralConnectivity": 30,
                       "LearnableDelayConnectivity": 0}
    assert all(d.conn.n_post == 55 for d in into_ab)

    def loss(weight, delay, merge):
        model = eqx.tree_at(lambda n: n.projections[0].connectivity.weights, net,
                            jnp.full((20, 30), weight))
        model = eqx.tree_at(lambda n: n.projections[4].connectivity.delays, model,
                            jnp.full_like(model.projections[4].connectivity.delays, delay))
        plan = build_plan(model, merge=merge)
        v = _run(model, plan, 60, jax.random.key(2),
                 record=lambda s, _: (model.population_state(s, "A").v
                                      if merge is True else s.populations["A"].v))
        return v.mean()

    args = (jnp.asarray(45.0), jnp.asarray(1.05))
    merged = jax.grad(loss, argnums=(0, 1))(*args, True)
    unmerged = jax.grad(loss, argnums=(0, 1))(*args, "sources")
    assert merged[0] > 0 and merged[1] != 0
    np.testing.assert_allclose(merged, unmerged, rtol=1e-10)


def test_simulate_takes_a_plan_and_shared_parameters_stay_scalar():
    net = bs.networks.coba(n_neurons=500)
    plan = net.plan()
    group = plan.groups[0]
    # E and I share one LIF value: its parameters stay scalars in the merged model (one
    # exponential per step, not one per neuron); the receptors likewise.
    assert jnp.ndim(group.model.tau_m) == 0
    assert jnp.ndim(group.receptors["exc"].kinetics.tau) == 0
    key = jax.random.key(2)
    a = bs.simulate(plan, 50.0, key=key, record=(bs.SpikeRaster(),))
    b = bs.simulate(net, 50.0, key=key, record=(bs.SpikeRaster(),))
    for x, y in zip(jax.tree.leaves(a.recordings), jax.tree.leaves(b.recordings), strict=True):
        np.testing.assert_array_equal(x, y)
    # Different values of one parameter are per neuron after the merge.
    mixed = eqx.tree_at(lambda n: n.populations[1].model.tau_m, net, jnp.asarray(10.0))
    assert [g.name for g in mixed.plan().groups] == ["E+I"]
    assert jnp.shape(mixed.plan().groups[0].model.tau_m) == (500,)


def test_one_to_one_projections_merge_into_a_pointwise_delivery(x64):
    """Fan-out-1 projections (background drives) merge into one PointwiseConnectivity,
    delivered by a slice add (contiguous targets, one lag) or a scatter-add (targets
    permuted, lags per synapse), with the spikes of the unmerged ELL deliveries; a target
    reached twice keeps the ELL kernel (its summation order)."""
    rec = {"exc": bs.Receptor(bs.ExponentialSynapse(2.0), bs.CurrentBased())}
    lif = dict(C_m=200.0, tau_m=10.0, E_L=-65.0, V_reset=-65.0, V_th=-50.0, I_e=300.0)
    init = {"v": bs.init.Uniform(-65.0, -50.0)}
    rng = np.random.default_rng(3)

    def network(second_post, second_delay):
        pops = [bs.Population("A", 30, bs.LIF(**lif), receptors=rec, initial=init),
                bs.Population("B", 20, bs.LIF(**{**lif, "tau_m": 15.0}),
                              receptors=rec, initial=init),
                bs.Population("XA", 30, bs.PoissonSource(rng.uniform(200.0, 900.0, 30))),
                bs.Population("XB", 20, bs.PoissonSource(700.0))]
        projs = [
            bs.Projection("XA", "A", connect.one_to_one(30, weight=connect.Normal(300.0, 50.0),
                                                        delay=0.0), receptor="exc"),
            bs.Projection("XB", "B", connect.from_arrays(np.arange(20), second_post, n_pre=20,
                                                         n_post=20, weight=250.0,
                                                         delay=second_delay), receptor="exc"),
            bs.Projection("A", "B", connect.fixed_probability(30, 20, 0.3, weight=40.0, seed=1),
                          receptor="exc"),
        ]
        return bs.Network(pops, projs, dt=0.1)

    def pointwise(plan):
        return [d.conn for d in plan.deliveries if isinstance(d.conn, PointwiseConnectivity)]

    contiguous = network(np.arange(20), 0.0)
    (conn,) = pointwise(_compare(contiguous, n_steps=300, reference_merge="sources"))
    assert conn.targets is None and conn.delays is None and conn.n_pre == 50
    scattered = network(rng.permutation(20), lambda r, m: r.choice([0.0, 0.3, 1.0], m))
    (conn,) = pointwise(_compare(scattered, n_steps=300, reference_merge="sources"))
    assert conn.targets is not None and conn.delays is not None
    # The same synapses as the projections: weight w_i from source i to its target.
    dense = np.asarray(conn.to_dense())
    assert np.count_nonzero(dense) == 50 and np.all(np.count_nonzero(dense, axis=1) == 1)
    twice = network(np.r_[np.arange(19), 0], 0.0)
    assert not pointwise(_compare(twice, n_steps=300, reference_merge="sources"))


@pytest.mark.parametrize("permuted", [False, True], ids=["slice", "scatter"])
def test_pointwise_delivery_values_and_gradients_equal_ell(x64, permuted):
    """A PointwiseConnectivity delivers what the ELL connectivity it was merged from
    delivers, and has its gradients with respect to the weights and to the spikes (also at
    neurons that did not spike: surrogate gradients flow through them)."""
    rng = np.random.default_rng(0)
    post = rng.permutation(6) if permuted else np.arange(6)
    delay = rng.choice([0.0, 0.1, 0.2], 6) if permuted else 0.1
    edges = connect.from_arrays(np.arange(6), post, n_pre=6, n_post=6,
                                weight=rng.normal(5.0, 1.0, 6), delay=delay)
    ell = bs.Sparse().build(edges, 0.1, owner="test", round_delays=False, dtype=jnp.float64)
    ((_, pointwise),) = bs.EllConnectivity.merge([("block", [(ell, 0)])], 6)
    assert isinstance(pointwise, PointwiseConnectivity)
    assert (pointwise.targets is None) == (not permuted)
    ring = jnp.asarray(rng.normal(size=ell.max_delay * 6))
    spikes = jnp.asarray([1.0, 0.0, 2.0, 0.0, 1.0, 0.0])
    cotangent = jnp.asarray(rng.normal(size=ring.shape))

    def loss(conn, weights, spikes):
        conn = eqx.tree_at(lambda c: c.weights, conn, weights.reshape(conn.weights.shape))
        return jnp.vdot(conn.deliver(ring, 5, spikes), cotangent)

    for conn in (ell, pointwise):
        np.testing.assert_array_equal(conn.deliver(ring, 5, spikes), ell.deliver(ring, 5, spikes))
    grads = [jax.grad(loss, argnums=(1, 2))(c, c.weights.ravel(), spikes) for c in (ell, pointwise)]
    np.testing.assert_allclose(grads[1][0], grads[0][0], rtol=1e-14)
    np.testing.assert_allclose(grads[1][1], grads[0][1], rtol=1e-14)
    assert np.all(np.asarray(grads[1][1]) != 0)  # non-spiking neurons included


def test_fan_out_buckets_pad_narrow_rows_only_where_cheap():
    """Rows are padded to the widest of their bucket: a block joins it when that at most
    doubles its fan-out, or when its rows are few (padding adds at most 1/8 of the slots:
    Potjans–Diesmann's inhibitory rows); fan-out-1 rows always stay apart (pointwise)."""
    from brainsim._propagation import _fan_out_buckets

    def buckets(blocks):  # blocks: (name, fan_out, rows)
        out = _fan_out_buckets(blocks, lambda b: b[1], lambda b: b[2])
        return [[b[0] for b in bucket] for bucket in out]

    assert buckets([("i", 397, 591), ("e", 823, 7126)]) == [["e", "i"]]
    assert buckets([("i", 397, 7126), ("e", 823, 7126)]) == [["e"], ["i"]]
    assert buckets([("a", 100, 10), ("b", 60, 10)]) == [["a", "b"]]  # at most doubled
    assert buckets([("x", 1, 10), ("e", 823, 7126)]) == [["e"], ["x"]]
