"""``evolve`` as a library call: what a caller passes in or is handed stays valid."""

import csv
import json

import jax
import numpy as np
import pytest

from selfref_ghn.config import Config
from selfref_ghn.evolution.generation import Evolution
from selfref_ghn.run.loop import evolve
from selfref_ghn.tools import cli
from tests.conftest import TINY


def test_evolve_leaves_the_callers_state_and_the_callbacks_states_valid():
    """The compiled chunk donates its input state; evolve must donate only its own copies."""
    cfg = Config(**{**TINY, "horizon": 10})
    evo = Evolution.create(cfg)
    start = evo.init()
    before = np.asarray(start.params).copy()
    seen = []
    final, _, _ = evolve(
        cfg, evo=evo, state=start, progress=False, callback=lambda s, rows: seen.append(s)
    )
    np.testing.assert_array_equal(np.asarray(start.params), before)  # not deleted, unchanged
    assert [int(s.generation) for s in seen] == [3, 6]
    for s in seen:  # every state handed out is still readable after the later chunks ran
        assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(s.params))
    np.testing.assert_array_equal(np.asarray(seen[-1].params), np.asarray(final.params))


@pytest.mark.slow  # 8-13 s on a 2-core CPU: `make test-all`
def test_a_run_recorded_before_key_versions_resumes_with_version_1(tmp_path):
    """A config.json without ``key_version`` (written before versions existed) resumes with
    version 1: the resumed run equals the same run straight through."""
    cfg = Config(**{**TINY, "horizon": 10, "key_version": 1, "checkpoint_every": 3})
    evolve(cfg, tmp_path / "whole", progress=False)
    part = tmp_path / "part"
    evolve(cfg.replace(generations=3), part, progress=False)
    stored = json.loads((part / "config.json").read_text())
    del stored["key_version"]
    (part / "config.json").write_text(json.dumps(stored))
    assert cli.main(["run", "--resume", str(part), "--generations", "6", "--quiet"]) == 0
    assert json.loads((part / "config.json").read_text())["key_version"] == 1

    def rows(run):
        with (run / "metrics.csv").open() as f:
            return [{k: v for k, v in r.items() if k != "wall_time"} for r in csv.DictReader(f)]

    assert rows(part) == rows(tmp_path / "whole")


def test_summary_and_start_line_say_what_the_run_evolves(tmp_path):
    import io

    from selfref_ghn.evolution.baselines import BaselineEvolution

    cfg = Config(**{**TINY, "horizon": 10, "generations": 3})
    evo = Evolution.create(cfg)
    stream = io.StringIO()
    _, _, summary = evolve(cfg, tmp_path / "srghn", evo=evo, progress=stream)
    stored = json.loads((tmp_path / "srghn" / "summary.json").read_text())
    want = {
        "ghn_params": evo.ghn.num_params,
        "policy_params": evo.ghn.policy_graph.num_params,
        "basis_floats": evo.ghn.basis_floats,
    }
    assert {k: stored[k] for k in want} == {k: summary[k] for k in want} == want
    assert want["policy_params"] == 4 * 8 + 8 + 8 * 2 + 2  # CartPole 4-8-2 (TINY's policy)
    first = stream.getvalue().splitlines()[0]
    assert f"{want['ghn_params']} parameters" in first
    assert f"{want['policy_params']} policy params" in first
    assert f"{want['basis_floats']} basis floats" in first
    base = BaselineEvolution.create(cfg.replace(method="open_es"))
    _, _, summary = evolve(base.config, None, evo=base, progress=False)
    assert summary["ghn_params"] is None and summary["policy_params"] == want["policy_params"]


def test_a_periodic_schedule_is_measured_like_listed_windows(tmp_path):
    """``switch_every`` runs report recovery and shade plots at the same windows as the
    ``switch_intervals`` they stand for."""
    every = Config(**{**TINY, "horizon": 10, "switch_every": 2})
    listed = every.replace(switch_every=0, switch_intervals=((2, 4),))
    assert every.switch_windows == listed.switch_windows == ((2, 4),)
    _, m1, s1 = evolve(every, None, progress=False)
    _, m2, s2 = evolve(listed, None, progress=False)
    np.testing.assert_array_equal(m1["inverted"], m2["inverted"])
    assert [r["switch"] for r in s1["recovery_best"]] == [2, 4]
    assert [r["switch"] for r in s1["recovery_best"]] == [r["switch"] for r in s2["recovery_best"]]
