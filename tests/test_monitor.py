"""Runaway monitor: each condition trips after its patience, ``warn`` reports, ``stop`` halts
the compiled loop and the run ends with a checkpoint, a message and exit status 3; non-finite
returns never survive selection."""

import csv
import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from selfref_ghn.envs.cartpole import CartPoleSwitch

from selfref_ghn.config import Config, Hyperparams
from selfref_ghn.evolution import monitor
from selfref_ghn.evolution.generation import Evolution
from selfref_ghn.run.loop import evolve
from selfref_ghn.tools import cli
from tests.conftest import TINY

HEALTHY = dict(
    generation=0,
    inverted=0,
    best_fitness=100.0,
    mutation_rate_mean=0.5,
    diversity=0.3,
    nonfinite_fitness=0,
    nonfinite_params=0,
)
# Each condition and a metrics change that provokes it (config as below).
PROVOKE = {
    "rate_pinned": dict(mutation_rate_mean=0.995),
    "diversity_high": dict(diversity=9.0),
    "diversity_low": dict(diversity=1e-5),
    "return_collapse": dict(best_fitness=20.0),
    "nonfinite": dict(nonfinite_fitness=2),
}


def _metrics(g, **over):
    m = {**HEALTHY, "generation": g, **over}
    return {
        k: jnp.asarray(v, jnp.int32 if isinstance(v, int) else jnp.float32) for k, v in m.items()
    }


def _drive(cfg, bad, healthy_first=3, bad_gens=4):
    """Feed healthy generations, then ``bad_gens`` provoking ``bad``; return flags per gen."""
    hp = Hyperparams.from_config(cfg)
    state, history = monitor.init(), []
    for g in range(healthy_first + bad_gens):
        over = PROVOKE[bad] if g >= healthy_first else {}
        state, flags = monitor.update(state, _metrics(g, **over), cfg, hp)
        history.append({k: int(v) for k, v in flags.items()})
    return state, history


@pytest.mark.parametrize("name", monitor.FLAGS)
def test_warn_reports_each_condition_after_its_patience(name):
    cfg = Config(**TINY, monitor="warn", monitor_patience=3)
    state, history = _drive(cfg, name)
    col = f"monitor_{name}"
    got = [h[col] for h in history]
    first = 3 if name == "nonfinite" else 3 + 2  # nonfinite trips at once
    assert got == [0] * first + [1] * (len(got) - first), got
    others = [c for c in monitor.COLUMNS if c != col]
    assert all(h[c] == 0 for h in history for c in others), history
    assert int(state.stopped) == 0


@pytest.mark.parametrize("name", monitor.FLAGS)
def test_stop_records_what_tripped_and_when(name):
    cfg = Config(**TINY, monitor="stop", monitor_patience=2)
    state, history = _drive(cfg, name)
    trip = 3 if name == "nonfinite" else 4
    assert int(state.stopped) == 1
    assert int(state.stop_generation) == trip
    assert monitor.flag_names(int(state.stop_flags)) == [name]
    assert [h["monitor_stop"] for h in history] == [int(g == trip) for g in range(len(history))]
    assert not bool(monitor.running(state))
    assert bool(monitor.running(monitor.release(state)))


def test_off_watches_nothing():
    cfg = Config(**TINY, monitor="off")
    for name in monitor.FLAGS:
        state, history = _drive(cfg, name)
        assert all(v == 0 for h in history for v in h.values())
        assert int(state.stopped) == 0


def test_a_switch_is_not_a_collapse():
    cfg = Config(**TINY, monitor="warn", monitor_patience=1)
    hp = Hyperparams.from_config(cfg)
    state = monitor.init()
    for g, (best, inv) in enumerate([(100.0, 0), (100.0, 0), (10.0, 1), (12.0, 1), (4.0, 1)]):
        state, flags = monitor.update(state, _metrics(g, best_fitness=best, inverted=inv), cfg, hp)
        # the drop at the switch (g=2) resets the peak; 4 < 12 - 0.5*12 collapses at g=4
        assert int(flags["monitor_return_collapse"]) == int(g == 4), g


def test_rate_pinned_at_a_configured_lower_bound():
    cfg = Config(**TINY, monitor="warn", monitor_patience=1, rate_min=0.2, rate_max=0.9)
    hp = Hyperparams.from_config(cfg)
    _, flags = monitor.update(monitor.init(), _metrics(0, mutation_rate_mean=0.205), cfg, hp)
    assert int(flags["monitor_rate_pinned"]) == 1
    _, flags = monitor.update(monitor.init(), _metrics(0, mutation_rate_mean=0.5), cfg, hp)
    assert int(flags["monitor_rate_pinned"]) == 0


# ------------------------------------------------------------------- inside the compiled loop
def test_stop_inside_the_loop_checkpoints_and_exits_3(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "run", "quick", "--out", str(out), "--quiet", "--generations", "6",
        "--set", "population_size=4", "--set", "horizon=30", "--set", "log_every=3",
        "--set", "switch_intervals=[]", "--set", "gnn_rounds=2", "--set", "embed_dim=8",
        "--set", "trunk_dim=8", "--set", "coeff_dim=4", "--set", "num_rates=3",
        "--set", "policy_hidden=[8]", "--set", "monitor=stop", "--set", "monitor_patience=2",
        "--set", "monitor_diversity_max=0.01",
    ]  # fmt: skip
    assert cli.main(argv) == monitor.EXIT_MONITOR_STOP
    err = capsys.readouterr().err
    assert "monitor stopped the run at generation 1" in err
    assert "diversity_high" in err and "monitor_diversity_max 0.01" in err
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    # generation 2 (and the rest of the chunk) never ran
    assert [int(float(r["generation"])) for r in rows] == [0, 1]
    assert [int(float(r["monitor_stop"])) for r in rows] == [0, 1]
    assert [int(float(r["monitor_diversity_high"])) for r in rows] == [0, 1]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["2"]


def test_warn_inside_the_loop_flags_rows_and_progress_and_runs_on():
    cfg = Config(
        **{**TINY, "generations": 4, "log_every": 2},
        monitor="warn",
        monitor_patience=1,
        monitor_diversity_min=10.0,
        monitor_diversity_max=20.0,
    )
    stream = io.StringIO()
    state, metrics, summary = evolve(cfg, None, progress=stream)
    assert int(state.generation) == 4 and summary["monitor_stop"] is None
    np.testing.assert_array_equal(metrics["monitor_diversity_low"], [1, 1, 1, 1])
    np.testing.assert_array_equal(metrics["monitor_diversity_high"], [0, 0, 0, 0])
    assert summary["monitor_warnings"] == {"diversity_low": 0}
    lines = [ln for ln in stream.getvalue().splitlines() if ln.startswith("gen ")]
    assert len(lines) == 2 and all(ln.endswith("| ! diversity_low") for ln in lines)


# ------------------------------------------------------------------- non-finite returns
class NaNRewardCartPole(CartPoleSwitch):
    """CartPole whose first reward is NaN when the cart starts right of centre and is pushed
    right: some members' returns are NaN, others are finite."""

    def step_env(self, key, state, action, params):
        obs, state2, reward, done, info = super().step_env(key, state, action, params)
        poison = (state.time == 0) & (jnp.asarray(action) == 1) & (state.x > 0)
        return obs, state2, jnp.where(poison, jnp.nan, reward), done, info


def test_nan_returns_never_survive_and_are_counted():
    env = NaNRewardCartPole()
    evo = Evolution.create(Config(**TINY, monitor="warn"), env=env, env_params=env.default_params)
    P = evo.config.population_size

    @jax.jit
    def probe(s):
        children, _ = evo.mutate_population(s)
        members = jnp.concatenate([s.params, children])
        if hasattr(evo, "policies"):  # evaluation takes flat policies where they are cached
            members = evo.policies(members)
        fitness = evo.evaluate_members(s, members).fitness  # recomputed independently
        s2, m = evo.step(s)
        return fitness, s2, m

    s, poisoned = evo.init(), 0
    for _ in range(3):
        fitness, s2, m = probe(s)
        nan = np.isnan(np.asarray(fitness))
        poisoned += int(nan.sum())
        assert int(m["nonfinite_fitness"]) == int(nan.sum())
        assert (~nan).sum() >= P  # enough finite members that none of the NaN ones must survive
        assert not nan[np.asarray(m["selected"])].any(), (nan, m["selected"])
        assert np.isfinite(np.asarray(s2.fitness)).all()
        assert np.isfinite(float(m["best_fitness"])) and np.isfinite(float(m["mean_fitness"]))
        _, flags = monitor.update(monitor.init(), m, evo.config, s.hparams)
        assert int(flags["monitor_nonfinite"]) == int(nan.any())
        s = s2
    assert poisoned > 0  # the test env really produced NaN returns
