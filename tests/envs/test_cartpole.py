"""CartPole-Switch against Gymnasium's CartPole-v1, side by side."""

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from selfref_ghn.envs.cartpole import EnvState

from selfref_ghn import envs


def _gym_env():
    env = gym.make("CartPole-v1")
    env.reset(seed=0)
    return env


def _state(v, time=0):
    x, x_dot, theta, theta_dot = (jnp.float32(a) for a in v)
    return EnvState(x=x, x_dot=x_dot, theta=theta, theta_dot=theta_dot, time=time)


def _run_side_by_side(inverted: bool, seed: int):
    env, params = envs.make("CartPole-Switch")
    params = params.replace(inverted=inverted)
    step = jax.jit(env.step_env)
    genv = _gym_env()
    rng = np.random.default_rng(seed)
    start = rng.uniform(-0.05, 0.05, size=4)
    genv.unwrapped.state = start.copy()
    state = _state(start)
    steps = 0
    for t in range(500):
        action = int(rng.integers(0, 2))
        gym_action = 1 - action if inverted else action
        g_obs, g_rew, g_term, g_trunc, _ = genv.step(gym_action)
        obs, state, rew, term, _ = step(jax.random.key(t), state, action, params)
        # one-step agreement from the same state (float32 vs float64 arithmetic)
        np.testing.assert_allclose(np.asarray(obs), g_obs, rtol=1e-5, atol=1e-5)
        assert float(rew) == g_rew
        assert bool(term) == g_term
        assert bool(env.is_truncated(state, params)) == g_trunc
        steps += 1
        if g_term or g_trunc:
            break
        # re-synchronise on Gymnasium's float64 state so errors cannot compound
        state = _state(genv.unwrapped.state, state.time)
    return steps


@pytest.mark.parametrize("inverted", [False, True])
def test_steps_like_gymnasium(inverted):
    lengths = [_run_side_by_side(inverted, seed) for seed in range(5)]
    assert all(n >= 8 for n in lengths)  # random play terminates, having compared every step


def test_full_trajectory_without_resync():
    env, params = envs.make("CartPole-Switch")
    genv = _gym_env()
    start = np.array([0.01, -0.02, 0.03, 0.04])
    genv.unwrapped.state = start.copy()
    state = _state(start)
    step = jax.jit(env.step_env)
    actions = [0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 0, 0, 1, 0, 1, 1, 0, 0, 0, 1]
    for t, a in enumerate(actions):
        g_obs, *_ = genv.step(a)
        obs, state, *_ = step(jax.random.key(t), state, a, params)
        np.testing.assert_allclose(np.asarray(obs), g_obs, rtol=1e-4, atol=1e-5)


def test_inversion_swaps_the_push():
    env, params = envs.make("CartPole-Switch")
    _, state = env.reset(jax.random.key(0), params)
    plain = env.step_env(jax.random.key(1), state, 1, params)[0]
    inverted = env.step_env(jax.random.key(1), state, 0, params.replace(inverted=True))[0]
    np.testing.assert_array_equal(np.asarray(plain), np.asarray(inverted))
    assert float(plain[1]) > float(state.x_dot)  # action 1 pushes right when not inverted


def test_registry():
    assert "CartPole-Switch" in envs.registered()
    with pytest.raises(ValueError, match="unknown environment"):
        envs.make("NoSuchEnv")
