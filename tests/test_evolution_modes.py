"""``Config.evolution_mode`` (docs/design.md "Evolution modes"): the default is the run recorded
before modes existed; ``generational`` and ``cached_elitist`` play only the children's episodes
(checked against the children evaluated on their own) and select as the hand-made examples say;
every mode runs end to end, resumes exactly and splits over devices; a bad mode is one message.
"""

import csv
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from selfref_ghn.config import Config, ConfigError
from selfref_ghn.evolution import memory
from selfref_ghn.evolution.ask_tell import SelfReferentialGHN
from selfref_ghn.evolution.generation import Evolution
from selfref_ghn.evolution.selection import cached_elitist, elitist_union, generational
from selfref_ghn.run.loop import evolve
from selfref_ghn.tools import cli
from tests.conftest import TINY
from tests.test_sharding import run_with_devices

P, C = TINY["population_size"], TINY["num_children"]

# metrics.csv of RECORDED_CONFIG written by commit 78c6e45, the last one before evolution modes
# existed (same XLA flags as these tests: conftest.py)
RECORDED_CONFIG = dict(TINY, horizon=20, generations=4, log_every=2, switch_intervals=((1, 3),))
RECORDED_CHECKSUM = [
    -24.70504379272461, -48.56123352050781, -64.91983795166016, -64.01964569091797,
]  # fmt: skip
RECORDED_ENV_STEPS = [142, 253, 361, 517]
RECORDED_BEST = [20.0, 10.0, 10.0, 20.0]


def _rows(run):
    with (run / "metrics.csv").open() as f:
        return [{k: v for k, v in r.items() if k != "wall_time"} for r in csv.DictReader(f)]


# ------------------------------------------------------------------- the pure selections
def test_generational_keeps_exactly_the_top_P_children_whatever_the_parents_scored():
    parents = jnp.array([100.0, 100.0, 100.0])  # never evaluated: ignored
    children = jnp.array([5.0, 1.0, 7.0, 3.0, 7.0, 0.0])  # P = 3, C = 2
    sel = generational(parents, children, 0.5, "children")
    assert sel.selected.tolist() == [5, 7, 3]  # 3 + [2, 4, 0]: the 7s (lower index first), 5
    assert sel.top.tolist() == [7.0, 7.0, 5.0] and sel.carried.tolist() == [7.0, 7.0, 5.0]


def test_cached_elitist_ranks_the_union_and_carries_each_ones_own_fitness():
    """child_factor 0.5: parent 0's selection fitness is 0.5 * 10 + 0.5 * mean(2, 6) = 7, so it
    survives third; it carries its own 10, not 7. elitist_union, same numbers: it carries 7."""
    parents = jnp.array([10.0, -jnp.inf, 6.0])
    children = jnp.array([2.0, 6.0, 9.0, 9.0, 0.0, 0.0])
    sel = cached_elitist(parents, children, 0.5)
    assert sel.selected.tolist() == [5, 6, 0]
    assert sel.top.tolist() == [9.0, 9.0, 7.0]
    assert sel.carried.tolist() == [9.0, 9.0, 10.0]
    union = elitist_union(parents, children, 0.5)
    assert union.selected.tolist() == [5, 6, 0] and union.carried.tolist() == [9.0, 9.0, 7.0]


# ------------------------------------------------------------------- the generation step
def _built(mode):
    """The Evolution and, jitted as one program, its step and the reference: the step's
    children evaluated on their own (the same members' episodes, outside the step)."""
    evo = Evolution.create(Config(**TINY, evolution_mode=mode))

    def step_and_children_alone(s):
        kids = evo.mutate_population(s)[0]
        return evo.step(s), (kids, evo.evaluate_members(s, evo.policies(kids), first=P))

    return evo, jax.jit(step_and_children_alone)


def test_generational_plays_only_the_children_and_the_best_P_replace_the_parents():
    evo, run = _built("generational")
    assert evo.describe().startswith("SR-GHN (self, generational), ")  # the run's start line
    s0 = evo.init()
    (s1, m), (kids, ev) = run(s0)
    # env steps: the children's own, no parent's (each parent would add at least one step)
    assert int(m["live_steps"]) == int(ev.live_steps.sum())
    assert int(m["live_steps"]) <= P * C * evo.config.episodes * evo.config.horizon
    order = np.argsort(-np.asarray(ev.fitness), kind="stable")[:P]  # ties: lower index first
    np.testing.assert_array_equal(m["selected"], P + order)
    np.testing.assert_array_equal(s1.fitness, np.asarray(ev.fitness)[order])
    np.testing.assert_array_equal(s1.params, np.asarray(kids)[order])
    assert float(m["best_fitness"]) == float(ev.fitness.max())
    # the parents' fitness plays no part
    (s1b, mb), _ = run(s0.replace(fitness=jnp.full((P,), 1e6, jnp.float32)))
    np.testing.assert_array_equal(mb["selected"], m["selected"])
    np.testing.assert_array_equal(s1b.params, s1.params)


def test_cached_elitist_parents_keep_their_cached_fitness_and_only_children_play():
    """Cached fitness 15.5 and 1e6 cannot be CartPole returns (whole numbers <= 30): a surviving
    parent shows its cached value, not a new measurement; survivors are the union's best."""
    evo, run = _built("cached_elitist")
    s0 = evo.init()
    cached = jnp.array([15.5, -jnp.inf, 1e6, 0.5], jnp.float32)
    (s1, m), (kids, ev) = run(s0.replace(fitness=cached))
    assert int(m["live_steps"]) == int(ev.live_steps.sum())
    union = np.concatenate([np.asarray(cached), np.asarray(ev.fitness)])
    order = np.argsort(-union, kind="stable")[:P]
    np.testing.assert_array_equal(m["selected"], order)
    np.testing.assert_array_equal(s1.fitness, union[order])
    assert 2 in order and s1.fitness[list(order).index(2)] == 1e6
    members = np.concatenate([np.asarray(s0.params), np.asarray(kids)])
    np.testing.assert_array_equal(s1.params, members[order])
    # at generation 0 nothing is cached (-inf): the children take the parents' places
    (_, m0), _ = run(s0)
    assert np.all(np.asarray(m0["selected"]) >= P)


def test_default_mode_writes_the_metrics_recorded_before_modes_existed(tmp_path):
    if jax.default_backend() != "cpu":
        pytest.skip("the values were recorded on the CPU backend")
    evolve(Config(**RECORDED_CONFIG), tmp_path, progress=False)
    rows = _rows(tmp_path)
    assert [np.float32(r["checksum"]) for r in rows] == [np.float32(x) for x in RECORDED_CHECKSUM]
    assert [int(r["env_steps"]) for r in rows] == RECORDED_ENV_STEPS
    assert [float(r["best_fitness"]) for r in rows] == RECORDED_BEST
    assert json.loads((tmp_path / "config.json").read_text())["evolution_mode"] == "elitist_union"


def test_memory_estimate_counts_only_the_episodes_played():
    def rollouts(mode):
        return memory.estimate(Evolution.create(Config(**TINY, evolution_mode=mode)))["rollouts"]

    union = rollouts("elitist_union")  # P(1+C) members' episodes, C/(1+C) of them children's
    assert rollouts("generational") == rollouts("cached_elitist") == union * C // (1 + C)


# ------------------------------------------------------------------- end to end
SMALL = [
    "--set", "embed_dim=8", "--set", "trunk_dim=8", "--set", "coeff_dim=4",
    "--set", "num_rates=3", "--set", "gnn_rounds=2", "--set", "policy_hidden=[8]",
    "--set", "horizon=100", "--set", "log_every=2", "--set", "switch_intervals=[[1,3]]",
]  # fmt: skip


@pytest.mark.slow  # compiles the quick preset's step once per mode: `make test-all`
@pytest.mark.parametrize("mode", ["elitist_union", "generational", "cached_elitist"])
def test_every_mode_runs_the_quick_preset(mode, tmp_path):
    """The quick preset (16 parents, 2 children each) for 4 generations: a generation's env
    steps are its children's only, except in elitist_union."""
    argv = ["run", "quick", "--generations", "4", "--out", str(tmp_path), "--quiet", *SMALL]
    assert cli.main([*argv, "--set", f"evolution_mode={mode}"]) == 0
    rows = _rows(tmp_path)
    assert [int(r["generation"]) for r in rows] == [0, 1, 2, 3]
    steps = np.diff([0] + [int(r["env_steps"]) for r in rows])
    members = 16 * 2 if mode != "elitist_union" else 16 * 3
    assert np.all(steps >= members) and np.all(steps <= members * 100)  # 1..horizon each
    assert all(np.isfinite(float(r["best_fitness"])) for r in rows)
    assert json.loads((tmp_path / "config.json").read_text())["evolution_mode"] == mode


@pytest.mark.slow  # 8-13 s on a 2-core CPU: `make test-all`
def test_cached_elitist_resumed_equals_uninterrupted(tmp_path):
    """The cached fitness lives in the state, so it is checkpointed: a run stopped at
    generation 3 and resumed equals the same run straight through."""
    cfg = Config(
        **{**TINY, "horizon": 10, "checkpoint_every": 3, "evolution_mode": "cached_elitist"}
    )
    final, _, _ = evolve(cfg, tmp_path / "whole", progress=False)
    part = tmp_path / "part"
    evolve(cfg.replace(generations=3), part, progress=False)
    assert cli.main(["run", "--resume", str(part), "--generations", "6", "--quiet"]) == 0
    assert _rows(part) == _rows(tmp_path / "whole")
    assert len(_rows(part)) == 6
    stored = np.load(part / "final_state.npz")
    np.testing.assert_array_equal(stored["fitness"], np.asarray(final.fitness))


@pytest.mark.slow  # 15-25 s on a 2-core CPU: `make test-all`
def test_modes_give_the_same_bits_on_1_and_2_devices():
    """With ``bitwise_block`` the children-only evaluation splits over devices like the
    default: 3 generations of each mode give the same metrics and state on 1 and 2 devices."""
    res = run_with_devices(
        f"""
        import json, jax, numpy as np
        from selfref_ghn.config import Config
        from selfref_ghn.evolution.generation import Evolution
        out = {{}}
        for mode in ("generational", "cached_elitist"):
            cfg = Config(**{dict(TINY, population_size=8, horizon=20)!r}, bitwise_block=2,
                         evolution_mode=mode)
            for n in (1, 2):
                evo = Evolution.create(cfg, devices=n)
                s, m = evo.compiled_chunk(3)(evo.distribute(evo.init()), 3)
                got = {{k: np.asarray(v).tolist() for k, v in jax.device_get(m).items()}}
                for k in ("params", "fitness"):
                    got["state_" + k] = np.asarray(getattr(s, k)).tolist()
                out[f"{{mode}}/{{n}}"] = got
        print(json.dumps(out))
        """
    )
    for mode in ("generational", "cached_elitist"):
        one, two = res[f"{mode}/1"], res[f"{mode}/2"]
        assert one["generation"] == [0, 1, 2]
        assert one == two, mode


# ------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "sets,message",
    [
        (["evolution_mode=steady_state"], "'evolution_mode' = 'steady_state': one of"),
        (["evolution_mode=3"], "'evolution_mode' = 3: expected str"),
        (
            ["method=open_es", "evolution_mode=generational"],
            "'evolution_mode' = 'generational': applies to method 'srghn' only",
        ),
    ],
)
def test_a_bad_mode_is_one_message_and_exit_2(sets, message, nothing_compiles, capsys):
    argv = ["run", "quick"] + [x for s in sets for x in ("--set", s)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_ask_tell_refuses_a_mode_that_skips_members():
    cfg = Config(**TINY, evolution_mode="cached_elitist")
    with pytest.raises(ConfigError, match="'evolution_mode' = 'cached_elitist'"):
        SelfReferentialGHN(12, {"w": jnp.zeros((4, 2))}, config=cfg)
    Config(**TINY, method="open_es").validate()  # the default mode with a baseline is fine
