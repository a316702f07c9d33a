import jax
import jax.numpy as jnp
import numpy as np
import pytest

from selfref_ghn.model.graph import graph_of


def _mlp_params():
    return {
        "Dense_10": {"kernel": jnp.arange(6.0).reshape(3, 2), "bias": jnp.array([7.0, 8.0])},
        "Dense_2": {"kernel": jnp.ones((4, 3)), "bias": jnp.zeros(3)},
    }


def test_forward_order_natural_modules_kernel_before_bias():
    g = graph_of(_mlp_params())
    assert g.names == ("Dense_2/kernel", "Dense_2/bias", "Dense_10/kernel", "Dense_10/bias")
    assert g.shapes == ((4, 3), (3,), (3, 2), (2,))
    np.testing.assert_array_equal(g.sizes, [12, 3, 6, 2])
    np.testing.assert_array_equal(g.offsets, [0, 12, 15, 21])
    assert g.num_params == 23 and g.max_leaf_size == 12


def test_edges_link_consecutive_nodes_both_ways():
    g = graph_of(_mlp_params())
    edges = set(zip(g.senders.tolist(), g.receivers.tolist(), strict=True))
    assert edges == {(0, 1), (1, 2), (2, 3), (1, 0), (2, 1), (3, 2)}
    expected = np.array([[0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 1], [0, 0, 1, 0]], dtype=np.float32)
    np.testing.assert_array_equal(g.adjacency, expected)


def test_ravel_unravel_roundtrip_and_layout():
    params = _mlp_params()
    g = graph_of(params)
    flat = g.ravel(params)
    assert flat.shape == (23,)
    # Dense_10/kernel occupies [15, 21) in row-major order.
    np.testing.assert_array_equal(flat[15:21], np.arange(6.0))
    back = g.unravel(flat)
    for name in ("Dense_2", "Dense_10"):
        for leaf in ("kernel", "bias"):
            np.testing.assert_array_equal(back[name][leaf], params[name][leaf])
    np.testing.assert_array_equal(g.node_of_param[14:17], [1, 2, 2])
    np.testing.assert_array_equal(g.pos_in_leaf[12:17], [0, 1, 2, 0, 1])


def test_split_rows_truncates_each_row():
    g = graph_of(_mlp_params())
    rows = jnp.arange(4 * 12.0).reshape(4, 12)
    out = g.split_rows(rows)
    np.testing.assert_array_equal(out["Dense_2"]["bias"], [12.0, 13.0, 14.0])
    np.testing.assert_array_equal(out["Dense_10"]["kernel"], np.arange(24.0, 30.0).reshape(3, 2))


def test_empty_pytree_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        graph_of({})


@pytest.mark.parametrize("shape", [(22,), (24,), (2, 23), ()])
def test_unravel_refuses_a_vector_of_the_wrong_length(shape):
    g = graph_of(_mlp_params())
    with pytest.raises(ValueError, match=r"\(23,\)"):
        g.unravel(jnp.zeros(shape))
    with pytest.raises(ValueError, match=r"\(23,\)"):  # also while tracing (static shapes)
        jax.jit(g.unravel)(jnp.zeros(shape))
    with pytest.raises(ValueError, match=r"\(23,\)"):  # a member's vector inside a vmap
        jax.vmap(g.unravel)(jnp.zeros((3, *shape)))
