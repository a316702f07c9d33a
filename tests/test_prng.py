"""The fast noise generator: moments, tails and independence against their exact values."""

import jax
import numpy as np
import pytest

from selfref_ghn.prng import fast_normal, normal


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
