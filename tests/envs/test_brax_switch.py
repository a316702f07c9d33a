"""brax's tasks behind the gymnax contract and the reward switch rules (``target_speed``,
``run_backwards``, ``negate_reward``) on them: the adapter against brax's own ``step``, each
rule against the plain env stepped side by side with the same actions (the forward velocity
recomputed from the torso's positions, the reward terms from brax's documented formula),
switched inside ``lax.scan`` without recompiling, and rejected with one message where the env
reports no forward velocity."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from selfref_ghn.envs import brax_envs

from selfref_ghn import envs
from selfref_ghn.config import Config, ConfigError
from tests.conftest import TINY

T = 6
FLAGS = np.array([0, 0, 1, 1, 0, 1], bool)
TARGET = 1.5
KEY = jax.random.key(5)
BACKEND = brax_envs.DEFAULT_BACKEND["halfcheetah"]


def _actions(n, size):
    return jax.random.uniform(jax.random.key(1), (n, size), minval=-1.0, maxval=1.0)


def _rollout(env):
    """jit(scan) of ``step_env`` from ``env``'s reset, with the switch flag per step."""

    @jax.jit
    def run(params, actions, flags):
        _, state = env.reset_env(jax.random.key(0), params)

        def body(state, xs):
            a, flag = xs
            p = params.replace(inverted=flag) if hasattr(params, "env_params") else params
            obs, state, reward, done, info = env.step_env(KEY, state, a, p)
            torso_x = state.brax_state.pipeline_state.x.pos[0, 0]
            return state, (obs, reward, done, info, torso_x)

        x0 = state.brax_state.pipeline_state.x.pos[0, 0]
        return x0, jax.lax.scan(body, state, (actions, flags))[1]

    return run


@pytest.fixture(scope="module")
def plain():
    """HalfCheetah (default backend): the rollout and brax's own reset/step on the same keys."""
    env, params = envs.make("HalfCheetah")
    actions = _actions(T, env.num_actions)
    x0, out = _rollout(env)(params, actions, jnp.zeros(T, bool))

    @jax.jit
    def brax_own(actions):
        bs = env._brax.reset(jax.random.key(0))

        def body(bs, a):
            bs = env._brax.step(bs.replace(metrics=dict(bs.metrics)), a)
            return bs, (bs.obs, bs.reward, bs.done)

        return jax.lax.scan(body, bs, actions)[1]

    return env, params, actions, x0, out, brax_own(actions)


def _speed(env, x0, torso_x):
    """Forward velocity from the torso's x positions: displacement over the step / dt."""
    x = np.concatenate([[np.asarray(x0)], np.asarray(torso_x)])
    return np.diff(x) / env.dt


@pytest.mark.slow  # 10-20 s on a 2-core CPU (two brax programs compile)
def test_halfcheetah_adapter_is_brax_own_step(plain):
    env, params, actions, x0, (obs, reward, done, info, torso_x), own = plain
    assert env.name == "HalfCheetah" and env.backend == BACKEND
    assert obs.shape == (T, 17) and env.action_space(params).shape == (6,)
    np.testing.assert_array_equal(np.asarray(obs), np.asarray(own[0]))
    np.testing.assert_array_equal(np.asarray(reward), np.asarray(own[1]))
    np.testing.assert_array_equal(np.asarray(done), np.asarray(own[2]) > 0.5)
    assert set(env.info_keys) <= set(info)  # what the rules' check trusts without tracing
    v = _speed(env, x0, torso_x)
    np.testing.assert_allclose(np.asarray(info["x_velocity"]), v, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(
        np.asarray(info["reward_forward"]), np.asarray(info["reward_run"])
    )
    # brax's documented reward: forward velocity - 0.1 |a|^2
    ctrl = 0.1 * np.sum(np.square(np.asarray(actions)), axis=1)
    np.testing.assert_allclose(np.asarray(reward), v - ctrl, rtol=1e-5, atol=1e-5)
    assert np.abs(v).max() > 1e-2  # it moves


def _switched(rule, options=None):
    env, params = envs.make("HalfCheetah", switch=rule, switch_options=options)
    return env, params, _rollout(env)


@pytest.mark.slow  # 10-20 s on a 2-core CPU
def test_target_speed_while_switched_plain_otherwise_one_program(plain):
    base, _, actions, x0, (obs, reward, _, info, torso_x), _ = plain
    env, params, run = _switched("target_speed", {"target": TARGET})
    assert env.name == "HalfCheetah[target_speed]"
    _, (s_obs, s_reward, *_) = run(params, actions, jnp.asarray(FLAGS))
    np.testing.assert_array_equal(np.asarray(s_obs), np.asarray(obs))  # dynamics unchanged
    np.testing.assert_array_equal(np.asarray(s_reward)[~FLAGS], np.asarray(reward)[~FLAGS])
    v = _speed(base, x0, torso_x)
    np.testing.assert_allclose(
        np.asarray(s_reward)[FLAGS], -np.abs(v - TARGET)[FLAGS], rtol=1e-5, atol=1e-5
    )
    _, (_, all_on, *_) = run(params, actions, jnp.ones(T, bool))  # other flags: same program
    assert run._cache_size() == 1
    np.testing.assert_allclose(np.asarray(all_on), -np.abs(v - TARGET), rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # 10-20 s on a 2-core CPU
def test_run_backwards_negates_only_the_forward_term(plain):
    base, _, actions, x0, (obs, reward, _, info, torso_x), _ = plain
    env, params, run = _switched("run_backwards")
    _, (_, s_reward, *_) = run(params, actions, jnp.asarray(FLAGS))
    v = _speed(base, x0, torso_x)
    ctrl = 0.1 * np.sum(np.square(np.asarray(actions)), axis=1)
    np.testing.assert_allclose(
        np.asarray(s_reward)[FLAGS], (-v - ctrl)[FLAGS], rtol=1e-5, atol=1e-5
    )
    np.testing.assert_array_equal(np.asarray(s_reward)[~FLAGS], np.asarray(reward)[~FLAGS])


@pytest.mark.slow  # 10-20 s on a 2-core CPU
def test_negate_reward_on_a_brax_task(plain):
    _, _, actions, _, (obs, reward, *_), _ = plain
    env, params, run = _switched("negate_reward")
    _, (_, s_reward, *_) = run(params, actions, jnp.asarray(FLAGS))
    expected = np.where(FLAGS, -np.asarray(reward), np.asarray(reward))
    np.testing.assert_array_equal(np.asarray(s_reward), expected)


@pytest.mark.slow  # 10-20 s on a 2-core CPU
def test_run_backwards_on_ant_keeps_its_healthy_reward_and_control_cost():
    env, params = envs.make("Ant", backend="spring", switch="run_backwards")
    actions = _actions(4, 8)
    x0, (_, reward, done, info, torso_x) = _rollout(env)(params, actions, jnp.ones(4, bool))
    assert not np.asarray(done).any()
    v = _speed(env.env, x0, torso_x)
    ctrl = 0.5 * np.sum(np.square(np.asarray(actions)), axis=1)
    # brax's ant: x velocity + healthy reward (1 per step) - 0.5 |a|^2, no contact cost
    np.testing.assert_allclose(np.asarray(reward), -v + 1.0 - ctrl, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(info["reward_forward"]), v, rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # 15-30 s each on a 2-core CPU (brax's generalized backend)
@pytest.mark.parametrize("env_id", ["Hopper", "Walker2d"])
def test_run_backwards_on_hopper_and_walker2d(env_id):
    env, params = envs.make(env_id, switch="run_backwards")
    actions = _actions(4, env.num_actions)
    x0, (_, reward, done, info, torso_x) = _rollout(env)(params, actions, jnp.ones(4, bool))
    assert not np.asarray(done).any()
    v = _speed(env.env, x0, torso_x)
    ctrl = 1e-3 * np.sum(np.square(np.asarray(actions)), axis=1)
    # brax's hopper and walker2d: x velocity + healthy reward (1 per step) - 1e-3 |a|^2
    np.testing.assert_allclose(np.asarray(reward), -v + 1.0 - ctrl, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(info["x_velocity"]), v, rtol=1e-5, atol=1e-5)


def test_forward_velocity_rules_need_an_env_that_reports_one():
    for rule, options in (("target_speed", {"target": 1.0}), ("run_backwards", None)):
        with pytest.raises(
            ValueError, match=f"{rule} needs an environment that reports a forward velocity"
        ):
            envs.make("CartPole-v1", switch=rule, switch_options=options)
        field, _, message = envs.check_switch("CartPole-v1", {}, rule, options or {})
        assert field == "switch" and "forward velocity" in message
    with pytest.raises(ValueError, match="target_speed needs the option 'target'"):
        envs.make("Pendulum-v1", switch="target_speed")
    with pytest.raises(ValueError, match="target must be a finite number"):
        envs.make("Pendulum-v1", switch="target_speed", switch_options={"target": "fast"})
    with pytest.raises(ConfigError, match="'switch' = 'run_backwards'"):
        Config(**TINY).replace(env_id="CartPole-v1", switch="run_backwards").validate()


def test_brax_ids_take_the_forward_rules_in_a_config():
    cfg = Config(**TINY).with_overrides(
        {"env_id": "HalfCheetah", "switch": "target_speed", "switch_options": '{"target": 2}'}
    )
    assert dict(cfg.switch_options) == {"target": 2}
    env, params = envs.make("Walker2d", switch="run_backwards")
    assert env.action_space(params).shape == (6,) and env.observation_space(params).shape == (17,)


def test_make_brax_routes_keywords_and_rejects_unknown_names():
    env, params = brax_envs.make_brax("hopper", "spring", inverted=True, ctrl_cost_weight=0.01)
    assert bool(params.inverted) and params.max_steps_in_episode == 1000
    assert env._brax._ctrl_cost_weight == 0.01 and env.name == "Hopper"
    assert env == brax_envs.BraxEnv("hopper", "spring", ctrl_cost_weight=0.01)
    assert hash(env) == hash(brax_envs.BraxEnv("hopper", "spring", ctrl_cost_weight=0.01))
    assert env != brax_envs.BraxEnv("hopper", "positional", ctrl_cost_weight=0.01)
    with pytest.raises(ValueError, match="backend must be one of"):
        brax_envs.make_brax("hopper", "nope")
    with pytest.raises(ValueError, match="brax task must be one of"):
        brax_envs.make_brax("cheetah")
