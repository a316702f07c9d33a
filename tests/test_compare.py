"""``selfref-ghn compare``: the recovery table against hand-computed values, and a tiny run of
the command that writes every run, the table and the figure."""

import csv
import json

import jax
import numpy as np
import pytest

from selfref_ghn.config import Config, ConfigError
from selfref_ghn.run.metrics import recovery_curves
from selfref_ghn.tools import cli
from selfref_ghn.tools.compare import (
    markdown_tables,
    method_config,
    parse_methods,
    parse_seeds,
    summarize,
)


def _curve(drop_at: int, back_after: int | None, n: int = 40, level: float = 10.0):
    y = np.full(n, level)
    end = n if back_after is None else drop_at + back_after
    y[drop_at:end] = 0.0
    return y


def test_recovery_must_hold_for_ten_generations():
    y = _curve(10, 3, n=40)
    y[14] = 0.0  # back at 13, falls again at 14, back for good from 15
    m = {"best_fitness": y, "mean_fitness": y / 2}
    best, mean = recovery_curves(m, [10], hold=10)
    assert best["curve"] == "best_fitness" and mean["curve"] == "mean_fitness"
    assert best["gens_to_90"] == 5 and mean["gens_to_90"] == 5
    assert recovery_curves(m, [10], hold=1)[0]["gens_to_90"] == 3
    short = {"best_fitness": _curve(10, 3, n=22), "mean_fitness": _curve(10, 3, n=22)}
    assert np.isnan(recovery_curves(short, [10], hold=10)[0]["gens_to_90"])  # 9 < 10 left


def test_summary_is_mean_and_t_interval_over_seeds():
    curves = {
        "fast": {0: {"best_fitness": _curve(20, 2), "mean_fitness": _curve(20, 2)},
                 1: {"best_fitness": _curve(20, 4), "mean_fitness": _curve(20, 4)}},
        "never": {0: {"best_fitness": _curve(20, None), "mean_fitness": _curve(20, None)},
                  1: {"best_fitness": _curve(20, 3), "mean_fitness": _curve(20, None)}},
    }  # fmt: skip
    rows = summarize(curves, [(20, 40)])
    get = {(r["method"], r["curve"], r["stat"]): r for r in rows}
    r = get[("fast", "best_fitness", "gens_to_90")]
    assert r["mean"] == 3.0 and r["n_ok"] == 2 and r["n"] == 2
    # t(0.975, df=1) = 12.706; sd of (2, 4) = sqrt(2): half-width 12.706 * sqrt(2) / sqrt(2)
    assert r["ci95"] == pytest.approx(12.7062, rel=1e-4)
    assert get[("fast", "best_fitness", "level")]["mean"] == 10.0
    assert get[("fast", "best_fitness", "drop")]["mean"] == 10.0
    assert get[("fast", "best_fitness", "auc")]["mean"] == pytest.approx(1 - 3 / 20)
    r = get[("never", "best_fitness", "gens_to_90")]
    assert r["n_ok"] == 1 and r["mean"] == 3.0 and np.isnan(r["ci95"])
    assert get[("never", "mean_fitness", "gens_to_90")]["n_ok"] == 0
    md = markdown_tables(rows)
    assert "| fast | 10.0 ± 0.0 | 10.0 ± 0.0 | 3.0 ± 12.7 | 3.0 ± 12.7 | 3.0 ± 12.7 |" in md
    assert "| never | 10.0 ± 0.0 | 10.0 ± 0.0 | never | never | never |" in md
    assert "| never | 10.0 ± 0.0 | 10.0 ± 0.0 | 3.0 (1/2) |" in md


def test_recovery_needs_a_positive_level():
    # LunarLander-like: a level of -180 drops to -500 and climbs to -90 (which is "50% of the
    # level" if taken literally, though still worse than before the switch)
    y = np.full(40, -180.0)
    y[10:15], y[15:] = -500.0, -90.0
    m = {"best_fitness": y, "mean_fitness": _curve(10, 3)}
    best, mean = recovery_curves(m, [10], hold=10)
    assert best["level"] == -180.0 and best["drop"] == 320.0
    for stat in ("gens_to_50", "gens_to_90", "gens_to_100", "auc"):
        assert np.isnan(best[stat]), stat
    assert mean["gens_to_90"] == 3  # a positive level is measured as before
    rows = summarize({"srghn": {0: m, 1: m}}, [(10, 40)])
    get = {(r["curve"], r["stat"]): r for r in rows}
    assert get[("best_fitness", "gens_to_90")]["n_level"] == 0
    assert get[("mean_fitness", "gens_to_90")]["n_level"] == 2
    md = markdown_tables(rows)
    assert "| srghn | -180.0 ± 0.0 | 320.0 ± 0.0 | n/a | n/a | n/a | n/a |" in md
    assert "| srghn | 10.0 ± 0.0 | 10.0 ± 0.0 | 3.0 ± 0.0 |" in md


def test_methods_seeds_and_configs():
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("3,0-1") == [3, 0, 1]
    with pytest.raises(ConfigError):
        parse_seeds("4-1")
    assert parse_methods("srghn,open_es,frozen_head,SNES") == [
        "srghn", "open_es", "frozen_head", "SNES"
    ]  # fmt: skip
    with pytest.raises(ConfigError) as e:
        parse_methods("srghn,adam")
    assert e.value.field == "--methods"
    base = Config(population_size=4)
    assert method_config(base, "external").mutation_mode == "external"
    assert method_config(base, "external").method == "srghn"
    assert method_config(base, "cma_es").method == "cma_es"


def test_compare_command_writes_runs_table_and_figure(tmp_path, capsys):
    out = tmp_path / "cmp"
    args = [
        "compare", "quick", "--methods", "external,open_es", "--seeds", "0-1",
        "--generations", "8", "--out", str(out), "--quiet",
        "--compile-cache", str(tmp_path / "cache"),
        "--set", "switch_intervals=[[3,6]]", "--set", "population_size=4",
        "--set", "horizon=20", "--set", "embed_dim=8", "--set", "trunk_dim=8",
        "--set", "coeff_dim=4", "--set", "num_rates=3", "--set", "gnn_rounds=2",
        "--set", "policy_hidden=[8]", "--set", "log_every=4",
    ]  # fmt: skip
    before = jax.config.jax_compilation_cache_dir
    try:
        assert cli.main(args) == 0
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
    for m in ("external", "open_es"):
        for s in (0, 1):
            run = out / m / f"seed{s}"
            cfg = json.loads((run / "config.json").read_text())
            assert cfg["seed"] == s
            assert cfg["method"] == ("open_es" if m == "open_es" else "srghn")
            assert cfg["mutation_mode"] == ("external" if m == "external" else "self")
            with (run / "metrics.csv").open() as f:
                assert len(list(csv.DictReader(f))) == 8
    with (out / "recovery.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 2 * 2 * 6  # methods x switches x curves x statistics
    # the table's level is the mean over seeds of each run's own pre-switch level
    levels = []
    for s in (0, 1):
        with (out / "open_es" / f"seed{s}" / "metrics.csv").open() as f:
            best = [float(r["best_fitness"]) for r in csv.DictReader(f)]
        levels.append(np.mean(best[:3]))
    key = ("open_es", "3", "best_fitness", "level")
    row = next(r for r in rows if (r["method"], r["switch"], r["curve"], r["stat"]) == key)
    assert float(row["mean"]) == pytest.approx(np.mean(levels))
    md = (out / "recovery.md").read_text()
    assert "### Switch at generation 3: best return" in md and "| external |" in md
    assert (out / "returns.png").stat().st_size > 10_000
    assert "recovery" in capsys.readouterr().out.lower()
    # finished runs are read back, not run again, and only if they are the runs asked for
    assert cli.main([*args, "--report-only"]) == 0
    capsys.readouterr()
    assert cli.main([*args, "--report-only", "--set", "key_version=1"]) == 2
    err = capsys.readouterr().err
    assert "key_version = 1 (run: 2)" in err and "read back" in err
