"""The generation step: compiled once, scannable, stable, finite, and it learns."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from selfref_ghn.config import Config
from selfref_ghn.evolution.generation import Evolution, diversity
from tests.conftest import TINY


@pytest.fixture(scope="module")
def evo():
    return Evolution.create(Config(**TINY, switch_intervals=((2, 4),)))


@pytest.fixture(scope="module")
def jit_step(evo):
    return jax.jit(evo.step)


def _structure(state):
    return jax.tree.structure(state), [(x.shape, x.dtype) for x in jax.tree.leaves(state)]


def test_step_compiles_once_and_keeps_structure(evo, jit_step):
    s0 = evo.init()
    s1, m1 = jit_step(s0)
    s2, m2 = jit_step(s1)
    assert jit_step._cache_size() == 1
    assert _structure(s0) == _structure(s1) == _structure(s2)
    assert int(s2.generation) == 2
    for k, v in m2.items():
        assert np.all(np.isfinite(np.asarray(v))), k
    assert np.all(np.isfinite(np.asarray(s2.params)))
    assert np.all(np.abs(np.asarray(s2.params)) <= evo.config.param_clip)


def test_scan_equals_python_loop(evo, jit_step):
    s = evo.init()
    loop_metrics = []
    for _ in range(4):
        s, m = jit_step(s)
        loop_metrics.append(m)
    chunk = evo.compiled_chunk(4)
    s_scan, m_scan = chunk(evo.init(), evo.config.generations)
    np.testing.assert_array_equal(m_scan["generation"], [0, 1, 2, 3])
    np.testing.assert_array_equal(m_scan["inverted"], [0, 0, 1, 1])
    np.testing.assert_array_equal(
        m_scan["selected"], np.stack([np.asarray(m["selected"]) for m in loop_metrics])
    )
    np.testing.assert_allclose(
        m_scan["best_fitness"], [float(m["best_fitness"]) for m in loop_metrics], rtol=1e-6
    )
    np.testing.assert_allclose(s_scan.params, s.params, rtol=1e-5, atol=1e-6)


def test_chunk_skips_generations_past_the_end(evo):
    chunk = evo.compiled_chunk(4)
    s, m = chunk(evo.init(), 3)
    np.testing.assert_array_equal(m["generation"], [0, 1, 2, -1])
    assert int(s.generation) == 3
    s, m = chunk(s, 3)  # nothing left to run: the same program, no generation advances
    assert int(s.generation) == 3 and (m["generation"] == -1).all()
    assert chunk._cache_size() == 1


def test_basis_unchanged_across_generations(evo):
    s0 = evo.init()
    basis0 = np.asarray(s0.basis).copy()
    s, _ = evo.compiled_chunk(3)(s0, 10)
    np.testing.assert_array_equal(np.asarray(s.basis), basis0)


def test_selection_keeps_the_best_and_children_differ(evo, jit_step):
    s0 = evo.init()
    kids, rates = jax.jit(evo.mutate_population)(s0)
    P, C = evo.config.population_size, evo.config.num_children
    assert kids.shape == (P * C, evo.ghn.num_params)
    assert np.all((np.asarray(rates) > 0) & (np.asarray(rates) < 1))
    # each child differs from its parent, by a bounded amount
    parents = np.repeat(np.asarray(s0.params), C, axis=0)
    diff = np.abs(np.asarray(kids) - parents)
    assert (diff.max(1) > 0).all()
    assert diff.max() <= evo.config.update_clip + 6 * evo.config.noise_std
    s1, m = jit_step(s0)
    # the survivors are the top-P of parents+children by fitness
    assert np.all(np.diff(np.asarray(s1.fitness)) <= 0)
    assert float(s1.fitness[0]) == pytest.approx(float(m["best_fitness"]))


def test_nonfinite_parameters_never_survive(evo, jit_step):
    s0 = evo.init()
    # Corrupt two parents (and so their children); CartPole's argmax still returns finite
    # episodes for NaN policies, so only the parameter check can catch them.
    params = s0.params.at[0].set(jnp.nan).at[2].set(jnp.inf)
    s1, m = jit_step(s0.replace(params=params))
    C = evo.config.num_children
    assert int(m["nonfinite_params"]) == 2 * (1 + C)
    assert np.all(np.isfinite(np.asarray(s1.params)))
    assert np.isfinite(float(m["diversity"])) and np.isfinite(float(m["mutation_rate_mean"]))
    assert not {0, 2} & set(np.asarray(m["selected"]).tolist())


@pytest.mark.parametrize("mode", ["fixed_rate", "frozen_head", "external"])
def test_ablations_run_in_the_compiled_loop(mode):
    cfg = Config(**TINY).replace(mutation_mode=mode, fixed_rate=0.3)
    evo = Evolution.create(cfg)
    s0 = evo.init()
    init_params = np.asarray(s0.params).copy()
    chunk = evo.compiled_chunk(3)
    s, m = chunk(s0, cfg.generations)
    s, m = chunk(s, cfg.generations)
    assert chunk._cache_size() == 1
    assert np.all(np.isfinite(np.asarray(s.params)))
    if mode == "fixed_rate":
        np.testing.assert_allclose(m["mutation_rate_mean"], 0.3, rtol=1e-6)
    if mode == "frozen_head":
        mask = evo.ghn.leaf_mask("stoch_head")
        # every survivor descends from an initial member, whose stochastic head it still has
        init = init_params[:, mask]
        for row in np.asarray(s.params)[:, mask]:
            assert any(np.array_equal(row, r) for r in init)


def test_short_run_improves_return():
    cfg = Config(population_size=12, num_children=2, horizon=200, generations=12, log_every=12)
    evo = Evolution.create(cfg)
    _, m = evo.compiled_chunk(12)(evo.init(), 12)
    best, mean = np.asarray(m["best_fitness"]), np.asarray(m["mean_fitness"])
    assert best[-3:].mean() > best[:3].mean() + 20
    assert mean[-3:].mean() > mean[:3].mean()


@pytest.mark.parametrize("shared", [False, True])
def test_shared_episodes_give_one_policy_one_fitness(shared):
    # Every member plays one policy. With shared episodes they all face the same starts, so
    # their fitness is equal; with the default per-member episodes the starts (and, for this
    # policy, the returns) differ between members.
    evo = Evolution.create(Config(**TINY).replace(shared_episodes=shared, episodes=2))
    state = evo.init()
    n = evo.config.num_members
    same = jnp.broadcast_to(state.policy[:1], (n, state.policy.shape[1]))
    fitness = np.asarray(jax.jit(evo.evaluate_members)(state, same).fitness)
    if shared:
        np.testing.assert_array_equal(fitness, np.full(n, fitness[0]))
    else:
        assert len(np.unique(fitness)) > 1, fitness


def test_diversity_is_stable_under_a_large_common_offset():
    """Members near 1.0 that differ by 1e-3 (the size of ``monitor_diversity_min``): the
    metric matches a float64 two-pass reference, over blocks and with non-finite members."""
    rng = np.random.default_rng(0)
    pop = 1.0 + 1e-3 * rng.standard_normal((96, 500))
    pop[5, 3] = np.nan  # a member with a non-finite parameter is left out
    finite = np.all(np.isfinite(pop), 1)
    ref = np.mean(np.std(pop[finite].astype(np.float64), axis=0))
    x = jnp.asarray(pop, jnp.float32)
    got = float(jax.jit(diversity)((x[:32], x[32:]), jnp.asarray(finite)))
    assert abs(got - ref) < 1e-3 * ref
