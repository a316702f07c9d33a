"""Sweeps: seeds and traced hyperparameters batched with vmap give, run by run, the metrics of
the same runs made alone; static keys make job groups (submitit)."""

import csv
import json

import jax
import numpy as np
import pytest

from selfref_ghn.config import Config, ConfigError, Hyperparams
from selfref_ghn.evolution.generation import Evolution
from selfref_ghn.tools import cli
from selfref_ghn.tools.sweep import mean_ci, parse_grid, parse_seeds, plan, run_sweep
from tests.conftest import TINY

SETS = {**TINY, "switch_intervals": [[2, 4]], "policy_hidden": [8]}


def _not_strict_json(name):
    raise ValueError(f"{name} is not strict JSON (null is)")


def _read(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_parsing_and_plan():
    assert parse_seeds("0-3,8") == [0, 1, 2, 3, 8]
    with pytest.raises(ConfigError):
        parse_seeds("a-b")
    grid = parse_grid(["child_factor=0,0.5", "num_children=1,2", "policy_hidden=[8,8]"])
    assert grid == {"child_factor": [0, 0.5], "num_children": [1, 2], "policy_hidden": [[8, 8]]}
    groups = plan(Config(**TINY), [0, 1], grid)
    # static keys (num_children, policy_hidden) make groups; seeds x child_factor are batched
    assert [len(g) for g in groups] == [4, 4]
    assert {r.config.num_children for r in groups[1]} == {2}
    assert groups[0][1].config.seed == 1 and groups[0][2].config.child_factor == 0.5
    assert groups[0][0].name == "seed0-num_children=1-policy_hidden=[8,8]-child_factor=0"
    with pytest.raises(ConfigError, match="unknown key"):
        plan(Config(**TINY), [0], {"nope": [1]})
    m, h = mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and h == pytest.approx(2.484, abs=1e-3)


def test_vmapped_sweep_equals_separate_runs(tmp_path, capsys):
    argv = ["sweep", "quick", "--seeds", "0-1", "--grid", "child_factor=0,0.5"]
    argv += ["--out", str(tmp_path), "--executor", "inline", "--quiet"]
    for k, v in SETS.items():
        argv += ["--set", f"{k}={json.dumps(v)}"]
    assert cli.main(argv) == 0
    for name in ("sweep.csv", "sweep.md", "sweep_settings.md", "sweep.png"):
        assert (tmp_path / name).exists(), name
    rows = _read(tmp_path / "sweep.csv")
    assert len(rows) == 4 and "gens_to_90@2" in rows[0]

    base = Config.from_dict({**Config().to_dict(), **SETS, "population_size": 4})
    evo = Evolution.create(base)
    chunk = evo.compiled_chunk(base.generations)  # one program for the separate runs
    for row in rows:
        run_dir = tmp_path / row["run"]
        for f in ("config.json", "metrics.csv", "summary.json", "final_state.npz",
                  "lineage.npy", "fitness.png"):  # fmt: skip
            assert (run_dir / f).exists(), f
        json.loads((run_dir / "summary.json").read_text(), parse_constant=_not_strict_json)
        assert [r["generation"] for r in _read(run_dir / "metrics.csv")][:2] == ["0", "1"]
        cfg = Config.from_dict(
            {
                k: v
                for k, v in json.loads((run_dir / "config.json").read_text()).items()
                if not k.startswith("_")
            }  # fmt: skip
        )
        assert cfg.seed == int(row["seed"])
        state = evo.init(jax.random.PRNGKey(cfg.seed), Hyperparams.from_config(cfg))
        _, alone = chunk(state, base.generations)
        got = _read(run_dir / "metrics.csv")
        assert len(got) == base.generations
        for k in ("best_fitness", "median_fitness", "inverted"):  # what selection sees: exact
            np.testing.assert_array_equal([float(r[k]) for r in got], alone[k], err_msg=k)
        for k in ("mean_fitness", "mutation_rate_mean", "diversity", "checksum"):
            np.testing.assert_allclose(
                [float(r[k]) for r in got], alone[k], rtol=1e-5, atol=1e-6, err_msg=k
            )
        lineage = np.load(run_dir / "lineage.npy")
        np.testing.assert_array_equal(lineage, alone["selected"])


@pytest.mark.slow  # two groups, each compiled in its own subprocess
def test_static_keys_become_a_local_job_array(tmp_path):
    base = Config.from_dict({**Config().to_dict(), **SETS})
    rows = run_sweep(
        base, [0, 1], {"num_children": [1, 2]}, tmp_path, executor="local", progress=False
    )
    assert len(rows) == 4
    assert len(list((tmp_path / "submitit").glob("*_result.pkl"))) == 2
    for r in rows:
        assert (tmp_path / r["run"] / "metrics.csv").exists()


def test_settings_table_marks_seeds_without_a_value():
    from selfref_ghn.tools.sweep import settings_table

    rows = [
        {"child_factor": 0, "final_best": 500.0, "gens_to_90@50": 4},
        {"child_factor": 0, "final_best": 480.0, "gens_to_90@50": None},
        {"child_factor": 0.5, "final_best": 400.0, "gens_to_90@50": None},
    ]
    lines = settings_table(rows, ["child_factor"]).splitlines()
    # t(0.975, 1) = 12.706: half-width 12.706 * std([500, 480]) / sqrt(2) = 127.06
    assert lines[-2] == "| child_factor=0 | 2 | 490.00 ± 127.06 | 4.00 (1/2 seeds) |"
    assert lines[-1] == "| child_factor=0.5 | 1 | 400.00 | n/a (0/1 seeds) |"


def test_a_grid_of_list_values_is_summarised(tmp_path, monkeypatch):
    """``--grid "policy_hidden=[32];[64,64]"`` gives list values: the summary groups them."""
    from selfref_ghn.tools.sweep import settings_table, write_summary

    rows = [
        {"run": f"r{i}", "seed": i % 2, "policy_hidden": h, "final_best": 100.0 + i}
        for i, h in enumerate([[32], [32], [64, 64], [64, 64]])
    ]
    lines = settings_table(rows, ["policy_hidden"]).splitlines()
    assert [ln.split("|")[1:3] for ln in lines[-2:]] == [
        [" policy_hidden=(32,) ", " 2 "],
        [" policy_hidden=(64, 64) ", " 2 "],
    ]
    from selfref_ghn.tools import sweep

    seen = {}
    monkeypatch.setattr(sweep, "plot_sweep", lambda out, settings, base: seen.update(settings))
    write_summary(rows, tmp_path, Config(), ["policy_hidden"])
    assert sorted(seen) == [(("policy_hidden", (32,)),), (("policy_hidden", (64, 64)),)]
    assert (tmp_path / "sweep_settings.md").exists() and (tmp_path / "sweep.csv").exists()
