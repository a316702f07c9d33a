"""Every bad config is one clear message (field, value, what is allowed) and exit 2, through the
command line and with nothing built or compiled; ``--debug`` shows the traceback instead."""

import json
import subprocess
import sys

import pytest

from selfref_ghn.config import Config
from selfref_ghn.evolution.generation import Evolution
from selfref_ghn.tools import cli

# (argv after "run", substring the message must hold)
BAD = [
    # sizes <= 0
    (["quick", "--set", "population_size=0"], "'population_size' = 0: must be a positive"),
    (["quick", "--set", "episodes=-2"], "'episodes' = -2: must be a positive"),
    (["quick", "--set", "embed_dim=0"], "'embed_dim' = 0"),
    (["quick", "--set", "num_children=0"], "'num_children' = 0: must be at least 1"),
    (["quick", "--set", "policy_hidden=[8,0]"], "'policy_hidden' = (8, 0)"),
    (["quick", "--set", "policy_conv=[[-16,3,1]]"], "'policy_conv' = [-16, 3, 1]: each layer"),
    (["minatar-breakout", "--set", "policy_conv=[[16,3]]"], "'policy_conv' = [16, 3]"),
    (["quick", "--set", "log_every=0"], "'log_every' = 0"),
    (["quick", "--keep-checkpoints", "0"], "'keep_checkpoints' = 0: must be at least 1"),
    (["quick", "--checkpoint-every", "-5"], "'checkpoint_every' = -5: must be >= 0"),
    (["quick", "--set", "monitor_patience=0"], "'monitor_patience' = 0"),
    (["quick", "--set", "noise_std=-0.1"], "'noise_std' = -0.1"),
    (["quick", "--set", "update_clip=0"], "'update_clip' = 0.0: must be > 0"),
    # intervals past the last generation (quick runs 60)
    (["quick", "--checkpoint-every", "61"], "'checkpoint_every' = 61: must not exceed gen"),
    (["quick", "--set", "switch_intervals=[[50,61]]"], "'switch_intervals' = [50, 61]"),
    (
        ["quick", "--set", "monitor=warn", "--set", "monitor_patience=61"],
        "'monitor_patience' = 61: must not exceed generations (60)",
    ),
    # bounds
    (["quick", "--set", "rate_max=1.5"], "'rate_max' = 1.5: must lie in [rate_min (0.0), 1]"),
    (["quick", "--set", "rate_min=0.6", "--set", "rate_max=0.4"], "'rate_max' = 0.4"),
    (["quick", "--set", "rate_min=-0.1"], "'rate_min' = -0.1: must lie in [0, 1]"),
    (["quick", "--set", "selection_ties=random"], "'selection_ties' = 'random': one of"),
    (["quick", "--set", "monitor_collapse=0"], "'monitor_collapse' = 0.0: must lie in (0, 1]"),
    (["quick", "--set", "monitor_diversity_max=0.0001"], "'monitor_diversity_max' = 0.0001"),
    (["quick", "--set", "noise_std=NaN"], "'noise_std' = nan: must be a finite number"),
    (["quick", "--set", "param_clip=Infinity"], "'param_clip' = inf: must be a finite"),
    (["quick", "--seed", "-1"], "'seed' = -1: must lie in [0, 2**32)"),
    (["quick", "--set", "monitor=panic"], "'monitor' = 'panic': one of ('off', 'warn', 'stop')"),
    # unknown keys
    (["quick", "--set", "populaton_size=8"], "'populaton_size' = '8': unknown key"),
    (["quick", "--set", "x"], "'--set' = 'x': expected key=value"),
    (["quick", "--set", "pop\x1bsize=8"], "field 'pop\\x1bsize' = '8': unknown key"),
    # wrong types
    (["quick", "--set", "population_size=2.5"], "'population_size' = 2.5: expected int"),
    (["quick", "--set", "population_size=true"], "'population_size' = True: expected int"),
    (["quick", "--set", 'horizon="500"'], "'horizon' = '500': expected int"),
    (["quick", "--set", "obs_norm=1"], "'obs_norm' = 1: expected bool"),
    (["quick", "--set", "policy_hidden=8"], "'policy_hidden' = 8: expected a list"),
    (["quick", "--set", "switch_intervals=[[1.5,3]]"], "'switch_intervals' = ((1.5, 3),)"),
    (["quick", "--set", "monitor=3"], "'monitor' = 3: expected str"),
    (["quick", "--set", "child_factor=[0.5]"], "'child_factor' = [0.5]: expected float"),
    # the preset itself
    ([], "'preset' = None"),
    (["quick", "--set", "head=sparse"], "'head' = 'sparse': one of ('dense', 'block', 'random"),
    (["quick", "--set", "block_size=0"], "'block_size' = 0: must be a positive integer"),
    (["quick", "--set", "head=block", "--set", "block_ratio=0"], "'block_ratio' = 0.0: must lie"),
    # switch rules and periodic schedules
    (["quick", "--set", "switch=flip"], "'switch' = 'flip': unknown switch rule 'flip'"),
    (
        ["quick", "--set", "env_id=Pendulum-v1", "--set", "switch=reverse_actions"],
        "'switch' = 'reverse_actions': reverse_actions needs discrete actions; Pendulum-v1",
    ),
    (["quick", "--set", "switch=negate_actions"], "'switch' = 'negate_actions': negate_actions"),
    (
        ["quick", "--set", "switch=permute_actions", "--set", 'switch_options={"perm": [0, 0]}'],
        "'switch' = 'permute_actions': perm [0, 0] is not a permutation",
    ),
    (["quick", "--set", 'switch_options={"perm": [1, 0]}'], "'switch_options' = {'perm'"),
    (["quick", "--set", "switch_every=-1"], "'switch_every' = -1: 0 (off), or in [1, gen"),
    (["quick", "--set", "switch_every=60"], "'switch_every' = 60: 0 (off)"),
    (["quick", "--set", "switch_every=5"], "'switch_every' = 5: 0 (off), or in [1, generations"),
]


@pytest.mark.parametrize("argv,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_config_is_one_message_and_exit_2(argv, message, nothing_compiles, capsys):
    assert cli.main(["run", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert err.startswith("selfref-ghn: error: invalid config field")
    assert err.count("\n") == 1 and "Traceback" not in err


def _results_dir(tmp_path, **changes):
    run = tmp_path / "run"
    run.mkdir()
    d = Config(generations=60, **changes).to_dict()
    (run / "config.json").write_text(json.dumps({**d, "_run": {"git_hash": "x"}}))
    return run, d


BAD_RESUME = [
    (lambda d: d.update(population_size=0), "'population_size' = 0"),
    (lambda d: d.update(no_such_field=3), "'no_such_field' = 3: unknown key"),
    (lambda d: d.update(horizon="long"), "'horizon' = 'long': expected int"),
    (lambda d: d.update(switch_intervals=[[10, 80]]), "'switch_intervals' = [10, 80]"),
]


@pytest.mark.parametrize("edit,message", BAD_RESUME)
def test_resume_validates_the_stored_config(edit, message, tmp_path, nothing_compiles, capsys):
    run, d = _results_dir(tmp_path)
    edit(d)
    (run / "config.json").write_text(json.dumps(d))
    assert cli.main(["run", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_resume_refuses_a_mismatch_and_a_missing_folder(tmp_path, nothing_compiles, capsys):
    run, _ = _results_dir(tmp_path, population_size=8)
    assert cli.main(["run", "--resume", str(run), "--set", "population_size=9"]) == 2
    err = capsys.readouterr().err
    assert "config mismatch with the run being resumed: population_size = 9 (run: 8)" in err
    assert cli.main(["run", "--resume", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "'--resume'" in err and "config.json" in err and err.count("\n") == 1


def test_debug_shows_the_traceback():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "selfref_ghn.tools.cli",
            "run",
            "quick",
            "--keep-checkpoints",
            "0",
            "--debug",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "keep_checkpoints" in proc.stderr


def test_fork_options_are_checked_before_anything_runs(tmp_path, nothing_compiles, capsys):
    run, _ = _results_dir(tmp_path, population_size=8)
    new = str(tmp_path / "new")
    cases = [
        (["--fork", str(run)], "'--out' = None: the new results folder, with --fork"),
        (["--fork", str(run), "--resume", str(run), "--out", new], "not with --resume"),
        (["quick", "--fork-at", "2", "--out", new], "'--fork-at' = '2': only with --fork DIR"),
        (["--fork", str(tmp_path / "nope"), "--out", new], "'--fork' ="),
        (["--fork", str(run), "--out", new], "a results folder with a checkpoint"),
        (
            ["--resume", str(run), "--set", "rate_min=0.2"],
            "to change rate_min, fork the run (--fork DIR --out NEW)",
        ),
    ]
    for argv, message in cases:
        assert cli.main(["run", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (argv, err)
    assert not (tmp_path / "new").exists()


def test_an_unknown_env_keyword_is_named_with_the_accepted_ones(monkeypatch, capsys):
    """Before anything compiles (the environment is built, nothing else)."""

    def refuse(*a, **k):
        raise AssertionError("compiled despite a bad env_kwargs")

    monkeypatch.setattr(Evolution, "compiled_chunk", refuse)
    argv = ["run", "quick", "--set", "env_id=CartPole-v1", "--set", 'env_kwargs={"gravityy": 9}']
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "'env_kwargs' = {'gravityy': 9}: unknown keyword for CartPole-v1; it accepts: " in err
    assert "gravity, " in err and err.count("\n") == 1
    argv[-1] = 'env_kwargs={"continuous": true, "wind": 1}'
    argv[-3] = "env_id=LunarLander-v3"
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "= {'wind': 1}: unknown keyword for LunarLander-v3" in err and "continuous" in err
