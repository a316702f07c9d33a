"""Shared fixtures: tiny configurations that compile in seconds on two CPU cores.

Tests run XLA at backend optimisation level 0: programs here are tiny, and on a 2-core CPU
compilation, not execution, dominates the suite (a benchmark, not a test, measures speed).

The persistent compilation cache is off unless a test turns it on in a folder of its own
(tests/test_compile_cache.py): the suite never writes into the user's cache, and every
test compiles what it checks. ``SELFREF_GHN_COMPILE_CACHE`` set by the caller is kept.
"""

import os

os.environ.setdefault("SELFREF_GHN_COMPILE_CACHE", "off")

if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    ).strip()

import pytest  # noqa: E402

from selfref_ghn.config import Config  # noqa: E402

TINY = dict(
    population_size=4,
    num_children=2,
    horizon=30,
    generations=6,
    embed_dim=8,
    trunk_dim=8,
    coeff_dim=4,
    num_rates=3,
    gnn_rounds=2,
    policy_hidden=(8,),
    log_every=3,
)


@pytest.fixture
def tiny_config() -> Config:
    return Config(**TINY)


@pytest.fixture
def nothing_compiles(monkeypatch):
    """Fail the test if an Evolution is built or a chunk compiled (bad input must stop first)."""
    from selfref_ghn.evolution.generation import Evolution

    def refuse(*a, **k):
        raise AssertionError("built or compiled despite a bad config")

    monkeypatch.setattr(Evolution, "create", classmethod(refuse))
    monkeypatch.setattr(Evolution, "compiled_chunk", refuse)
