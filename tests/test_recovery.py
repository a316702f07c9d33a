"""Recovery after a switch, raw and normalised (``selfref_ghn.run.metrics.recovery``), against
hand-computed values; and the floor return a normalised recovery is measured from."""

import math

import numpy as np
import pytest

from selfref_ghn.config import Config
from selfref_ghn.run.metrics import (
    NOT_ABOVE_FLOOR,
    floor_text,
    measure_floor,
    recovery,
    recovery_curves,
    recovery_floor,
)


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


def test_summary_with_a_floor_counts_levels_above_it():
    from selfref_ghn.tools.compare import markdown_tables, summarize

    y = _pendulum_like()
    flat = np.full(30, -1300.0)  # never above the floor
    curves = {"srghn": {0: {"best_fitness": y, "mean_fitness": flat},
                        1: {"best_fitness": y, "mean_fitness": flat}}}  # fmt: skip
    raw = {(r["curve"], r["stat"]): r for r in summarize(curves, [(10, 30)])}
    assert raw[("best_fitness", "gens_to_90")]["n_ok"] == 0  # raw: a negative level is n/a
    rows = summarize(curves, [(10, 30)], floor=-1200.0)
    get = {(r["curve"], r["stat"]): r for r in rows}
    # hold=10: -250 at 15 is followed by -200 to the end, so 90% holds from 15
    assert get[("best_fitness", "gens_to_90")]["mean"] == 5.0
    assert get[("best_fitness", "gens_to_50")]["mean"] == 3.0
    assert get[("best_fitness", "gens_to_90")]["n_level"] == 2
    assert get[("mean_fitness", "gens_to_90")]["n_level"] == 0
    md = markdown_tables(rows)
    assert "| srghn | -150.0 ± 0.0 | 950.0 ± 0.0 | 3.0 ± 0.0 | 5.0 ± 0.0 | never |" in md
    assert "| srghn | -1300.0 ± 0.0 | 0.0 ± 0.0 | n/a | n/a | n/a | n/a |" in md


def test_floor_option_parsing(tmp_path):
    from selfref_ghn.config import ConfigError
    from selfref_ghn.tools.compare import parse_floor, run_comparison

    assert parse_floor("random") == "random" and parse_floor("zero") == "zero"
    assert parse_floor("-1200") == -1200.0
    for bad in ("greedy", "nan", "inf"):
        with pytest.raises(ConfigError):
            parse_floor(bad)
    assert recovery_floor(Config(), "raw") == (None, {"definition": "raw"})
    value, info = recovery_floor(Config(), "normalised", -1200.0)
    assert value == -1200.0 and info["definition"] == "normalised"
    assert info["floor_policy"] == "given" and info["env_id"] == Config().env_id
    assert floor_text(info) == "floor -1200.0 (given)"
    for definition, floor in (("normalized", -1.0), ("normalised", float("inf"))):
        with pytest.raises(ValueError):
            recovery_floor(Config(), definition, floor)
    with pytest.raises(ConfigError) as e:
        run_comparison(Config(), ["srghn"], [0], tmp_path / "x", recovery="normalized")
    assert e.value.field == "--recovery" and not (tmp_path / "x").exists()


def test_compare_command_measures_the_floor_and_reports_the_definition(tmp_path, capsys):
    import json

    from selfref_ghn.tools import cli

    out = tmp_path / "cmp"
    base = ["compare", "quick", "--methods", "srghn", "--seeds", "0", "--out", str(out),
            "--quiet", "--report-only", "--compile-cache", str(tmp_path / "cache"),
            "--set", "horizon=50"]  # fmt: skip
    assert cli.main([*base, "--recovery", "normalised", "--floor", "-7.5"]) == 0
    info = json.loads((out / "compare.json").read_text())["recovery"]
    assert info == {"definition": "normalised", "env_id": info["env_id"], "floor": -7.5,
                    "floor_policy": "given"}  # fmt: skip
    assert "normalised: floor -7.5 (given)" in (out / "recovery.md").read_text()
    assert cli.main([*base, "--recovery", "normalised"]) == 0  # measured: random policy
    info = json.loads((out / "compare.json").read_text())["recovery"]
    assert info["floor_policy"] == "random" and info["floor_episodes"] == 100
    assert 10.0 <= info["floor"] <= 30.0  # CartPole, as above
    assert "random-action policy over 100 episodes" in (out / "recovery.md").read_text()
    assert cli.main(base) == 0  # the default is raw
    assert json.loads((out / "compare.json").read_text())["recovery"] == {"definition": "raw"}
    assert "normalised" not in (out / "recovery.md").read_text()
    capsys.readouterr()
    assert cli.main([*base, "--floor", "zero"]) == 2  # a floor only with normalised
    assert "--floor" in capsys.readouterr().err


def test_end_of_run_line_of_a_normalised_recovery():
    from selfref_ghn.tools.cli import recovery_line

    (r,) = recovery(_pendulum_like(), [10], window=10, floor=-1200.0)
    assert recovery_line(r) == (
        "switch at 10: level -150.0 (floor -1200.0), drop 950.0, "
        "back to 90% (normalised) in 5 generations"
    )
    (r,) = recovery(_pendulum_like()[:15], [10], window=10, floor=-1200.0)
    never = "not back to 90% (normalised) before the next switch or the end"
    assert recovery_line(r).endswith(never)
    (r,) = recovery(np.full(20, -1300.0), [10], window=10, floor=-1200.0)
    assert recovery_line(r).endswith(f"recovery not measured ({NOT_ABOVE_FLOOR})")
    (r,) = recovery(_pendulum_like(), [10], window=10)  # raw, as before
    assert recovery_line(r).endswith("recovery not measured (the level is not positive)")
