"""PPO as the gradient reference (selfref_ghn.tools.ppo): the evolution's budget per generation,
the switch schedule on what it trains and is evaluated on, and the comparison's read-back."""

from __future__ import annotations

import csv
import importlib.util
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct
from gymnax.environments import environment, spaces

from selfref_ghn.config import Config, ConfigError
from selfref_ghn.tools import cli, ppo

needs_rejax = pytest.mark.skipif(
    importlib.util.find_spec("rejax") is None, reason="the ppo extra is not installed"
)


def test_iterations_never_pass_the_budget_nor_lag_a_whole_iteration():
    # B = 12, I = 8: after generation g, floor(12 (g + 1) / 8) iterations, by hand
    got = [int(ppo.iterations_until(g, 12, 8)) for g in range(-1, 5)]
    assert got == [0, 1, 3, 4, 6, 7]
    budget, it = 45_000, 500  # the CartPole-Switch preset's generation, rejax's CartPole
    g = np.arange(250)
    steps = np.asarray(ppo.iterations_until(g, budget, it)) * it
    assert np.all(steps <= (g + 1) * budget) and np.all(steps > (g + 1) * budget - it)


@pytest.mark.slow
def test_budget_is_the_evolutions_env_steps_per_generation():
    # CartPole cannot fall within 5 steps of its start, so every episode of the evolution runs
    # its whole horizon and its env_steps column counts the full budget
    from selfref_ghn.evolution.baselines import make_evolution
    from selfref_ghn.run.loop import evolve

    cfg = Config(
        env_id="CartPole-v1", switch="reverse_actions", switch_intervals=((1, 2),),
        population_size=4, num_children=2, horizon=5, episodes=2, generations=3,
        method="open_es", policy_hidden=(8,), log_every=3,
    )  # fmt: skip
    evo = make_evolution(cfg)
    _, metrics, _ = evolve(cfg, None, evo=evo, progress=False)
    per_generation = np.diff(np.concatenate([[0], metrics["env_steps"]]))
    assert list(per_generation) == [ppo.steps_per_generation(cfg)] * 3 == [120] * 3


@struct.dataclass
class ProbeParams:
    max_steps_in_episode: int = 10**6
    inverted: bool | jax.Array = False


@struct.dataclass
class ProbeState:
    time: jax.Array
    plain: jax.Array  # steps taken while not switched
    switched: jax.Array  # steps taken while switched


class Probe(environment.Environment):
    """Counts the steps it is stepped in each switch state; its reward is the switch."""

    @property
    def default_params(self) -> ProbeParams:
        return ProbeParams()

    def reset_env(self, key, params):
        zero = jnp.int32(0)
        return jnp.zeros(2), ProbeState(zero, zero, zero)

    def step_env(self, key, state, action, params):
        on = jnp.asarray(params.inverted, jnp.int32)
        state = ProbeState(state.time + 1, state.plain + 1 - on, state.switched + on)
        return jnp.zeros(2), state, on.astype(jnp.float32), jnp.asarray(False), {}

    def is_truncated(self, state, params):
        return jnp.asarray(False)  # one endless episode per env: the counts are never reset

    def action_space(self, params=None):
        return spaces.Discrete(2)

    def observation_space(self, params=None):
        return spaces.Box(-1.0, 1.0, (2,))


@pytest.mark.slow
@needs_rejax
def test_trains_and_is_evaluated_on_each_generations_switch_state():
    # B = 4 members x 3 steps = 12, I = 2 envs x 4 steps = 8: 1, 2, 1, 2, 1 iterations
    cfg = Config(
        method="ppo", population_size=2, num_children=1, horizon=3, generations=5,
        switch_intervals=((1, 3),),
        baseline_params=(
            ("num_envs", 2), ("num_steps", 4), ("num_minibatches", 1), ("num_epochs", 1),
        ),
    )  # fmt: skip
    run = ppo.create(cfg, env=Probe(), env_params=ProbeParams())
    assert (run.budget, run.iteration) == (12, 8)
    state = ppo.init(run)
    step = jax.jit(lambda s: ppo.step(run, s))
    plain, switched, rows = [], [], []
    for _ in range(cfg.generations):
        state, m = step(state)
        plain.append(int(state.train.env_state.plain.sum()))
        switched.append(int(state.train.env_state.switched.sum()))
        rows.append(jax.device_get(m))
    iters = np.array([1, 2, 1, 2, 1])
    on = np.array([0, 1, 1, 0, 0])
    assert switched == list(np.cumsum(iters * 8 * on))
    assert plain == list(np.cumsum(iters * 8 * (1 - on)))
    assert [int(r["env_steps"]) for r in rows] == list(np.cumsum(iters) * 8)
    assert [int(r["inverted"]) for r in rows] == list(on)
    # the evaluation's return is the switch times the horizon: it ran on g's switch state
    assert [float(r["best_fitness"]) for r in rows] == list(3.0 * on)
    assert all(r["mean_fitness"] == r["best_fitness"] for r in rows)
    # a second run of the same shapes does not compile again
    before = step._cache_size()
    step(ppo.init(run))
    assert step._cache_size() == before


@needs_rejax
def test_bad_settings_name_the_field():
    with pytest.raises(ConfigError) as e:
        ppo.create(Config(method="ppo", baseline_params=(("num_env", 4),)))
    assert e.value.field == "baseline_params" and "num_envs" in str(e.value)
    with pytest.raises(ConfigError) as e:  # 7 x 10 steps do not split into 4 minibatches
        ppo.create(
            Config(
                method="ppo",
                baseline_params=(("num_envs", 7), ("num_steps", 10), ("num_minibatches", 4)),
            )
        )
    assert e.value.field == "baseline_params"


def test_missing_extra_is_a_clear_error_before_any_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "rejax", None)  # import rejax raises ImportError
    out = tmp_path / "cmp"
    args = ["compare", "quick", "--methods", "srghn,ppo", "--seeds", "0", "--out", str(out)]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "'method' = 'ppo'" in err and "selfref_ghn[ppo]" in err
    assert not (out / "srghn").exists()  # nothing ran


@pytest.mark.slow
@needs_rejax
def test_comparison_reads_back_a_ppo_run(tmp_path):
    from selfref_ghn.tools.compare import run_comparison

    cfg = Config(
        env_id="CartPole-v1", switch="reverse_actions", switch_intervals=((4, 8),),
        population_size=5, num_children=1, horizon=50, generations=8, log_every=4,
        embed_dim=8, trunk_dim=8, coeff_dim=4, num_rates=3, gnn_rounds=1, policy_hidden=(8,),
    )  # fmt: skip
    out = tmp_path / "cmp"
    curves = run_comparison(cfg, ["srghn", "ppo"], [0], out, progress=False)
    run = out / "ppo" / "seed0"
    with (run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["inverted"]) for r in rows] == [0] * 4 + [1] * 4
    # B = 10 members x 50 steps = rejax's CartPole iteration (5 envs x 100 steps)
    assert [int(r["env_steps"]) for r in rows] == [500 * (g + 1) for g in range(8)]
    assert np.array_equal(
        curves["ppo"][0]["best_fitness"], [float(r["best_fitness"]) for r in rows]
    )
    md = (out / "recovery.md").read_text()
    assert "| ppo |" in md and "| srghn |" in md
    # read back, not run again
    again = run_comparison(cfg, ["srghn", "ppo"], [0], out, progress=False, report_only=True)
    assert np.array_equal(again["ppo"][0]["env_steps"], curves["ppo"][0]["env_steps"])


def test_ppo_is_not_an_evolution_to_run_alone():
    from selfref_ghn.evolution.baselines import make_evolution

    with pytest.raises(ConfigError, match="compare --methods ppo") as e:
        make_evolution(Config(method="ppo", population_size=4))
    assert e.value.field == "method"
