"""Ant environments (DESIGN §3): Ant-v5 against Gymnasium step for step, Ant-Switch, brax ant.

Compiling MJX's forward pass takes about a minute on two CPU cores, so the default run compiles
one Ant-v5 ``step`` (float64) and one small rollout of brax's ant (default ``mjx`` backend),
shared through module fixtures; every other configuration is marked slow.

Why float64 for the side-by-side test: Gymnasium's MuJoCo runs in float64. With float64 MJX
and the MuJoCo-consistent step, the two agree to ~1e-8 on a single step and the gap grows
through contacts to ~5e-6 by step 55 and ~3e-5 by step 65, then contact events flip and the
trajectories separate (the ant is chaotic). In float32 the same growth starts from ~1e-6,
so observations agree to ~2e-5 for 15 steps, ~1e-3 at step 25 and not at all by step 35
(``test_ant_v5_float32_short_horizon``, slow).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

gym = pytest.importorskip("gymnasium")

from selfref_ghn.envs import ant  # noqa: E402

# Side-by-side tolerances (float64): measured errors stay below ~3e-5 for the first 60 steps
# of an episode; 1e-3 leaves a margin for other seeds while still catching any modelling
# error (a wrong reward term, frame or integrator shows up as >1e-2 within a few steps).
SIDE_BY_SIDE_STEPS = 60
MAX_EPISODE_STEPS = 60
OBS_ATOL = 1e-3
REWARD_ATOL = 1e-3


@pytest.fixture(scope="module")
def v5():
    """Ant-v5 built under float64, with a jitted ``reset_from``."""
    with jax.enable_x64(True):
        env, params = ant.make_ant_v5()
        reset_from = jax.jit(env.reset_from)
    return env, params, reset_from


def _gym_ant(**kwargs):
    return gym.make("Ant-v5", include_cfrc_ext_in_observation=False, **kwargs)


def _side_by_side(env, params, reset_from, n_steps, max_episode_steps, seed=0, reset_atol=1e-12):
    """Step this env and Gymnasium's from shared states; return the largest differences.

    Episodes start from a state drawn by Gymnasium's reset and copied into both simulators
    (``set_state`` and ``reset_from``); an episode ends when Gymnasium terminates (which this
    env must do on the same step) or after ``max_episode_steps``.
    """
    genv = _gym_ant()
    genv.reset(seed=seed)
    u = genv.unwrapped
    rng = np.random.default_rng(seed)
    key = jax.random.key(seed)
    worst = {"obs": 0.0, "reward": 0.0, "terms": 0.0, "max_contact_cost": 0.0}
    compared, terminations, episode_step = 0, 0, max_episode_steps
    while compared < n_steps:
        if episode_step == max_episode_steps:
            genv.reset(seed=int(rng.integers(2**31)))
            qpos, qvel = u.data.qpos.copy(), u.data.qvel.copy()
            u.set_state(qpos, qvel)
            obs, state = reset_from(qpos, qvel, params)
            np.testing.assert_allclose(np.asarray(obs), u._get_obs(), atol=reset_atol)
            episode_step = 0
        action = rng.uniform(-1.0, 1.0, 8).astype(np.float32)
        key, k = jax.random.split(key)
        _, state, reward, terminated, _, info = env.step(k, state, jnp.asarray(action), params)
        g_obs, g_reward, g_terminated, _, g_info = genv.step(action)
        worst["obs"] = max(worst["obs"], float(np.abs(info["final_observation"] - g_obs).max()))
        worst["reward"] = max(worst["reward"], abs(float(reward) - g_reward))
        for name in ("reward_forward", "reward_ctrl", "reward_contact", "reward_survive"):
            worst["terms"] = max(worst["terms"], abs(float(info[name]) - g_info[name]))
        worst["max_contact_cost"] = max(worst["max_contact_cost"], -g_info["reward_contact"])
        assert bool(terminated) == g_terminated, f"termination differs at step {compared}"
        compared += 1
        episode_step += 1
        if g_terminated:
            terminations += 1
            episode_step = max_episode_steps
    return worst, terminations


@pytest.mark.slow  # 8-13 s on a 2-core CPU: `make test-all`
def test_ant_v5_matches_gymnasium(v5):
    env, params, reset_from = v5
    with jax.enable_x64(True):
        worst, terminations = _side_by_side(
            env, params, reset_from, SIDE_BY_SIDE_STEPS, MAX_EPISODE_STEPS
        )
    print(f"Ant-v5 vs Gymnasium, {SIDE_BY_SIDE_STEPS} steps: {worst}, {terminations=}")
    assert worst["obs"] < OBS_ATOL, worst
    assert worst["reward"] < REWARD_ATOL, worst
    assert worst["terms"] < REWARD_ATOL, worst
    assert worst["max_contact_cost"] > 1e-3, worst  # the contact term was really compared


@pytest.mark.slow  # about 20-25 s on a 2-core CPU; `make test-all` runs it
def test_ant_switch_negates_actions_without_recompiling(v5):
    env, params, _ = v5
    with jax.enable_x64(True):
        env_s, params_s = ant.make_ant_switch(inverted=True)
        assert env_s == env and hash(env_s) == hash(env)  # same compiled code
        assert bool(params_s.inverted) and not bool(params.inverted)
        _, state = env.reset(jax.random.key(1), params)
        s_inv = s_neg = s_plain = state
        rng = np.random.default_rng(1)
        for i in range(3):
            if i == 1:
                cache_size = type(env).step._cache_size()
            a = jnp.asarray(rng.uniform(-1.0, 1.0, 8), jnp.float32)  # same dtype as above
            k = jax.random.key(10 + i)
            o_inv, s_inv, r_inv, *_ = env.step(k, s_inv, a, params_s)
            o_neg, s_neg, r_neg, *_ = env.step(k, s_neg, -a, params)
            o_plain, s_plain, *_ = env.step(k, s_plain, a, params)
            np.testing.assert_array_equal(np.asarray(o_inv), np.asarray(o_neg))
            assert float(r_inv) == float(r_neg)
        assert np.abs(np.asarray(o_inv) - np.asarray(o_plain)).max() > 1e-2
        assert type(env).step._cache_size() == cache_size


def test_ant_v5_reset_spaces_and_truncation(v5):
    env, params, _ = v5
    assert env.name == "Ant-v5"
    assert env.action_space(params).shape == (8,)
    assert env.observation_space(params).shape == (27,)
    with jax.enable_x64(True):
        short = params.replace(max_steps_in_episode=2)
        obs, state = env.reset(jax.random.key(2), short)
        assert obs.shape == (27,) and int(state.time) == 0
        noise = np.asarray(state.data.qpos) - env.mj_model.qpos0
        assert np.all(np.abs(noise) <= 0.1) and np.abs(noise).max() > 0.01
        _, state2 = env.reset(jax.random.key(3), short)
        assert not np.allclose(np.asarray(state.data.qpos), np.asarray(state2.data.qpos))
        truncated = []
        for i in range(2):
            obs, state, reward, terminated, trunc, _ = env.step(
                jax.random.key(i), state, jnp.zeros(8, jnp.float32), short
            )
            truncated.append(bool(trunc))
            assert np.isfinite(np.asarray(obs)).all() and np.isfinite(float(reward))
        assert truncated == [False, True]
        assert int(state.time) == 0  # auto-reset after truncation


# ---------------------------------------------------------------------------------- brax ant

BATCH, T = 4, 4


def _brax_rollout(env):
    """One jitted program: reset a batch, then ``T`` vmapped gymnax steps."""

    def rollout(keys, actions, params):
        obs0, state = jax.vmap(env.reset, in_axes=(0, None))(keys, params)

        def body(state, xs):
            key, action = xs
            obs, state, reward, terminated, truncated, _ = jax.vmap(
                env.step, in_axes=(0, 0, 0, None)
            )(jax.random.split(key, BATCH), state, action, params)
            return state, (obs, reward, terminated, truncated, state.time)

        step_keys = jax.random.split(keys[0], actions.shape[0])
        _, out = jax.lax.scan(body, state, (step_keys, actions))
        return obs0, out

    return jax.jit(rollout)


@pytest.fixture(scope="module")
def brax_default():
    env, params = ant.make_brax_ant()
    return env, params, _brax_rollout(env)


def _check_brax_rollout(env, params, rollout):
    keys = jax.random.split(jax.random.key(0), BATCH)
    actions = jax.random.uniform(jax.random.key(1), (T, BATCH, 8), minval=-1.0, maxval=1.0)
    obs0, (obs, reward, terminated, truncated, time) = rollout(keys, actions, params)
    assert obs0.shape == (BATCH, 27) and obs.shape == (T, BATCH, 27)
    assert np.isfinite(np.asarray(obs)).all() and np.isfinite(np.asarray(reward)).all()
    assert not np.allclose(np.asarray(obs0[0]), np.asarray(obs0[1]))  # per-member resets
    assert not np.asarray(truncated).any()
    # time counts steps and restarts at 0 on the step a member terminates (auto-reset)
    expected, prev = [], np.zeros(BATCH, int)
    for t in range(T):
        prev = np.where(np.asarray(terminated[t]), 0, prev + 1)
        expected.append(prev)
    np.testing.assert_array_equal(np.asarray(time), np.stack(expected))
    # Ant-Switch on brax: inverted controls == negated actions; same compiled program.
    inv = rollout(keys, actions, params.replace(inverted=True))
    neg = rollout(keys, -actions, params)
    np.testing.assert_allclose(np.asarray(inv[1][0]), np.asarray(neg[1][0]), atol=1e-6)
    plain = np.asarray(obs)
    assert np.abs(np.asarray(inv[1][0]) - plain).max() > 1e-3
    # truncation and auto-reset through the traced max_steps_in_episode
    short = rollout(keys, actions, params.replace(max_steps_in_episode=2))[1]
    survivors = ~np.asarray(short[2]).any(axis=0)  # members that never terminated
    assert survivors.any()
    np.testing.assert_array_equal(
        np.asarray(short[3])[:, survivors].T, [[False, True, False, True]] * survivors.sum()
    )
    np.testing.assert_array_equal(
        np.asarray(short[4])[:, survivors].T, [[1, 0, 1, 0]] * survivors.sum()
    )
    assert rollout._cache_size() == 1


@pytest.mark.slow  # 8-13 s on a 2-core CPU: `make test-all`
def test_brax_ant_steps_resets_and_vmaps(brax_default):
    env, params, rollout = brax_default
    assert env.name == "Ant" and env.backend == ant.DEFAULT_BRAX_BACKEND == "mjx"
    assert env.action_space(params).shape == (8,)
    _check_brax_rollout(env, params, rollout)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["spring", "positional", "generalized"])
def test_brax_ant_other_backends(backend):
    env, params = ant.make_brax_ant(backend=backend)
    _check_brax_rollout(env, params, _brax_rollout(env))
    qpos = env._brax.sys.init_q
    obs, state = jax.jit(env.reset_from)(qpos, jnp.zeros(14))
    np.testing.assert_allclose(np.asarray(obs[:13]), np.asarray(qpos[2:]), atol=1e-6)


def test_make_brax_ant_routes_keywords():
    env, params = ant.make_brax_ant(backend="spring", inverted=True, ctrl_cost_weight=0.1)
    assert bool(params.inverted) and params.max_steps_in_episode == 1000
    assert env._brax._ctrl_cost_weight == 0.1
    assert env == ant.BraxAnt("spring", ctrl_cost_weight=0.1)
    with pytest.raises(ValueError):
        ant.make_brax_ant(backend="nope")


# ------------------------------------------------------------------------------ evolution

# A CPU-sized evolution on brax's ant: the spring backend compiles fastest (about 35 s of this
# test's time on two idle cores is tracing and compiling the generation), a tiny GHN, 4
# generations of 4 parents x 2 children over 20 steps. Full runs are experiments (docs).
EVO = dict(
    env_id="Ant",
    env_kwargs=(("backend", "spring"),),
    horizon=20,
    generations=4,
    log_every=4,
    obs_norm=True,
    update_clip=0.1,
)


def _evolve_ant(out_dir=None, **overrides):
    from selfref_ghn.config import Config
    from selfref_ghn.run.loop import evolve
    from tests.conftest import TINY

    cfg = Config(**{**TINY, **EVO, **overrides})
    return cfg, evolve(cfg, out_dir, progress=False)


@pytest.mark.slow  # 15-25 s on a 2-core CPU: `make test-all`
def test_sr_ghns_evolve_on_ant():
    """Generations advance, selection keeps the best, observation statistics come from the
    ant's own observations, rates are inherited, policies are continuous."""
    from selfref_ghn.evolution.generation import Evolution

    cfg, (state, metrics, _) = _evolve_ant()
    P, C, T, G = cfg.population_size, cfg.num_children, cfg.horizon, cfg.generations
    assert int(state.generation) == G
    np.testing.assert_array_equal(metrics["generation"], np.arange(G))
    assert np.isfinite(metrics["best_fitness"]).all() and np.isfinite(state.fitness).all()
    assert (metrics["nonfinite_fitness"] == 0).all() and (metrics["nonfinite_params"] == 0).all()
    # (mu + lambda): survivors are the last generation's best P, ranked
    fit = np.asarray(state.fitness)
    assert np.all(np.diff(fit) <= 0) and fit[0] == pytest.approx(metrics["best_fitness"][-1])

    # running statistics: one observation per live step of every evaluated member
    live = np.diff(metrics["env_steps"], prepend=0)  # env_steps: cumulative live steps
    assert 0 < live.sum() <= G * P * (1 + C) * T
    stats = state.obs_stats
    assert float(stats.count) == live.sum()
    mean, var = np.asarray(stats.mean), np.asarray(stats.var)
    assert 0.2 <= mean[0] <= 1.0  # torso height of a live (healthy) ant
    assert 0.0 < mean[1] <= 1.0  # quaternion w of a mostly upright torso
    assert np.isfinite(var).all() and (var > 0).all() and not np.allclose(var, 1.0)

    # mutation rates: a max of sigmoids, inherited and selected, so they move
    rates = np.asarray(metrics["mutation_rate_mean"])
    assert ((rates > 0) & (rates < 1)).all() and np.ptp(rates) > 0
    assert (np.asarray(metrics["diversity"]) > 0).all()

    # the champion's policy: 8 continuous torques in [-1, 1] that depend on the observation
    evo = Evolution.create(cfg)
    params = evo.ghn.policy_graph.unravel(state.policy[0])
    obs = jax.random.normal(jax.random.key(0), (2, 27))
    act = np.asarray(jax.vmap(lambda o: evo.policy_fn(params, o))(obs))
    assert act.shape == (2, 8) and np.all(np.abs(act) <= 1) and np.ptp(act, axis=0).max() > 0


@pytest.mark.slow
def test_render_an_ant_champion(tmp_path):
    """End to end: evolve, then replay the champion into npz, HTML and GIF."""
    from PIL import Image

    from selfref_ghn.tools.render import render_champion

    cfg, _ = _evolve_ant(tmp_path, generations=2, log_every=2)
    out = render_champion(tmp_path, horizon=12, every=3, gif_backend="matplotlib")
    data = np.load(out["npz"])
    assert data["qpos"].shape == (out["length"] + 1, 15) and out["length"] >= 1
    assert float(data["rewards"].sum()) == pytest.approx(out["return"], rel=1e-5)
    assert "cdn" in out["html"].read_text()  # brax's viewer scripts come from CDNs
    with Image.open(out["gif"]) as gif:
        assert gif.n_frames == len(range(0, out["length"] + 1, 3))


# ------------------------------------------------------------------------------ slow checks


@pytest.mark.slow
def test_ant_v5_float32_short_horizon():
    """The library's default float32: agreement to ~1e-3 over 15 steps (see module doc)."""
    env, params = ant.make_ant_v5()
    worst, _ = _side_by_side(env, params, jax.jit(env.reset_from), 15, 15, reset_atol=1e-6)
    assert worst["obs"] < 5e-3 and worst["reward"] < 5e-3, worst


@pytest.mark.slow
def test_ant_v5_cfrc_ext_observation_matches_gymnasium():
    """With ``include_cfrc_ext_in_observation`` the 105-dim observation matches too."""
    with jax.enable_x64(True):
        env, params = ant.make_ant_v5(include_cfrc_ext_in_observation=True)
        genv = gym.make("Ant-v5")
        genv.reset(seed=3)
        u = genv.unwrapped
        obs, state = jax.jit(env.reset_from)(u.data.qpos.copy(), u.data.qvel.copy(), params)
        np.testing.assert_allclose(np.asarray(obs), u._get_obs(), atol=1e-12)
        rng = np.random.default_rng(3)
        for i in range(10):
            a = rng.uniform(-1.0, 1.0, 8)
            obs, state, reward, *_ = env.step(jax.random.key(i), state, jnp.asarray(a), params)
            g_obs, g_reward, *_ = genv.step(a)
            assert obs.shape == (105,)
            np.testing.assert_allclose(np.asarray(obs), g_obs, atol=1e-4)
            assert abs(float(reward) - g_reward) < 1e-4
