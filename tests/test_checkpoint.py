"""Checkpoints and resume: the last K kept, atomic writes, and a run killed with SIGKILL (during a
checkpoint write and at a random point) that resumes to exactly the uninterrupted run."""

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from selfref_ghn.config import Config, ConfigError
from selfref_ghn.evolution.generation import Evolution
from selfref_ghn.run import lineage
from selfref_ghn.run.checkpoint import DELAY_ENV, Checkpoints
from selfref_ghn.run.loop import evolve
from selfref_ghn.run.resume import checkpoint_interval, fork
from tests.conftest import TINY

TMP = ".orbax-checkpoint-tmp"


@pytest.fixture(scope="module")
def evo():
    return Evolution.create(Config(**TINY))


def _equal_trees(a, b):
    import jax

    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(
        np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb, strict=True)
    )


def test_keeps_the_last_k_and_restores_exactly(tmp_path, evo):
    s0 = evo.init()
    ckpts = Checkpoints(tmp_path / "ck", keep=2)
    states = {g: s0.replace(generation=s0.generation + g, params=s0.params + g) for g in (3, 6, 9)}
    for s in states.values():
        ckpts.save(s)
    assert ckpts.steps() == [6, 9] and ckpts.latest_step() == 9
    assert _equal_trees(ckpts.restore(s0), states[9])
    assert _equal_trees(ckpts.restore(s0, step=6), states[6])
    assert ckpts.size_bytes() > s0.params.nbytes // 2
    ckpts.close()


def test_interval_is_rounded_up_to_whole_chunks():
    assert checkpoint_interval(Config(**{**TINY, "log_every": 3, "checkpoint_every": 4})) == 6
    assert checkpoint_interval(Config(**{**TINY, "log_every": 3, "checkpoint_every": 3})) == 3
    assert checkpoint_interval(Config(**{**TINY, "checkpoint_every": 0})) == 0


_WRITER = """
import sys
from selfref_ghn.run.checkpoint import Checkpoints
from selfref_ghn.config import Config
from selfref_ghn.evolution.generation import Evolution
from tests.conftest import TINY
s = Evolution.create(Config(**TINY)).init()
Checkpoints(sys.argv[1], keep=3).save(s.replace(generation=s.generation + 6))
"""


def test_a_write_killed_midway_leaves_the_previous_checkpoint(tmp_path, evo):
    d = tmp_path / "ck"
    s0 = evo.init()
    first = s0.replace(generation=s0.generation + 3)
    Checkpoints(d, keep=3).save(first)
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(d)],
        env={**os.environ, DELAY_ENV: "60"},
        cwd=Path(__file__).parent.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def tmp_with_data():
        # the temporary folder appears before its files: wait for the data (then the writer
        # sits in its 60 s pause before finalising)
        return [p for p in d.iterdir() if TMP in p.name and any(f.is_file() for f in p.rglob("*"))]

    try:
        tmp = _wait_for(tmp_with_data, proc, 300)
        assert any(f.is_file() for f in tmp[0].rglob("*")), "the write had put data there"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    ckpts = Checkpoints(d, keep=3)  # reopening also clears unfinished temporary folders
    assert ckpts.steps() == [3]
    assert _equal_trees(ckpts.restore(s0), first)
    assert not [p for p in d.iterdir() if TMP in p.name]
    ckpts.save(s0.replace(generation=s0.generation + 6))  # the lost write can be redone
    assert ckpts.steps() == [3, 6]


def _wait_for(found, proc, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        hit = found()
        if hit:
            return hit
        assert proc.poll() is None, "process ended before the awaited point"
        time.sleep(0.02)
    raise AssertionError("timed out")


# ------------------------------------------------------------------- kill and resume
GENS = 8
SETS = [
    "--set", "population_size=4", "--set", "horizon=30", "--set", "log_every=2",
    "--set", "switch_intervals=[[3,6]]", "--set", "gnn_rounds=2", "--set", "embed_dim=8",
    "--set", "trunk_dim=8", "--set", "coeff_dim=4", "--set", "num_rates=3",
    "--set", "policy_hidden=[8]", "--set", "monitor=warn",
]  # fmt: skip


def _cli(*args):
    return [sys.executable, "-m", "selfref_ghn.tools.cli", "run", *args]


def _start(args, delay=0.0):
    env = {**os.environ, DELAY_ENV: str(delay)}
    return subprocess.Popen(
        _cli(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # 15-25 s on a 2-core CPU: `make test-all`
def test_killed_anywhere_then_resumed_equals_uninterrupted(tmp_path):
    rng = random.Random()
    full, broken = tmp_path / "full", tmp_path / "broken"
    common = ["--generations", str(GENS), "--checkpoint-every", "2", "--keep-checkpoints", "2"]
    whole = _start(["quick", "--out", str(full), "--quiet", *common, *SETS])

    # 1. killed while a checkpoint is being written (the write is held open by the delay hook)
    p = _start(["quick", "--out", str(broken), *common, *SETS], delay=60)
    ck = broken / "checkpoints"
    try:
        tmp = _wait_for(lambda: ck.exists() and [q for q in ck.iterdir() if TMP in q.name], p, 300)
    finally:
        p.kill()
        p.wait()
    killed_at = int(tmp[0].name.split(".")[0])
    assert p.returncode == -signal.SIGKILL
    assert Checkpoints(ck).latest_step() == (killed_at - 2 if killed_at > 2 else None)

    # 2. resumed, then killed at a random moment after compiling (writes slowed to 0.2 s)
    p = _start(["--resume", str(broken)], delay=0.2)
    try:
        first = p.stdout.readline()
        while first.startswith("note:"):  # e.g. the --cpu-devices hint on a multi-core CPU
            first = p.stdout.readline()
        assert first.startswith("compiled"), first
        pause = rng.uniform(0.0, 1.5)
        time.sleep(pause)
    finally:
        p.kill()
        p.wait()

    # 3. resumed to the end
    done = subprocess.run(
        _cli("--resume", str(broken), "--quiet"), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert whole.wait(timeout=600) == 0, whole.stdout.read()

    a, b = _rows(full / "metrics.csv"), _rows(broken / "metrics.csv")
    assert [int(float(r["generation"])) for r in b] == list(range(GENS)), pause
    for ra, rb in zip(a, b, strict=True):
        ra.pop("wall_time"), rb.pop("wall_time")
        assert ra == rb, (pause, ra, rb)
    assert (full / lineage.FILE).read_bytes() == (broken / lineage.FILE).read_bytes()
    fa, fb = np.load(full / "final_state.npz"), np.load(broken / "final_state.npz")
    assert sorted(fa.files) == sorted(fb.files)
    for k in fa.files:
        np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)
    assert Checkpoints(broken / "checkpoints").steps() == [GENS - 2, GENS]
    np.testing.assert_array_equal(
        np.load(broken / "lineage.npy"), lineage.read(broken / lineage.FILE, 4)["selected"]
    )


def test_resume_refuses_a_different_config_and_a_reused_folder(tmp_path):
    cfg = Config(**{**TINY, "generations": 2, "log_every": 2})
    out = tmp_path / "run"
    evolve(cfg, out, progress=False)
    with pytest.raises(ConfigError, match="population_size = 5 .run: 4."):
        evolve(cfg.replace(population_size=5), out, progress=False, resume=True)
    with pytest.raises(ConfigError, match="holds checkpoints of an earlier run"):
        evolve(cfg, out, progress=False)
    # a longer run may continue it: only the new generations are computed and appended
    state, metrics, summary = evolve(cfg.replace(generations=4), out, progress=False, resume=True)
    assert summary["resumed_from"] == 2 and int(state.generation) == 4
    np.testing.assert_array_equal(metrics["generation"], [0, 1, 2, 3])
    assert [int(float(r["generation"])) for r in _rows(out / "metrics.csv")] == [0, 1, 2, 3]


def test_resume_may_move_a_switch_not_played_yet(tmp_path):
    """A run resumed with a schedule that changes only after its played generations continues
    exactly as a fresh run of the new schedule; a change in the past is refused."""
    cfg = Config(**{**TINY, "generations": 2, "log_every": 2})
    out = tmp_path / "run"
    evolve(cfg, out, progress=False)
    moved = cfg.replace(generations=4, switch_intervals=((2, 3),))
    with pytest.raises(ConfigError, match="differ at generation 1"):
        evolve(moved.replace(switch_intervals=((1, 3),)), out, progress=False, resume=True)
    state, metrics, _ = evolve(moved, out, progress=False, resume=True)
    np.testing.assert_array_equal(metrics["inverted"], [0, 0, 1, 0])
    fresh, fresh_metrics, _ = evolve(moved, tmp_path / "fresh", progress=False)
    assert _equal_trees((state.params, state.fitness), (fresh.params, fresh.fitness))
    np.testing.assert_array_equal(metrics["best_fitness"], fresh_metrics["best_fitness"])
    assert '"switch_intervals": [\n    [\n      2,' in (out / "config.json").read_text()


@pytest.mark.slow  # 8-13 s on a 2-core CPU: `make test-all`
def test_fork_changes_a_rate_bound_from_its_generation_and_leaves_the_source(tmp_path):
    """A fork replays nothing: its generations before the fork are the source's rows, those
    after it are played under the new bound (which the continued state really uses), and an
    unchanged fork is the source's own continuation."""
    cfg = Config(**{**TINY, "generations": 4, "log_every": 2, "checkpoint_every": 2})
    src = tmp_path / "src"
    src_state, src_metrics, _ = evolve(cfg, src, progress=False)
    src_rows = (src / "metrics.csv").read_text()
    assert src_metrics["mutation_rate_max"][2:].max() > 0.3  # so a ceiling of 0.3 binds

    capped = cfg.replace(rate_max=0.3)
    assert fork(src, tmp_path / "capped", capped, generation=2) == 2
    state, metrics, summary = evolve(capped, tmp_path / "capped", progress=False, resume=True)
    assert summary["resumed_from"] == 2 and float(state.hparams.rate_max) == np.float32(0.3)
    for k in ("best_fitness", "mutation_rate_max", "checksum"):
        np.testing.assert_array_equal(metrics[k][:2], src_metrics[k][:2], err_msg=k)
    assert metrics["mutation_rate_max"][2:].max() <= 0.3 + 1e-6  # means of clipped rates
    stored = json.loads((tmp_path / "capped" / "config.json").read_text())
    assert stored["rate_max"] == 0.3 and stored["_fork"]["generation"] == 2
    assert stored["_fork"]["changed"] == {"rate_max": [1.0, 0.3]}
    # the record survives the fork's own resumes; the source was only read
    evolve(capped.replace(generations=6), tmp_path / "capped", progress=False, resume=True)
    stored = json.loads((tmp_path / "capped" / "config.json").read_text())
    assert stored["_fork"]["changed"] == {"rate_max": [1.0, 0.3]}
    assert (src / "metrics.csv").read_text() == src_rows
    assert Checkpoints(src / "checkpoints").steps() == [2, 4]

    fork(src, tmp_path / "same", cfg, generation=2)
    same, same_metrics, _ = evolve(cfg, tmp_path / "same", progress=False, resume=True)
    assert _equal_trees((same.params, same.fitness), (src_state.params, src_state.fitness))
    np.testing.assert_array_equal(same_metrics["best_fitness"], src_metrics["best_fitness"])


def test_fork_refuses_a_structural_change_a_missing_checkpoint_and_a_used_folder(tmp_path):
    cfg = Config(**{**TINY, "generations": 4, "log_every": 2, "checkpoint_every": 2})
    src = tmp_path / "src"
    evolve(cfg, src, progress=False)
    new = tmp_path / "new"
    with pytest.raises(ConfigError, match=r"being forked: population_size = 5 \(run: 4\)"):
        fork(src, new, cfg.replace(population_size=5))
    with pytest.raises(ConfigError, match=r"nearest: \[2, 4\]"):
        fork(src, new, cfg, generation=3)
    with pytest.raises(ConfigError, match="differ at generation 1"):
        fork(src, new, cfg.replace(switch_intervals=((1, 3),)), generation=2)
    assert not new.exists()  # nothing is written for a refused fork
    with pytest.raises(ConfigError, match="a new or empty folder"):
        fork(src, src, cfg)


@pytest.mark.slow  # 15-25 s on a 2-core CPU: `make test-all`
def test_fork_with_a_new_seed_redraws_from_its_generation_and_resumes_exactly(tmp_path):
    cfg = Config(**{**TINY, "generations": 2, "log_every": 2, "checkpoint_every": 2})
    src = tmp_path / "src"
    _, src_metrics, _ = evolve(cfg.replace(generations=4), src, progress=False)
    reseeded = cfg.replace(seed=7, generations=6)
    fork(src, tmp_path / "a", reseeded.replace(generations=4), generation=2)
    evolve(reseeded.replace(generations=4), tmp_path / "a", progress=False, resume=True)
    a, a_metrics, _ = evolve(reseeded, tmp_path / "a", progress=False, resume=True)  # from 4
    fork(src, tmp_path / "b", reseeded, generation=2)
    b, b_metrics, _ = evolve(reseeded, tmp_path / "b", progress=False, resume=True)  # 2 to 6
    # the source's generations before the fork, other draws (other children) after it
    np.testing.assert_array_equal(a_metrics["checksum"][:2], src_metrics["checksum"][:2])
    assert not np.array_equal(a_metrics["checksum"][2:4], src_metrics["checksum"][2:4])
    # the new key is set once, at the fork's generation: a later resume keeps drawing from it
    assert _equal_trees((a.params, a.fitness, a.key), (b.params, b.fitness, b.key))
    np.testing.assert_array_equal(a_metrics["checksum"], b_metrics["checksum"])
    assert json.loads((tmp_path / "a" / "config.json").read_text())["_fork"]["changed"][
        "seed"
    ] == [0, 7]
