"""experiments/lunar_mirror.py: the line from a LunarLander policy to its mirror image."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from selfref_ghn.envs.lunar_lander import mirror_observation

from experiments.lunar_mirror import first_kernel_path, side_engines_off, toward_mirror
from selfref_ghn.model.policy import MLPPolicy


@pytest.fixture
def policy():
    pol = MLPPolicy(hidden=(32,), num_outputs=4, fan_in_scale=True)
    params = pol.init(jax.random.key(0), jnp.zeros(8))["params"]
    return pol, params


def test_the_line_ends_at_the_mirror_image(policy):
    pol, params = policy
    obs = jax.random.normal(jax.random.key(1), (64, 8))
    apply = lambda p, o: pol.apply({"params": p}, o)
    mirrored = toward_mirror(params, -1.0)
    np.testing.assert_allclose(
        apply(mirrored, obs), apply(params, mirror_observation(obs)), rtol=1e-6, atol=1e-6
    )
    np.testing.assert_array_equal(apply(toward_mirror(params, 1.0), obs), apply(params, obs))
    # half way the policy cannot tell left from right
    blind = toward_mirror(params, 0.0)
    np.testing.assert_allclose(
        apply(blind, obs), apply(blind, mirror_observation(obs)), rtol=1e-6, atol=1e-6
    )
    assert not np.allclose(apply(params, obs), apply(params, mirror_observation(obs)))


def test_only_the_first_kernel_moves(policy):
    _, params = policy
    moved = toward_mirror(params, 0.3)
    path = first_kernel_path(params)
    before = jax.tree_util.tree_leaves_with_path(params)
    after = jax.tree_util.tree_leaves(moved)
    for (p, a), b in zip(before, after, strict=True):
        if p == path:
            assert not np.array_equal(a, b)
        else:
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="first-layer kernel"):
        first_kernel_path({"w": jnp.zeros((4, 3))})


def test_side_engines_off_never_fires_them(policy):
    pol, params = policy
    obs = jax.random.normal(jax.random.key(2), (256, 8)) * 3
    acts = jnp.argmax(pol.apply({"params": side_engines_off(params)}, obs), -1)
    assert set(np.unique(np.asarray(acts)).tolist()) <= {0, 2}
    assert set(np.unique(np.asarray(jnp.argmax(pol.apply({"params": params}, obs), -1)))) & {1, 3}
