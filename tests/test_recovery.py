"""Recovery after a switch, raw and normalised (``selfref_ghn.run.metrics.recovery``), against
hand-computed values; and the floor return a normalised recovery is measured from."""

import math

import numpy as np
import pytest

from selfref_ghn.config import Config
from selfref_ghn.run.metrics import NOT_ABOVE_FLOOR, measure_floor, recovery, recovery_curves


def _pendulum_like() -> np.ndarray:
    # pre-switch -150, a dip to -1100, then a climb: -700, -300, -260, -250, -200 for good
    y = np.full(30, -150.0)
    y[10:12] = -1100.0
    y[12], y[13], y[14], y[15] = -700.0, -300.0, -260.0, -250.0
    y[16:] = -200.0
    return y


def test_normalised_recovery_of_negative_returns_by_hand():
    y = _pendulum_like()
    (r,) = recovery(y, [10], window=10, floor=-1200.0)
    # level -150, floor -1200: the way from the floor is 1050. Targets: 50% at -675,
    # 90% at -255, 100% at -150. -700 is 500/1050 = 0.476 of the way, -300 is 0.857,
    # -260 is 0.895 (short of 0.9), -250 is 0.905, -200 is 0.952 (never 1).
    assert r["level"] == -150.0 and r["floor"] == -1200.0 and r["undefined"] == ""
    assert r["drop"] == 950.0  # in return units, as in the raw definition
    assert r["gens_to_50"] == 3  # -300 at generation 13
    assert r["gens_to_90"] == 5  # -250 at generation 15
    assert math.isnan(r["gens_to_100"])
    expected_auc = np.mean((y[10:] + 1200.0) / 1050.0)
    assert r["auc"] == pytest.approx(expected_auc)
    # the threshold must hold: with hold=3, -250 then -200, -200 still counts from 15
    (r3,) = recovery(y, [10], window=10, hold=3, floor=-1200.0)
    assert r3["gens_to_90"] == 5 and r3["gens_to_50"] == 3


def test_raw_recovery_of_negative_returns_stays_undefined():
    # the raw definition (no floor) is what it was: a negative level has no fraction to reach
    (r,) = recovery(_pendulum_like(), [10], window=10)
    assert set(r) == {"switch", "level", "drop", "gens_to_50", "gens_to_90", "gens_to_100", "auc"}
    assert r["level"] == -150.0 and r["drop"] == 950.0
    assert all(math.isnan(r[k]) for k in ("gens_to_50", "gens_to_90", "gens_to_100", "auc"))


def test_raw_recovery_is_unchanged_for_positive_returns():
    y = [10, 10, 10, 2, 5, 10, 10]
    assert recovery(y, [3], window=3) == recovery(y, [3], window=3, floor=None)
    (r,) = recovery(y, [3], window=3)
    assert (r["gens_to_50"], r["gens_to_90"], r["gens_to_100"]) == (1, 2, 2)
    assert r["auc"] == pytest.approx((0.2 + 0.5 + 1 + 1) / 4)
    # a floor of 0 makes the normalised definition the raw one
    (n,) = recovery(y, [3], window=3, floor=0.0)
    assert all(n[k] == r[k] for k in r)


def test_normalised_recovery_at_or_below_the_floor_is_nan_with_a_reason():
    y = np.full(30, -1300.0)
    y[10:] = -1250.0
    for floor in (-1300.0, -1200.0, -1300.0 + 1e-12):  # level == floor, level < floor, ~0 span
        (r,) = recovery(y, [10], window=10, floor=floor)
        assert r["undefined"] == NOT_ABOVE_FLOOR, floor
        assert all(math.isnan(r[k]) for k in ("gens_to_50", "gens_to_90", "gens_to_100", "auc"))
        assert r["level"] == -1300.0 and np.isfinite(r["drop"])
    with pytest.raises(ValueError, match="finite"):
        recovery(y, [10], floor=float("nan"))


def test_recovery_curves_pass_the_floor_to_every_curve():
    y = _pendulum_like()
    m = {"best_fitness": y, "mean_fitness": y - 100.0}
    best, mean = recovery_curves(m, [10], hold=1, floor=-1200.0)
    assert best["gens_to_90"] == 5 and best["floor"] == mean["floor"] == -1200.0
    # mean: level -250, way 950, 90% at -345: -400, -360, -350 are short, -300 (gen 16) is not
    assert mean["gens_to_90"] == 6


def test_floor_of_cartpole_is_a_random_policys_return():
    # a uniformly random CartPole policy balances about 22 steps (Gymnasium's own estimate is
    # 20-23); 100 episodes (sd ~ 12 each) put the mean within +-4 of it, over 3 standard errors
    cfg = Config(env_id="CartPole-Switch", horizon=500)
    floor = measure_floor(cfg, episodes=100, policy="random", seed=0)
    assert 18.0 <= floor <= 26.0
    # always pushing left topples the pole sooner than random pushes do
    zero = measure_floor(cfg, episodes=20, policy="zero")
    assert 5.0 <= zero < floor
    with pytest.raises(ValueError, match="policy"):
        measure_floor(cfg, policy="greedy")
