"""MLPPolicy: the plain MLP, and its fan-in and output scaling for continuous control."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from selfref_ghn.config import Config, ConfigError
from selfref_ghn.evolution.task import make_task
from selfref_ghn.model.policy import MLPPolicy


def test_fan_in_and_output_scale_equal_a_rescaled_plain_mlp():
    obs = jax.random.normal(jax.random.key(1), (27,))
    plain = MLPPolicy(hidden=(32, 32), num_outputs=8)
    scaled = MLPPolicy(hidden=(32, 32), num_outputs=8, fan_in_scale=True, output_scale=0.1)
    params = plain.init(jax.random.key(0), obs)["params"]  # same shapes for both
    # the scaled policy is the plain one with kernels divided by sqrt(fan-in), outputs x 0.1
    rescaled = jax.tree_util.tree_map_with_path(
        lambda path, w: w / np.sqrt(w.shape[0]) if path[-1].key == "kernel" else w, params
    )
    want = 0.1 * plain.apply({"params": rescaled}, obs)
    got = scaled.apply({"params": params}, obs)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # with unit-scale weights, the scaled policy's outputs are much smaller than the plain's
    assert jnp.abs(got).mean() < 0.1 * jnp.abs(plain.apply({"params": params}, obs)).mean()


def test_config_fields_reach_the_default_policy():
    cfg = Config(env_id="CartPole-Switch", policy_fan_in_scale=True, policy_output_scale=0.5)
    policy = make_task(cfg.validate()).policy
    assert policy.fan_in_scale and policy.output_scale == 0.5


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_output_scale_must_be_positive(bad):
    with pytest.raises(ConfigError, match="policy_output_scale"):
        Config(policy_output_scale=bad).validate()
