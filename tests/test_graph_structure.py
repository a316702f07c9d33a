"""Graphs with structure (``Config.graph_features``, ``graph_edges``, ``graph_aggregation``):
edges and features by hand on a tiny network, sizes, and evolution with every option on."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from selfref_ghn.config import Config, ConfigError
from selfref_ghn.evolution.generation import Evolution
from selfref_ghn.model.graph import NUM_NODE_FEATURES, graph_of
from selfref_ghn.model.policy import MLPPolicy, policy_template
from selfref_ghn.model.srghn import SRGHN
from tests.conftest import TINY

# a 3-4-2 MLP: nodes Dense_0/kernel (3, 4), Dense_0/bias (4,), Dense_1/kernel (4, 2), Dense_1/bias
MLP = {
    "Dense_0": {"kernel": jnp.zeros((3, 4)), "bias": jnp.zeros(4)},
    "Dense_1": {"kernel": jnp.zeros((4, 2)), "bias": jnp.zeros(2)},
}


def test_typed_edges_by_hand():
    g = graph_of(MLP)
    np.testing.assert_array_equal(g.adjacencies("chain"), g.adjacency)
    a = g.adjacencies("typed")
    assert a.shape == (3, 4, 4)
    forward = [(1, 0), (2, 1), (3, 2)]  # (receiver, sender)
    assert sorted(zip(*np.nonzero(a[0]), strict=True)) == forward
    assert sorted(zip(*np.nonzero(a[1]), strict=True)) == [(s, r) for r, s in forward]
    assert sorted(zip(*np.nonzero(a[2]), strict=True)) == [(0, 1), (1, 0), (2, 3), (3, 2)]


def test_mean_aggregation_weighs_incoming_edges_equally():
    g = graph_of(MLP)
    chain = g.adjacencies("chain", "mean")
    np.testing.assert_allclose(chain.sum(axis=1), 1.0)  # every node has incoming edges
    np.testing.assert_allclose(chain[1], [0.5, 0, 0.5, 0])  # node 1 hears nodes 0 and 2
    typed = g.adjacencies("typed", "mean")
    np.testing.assert_allclose(typed.sum(axis=(0, 2)), 1.0)
    # node 1 (Dense_0/bias): forward from 0, backward from 2, same layer from 0: 1/3 each
    np.testing.assert_allclose(typed[:, 1].sum(axis=0), [2 / 3, 0, 1 / 3, 0])


def test_node_features_by_hand():
    f = graph_of(MLP).node_features
    assert f.shape == (4, NUM_NODE_FEATURES)
    log1p = np.log1p
    want = [
        [log1p(12), log1p(3), log1p(4), 0.0, 1, 0, 0, 0, 0],  # kernel (3, 4)
        [log1p(4), log1p(1), log1p(4), 1 / 3, 0, 1, 0, 0, 0],  # bias (4,)
        [log1p(8), log1p(4), log1p(2), 2 / 3, 1, 0, 0, 0, 0],  # kernel (4, 2)
        [log1p(2), log1p(1), log1p(2), 1.0, 0, 1, 0, 0, 0],  # bias (2,)
    ]
    np.testing.assert_allclose(f, np.asarray(want, np.float32), rtol=1e-6)
    conv = graph_of({"Conv_0": {"kernel": jnp.zeros((3, 3, 4, 16)), "bias": jnp.zeros(16)}})
    assert conv.node_features[0, 4:].tolist() == [0, 0, 1, 0, 0]  # a convolution kernel


OPTIONS = {
    "features": dict(graph_features=True),
    "typed": dict(graph_edges="typed"),
    "mean": dict(graph_aggregation="mean"),
    "all": dict(graph_features=True, graph_edges="typed", graph_aggregation="mean"),
}


@pytest.mark.parametrize("head", ["dense", "block"])
@pytest.mark.parametrize("name", list(OPTIONS))
def test_sizes_and_the_self_graph_with_each_option(name, head):
    tmpl = policy_template(MLPPolicy((32,), 2), (4,))
    base = SRGHN.create(tmpl, Config(head=head))
    ghn = SRGHN.create(tmpl, Config(head=head, **OPTIONS[name]))
    d = base.config.embed_dim
    extra = 0
    if ghn.config.graph_features:
        extra += NUM_NODE_FEATURES * d + d + 2 * d  # the features map; a self row per tensor
    if ghn.config.graph_edges == "typed":
        extra += 2 * (d * d + d)  # two more message maps
    assert ghn.num_params == base.num_params + extra
    names = set(ghn.self_graph.names)
    assert ("features/kernel" in names) == ghn.config.graph_features
    # every leaf of the network is a node of its self graph
    leaves = jax.tree_util.tree_leaves(ghn.unravel(jnp.zeros(ghn.num_params)))
    assert len(leaves) == ghn.self_graph.num_nodes
    policy = ghn.policy_params(ghn.init(jax.random.key(0)))
    assert jax.tree.map(jnp.shape, policy) == jax.tree.map(jnp.shape, tmpl)


def test_default_options_are_the_papers_graph():
    tmpl = policy_template(MLPPolicy((32,), 2), (4,))
    a = SRGHN.create(tmpl, Config())
    b = SRGHN.create(tmpl, Config(graph_features=False, graph_edges="chain"))
    flat = a.init(jax.random.key(1))
    jax.tree.map(np.testing.assert_array_equal, a.policy_params(flat), b.policy_params(flat))
    assert a.config.graph_edges == "chain" and a.config.graph_aggregation == "sum"
    assert not a.config.graph_features


def test_evolution_runs_with_every_option_on():
    cfg = Config(**{**TINY, "horizon": 20}, **OPTIONS["all"])
    evo = Evolution.create(cfg)
    state, m = evo.compiled_chunk(3)(evo.init(), cfg.generations)
    assert int(state.generation) == 3
    assert np.all(np.isfinite(np.asarray(m["best_fitness"])))


@pytest.mark.parametrize(
    "field,value",
    [("graph_edges", "star"), ("graph_aggregation", "max"), ("dense_update", "tiny")],
    ids=str,
)
def test_bad_graph_options_name_the_field(field, value):
    with pytest.raises(ConfigError, match=f"'{field}'"):
        Config(**{field: value}).validate()
