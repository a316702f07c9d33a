"""The fast noise generator: moments, tails and independence against their exact values."""

import json

import jax
import numpy as np
import pytest

from selfref_ghn import prng
from selfref_ghn.config import Config, ConfigError
from selfref_ghn.evolution.baselines import make_evolution
from selfref_ghn.prng import fast_normal, normal
from selfref_ghn.run.folder import load_run_config
from tests.conftest import TINY


@pytest.fixture(scope="module")
def draws():
    return np.asarray(jax.jit(lambda k: fast_normal(k, (400_000,)))(jax.random.key(7)))


def test_moments_match_irwin_hall_8(draws):
    # Standardised sum of 8 uniform bytes: mean 0, var 1, skew 0, excess kurtosis -6/(5*8).
    n = draws.size
    se = 1 / np.sqrt(n)
    assert abs(draws.mean()) < 5 * se
    assert abs(draws.var() - 1.0) < 10 * se
    assert abs(((draws - draws.mean()) ** 3).mean()) < 10 * se
    kurt = ((draws - draws.mean()) ** 4).mean() / draws.var() ** 2
    assert abs(kurt - (3 - 6 / 40)) < 0.03
    assert np.abs(draws).max() <= 4.9 + 1e-5
    # tail mass beyond 2 sigma is Gaussian-like (4.55% for a Gaussian)
    assert 0.04 < (np.abs(draws) > 2).mean() < 0.05


def test_no_correlation_between_neighbours_and_keys(draws):
    lag1 = np.corrcoef(draws[:-1], draws[1:])[0, 1]
    assert abs(lag1) < 5 / np.sqrt(draws.size)
    other = np.asarray(fast_normal(jax.random.key(8), (400_000,)))
    assert abs(np.corrcoef(draws, other)[0, 1]) < 5 / np.sqrt(draws.size)
    again = np.asarray(fast_normal(jax.random.key(7), (400_000,)))
    np.testing.assert_array_equal(draws, again)


def test_vmapped_children_get_independent_streams():
    keys = jax.random.split(jax.random.key(0), 64)
    z = np.asarray(jax.jit(jax.vmap(lambda k: fast_normal(k, (2000,))))(keys))
    c = np.corrcoef(z)
    off = c[~np.eye(64, dtype=bool)]
    assert np.abs(off).max() < 6 / np.sqrt(2000)


def test_threefry_option_is_jax_normal():
    k = jax.random.key(3)
    np.testing.assert_array_equal(normal(k, (10,), impl="threefry"), jax.random.normal(k, (10,)))


# ------------------------------------------------------------------------------ streams
def _derivations(run) -> list[tuple]:
    """Every key derived while ``run()`` runs: ``(label, parent, data, child)``."""
    records = []

    def record(label, parent, data, child):
        records.append((label, tuple(np.ravel(parent)), int(data), tuple(np.ravel(child))))

    prng._recorder = record
    try:
        run()
        jax.effects_barrier()
    finally:
        prng._recorder = None
    return records


def _meetings(records) -> dict[tuple, set]:
    """Keys reached by two different derivations (a label, parent or datum apart)."""
    ways: dict[tuple, set] = {}
    for label, parent, data, child in records:
        ways.setdefault(child, set()).add((label, parent, data))
    return {child: w for child, w in ways.items() if len(w) > 1}


def _run(method: str, version: int, generations: int = 5):
    cfg = Config(
        **{**TINY, "horizon": 5, "generations": generations},
        method=method,
        key_version=version,
    )
    evo = make_evolution(cfg)

    def run():
        state = jax.jit(evo.init)()
        step = jax.jit(evo.step)
        for _ in range(generations):
            state, _ = step(state)

    return cfg, _derivations(run)


@pytest.mark.parametrize("method", ["srghn", "simple_ga"])
def test_no_two_uses_of_a_run_key_meet(method):
    """Every key of a five-generation run (initial population, each generation's mutation,
    evaluation, ask and tell streams, every member's and child's key): no key is reached by two
    different derivations."""
    cfg, records = _run(method, version=2)
    labels = {r[0] for r in records}
    assert {"run/init", "generation", "generation/evaluate", "member"} <= labels
    assert ("generation/mutate" if method == "srghn" else "generation/ask") in labels
    # the run drew what it should: one key per generation, M evaluation keys per generation
    gens = {r[2] for r in records if r[0] == "generation"}
    assert gens == set(range(5))
    assert len({r[3] for r in records}) >= 5 * cfg.num_members
    assert _meetings(records) == {}


def test_version_1_streams_meet_where_recorded_runs_met():
    """Key version 1 (runs recorded before versions): the initial population's key is
    generation 2's (SR-GHN), and the baselines' evosax initial state's key generation 4's."""
    _, records = _run("srghn", version=1)
    met = [sorted(w) for w in _meetings(records).values()]
    assert any({x[0] for x in w} == {"run/init", "generation"} and w[0][2] == 2 for w in met)
    # generation 2's mutation stream is member 0's initialisation key
    assert any({x[0] for x in w} == {"member", "generation/mutate"} for w in met)
    _, records = _run("simple_ga", version=1)
    met = [sorted(w) for w in _meetings(records).values()]
    assert any({x[0] for x in w} == {"run/es_init", "generation"} and w[0][2] == 4 for w in met)


def test_config_without_a_key_version_is_version_1(tmp_path):
    """A config.json written before key versions existed resumes with version 1."""
    stored = Config(**TINY).to_dict()
    del stored["key_version"]
    (tmp_path / "config.json").write_text(json.dumps(stored))
    assert load_run_config(tmp_path).key_version == 1
    assert Config().key_version == prng.KEY_VERSION == 2
    with pytest.raises(ConfigError, match="key_version"):
        Config(key_version=3).validate()


@pytest.mark.parametrize("version, meet", [(1, True), (2, False)])
def test_fast_normal_seeds_are_wide_enough(version, meet):
    """2**20 children: with a 32-bit seed (version 1) about 128 pairs draw the same noise; with
    the 64-bit seed of version 2, none (eight draws each: a chance match is ~1e-10)."""
    n = 2**20
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(11), i))(np.arange(n))
    z = jax.jit(jax.vmap(lambda k: fast_normal(k, (8,), key_version=version)))(keys)
    pairs = n - np.unique(np.asarray(z), axis=0).shape[0]
    if meet:
        assert 60 < pairs < 250  # Poisson(128)
    else:
        assert pairs == 0
