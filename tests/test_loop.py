"""The one host loop (``selfref_ghn.run.loop.host_loop``): dispatching the next chunk before
writing the previous one's rows changes no file; the sweep's batched runs go through it too."""

import csv

import jax
import numpy as np
import pytest

from selfref_ghn.config import Config
from selfref_ghn.evolution.generation import Evolution
from selfref_ghn.run import lineage
from selfref_ghn.run.checkpoint import Checkpoints
from selfref_ghn.run.loop import evolve
from tests.conftest import TINY

# 7 generations in chunks of 2 (the last one short), a checkpoint every 4 (rounded to chunks)
CFG = dict(TINY, horizon=20, generations=7, log_every=2, checkpoint_every=4, keep_checkpoints=5)


def _rows(path):
    """metrics.csv without ``wall_time`` (a clock reading, different in every run)."""
    with path.open() as f:
        return [{k: v for k, v in r.items() if k != "wall_time"} for r in csv.DictReader(f)]


def _checkpoints(run, cfg):
    template = jax.eval_shape(Evolution.create(cfg).init)
    with Checkpoints(run / "checkpoints", read_only=True) as ckpts:
        steps = ckpts.steps()
        return steps, [jax.device_get(ckpts.restore(template, s)) for s in steps]


def _same_files(a, b, cfg):
    assert _rows(a / "metrics.csv") == _rows(b / "metrics.csv")
    assert (a / lineage.FILE).read_bytes() == (b / lineage.FILE).read_bytes()
    assert (a / "lineage.npy").read_bytes() == (b / "lineage.npy").read_bytes()
    with np.load(a / "final_state.npz") as fa, np.load(b / "final_state.npz") as fb:
        assert sorted(fa.files) == sorted(fb.files)
        for k in fa.files:
            np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)
    (sa, ca), (sb, cb) = _checkpoints(a, cfg), _checkpoints(b, cfg)
    assert sa == sb and len(sa) >= 1, (sa, sb)
    for x, y in zip(ca, cb, strict=True):
        jax.tree.map(np.testing.assert_array_equal, x, y)


STOP = {"monitor": "stop", "monitor_patience": 2, "monitor_diversity_max": 0.01}


@pytest.mark.parametrize("extra", [{}, STOP], ids=["run", "stopped"])
def test_overlapped_loop_writes_what_the_sequential_loop_writes(tmp_path, extra):
    cfg = Config(**{**CFG, **extra})
    seen = {}
    for overlap in (False, True):
        out = tmp_path / str(overlap)
        states = []
        final, metrics, summary = evolve(
            cfg,
            out,
            progress=False,
            overlap=overlap,
            callback=lambda s, rows, states=states: states.append((int(s.generation), len(rows))),
        )
        seen[overlap] = (states, int(final.generation), summary["monitor_stop"])
    _same_files(tmp_path / "False", tmp_path / "True", cfg)
    assert seen[False] == seen[True]
    if extra:  # the monitor stopped it inside the first chunk; the loop still ends cleanly
        assert seen[True][2]["generation"] == 1
    else:
        assert seen[True][0] == [(2, 2), (4, 2), (6, 2), (7, 1)]


def test_a_resumed_overlapped_run_equals_one_straight_through(tmp_path):
    cfg = Config(**CFG)
    evolve(cfg, tmp_path / "whole", progress=False)
    evolve(cfg.replace(generations=4), tmp_path / "part", progress=False)
    evolve(cfg, tmp_path / "part", progress=False, resume=True)
    assert _rows(tmp_path / "whole" / "metrics.csv") == _rows(tmp_path / "part" / "metrics.csv")
    assert (tmp_path / "whole" / lineage.FILE).read_bytes() == (
        tmp_path / "part" / lineage.FILE
    ).read_bytes()
