"""MinAtar games (gymnax's ports) side by side with the original MinAtar package, and the
switch rule (docs/envs/minatar.md says what is compared and why)."""

import importlib

import jax
import numpy as np
import pytest
from selfref_ghn.envs.minatar import mirror_permutation

from selfref_ghn import envs

GAMES = {
    "Breakout-MinAtar": "breakout",
    "Asterix-MinAtar": "asterix",
    "Freeway-MinAtar": "freeway",
    "SpaceInvaders-MinAtar": "space_invaders",
}


def _original(game: str, seed: int = 0):
    """The original game itself (no sticky actions: gymnax's ports have none)."""
    pytest.importorskip("minatar", reason="needs the original MinAtar (pip install MinAtar)")
    env = importlib.import_module(f"minatar.environments.{game}").Env(ramping=True)
    env.random = np.random.RandomState(seed)
    env.reset()
    return env


def _run_side_by_side(env, params, state, orig, actions, stop_at_reward=False):
    """Step both with the same actions (a list, or ``f(original, t)``); compare observations,
    rewards and terminations. Returns the number of steps and the total reward."""
    step = jax.jit(env.step_env)
    total = 0.0
    num_steps = actions[1] if isinstance(actions, tuple) else len(actions)
    for t in range(num_steps):
        a = actions[0](orig, t) if isinstance(actions, tuple) else int(actions[t])
        obs, state, reward, done, _ = step(jax.random.key(t), state, a, params)
        r, terminal = orig.act(int(env.action_set[a]))
        assert float(reward) == r, f"reward at step {t}"
        assert bool(done) == terminal, f"termination at step {t}"
        total += r
        if stop_at_reward and r:
            return t + 1, total  # the original now redraws its cars from its own RNG
        np.testing.assert_array_equal(np.asarray(obs, bool), orig.state(), f"step {t}")
        if terminal:
            return t + 1, total
    return num_steps, total


@pytest.mark.parametrize("env_id,game", GAMES.items())
def test_observation_shape_channels_and_actions_match_the_original(env_id, game):
    env, params = envs.make(env_id)
    orig = _original(game)
    obs, _ = env.reset_env(jax.random.key(0), params)
    assert obs.shape == tuple(orig.state_shape())
    assert tuple(env.observation_space(params).shape) == tuple(orig.state_shape())
    assert env.action_set.tolist() == orig.minimal_action_set()
    assert env.action_space(params).n == len(orig.minimal_action_set())
    assert set(np.unique(np.asarray(obs)).tolist()) <= {0.0, 1.0}
    if game in ("asterix", "space_invaders"):  # deterministic starts: the whole frame
        np.testing.assert_array_equal(np.asarray(obs, bool), orig.state())
    else:  # the player's channel (0) is where the original puts it
        np.testing.assert_array_equal(np.asarray(obs[..., 0], bool), orig.state()[..., 0])


@pytest.mark.parametrize("seed", range(4))
def test_breakout_steps_like_the_original(seed):
    env, params = envs.make("Breakout-MinAtar")
    obs, state = env.reset_env(jax.random.key(seed), params)
    orig = _original("breakout")
    # the start differs only by which corner the ball leaves from: set the original's by hand
    orig.ball_x, orig.ball_dir = int(state.ball_x), int(state.ball_dir)
    orig.last_x = orig.ball_x
    np.testing.assert_array_equal(np.asarray(obs, bool), orig.state())
    noise = np.random.default_rng(seed).integers(0, 3, 400)

    def follow_the_ball(o, t):  # n, l, r: towards where the ball lands; every 10th random
        if t % 10 == 9:
            return int(noise[t])
        x, dx = o.ball_x, (1 if o.ball_dir in (1, 2) else -1)
        for _ in range(9 - o.ball_y if o.ball_dir in (2, 3) else 0):
            x, dx = (0, 1) if x + dx < 0 else (9, -1) if x + dx > 9 else (x + dx, dx)
        return 0 if x == o.pos else (1 if x < o.pos else 2)

    steps, total = _run_side_by_side(env, params, state, orig, (follow_the_ball, 400))
    assert steps > 25 and total >= 2  # bricks broken, paddle bounces, walls, then the end


def test_breakout_rewards_and_termination_on_states_set_by_hand():
    env, params = envs.make("Breakout-MinAtar")
    _, state = env.reset_env(jax.random.key(0), params)
    orig = _original("breakout")
    # the ball just under the bricks moving up-right; then one far from the paddle, falling
    for ball in [(4, 3, 1), (8, 7, 2), (8, 4, 2), (8, 5, 3)]:
        y, x, d = ball
        s = state.replace(ball_y=y, ball_x=x, ball_dir=d, last_y=y, last_x=x, pos=4)
        orig.reset()
        orig.ball_y, orig.ball_x, orig.ball_dir, orig.last_y, orig.last_x = y, x, d, y, x
        orig.pos = 4
        _run_side_by_side(env, params, s, orig, [0, 0, 1, 2, 0])


def test_space_invaders_steps_like_the_original():
    env, params = envs.make("SpaceInvaders-MinAtar")
    _, state = env.reset_env(jax.random.key(0), params)
    orig = _original("space_invaders")  # deterministic: no random draws in the original
    actions = np.random.default_rng(0).integers(0, 4, 300)
    steps, total = _run_side_by_side(env, params, state, orig, actions)
    assert steps > 40 and total >= 2


def test_freeway_steps_like_the_original_until_the_cars_are_redrawn():
    env, params = envs.make("Freeway-MinAtar")
    _, state = env.reset_env(jax.random.key(3), params)
    orig = _original("freeway")
    orig.cars = np.asarray(state.cars).tolist()  # the start's random cars, copied over
    actions = np.random.default_rng(1).choice([0, 1, 1, 1, 1, 1, 2], 400)
    _, total = _run_side_by_side(env, params, state, orig, actions, stop_at_reward=True)
    assert total >= 1  # the chicken crossed: the compared frames led up to it


@pytest.mark.parametrize(
    "env_id,perm",
    [
        ("Breakout-MinAtar-Switch", [0, 2, 1]),
        ("Asterix-MinAtar-Switch", [0, 3, 4, 1, 2]),
        ("Freeway-MinAtar-Switch", [0, 2, 1]),
        ("SpaceInvaders-MinAtar-Switch", [0, 2, 1, 3]),
    ],
)
def test_switch_mirrors_the_directions(env_id, perm):
    env, params = envs.make(env_id)
    assert params.inverted is False
    assert mirror_permutation(env.action_set).tolist() == perm
    step = jax.jit(env.step_env)
    _, state = env.reset_env(jax.random.key(0), params)
    for t in range(4):  # past Freeway's move timer
        state = step(jax.random.key(t), state, 0, params)[1]
    for a, b in enumerate(perm):
        inv = step(jax.random.key(9), state, a, params.replace(inverted=True))
        plain = step(jax.random.key(9), state, b, params)
        np.testing.assert_array_equal(inv[0], plain[0])
        assert float(inv[2]) == float(plain[2])
        if a != b:  # the swap is not a no-op: the two directions differ here
            assert not np.array_equal(plain[0], step(jax.random.key(9), state, a, params)[0])
