"""Switch rules over gymnax-contract envs: each rule against the plain env stepped side by side
from the same state and key, flipped inside ``lax.scan`` without recompiling, on every id of
gymnax's registry whose spaces fit, and in a short evolution run."""

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnax.environments import spaces
from selfref_ghn.envs import switch

from selfref_ghn import envs
from selfref_ghn.config import Config, ConfigError, periodic_windows
from selfref_ghn.evolution.generation import Evolution
from selfref_ghn.evolution.schedule import SwitchSchedule
from tests.conftest import TINY

KEY = jax.random.key(3)


def _pair(env_id, rule, options=None):
    """(wrapped env, params switched on), (plain env, params), a start state."""
    env, params = envs.make(env_id, switch=rule, switch_options=options)
    plain, plain_params = envs.make(env_id)
    _, state = plain.reset_env(jax.random.key(0), plain_params)
    return env, params.replace(inverted=True), plain, plain_params, state


def _same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Acrobot-v1", "MountainCar-v0"])
def test_reverse_actions_is_the_plain_env_with_n_minus_1_minus_a(env_id):
    env, on, plain, pp, state = _pair(env_id, "reverse_actions")
    n = plain.action_space(pp).n
    for a in range(n):
        _same(env.step_env(KEY, state, a, on), plain.step_env(KEY, state, n - 1 - a, pp))
        _same(
            env.step_env(KEY, state, a, on.replace(inverted=False)),
            plain.step_env(KEY, state, a, pp),
        )


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "MountainCarContinuous-v0", "Reacher-misc"])
def test_negate_actions_is_the_plain_env_with_minus_a(env_id):
    env, on, plain, pp, state = _pair(env_id, "negate_actions")
    shape = plain.action_space(pp).shape
    a = jnp.full(shape, 0.7, jnp.float32)
    _same(env.step_env(KEY, state, a, on), plain.step_env(KEY, state, -a, pp))


def test_permute_actions_uses_perm_of_a():
    perm = (2, 0, 1)
    env, on, plain, pp, state = _pair("Acrobot-v1", "permute_actions", {"perm": list(perm)})
    for a in range(3):
        _same(env.step_env(KEY, state, a, on), plain.step_env(KEY, state, perm[a], pp))


def test_negate_observations_negates_reset_and_step():
    env, on, plain, pp, state = _pair("CartPole-v1", "negate_observations")
    obs, _ = env.reset_env(KEY, on)
    np.testing.assert_array_equal(obs, -plain.reset_env(KEY, pp)[0])
    got, want = env.step_env(KEY, state, 1, on), plain.step_env(KEY, state, 1, pp)
    np.testing.assert_array_equal(got[0], -want[0])
    _same(got[1:], want[1:])
    space = env.observation_space(on)
    np.testing.assert_array_equal(space.low, -space.high)


def test_permute_observations_pendulum_documented_map():
    """[cos th, sin th, w] -> [sin th, cos th, -w]."""
    opts = {"perm": [1, 0, 2], "signs": [1, 1, -1]}
    env, on, plain, pp, state = _pair("Pendulum-v1", "permute_observations", opts)
    obs, s2, rew, *_ = env.step_env(KEY, state, jnp.array([0.5]), on)
    th, w = float(s2.theta), float(s2.theta_dot)
    np.testing.assert_allclose(obs, [np.sin(th), np.cos(th), -w], rtol=1e-6, atol=1e-6)
    assert float(rew) == float(plain.step_env(KEY, state, jnp.array([0.5]), pp)[2])


def test_negate_reward_negates_only_the_reward():
    env, on, plain, pp, state = _pair("Acrobot-v1", "negate_reward")
    got, want = env.step_env(KEY, state, 0, on), plain.step_env(KEY, state, 0, pp)
    assert float(want[2]) == -1.0 and float(got[2]) == 1.0
    _same(got[:2], want[:2])


@pytest.mark.parametrize(
    "env_id,values",
    [("Pendulum-v1", {"g": 15.0}), ("CartPole-v1", {"length": 1.0, "polemass_length": 0.1})],
)
def test_set_param_sets_the_fields_while_switched(env_id, values):
    env, on, plain, pp, state = _pair(env_id, "set_param", values)
    changed = pp.replace(**values)
    a = plain.action_space(pp).sample(jax.random.key(1))
    _same(env.step_env(KEY, state, a, on), plain.step_env(KEY, state, a, changed))
    _same(
        env.step_env(KEY, state, a, on.replace(inverted=False)), plain.step_env(KEY, state, a, pp)
    )
    with pytest.raises(AssertionError):  # the change does something
        _same(plain.step_env(KEY, state, a, changed)[0], plain.step_env(KEY, state, a, pp)[0])


def test_switching_inside_scan_compiles_once():
    env, params = envs.make("Acrobot-v1", switch="reverse_actions")

    @jax.jit
    def run(params, flags):
        _, state = env.reset_env(jax.random.key(0), params)

        def body(state, inverted):
            obs, state, reward, *_ = env.step_env(KEY, state, 0, params.replace(inverted=inverted))
            return state, obs

        return jax.lax.scan(body, state, flags)[1]

    plain_flags, mixed = jnp.zeros(6, bool), jnp.array([0, 0, 1, 1, 0, 1], bool)
    a, b = run(params, plain_flags), run(params.replace(inverted=True), mixed)
    assert run._cache_size() == 1
    assert np.array_equal(a[:2], b[:2]) and not np.array_equal(a[2:], b[2:])
    schedule = SwitchSchedule.from_intervals([(2, 4), (5, 6)])
    flags = jax.jit(jax.vmap(lambda g: schedule.apply(params, g).inverted))(jnp.arange(6))
    np.testing.assert_array_equal(flags, [0, 0, 1, 1, 0, 1])


def _fits(rule, env, params):
    """Which rules fit, from the spaces (independent of the rules' own checks)."""
    act, obs = env.action_space(params), env.observation_space(params)
    if rule in ("reverse_actions", "permute_actions"):
        return isinstance(act, spaces.Discrete)
    if rule == "negate_actions":
        return isinstance(act, spaces.Box) and np.allclose(act.low, -np.asarray(act.high))
    if rule in ("negate_observations", "permute_observations"):
        return isinstance(obs, spaces.Box)
    if rule in ("target_speed", "run_backwards"):
        return False  # no gymnax env reports a forward velocity (tests/envs/test_brax_switch.py)
    return True


def _options(rule, env, params):
    act, obs = env.action_space(params), env.observation_space(params)
    if rule == "permute_actions":
        return {"perm": list(range(getattr(act, "n", 2)))[::-1]}
    if rule == "permute_observations":
        return {"perm": list(range((getattr(obs, "shape", ()) or (1,))[-1]))[::-1]}
    if rule == "set_param":
        return {"max_steps_in_episode": 7}
    if rule == "target_speed":
        return {"target": 1.0}
    return None


NEEDS_DOWNLOAD = {"MNISTBandit-bsuite"}  # fetches MNIST on construction


@pytest.mark.parametrize("env_id", gymnax.registered_envs)
def test_make_with_every_rule_on_every_gymnax_id(env_id):
    if env_id in NEEDS_DOWNLOAD:
        pytest.skip("downloads its data set")
    base, bp = envs.make(env_id)
    for rule in switch.RULES:
        opts = _options(rule, base, bp)
        if not _fits(rule, base, bp):
            with pytest.raises(ValueError, match=rule):
                envs.make(env_id, switch=rule, switch_options=opts)
            continue
        env, params = envs.make(env_id, switch=rule, switch_options=opts)
        on = params.replace(inverted=True)
        state = jax.eval_shape(env.reset, jax.random.key(0), on)[1]
        out = jax.eval_shape(
            env.step, jax.random.key(0), state, base.action_space(bp).sample(KEY), on
        )
        assert out[0].shape == tuple(env.observation_space(on).shape), (rule, env_id)


def test_a_rule_that_does_not_fit_is_one_clear_error():
    with pytest.raises(ValueError, match="reverse_actions needs discrete actions; Pendulum-v1"):
        envs.make("Pendulum-v1", switch="reverse_actions")
    with pytest.raises(ValueError, match="negate_actions needs continuous"):
        envs.make("CartPole-v1", switch="negate_actions")
    with pytest.raises(ValueError, match="unknown switch rule 'flip'"):
        envs.make("CartPole-v1", switch="flip")
    with pytest.raises(ValueError, match="not a permutation"):
        envs.make("CartPole-v1", switch="permute_actions", switch_options={"perm": [0, 0]})
    with pytest.raises(ValueError, match="'gg' is not a field"):
        envs.make("Pendulum-v1", switch="set_param", switch_options={"gg": 1.0})
    with pytest.raises(ValueError, match="takes options"):
        envs.make("CartPole-v1", switch="negate_reward", switch_options={"x": 1})


def test_the_switch_ids_stay_and_rules_wrap_them():
    env, params = envs.make("CartPole-Switch")
    assert params.inverted is False and env.name == "CartPole-Switch"
    env, params = envs.make("CartPole-Switch", switch="negate_reward")
    assert params.env_params.inverted is False and params.inverted is False


def test_config_takes_any_gymnax_id_and_rule_from_the_command_line():
    cfg = Config(**TINY).with_overrides({"env_id": "Pendulum-v1", "switch": "negate_actions"})
    assert cfg.switch == "negate_actions"
    cfg = Config(**TINY).with_overrides(
        {
            "env_id": "Acrobot-v1",
            "switch": "permute_actions",
            "switch_options": '{"perm": [1, 2, 0]}',
        }
    )
    assert dict(cfg.switch_options) == {"perm": (1, 2, 0)}  # as tuples, like every option
    assert Config.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="'switch' = 'reverse_actions'"):
        Config(**TINY).replace(env_id="Pendulum-v1", switch="reverse_actions").validate()


def test_periodic_schedule():
    assert periodic_windows(2, 7) == [(2, 4), (6, 7)]
    assert periodic_windows(0, 7) == []
    s = SwitchSchedule.periodic(2, 7)
    np.testing.assert_array_equal(
        [bool(s.inverted_at(g)) for g in range(7)], [0, 0, 1, 1, 0, 0, 1]
    )
    with pytest.raises(ConfigError, match="'switch_every' = 6"):
        Config(**TINY).replace(switch_every=6).validate()


@pytest.mark.slow  # 8-13 s on a 2-core CPU: `make test-all`
def test_short_evolution_on_acrobot_with_reversed_actions():
    cfg = Config(**TINY).replace(env_id="Acrobot-v1", switch="reverse_actions", switch_every=2)
    evo = Evolution.create(cfg)
    state, metrics = evo.compiled_chunk(cfg.generations)(evo.init(), cfg.generations)
    np.testing.assert_array_equal(metrics["inverted"], [0, 0, 1, 1, 0, 0])
    for k, v in metrics.items():
        assert np.all(np.isfinite(np.asarray(v))), k
