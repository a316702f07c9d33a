"""evosax baselines on the harness: a reference against evosax's own GymnaxProblem loop, the
compiled-loop battery for each baseline, the sign flip at the evosax boundary, config checks."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from evosax.algorithms import Open_ES
from evosax.problems import GymnaxProblem
from evosax.problems.networks import MLP

from selfref_ghn.config import METHODS, Config, ConfigError
from selfref_ghn.evolution.baselines import BaselineEvolution
from selfref_ghn.evolution.rollout import evaluate
from selfref_ghn.model.policy import MLPPolicy
from selfref_ghn.run.metrics import CSV_COLUMNS
from tests.conftest import TINY

HOST_COLUMNS = {"env_steps", "wall_time"}


def _argmax(x, key=None):
    return jnp.argmax(x, axis=-1)


def _problem(horizon: int) -> GymnaxProblem:
    """evosax's own CartPole problem with the harness's policy: tanh MLP 4-8-2, argmax."""
    policy = MLP(layer_sizes=(8, 2), output_fn=_argmax)
    return GymnaxProblem(
        "CartPole-v1", policy, episode_length=horizon, num_rollouts=1, use_normalize_obs=False
    )


def test_open_es_matches_a_plain_evosax_loop_over_gymnax_problem():
    """Seed for seed, the harness's Open_ES is a plain evosax loop over GymnaxProblem.

    The one convention that differs: ``GymnaxProblem.eval(key, population)`` evaluates every
    member with the same key (common random numbers), the harness gives member ``m`` the key
    ``fold_in(eval_key, m)`` (DESIGN §4). The plain loop below therefore calls evosax's
    ``eval`` once per member with that member's key; everything else (the policy and its
    parameter layout, ask/tell, the rollout of ``episode_length`` steps with rewards masked
    after the end) is evosax's own. The keys follow key version 2's derivation
    (:mod:`selfref_ghn.prng`), written out here with plain ``fold_in``.
    """
    G, seed = 4, 3
    cfg = Config(**TINY).replace(env_id="CartPole-v1", method="open_es", seed=seed)
    evo = BaselineEvolution.create(cfg)
    state, m = evo.compiled_chunk(G)(evo.init(), G)

    N = cfg.num_members
    problem = _problem(cfg.horizon)
    key = jax.random.PRNGKey(seed)
    variables = problem.sample(jax.random.key(0))  # {"params": {"Dense_0": ..., "Dense_1": ...}}
    es = Open_ES(
        N,
        variables,
        std_schedule=optax.constant_schedule(cfg.baseline_sigma),
        optimizer=optax.adam(cfg.baseline_lr),
    )
    params = es.default_params
    # run streams: init 0, generations 1, es_init 2; a generation's: evaluate 1, ask 2, tell 3
    mean = MLPPolicy(hidden=(8,), num_outputs=2).init(jax.random.fold_in(key, 0), jnp.zeros(4))
    es_state = es.init(jax.random.fold_in(key, 2), mean, params)
    p_state = problem.init(jax.random.key(0))

    @jax.jit
    def evaluate_population(eval_key, population):
        one = lambda i, sol: problem.eval(  # noqa: E731
            jax.random.fold_in(eval_key, i), jax.tree.map(lambda x: x[None], sol), p_state
        )[0][0]
        return jax.vmap(one)(jnp.arange(N), population)

    best, mean_ret = [], []
    for g in range(G):
        gen_key = jax.random.fold_in(jax.random.fold_in(key, 1), g)
        population, es_state = es.ask(jax.random.fold_in(gen_key, 2), es_state, params)
        fitness = evaluate_population(jax.random.fold_in(gen_key, 1), population)
        es_state, _ = es.tell(
            jax.random.fold_in(gen_key, 3), population, -fitness, es_state, params
        )
        best.append(float(fitness.max()))
        mean_ret.append(float(fitness.mean()))

    np.testing.assert_array_equal(m["best_fitness"], best)
    np.testing.assert_allclose(m["mean_fitness"], mean_ret, rtol=1e-6)
    assert len(set(best)) > 1 or len(set(mean_ret)) > 1  # the episodes are not all alike
    np.testing.assert_allclose(state.es_state.mean, es_state.mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m["mutation_rate_mean"], cfg.baseline_sigma, rtol=1e-6)


def test_gymnax_problem_shares_one_key_across_the_population():
    """The difference, precisely: evosax's ``eval`` with one key equals the harness's rollout
    of every member with that same key (not with per-member keys)."""
    cfg = Config(**TINY).replace(env_id="CartPole-v1", method="open_es")
    evo = BaselineEvolution.create(cfg)
    problem = _problem(cfg.horizon)
    flat = jax.vmap(lambda i: evo.initial_solution(jax.random.key(i)))(jnp.arange(6))
    key = jax.random.PRNGKey(7)
    population = jax.vmap(lambda f: {"params": evo.unravel(f)})(flat)
    theirs = problem.eval(key, population, problem.init(jax.random.key(0)))[0]

    def ours(k, f):
        return evaluate(k, evo.env, evo.env_params, evo.policy_fn, evo.unravel(f), cfg.horizon, 1)

    shared = jax.vmap(lambda f: ours(key, f).fitness)(flat)
    np.testing.assert_array_equal(theirs, shared)
    per_member = jax.vmap(lambda i, f: ours(jax.random.fold_in(key, i), f).fitness)(
        jnp.arange(6), flat
    )
    assert not np.array_equal(np.asarray(per_member), np.asarray(shared))


def _structure(state):
    return jax.tree.structure(state), [(x.shape, x.dtype) for x in jax.tree.leaves(state)]


@pytest.mark.parametrize("method", list(METHODS))
def test_baseline_runs_in_the_compiled_loop_without_recompiling(method):
    cfg = Config(**TINY, switch_intervals=((2, 4),)).replace(method=method)
    evo = BaselineEvolution.create(cfg)
    s0 = evo.init()
    structure = _structure(s0)
    chunk = evo.compiled_chunk(4)
    s, m1 = chunk(s0, cfg.generations)
    s, m2 = chunk(s, cfg.generations)
    assert chunk._cache_size() == 1
    assert _structure(s) == structure
    assert int(s.generation) == cfg.generations
    np.testing.assert_array_equal(m1["generation"], [0, 1, 2, 3])
    np.testing.assert_array_equal(m1["inverted"], [0, 0, 1, 1])
    np.testing.assert_array_equal(m2["generation"], [4, 5, -1, -1])
    assert set(CSV_COLUMNS) - HOST_COLUMNS <= set(m1)
    for k in ("best_fitness", "mean_fitness", "diversity", "mutation_rate_mean", "checksum"):
        assert np.all(np.isfinite(m1[k])), k
    assert np.all(m1["best_fitness"] >= m1["mean_fitness"])
    assert m1["selected"].shape == (4, cfg.population_size)
    assert m1["survivor_fitness"].shape == (4, cfg.population_size)


def test_scan_equals_python_loop_and_tell_gets_minus_the_return():
    cfg = Config(**TINY).replace(method="simple_ga")
    evo = BaselineEvolution.create(cfg)
    step = jax.jit(evo.step)
    s = evo.init()
    rows = []
    for _ in range(3):
        prev = s
        s, m = step(s)
        rows.append(m)
    # SimpleGA keeps the told population and its (identity-shaped) fitness: minus the returns
    ev = jax.jit(evo.evaluate_members)(prev, s.es_state.population)
    np.testing.assert_array_equal(np.asarray(s.es_state.fitness), -np.asarray(ev.fitness))
    assert float(rows[-1]["best_fitness"]) == float(ev.fitness.max())
    s_scan, m_scan = evo.compiled_chunk(3)(evo.init(), cfg.generations)
    np.testing.assert_array_equal(m_scan["best_fitness"], [float(r["best_fitness"]) for r in rows])
    np.testing.assert_allclose(s_scan.es_state.population, s.es_state.population, rtol=1e-6)


@pytest.mark.slow
def test_nonfinite_members_are_told_the_worst_fitness():
    cfg = Config(**TINY).replace(method="samr_ga")
    evo = BaselineEvolution.create(cfg)
    s0 = evo.init()
    # member 0 (and every copy of member 0) mutates with a NaN std (SAMR clips an inf one)
    s0 = s0.replace(es_state=s0.es_state.replace(std=s0.es_state.std.at[0].set(jnp.nan)))
    s, m = jax.jit(evo.step)(s0)
    told = np.asarray(s.es_state.fitness)
    bad = ~np.all(np.isfinite(np.asarray(s.es_state.population)), axis=1)
    assert bad[0] and not bad.all()
    assert int(m["nonfinite_params"]) == bad.sum()
    assert np.all(told[bad] == np.inf) and np.all(np.isfinite(told[~bad]))
    assert not set(np.flatnonzero(bad)) & set(np.asarray(m["selected"]).tolist())
    assert np.isfinite(float(m["best_fitness"]))


def test_config_checks_method_and_its_options():
    with pytest.raises(ConfigError) as e:
        Config(method="not_an_es").validate()
    assert e.value.field == "method"
    with pytest.raises(ConfigError) as e:
        Config(method="open_es", baseline_params=(("no_such_field", 1.0),)).validate()
    assert e.value.field == "baseline_params"
    with pytest.raises(ConfigError) as e:
        Config(method="cma_es", baseline_sigma=0.0).validate()
    assert e.value.field == "baseline_sigma"
    cfg = Config.from_dict({"method": "gesmr_ga", "baseline_params": {"std_meta": 1.5}})
    assert cfg.baseline_params == (("std_meta", 1.5),)
    assert Config(method="SNES").validate().method == "SNES"  # any evosax algorithm by name
    with pytest.raises(ConfigError):
        BaselineEvolution.create(Config(**TINY))  # srghn is not a baseline
