"""The evosax-compatible SR-GHN: the same generations as Evolution, compiled once, and the
docs example (docs/evosax.md) runs."""

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from selfref_ghn.config import Config
from selfref_ghn.evolution.ask_tell import SelfReferentialGHN
from selfref_ghn.evolution.generation import Evolution
from selfref_ghn.evolution.rollout import evaluate
from tests.conftest import TINY

DOC = Path(__file__).resolve().parent.parent / "docs" / "evosax.md"


def test_ask_tell_reproduces_evolution_step_for_step():
    """With Evolution's key convention, an ask/evaluate/tell loop *is* Evolution: the same
    children, the same survivors, the same parameters (DESIGN §2's selection inside tell)."""
    cfg = Config(**TINY).replace(child_factor=0.5)  # exercise the parent/children mixing
    evo = Evolution.create(cfg)
    G = 3
    ref_state, ref = evo.compiled_chunk(G)(evo.init(), G)

    es = SelfReferentialGHN(
        cfg.num_members,
        evo.ghn.policy_graph.unravel(jnp.zeros(evo.ghn.policy_graph.num_params)),
        num_children=cfg.num_children,
        config=cfg,
    )
    params = es.default_params
    run_key = jax.random.PRNGKey(cfg.seed)
    state = es.init(run_key, None, params)

    @jax.jit
    def generation(state, g):
        # key version 2 (selfref_ghn.prng): generations stream 1, then mutate 0, evaluate 1
        gen_key = jax.random.fold_in(jax.random.fold_in(run_key, 1), g)
        population, state = es.ask(jax.random.fold_in(gen_key, 0), state, params)
        eval_key = jax.random.fold_in(gen_key, 1)
        returns = jax.vmap(
            lambda m, pol: (
                evaluate(
                    jax.random.fold_in(eval_key, m),
                    evo.env,
                    evo.env_params,
                    evo.policy_fn,
                    pol,
                    cfg.horizon,
                    cfg.episodes,
                ).fitness
            )
        )(jnp.arange(cfg.num_members), population)
        state, metrics = es.tell(gen_key, population, -returns, state, params)
        return state, metrics, returns

    for g in range(G):
        state, metrics, returns = generation(state, g)
        np.testing.assert_array_equal(metrics["selected"], ref["selected"][g])
        assert float(returns.max()) == float(ref["best_fitness"][g])
    assert generation._cache_size() == 1
    np.testing.assert_allclose(state.params, ref_state.params, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(-state.fitness, -ref_state.fitness, rtol=1e-6)
    assert int(state.generation_counter) == G
    assert float(state.best_fitness) == -float(ref["best_fitness"].max())


def test_tell_keeps_the_lowest_fitness_and_never_a_nan():
    es = SelfReferentialGHN(
        6, {"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)}, num_children=2, config=Config(**TINY)
    )
    params = es.default_params
    state = jax.jit(es.init)(jax.random.key(0), None, params)
    pop, state = jax.jit(es.ask)(jax.random.key(1), state, params)
    assert pop["w"].shape == (6, 3, 2) and pop["b"].shape == (6, 2)
    fitness = jnp.array([5.0, jnp.nan, 3.0, -1.0, 7.0, 0.5])  # minimised
    state, m = jax.jit(es.tell)(jax.random.key(2), pop, fitness, state, params)
    # the P = 2 survivors: members 3 (-1.0) and 5 (0.5); member 1 (NaN) never survives
    np.testing.assert_array_equal(m["selected"], [3, 5])
    np.testing.assert_array_equal(state.fitness, [1.0, -0.5])  # stored as returns
    assert float(state.best_fitness) == -1.0
    best = es.get_best_solution(state)
    np.testing.assert_allclose(best["w"], pop["w"][3])


def test_population_size_must_split_into_parents_and_children():
    with pytest.raises(ValueError, match="multiple of"):
        SelfReferentialGHN(10, {"w": jnp.zeros(3)}, num_children=2)


def test_docs_example_runs(capsys):
    code = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(code) == 1
    namespace: dict = {}
    exec(compile(code[0], str(DOC), "exec"), namespace)
    out = capsys.readouterr().out
    assert out.count("generation") == 5
    state = namespace["state"]
    assert int(state.generation_counter) == 5
    assert np.isfinite(float(state.best_fitness)) and float(state.best_fitness) <= -1.0
