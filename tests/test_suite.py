"""``selfref-ghn suite``: named suites, bad input, the summary across environments, resume."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest

from selfref_ghn.config import Config, ConfigError
from selfref_ghn.tools import suite as suite_lib
from selfref_ghn.tools.cli import main


def test_classic_suites_follow_the_protocol():
    classic = suite_lib.get("classic").configs()
    assert list(classic) == [
        "CartPole-v1",
        "Acrobot-v1",
        "MountainCar-v0",
        "MountainCarContinuous-v0",
        "Pendulum-v1",
    ]
    for cfg in classic.values():
        assert (cfg.population_size, cfg.num_children, cfg.horizon) == (50, 4, 500)
        assert cfg.switch_windows == ((400, 700), (900, 1200)) and cfg.generations == 1500
    assert classic["MountainCarContinuous-v0"].switch == "negate_actions"
    assert dict(classic["Pendulum-v1"].switch_options) == {"perm": (1, 0, 2), "signs": (1, 1, -1)}
    assert len(suite_lib.get("classic").seeds) == 10
    cpu = suite_lib.get("classic-cpu").configs()
    assert [c.switch for c in cpu.values()] == [c.switch for c in classic.values()]


@pytest.mark.parametrize("name", sorted(suite_lib.SUITES))
def test_every_suite_validates(name):
    configs = suite_lib.get(name).configs()
    assert configs and all(isinstance(c, Config) for c in configs.values())


def test_a_config_with_nested_options_reads_back_equal():
    # a run folder's config.json holds lists; the config it was written from holds tuples
    cfg = suite_lib.get("classic-cpu").configs()["Pendulum-v1"]
    assert Config.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@pytest.mark.parametrize(
    "argv, field",
    [
        (["suite", "nope"], "'suite'"),
        (["suite", "classic-cpu", "--envs", "CartPole-v9"], "'--envs'"),
        (["suite", "classic-cpu", "--set", "population_size=0"], "'population_size'"),
        (["suite", "classic-cpu", "--set", "switch_intervals=[[10,400]]"], "switch_intervals"),
        (["suite", "classic-cpu", "--methods", "srghn,nonsense_es"], "'--methods'"),
    ],
)
def test_bad_input_exits_2_naming_the_field_before_any_run(argv, field, tmp_path, capsys):
    out = tmp_path / "suite"
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert field in err and err.count("\n") == 1
    assert not out.exists()  # nothing ran, nothing was written


def _curve(pre: float, low: float, back: float, points: list[int], n: int) -> np.ndarray:
    """Best return: ``pre`` before each switch, ``low`` for 5 generations after it, then
    ``back``."""
    y = np.full(n, pre, np.float64)
    for p in points:
        y[p : p + 5] = low
        y[p + 5 :] = back
    return y


def test_summary_counts_windows_and_medians_with_negative_returns():
    cfg = Config(
        env_id="Pendulum-v1", generations=100, switch_intervals=((30, 60),), population_size=4
    ).validate()
    floor = -1200.0
    # seed 0 recovers both switches 5 generations after each; seed 1 stays at -1000 after the
    # first (20% of the way back: never), so its second switch starts from -1000 and it is
    # back at once (0 generations)
    good = {"best_fitness": _curve(-200.0, -1100.0, -200.0, [30, 60], 100)}
    bad = {"best_fitness": _curve(-200.0, -1100.0, -1000.0, [30], 100)}
    curves = {"P": {"m": {0: good, 1: bad}, "n": {1: bad}}}
    rows = suite_lib.summary_rows(curves, {"P": cfg}, {"P": floor})
    m, n = rows
    assert (m["windows"], m["recovered"], m["median_gens_to_90"]) == (4, 3, 5.0)  # 0, 5, 5, inf
    assert (n["windows"], n["recovered"], n["median_gens_to_90"]) == (2, 1, math.inf)
    expected = np.mean([good["best_fitness"].mean(), bad["best_fitness"].mean()])
    assert m["return:P"] == pytest.approx(expected)
    table = suite_lib.summary_table(rows, ["P"])
    assert "| m | 5 | 3/4 (75%) |" in table and "| n | never | 1/2 (50%) |" in table


def test_summary_leaves_out_windows_with_nothing_to_recover():
    cfg = Config(generations=60, switch_intervals=((20, 40),), population_size=4).validate()
    flat = {"best_fitness": np.full(60, 10.0)}  # never above the floor of 20
    (row,) = suite_lib.summary_rows({"E": {"m": {0: flat}}}, {"E": cfg}, {"E": 20.0})
    assert row["windows"] == 0 and math.isnan(row["median_gens_to_90"])
    assert "| m | n/a | n/a |" in suite_lib.summary_table([row], ["E"])


@pytest.mark.slow
def test_a_small_suite_runs_reports_and_continues(tmp_path):
    out = tmp_path / "s"
    kw = dict(
        methods=["srghn", "simple_ga"],
        seeds=[0],
        envs=["CartPole-v1", "Pendulum-v1"],
        overrides={"generations": "12", "switch_intervals": "[[4,8]]", "population_size": "4"},
    )
    suite = suite_lib.get("classic-cpu")
    log = io.StringIO()
    curves = suite_lib.run_suite(suite, out, progress=log, **kw)
    assert set(curves) == {"CartPole-v1", "Pendulum-v1"}
    assert all(len(curves[e][m][0]["best_fitness"]) == 12 for e in curves for m in curves[e])
    report = (out / "report.md").read_text()
    assert "| srghn |" in report and "| simple_ga |" in report and "## Pendulum-v1" in report
    assert (out / "returns.png").stat().st_size > 0
    assert json.loads((out / "CartPole-v1" / "floor.json").read_text())["floor_policy"] == "random"
    # a second call runs nothing: every run is read back
    log2 = io.StringIO()
    suite_lib.run_suite(suite, out, progress=log2, **kw)
    assert log2.getvalue().count("finished earlier") == 4
    assert " s (compile " not in log2.getvalue()


def test_a_missing_tracking_extra_stops_the_suite_before_any_floor(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "wandb", None)  # its import fails
    out = tmp_path / "s"
    assert main(["suite", "classic-cpu", "--logger", "wandb", "--out", str(out)]) == 2
    assert "'--logger'" in capsys.readouterr().err
    assert not (out / "CartPole-v1" / "floor.json").exists()


def test_unknown_suite_is_a_config_error():
    with pytest.raises(ConfigError, match="classic-cpu"):
        suite_lib.get("classik")
