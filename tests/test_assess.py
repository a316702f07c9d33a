"""Assessing a champion on fresh episodes (selfref_ghn.tools.assess)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from selfref_ghn.config import Config, ConfigError
from selfref_ghn.run.loop import evolve
from selfref_ghn.tools import assess, cli
from tests.conftest import TINY

HORIZON = 40


@pytest.fixture(scope="module")
def switch_run(tmp_path_factory):
    """A tiny CartPole-Switch run, inverted at generations [2, 4), checkpointed every one."""
    out = tmp_path_factory.mktemp("run")
    cfg = Config(
        **{
            **TINY,
            "env_id": "CartPole-Switch",
            "generations": 4,
            "horizon": HORIZON,
            "switch_intervals": ((2, 4),),
            "log_every": 1,
            "checkpoint_every": 1,
            "keep_checkpoints": 10,
        }
    )
    evolve(cfg, out, progress=False)
    return cfg, out


def test_returns_are_fresh_episodes_of_the_member(switch_run):
    _, out = switch_run
    a = assess.assess_run(out, episodes=12, member=1, seed=0, solved=20)
    r = np.array(a["returns"])
    assert a["member"] == 1 and a["episodes"] == 12 and r.shape == (12,)
    # CartPole pays 1 per step: a return is the episode's length
    assert np.all((r >= 1) & (r <= HORIZON)) and np.allclose(r, np.round(r))
    assert a["ended_early"] == pytest.approx(np.mean(r < HORIZON))
    assert a["mean"] == pytest.approx(r.mean()) and a["solved_fraction"] == np.mean(r >= 20)
    # other seeds draw other episodes; the same seed the same ones
    assert assess.assess_run(out, episodes=12, member=1, seed=0)["returns"] == a["returns"]
    others = [assess.assess_run(out, episodes=12, member=1, seed=s)["returns"] for s in (5, 6)]
    assert any(o != a["returns"] for o in others)


def test_selection_picks_the_best_mean_and_assesses_it_on_other_episodes(switch_run):
    _, out = switch_run
    a = assess.assess_run(out, episodes=8, select_episodes=6, seed=3)
    means = a["selection_means"]
    assert len(means) == TINY["population_size"] and a["member"] == int(np.argmax(means))
    # the assessment episodes do not depend on the selection
    b = assess.assess_run(out, episodes=8, member=a["member"], seed=3)
    assert b["returns"] == a["returns"]


def test_checkpoint_and_schedule(switch_run):
    _, out = switch_run
    final = assess.assess_run(out, episodes=2)
    assert final["generation"] == 4 and final["inverted"]  # last evaluated: generation 3
    early = assess.assess_run(out, episodes=2, checkpoint=2)
    assert early["state"] == "checkpoints/2" and early["generation"] == 2
    assert not early["inverted"]  # last evaluated: generation 1, before the switch
    assert not assess.assess_run(out, episodes=2, generation=7)["inverted"]
    with pytest.raises(ConfigError, match="saved generations"):
        assess.assess_run(out, episodes=2, checkpoint=99)


def test_command_line(switch_run, tmp_path, capsys):
    _, out = switch_run
    path = tmp_path / "a.json"
    code = cli.main(["assess", str(out), "--episodes", "5", "--out", str(path)])
    assert code == 0
    shown = json.loads(capsys.readouterr().out)
    full = json.loads(path.read_text())
    assert len(full["returns"]) == 5 and shown["mean"] == full["mean"]
    assert cli.main(["assess", str(tmp_path / "nothing")]) == 2
    assert cli.main(["assess", str(out), "--episodes", "0"]) == 2
