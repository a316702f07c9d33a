"""The SR-GHN's heads against a NumPy re-implementation on 2- and 3-node graphs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from selfref_ghn.config import Config, Hyperparams
from selfref_ghn.model.mutation import mutate, mutation_params, project
from selfref_ghn.model.srghn import SRGHN

SMALL = Config(embed_dim=4, trunk_dim=5, coeff_dim=3, num_rates=2, gnn_rounds=3)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _gnn_numpy(p, h, adjacency, rounds):
    r = p["gnn"]["rounds"]
    wm, bm = np.asarray(r["message"]["kernel"]), np.asarray(r["message"]["bias"])
    wi, bi = np.asarray(r["gru"]["input"]["kernel"]), np.asarray(r["gru"]["input"]["bias"])
    wh, bh = np.asarray(r["gru"]["hidden"]["kernel"]), np.asarray(r["gru"]["hidden"]["bias"])
    d = wm.shape[1]
    h = np.asarray(h, np.float64)
    for _ in range(rounds):
        x = adjacency @ (h @ wm + bm)
        xi, hh = x @ wi + bi, h @ wh + bh
        rg = _sigmoid(xi[:, :d] + hh[:, :d])
        z = _sigmoid(xi[:, d : 2 * d] + hh[:, d : 2 * d])
        n = np.tanh(xi[:, 2 * d :] + rg * hh[:, 2 * d :])
        h = (1.0 - z) * n + z * h
    return h


@pytest.fixture(scope="module")
def two_node():
    # A 2-node policy graph: one Dense layer (kernel (2, 3), bias (3,)).
    tmpl = {"Dense_0": {"kernel": jnp.zeros((2, 3)), "bias": jnp.zeros(3)}}
    ghn = SRGHN.create(tmpl, SMALL)
    flat = ghn.init(jax.random.key(3))
    return ghn, flat


def test_deterministic_head_by_hand(two_node):
    ghn, flat = two_node
    p = ghn.unravel(flat)
    adjacency = np.array([[0.0, 1.0], [1.0, 0.0]])
    h = _gnn_numpy(p, p["policy_embed"], adjacency, SMALL.gnn_rounds)
    rows = h @ np.asarray(p["det_head"]["kernel"]) + np.asarray(p["det_head"]["bias"])
    got = jax.jit(ghn.policy_params)(flat)
    # P_max = 6 (the kernel); the bias row is truncated to 3 entries.
    np.testing.assert_allclose(
        got["Dense_0"]["kernel"], rows[0].reshape(2, 3), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(got["Dense_0"]["bias"], rows[1, :3], rtol=1e-4, atol=1e-5)


def test_three_node_message_sum_by_hand():
    # Three policy tensors: the middle node must receive the sum of both neighbours' messages.
    tmpl = {
        "Dense_0": {"kernel": jnp.zeros((2, 2)), "bias": jnp.zeros(2)},
        "Dense_1": {"kernel": jnp.zeros((2, 1))},
    }
    ghn = SRGHN.create(tmpl, SMALL)
    assert ghn.policy_graph.names == ("Dense_0/kernel", "Dense_0/bias", "Dense_1/kernel")
    flat = ghn.init(jax.random.key(5))
    p = ghn.unravel(flat)
    adjacency = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], np.float64)
    h = _gnn_numpy(p, p["policy_embed"], adjacency, SMALL.gnn_rounds)
    rows = h @ np.asarray(p["det_head"]["kernel"]) + np.asarray(p["det_head"]["bias"])
    got = jax.jit(ghn.policy_params)(flat)
    np.testing.assert_allclose(
        got["Dense_1"]["kernel"], rows[2, :2].reshape(2, 1), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(got["Dense_0"]["bias"], rows[1, :2], rtol=1e-4, atol=1e-5)


def test_stochastic_head_by_hand(two_node):
    ghn, flat = two_node
    p = ghn.unravel(flat)
    n = ghn.self_graph.num_nodes
    adjacency = np.eye(n, k=1) + np.eye(n, k=-1)
    h = _gnn_numpy(p, p["self_embed"], adjacency, SMALL.gnn_rounds)
    s = {k: {kk: np.asarray(vv) for kk, vv in v.items()} for k, v in p["stoch_head"].items()}
    x = np.maximum(h @ s["trunk_0"]["kernel"] + s["trunk_0"]["bias"], 0)
    x = np.maximum(x @ s["trunk_1"]["kernel"] + s["trunk_1"]["bias"], 0)
    log_std = x @ s["log_std"]["kernel"] + s["log_std"]["bias"]
    logits = x @ s["rate_logits"]["kernel"] + s["rate_logits"]["bias"]
    std, rate = jax.jit(lambda f: mutation_params(ghn, f, Hyperparams.from_config(SMALL)))(flat)
    np.testing.assert_allclose(std, np.clip(np.exp(log_std), 0, 2.0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(rate, _sigmoid(logits).max(-1), rtol=1e-4, atol=1e-6)


def test_self_graph_covers_every_mutable_leaf(two_node):
    ghn, flat = two_node
    leaves = jax.tree_util.tree_leaves_with_path(ghn.unravel(flat))
    names = {"/".join(str(getattr(k, "key", k)) for k in path) for path, _ in leaves}
    assert names == set(ghn.self_graph.names)
    assert len(names) == ghn.self_graph.num_nodes
    assert sum(int(np.prod(v.shape)) for _, v in leaves) == ghn.num_params == flat.shape[0]
    # The self-embedding table has one row per self-graph node, itself included.
    assert ghn.unravel(flat)["self_embed"].shape == (ghn.self_graph.num_nodes, SMALL.embed_dim)
    # Every node's tensor receives an update (noise off: the update is the generated one).
    hp = Hyperparams.from_config(SMALL.replace(noise_std=0.0))

    @jax.jit
    def child_of(key, parent):
        std, rate = mutation_params(ghn, parent, hp)
        return mutate(key, ghn, parent, std, rate, ghn.make_basis(), hp)

    child = child_of(jax.random.key(0), flat)
    changed = np.abs(np.asarray(child - flat)) > 0
    per_node = np.zeros(ghn.self_graph.num_nodes, bool)
    np.logical_or.at(per_node, ghn.self_graph.node_of_param, changed)
    assert per_node.all(), [
        n for n, c in zip(ghn.self_graph.names, per_node, strict=True) if not c
    ]


def test_projection_equals_truncated_full_basis(two_node):
    ghn, _ = two_node
    basis = ghn.make_basis()
    n = ghn.self_graph.num_nodes
    coeffs = jax.random.normal(jax.random.key(1), (n, SMALL.coeff_dim)) * 3.0
    rate = jax.random.uniform(jax.random.key(2), (n,))
    got = np.asarray(project(ghn, coeffs, rate, basis, jnp.float32(0.05)))
    full = np.clip(np.asarray(coeffs) @ np.asarray(basis), -0.05, 0.05) * np.asarray(rate)[:, None]
    want = np.concatenate([full[i, :s] for i, s in enumerate(ghn.self_graph.sizes)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_basis_is_orthonormal_and_fixed(two_node):
    ghn, _ = two_node
    b = np.asarray(ghn.make_basis())
    assert b.shape == (SMALL.coeff_dim, ghn.self_graph.max_leaf_size)
    np.testing.assert_allclose(b @ b.T, np.eye(SMALL.coeff_dim), atol=1e-5)
    np.testing.assert_array_equal(b, np.asarray(ghn.make_basis()))
