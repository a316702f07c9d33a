"""experiments/recovery_study.py: the smoke scale end to end, and the selection differential
on the mutation rate computed from a hand-made lineage."""

import csv
import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments import recovery_study as rs  # noqa: E402
from selfref_ghn.run import lineage as lineage_lib  # noqa: E402


def _lineage(selected, rates):
    selected = np.asarray(selected, np.int32)
    recs = np.zeros(len(selected), lineage_lib.record_dtype(selected.shape[1]))
    recs["generation"] = np.arange(len(selected))
    recs["selected"] = selected
    recs["parent_rate"] = np.asarray(rates, np.float32)
    return recs


def test_selection_differential_by_hand():
    # P = 3 parents, C = 2: members 0..2 are the parents, 3,4 the children of parent 0,
    # 5,6 of parent 1, 7,8 of parent 2.
    recs = _lineage(
        selected=[[3, 4, 1], [0, 2, 8], [0, 1, 2]],
        rates=[[0.8, 0.2, 0.5], [0.9, 0.7, 0.2], [0.9, 0.2, 0.4]],
    )
    sd = rs.selection_differential(recs, num_children=2)
    # generation 0: survivors come from parents 0, 0, 1 -> inherited rates 0.8, 0.8, 0.2;
    # the 9 candidates carry 0.8 x3, 0.2 x3, 0.5 x3 -> mean 0.5
    np.testing.assert_allclose(sd["candidates"], [0.5, 0.6, 0.5], atol=1e-6)
    np.testing.assert_allclose(sd["selected"][0], 0.6, atol=1e-6)
    np.testing.assert_allclose(sd["S"][0], 0.1, atol=1e-6)
    # generation 1: survivors from parents 0, 2, 2 -> 0.9, 0.2, 0.2
    np.testing.assert_allclose(sd["S"][1], 1.3 / 3 - 0.6, atol=1e-6)
    np.testing.assert_allclose(sd["S"][2], 0.0, atol=1e-6)  # every parent kept
    np.testing.assert_allclose(sd["children"], [2 / 3, 1 / 3, 0.0])
    # D: the parents' mean rate one generation on minus now; unknown for the last
    np.testing.assert_allclose(sd["D"][:2], [0.1, 0.5 - 0.6], atol=1e-6)
    assert np.isnan(sd["D"][2])
    # the candidates' mean is the mean over all P(1 + C) members, each carrying its parent's rate
    sel = np.arange(9)
    parent = np.where(sel >= 3, (sel - 3) // 2, sel)
    np.testing.assert_allclose(sd["candidates"][0], recs["parent_rate"][0][parent].mean())


def test_lineage_rates_follow_each_line():
    recs = _lineage(selected=[[0, 1], [2, 0]], rates=[[0.3, 0.6], [0.1, 0.4]])
    lines = rs.lineage_rates(recs, num_children=2)
    # slot 0 after generation 1 is member 2 = first child of parent 0 (slot 0 after gen 0,
    # which was parent 0 kept at generation 0): rates 0.3 (gen 0), 0.1 (gen 1)
    np.testing.assert_allclose(lines[0], [0.3, 0.1], atol=1e-6)
    # slot 1 after generation 1 is parent 0 kept, which was parent 0 kept at generation 0
    np.testing.assert_allclose(lines[1], [0.3, 0.1], atol=1e-6)


def test_fmt_ci_marks_seeds_that_never_recovered():
    assert rs.fmt_ci([float("nan")] * 3) == "never"
    assert rs.fmt_ci([2.0, float("nan")]) == "2.0 (1/2)"
    assert rs.fmt_ci([1.0, 3.0]).startswith("2.0 ± ")


@pytest.mark.slow  # about 20-25 s on a 2-core CPU; `make test-all` runs it
def test_smoke_scale_end_to_end(tmp_path):
    out = tmp_path / "study"
    assert rs.main(["--scale", "smoke", "--out", str(out), "--quiet"]) == 0
    groups = rs.groups("smoke")
    for g in groups:
        assert (out / g.name / "DONE").exists()
    seeds = rs.SEEDS["smoke"]
    base = rs.base_config("smoke")
    points = rs.switch_points(base)
    settings = {
        rs.setting_label(g.static, dict(zip(g.traced, v, strict=True)), g.tag)
        for g in groups
        for v in itertools.product(*g.traced.values())
    }
    with (out / "recovery.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["setting"] for r in rows} == settings
    assert len(rows) == len(settings) * len(seeds) * len(points)
    for key in ("gens_to_90_first", "gens_to_90_hold10", "mean_return", "S_before", "S_after"):
        assert key in rows[0]
    with (out / "selection.csv").open() as f:
        sel = list(csv.DictReader(f))
    assert len(sel) == len(settings) * len(seeds) * base.generations
    # each row's S is what the run's own lineage gives
    runs = rs.collect("smoke", out)
    one = runs[0]
    sd = rs.selection_differential(one["lineage"], base.num_children)
    mine = [r for r in sel if r["setting"] == one["setting"] and int(r["seed"]) == one["seed"]]
    np.testing.assert_allclose([float(r["S"]) for r in mine], sd["S"], rtol=1e-6, atol=1e-9)
    # fixed rates: no variation in the rate, so no selection on it
    fixed = [r for r in sel if r["setting"].startswith("fixed")]
    assert fixed and all(abs(float(r["S"])) < 1e-6 for r in fixed)
    md = (out / "settings.md").read_text()
    assert all(f"| {s} |" in md for s in settings)
    for name in ("returns", "rates", "selection", "lineages"):
        assert (out / f"recovery-{name}.png").stat().st_size > 0
    report = (out / "REPORT.md").read_text()
    assert "Git:" in report and "Command:" in report
    # resumable: a second call runs no group again
    stamp = {g.name: (out / g.name / "DONE").stat().st_mtime_ns for g in groups}
    assert rs.main(["--scale", "smoke", "--out", str(out), "--quiet"]) == 0
    assert stamp == {g.name: (out / g.name / "DONE").stat().st_mtime_ns for g in groups}
