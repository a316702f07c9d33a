"""The memory estimate: it grows with the population, shrinks per device, and a population that
would not fit is refused before compiling with the population that would."""

import pytest

from selfref_ghn.config import Config, ConfigError
from selfref_ghn.evolution import memory
from selfref_ghn.evolution.generation import Evolution
from tests.conftest import TINY


@pytest.fixture(scope="module")
def evo():
    return Evolution.create(Config(**{**TINY, "population_size": 16}))


def test_estimate_parts(evo):
    est = memory.estimate(evo)
    assert est["total"] == sum(v for k, v in est.items() if k != "total")
    n = evo.ghn.num_params
    assert est["children"] == 16 * 2 * n * 4  # P * C children of float32 parameters
    bigger = memory.estimate(evo, population_size=32)
    assert bigger["children"] == 2 * est["children"] and bigger["total"] > est["total"]
    assert memory.estimate(evo, runs=4)["total"] == 4 * est["total"]  # a vmapped sweep


def test_fits_and_refuses_with_what_would_fit(evo):
    need = memory.check(evo)  # tiny: fits in this machine's memory
    assert need == memory.estimate(evo)["total"]
    with pytest.raises(ConfigError, match="population_size") as e:
        memory.check(evo, available=int(need * 0.6 / 0.9))
    msg = str(e.value)
    assert "GiB" in msg and "at most population_size=" in msg
    fits = int(msg.split("at most population_size=")[1].split()[0])
    assert 0 < fits < 16
    assert memory.estimate(evo, population_size=fits)["total"] <= int(need * 0.6)
    assert memory.estimate(evo, population_size=fits + 1)["total"] > int(need * 0.6)
