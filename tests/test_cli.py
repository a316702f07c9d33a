"""Command line: bad input gives one clear message and exit 2, with nothing compiled."""

import csv
import json
import os
import subprocess
import sys

import pytest

from selfref_ghn.evolution.generation import Evolution
from selfref_ghn.tools import cli

BAD = [
    (["run", "no-such-preset"], "'preset'"),
    (["run", "quick", "--set", "population_size=0"], "'population_size' = 0"),
    (["run", "quick", "--set", "population_size=-3"], "'population_size' = -3"),
    (["run", "quick", "--set", "horizon=0"], "'horizon' = 0"),
    (["run", "quick", "--set", "switch_intervals=[[10,100]]"], "'switch_intervals'"),
    (["run", "quick", "--set", "switch_intervals=[[30,20]]"], "'switch_intervals'"),
    (["run", "quick", "--set", "no_such_key=1"], "'no_such_key'"),
    (["run", "quick", "--set", "population_size=ten"], "expected int"),
    (["run", "quick", "--set", "child_factor=2"], "'child_factor'"),
    (["run", "quick", "--set", "mutation_mode=bogus"], "'mutation_mode'"),
    (["run", "quick", "--set", "env_id=Nope-v0"], "'env_id'"),
    (["run", "quick", "--generations", "0"], "'generations' = 0"),
]


@pytest.mark.parametrize("argv,message", BAD)
def test_bad_input_is_one_message_before_compiling(argv, message, monkeypatch, capsys):
    def no_compile(*a, **k):
        raise AssertionError("compiled despite bad input")

    monkeypatch.setattr(Evolution, "compiled_chunk", no_compile)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_bad_input_subprocess_exit_code_and_no_traceback():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "selfref_ghn.tools.cli",
            "run",
            "quick",
            "--set",
            "population_size=0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "population_size" in proc.stderr and "Traceback" not in proc.stderr


def test_run_writes_results_folder(tmp_path):
    out = tmp_path / "run"
    argv = [
        "run", "quick", "--out", str(out), "--quiet", "--generations", "4",
        "--set", "population_size=4", "--set", "horizon=40", "--set", "log_every=2",
        "--set", "switch_intervals=[[2,4]]", "--set", "gnn_rounds=2",
    ]  # fmt: skip
    env = dict(os.environ)
    proc = subprocess.run(
        [sys.executable, "-m", "selfref_ghn.tools.cli", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("config.json", "metrics.csv", "fitness.png", "summary.json", "lineage.npy",
                 "final_state.npz"):  # fmt: skip
        assert (out / name).exists(), name
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["population_size"] == 4 and cfg["switch_intervals"] == [[2, 4]]
    assert cfg["_run"]["library_version"] and cfg["_run"]["git_hash"]
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(float(r["generation"])) for r in rows] == [0, 1, 2, 3]
    assert [int(float(r["inverted"])) for r in rows] == [0, 0, 1, 1]
    required = (
        "best_fitness mean_fitness median_fitness mutation_rate_mean mutation_rate_min "
        "mutation_rate_max diversity env_steps wall_time"
    ).split()
    for key in required:
        assert all(r[key] != "" for r in rows), key
    wall = [float(r["wall_time"]) for r in rows]
    assert wall == sorted(wall)
    steps = [int(float(r["env_steps"])) for r in rows]
    assert steps == sorted(steps) and steps[-1] > 0


def test_run_with_a_baseline_method(tmp_path, capsys):
    """``--set method=...`` runs the evosax baseline through the same results folder."""
    out = tmp_path / "ga"
    argv = [
        "run", "quick", "--out", str(out), "--quiet", "--generations", "4",
        "--set", "population_size=4", "--set", "horizon=30", "--set", "log_every=2",
        "--set", "switch_intervals=[[2,4]]", "--set", "method=simple_ga",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    assert json.loads((out / "config.json").read_text())["method"] == "simple_ga"
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(float(r["generation"])) for r in rows] == [0, 1, 2, 3]
    # matched budget P(1+C) episodes per generation, each at most 30 steps
    steps = [float(r["env_steps"]) for r in rows]
    assert all(0 < b - a <= 4 * 3 * 30 for a, b in zip([0.0, *steps[:-1]], steps, strict=True))


def test_baseline_method_refuses_several_devices(capsys):
    argv = ["run", "quick", "--set", "method=open_es", "--devices", "2"]
    assert cli.main(argv) == 2
    assert "--devices" in capsys.readouterr().err


def test_one_device_cpu_run_suggests_cpu_devices(monkeypatch):
    import argparse

    from selfref_ghn.config import Config
    from selfref_ghn.run import xla_cpu
    from selfref_ghn.tools import cli

    monkeypatch.setattr(xla_cpu, "default_cpu_devices", lambda: 4)
    args = argparse.Namespace(cpu_devices=None)
    hint = cli._cpu_devices_hint(Config(population_size=30), args)
    assert hint is not None and "--cpu-devices 3" in hint and "of 4 CPU cores" in hint
    assert cli._cpu_devices_hint(Config(population_size=7), args) is None  # no divisor > 1
    assert cli._cpu_devices_hint(Config(population_size=30, method="simple_ga"), args) is None
    args.cpu_devices = 2
    assert cli._cpu_devices_hint(Config(population_size=30), args) is None


def test_end_of_run_recovery_line_says_why_there_is_no_count():
    r = {"switch": 1000, "level": 192.4, "drop": 332.8, "gens_to_90": 999}
    assert cli.recovery_line(r).endswith("back to 90% in 999 generations")
    r["gens_to_90"] = float("nan")
    assert cli.recovery_line(r).endswith("not back to 90% before the next switch or the end")
    r["level"] = -34.4  # recovery is measured against a positive level (metrics.recovery)
    assert cli.recovery_line(r).endswith("recovery not measured (the level is not positive)")


def test_output_into_a_closed_pipe_ends_quietly():
    # as `selfref-ghn presets | head -n 0`: the reader is gone before the first line is written
    proc = subprocess.Popen(
        [sys.executable, "-m", "selfref_ghn.tools.cli", "presets"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc.stdout.close()  # long before the interpreter has imported the package
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 1
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
