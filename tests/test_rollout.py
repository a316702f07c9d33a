"""The rollout stops once every episode of the batch has ended, with the scan's results."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from selfref_ghn.envs import make

from selfref_ghn.evolution.rollout import evaluate


def _linear_policy(obs_dim, n_actions):
    def policy(w, obs):
        return jnp.argmax(obs @ w)

    def params(key, n):
        return jax.random.normal(key, (n, obs_dim, n_actions))

    return policy, params


def _evaluate_all(env, env_params, policy, weights, horizon, exact):
    def one(m, w):
        return evaluate(
            jax.random.fold_in(jax.random.key(3), m),
            env,
            env_params,
            policy,
            w,
            horizon,
            episodes=2,
            exact_horizon=exact,
        )

    return jax.jit(jax.vmap(one))(jnp.arange(weights.shape[0]), weights)


@pytest.mark.parametrize(
    ("env_id", "horizon"),
    [
        ("CartPole-v1", 500),
        ("CartPole-Switch", 500),
        pytest.param("LunarLander-v3", 60, marks=pytest.mark.slow),  # ~2 min of compiling
    ],
)
def test_early_stop_gives_the_fixed_horizon_results(env_id, horizon):
    env, env_params = make(env_id)
    obs_dim = env.observation_space(env_params).shape[0]
    policy, params = _linear_policy(obs_dim, env.num_actions)
    weights = params(jax.random.key(0), 6)
    loop = _evaluate_all(env, env_params, policy, weights, horizon, exact=False)
    scan = _evaluate_all(env, env_params, policy, weights, horizon, exact=True)
    # LunarLander's contact sweeps run on gathered lanes (envs/_lanes.py), compiled separately
    # in the two programs: float32 rounding may differ there (measured: 7e-7 relative), so its
    # returns are compared to 1e-5; episode lengths and CartPole's results must be identical.
    exact = env_id.startswith("CartPole")
    np.testing.assert_array_equal(np.asarray(loop.live_steps), np.asarray(scan.live_steps))
    for a, b in zip(jax.tree.leaves(loop), jax.tree.leaves(scan), strict=True):
        if exact or not np.issubdtype(np.asarray(a).dtype, np.floating):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        else:
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
    # the members' episodes end at different steps, some before the horizon
    live = np.asarray(loop.live_steps)
    assert live.min() < 2 * horizon and len(set(live.tolist())) > 1


def test_loop_runs_only_until_the_last_episode_ends():
    env, env_params = make("CartPole-v1")
    policy, params = _linear_policy(4, 2)
    steps = []

    def counted(w, obs):
        jax.debug.callback(lambda: steps.append(1))
        return policy(w, obs)

    weights = params(jax.random.key(1), 4)
    ev = _evaluate_all(env, env_params, counted, weights, 500, exact=False)
    jax.effects_barrier()
    # one policy call per loop iteration; live_steps sums a member's 2 episodes
    longest = int(np.asarray(ev.live_steps).max())
    assert 0 < len(steps) <= longest
    assert len(steps) < 500  # stopped well before the horizon
