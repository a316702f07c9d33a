"""Continuing a run (DESIGN §4; docs/reliability.md): resume and fork.

``evolve(..., resume=True)`` (:mod:`selfref_ghn.run.loop`) continues a results folder from its
latest intact checkpoint (:func:`restore_intact` moves damaged ones aside): rows and lineage
records past the checkpoint's generation (written after it, before a crash) are cut, so every
generation appears exactly once, and since every random key comes from the state the continued
run is identical to an uninterrupted one. :func:`check_resumable` refuses a config that differs
in anything but :data:`RESUME_MAY_CHANGE`. :func:`fork` starts a new folder from any checkpoint
of a run, under a config whose traced hyperparameters may differ (a rate floor from generation
G on, say); the source folder is only read.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from selfref_ghn.config import Config, ConfigError, Hyperparams
from selfref_ghn.evolution.schedule import inverted_host
from selfref_ghn.run import distributed
from selfref_ghn.run import lineage as lineage_lib
from selfref_ghn.run.checkpoint import Checkpoints, DamagedCheckpoint, describe_damaged
from selfref_ghn.run.folder import CHECKPOINT_DIR, DAMAGED_DIR, load_run_config

# Fields a resumed run may change: they steer the host and the monitor, not the evolution;
# and the selection's tie rule, which holds no state (a branch of a run may continue under the
# other rule: config.json's _run.resumed_from says from which generation).
RESUME_MAY_CHANGE = (
    "generations", "checkpoint_every", "keep_checkpoints", "monitor", "monitor_patience",
    "monitor_rate_margin", "monitor_diversity_min", "monitor_diversity_max", "monitor_collapse",
    "selection_ties",
)  # fmt: skip


# Fields a fork (:func:`fork`) may change besides those: the traced hyperparameters, carried in
# the state, which a forked run takes from its config from the fork's generation on; and the
# seed: a fork with a new seed draws from ``PRNGKey(seed)`` from that generation on.
FORK_MAY_CHANGE = (
    RESUME_MAY_CHANGE + tuple(f.name for f in dataclasses.fields(Hyperparams)) + ("seed",)
)


def checkpoint_interval(config: Config) -> int:
    """``checkpoint_every`` rounded up to a multiple of ``log_every`` (0: only at the end)."""
    n, k = config.checkpoint_every, config.log_every
    return 0 if n <= 0 else -(-n // k) * k


def check_resumable(
    stored: Config,
    config: Config,
    played: int | None = None,
    may_change: tuple[str, ...] = RESUME_MAY_CHANGE,
    action: str = "resume",
) -> None:
    """Refuse to continue a run under a different config.

    ``switch_intervals`` may change on resume for the generations not played yet: with
    ``played`` generations done, the two schedules must agree on generations ``0..played-1``
    (so a switch that has not happened can be moved, added or removed, e.g. to see a run that
    learned the task recover from a switch).

    Args:
        stored: the config the run was started with.
        config: the config asked for now.
        played: generations the run has already played (its latest checkpoint's generation);
            ``None`` if unknown, in which case the schedule may not change.
        may_change: the fields that may differ (:data:`FORK_MAY_CHANGE` for a fork).
        action: what is refused, for the message (``"resume"`` or ``"fork"``).

    Raises:
        ConfigError: naming every field that differs, other than ``may_change`` (and a
            schedule that changes only after ``played``).
    """
    a, b = stored.to_dict(), config.to_dict()
    diff = [k for k in a if k not in may_change and a[k] != b.get(k)]
    if "switch_intervals" in diff and played is not None:
        old, new = stored.switch_intervals, config.switch_intervals
        changed = np.flatnonzero(inverted_host(old, played) != inverted_host(new, played))
        if changed.size == 0:
            diff.remove("switch_intervals")
        else:
            raise ConfigError(
                "switch_intervals",
                [list(iv) for iv in new],
                f"a schedule that agrees with the run's {[list(iv) for iv in old]} on the "
                f"{played} generations already played (they differ at generation {changed[0]})",
            )
    if diff:
        what = ", ".join(f"{k} = {b.get(k)!r} (run: {a[k]!r})" for k in diff)
        allowed = ", ".join(may_change)
        being = {"resume": "resumed", "fork": "forked"}.get(action, action)
        raise ConfigError(
            diff[0],
            b.get(diff[0]),
            f"config mismatch with the run being {being}: {what}; only {allowed} (and "
            f"switch_intervals after the generations already played) may change on {action}"
            + (
                f"; to change {', '.join(forkable)}, fork the run (--fork DIR --out NEW)"
                if action == "resume" and (forkable := [k for k in diff if k in FORK_MAY_CHANGE])
                else ""
            ),
        )


def played_generations(run_dir: str | Path) -> int:
    """Generations a results folder has played: its latest checkpoint's (0 if none)."""
    path = Path(run_dir) / CHECKPOINT_DIR
    if not path.exists() or not any(path.iterdir()):
        return 0
    with Checkpoints(path, read_only=True) as ckpts:
        return ckpts.latest_step() or 0


def fork(
    source: str | Path,
    out_dir: str | Path,
    config: Config,
    generation: int | None = None,
    check_only: bool = False,
    stored: Config | None = None,
) -> int:
    """Start a new results folder from one checkpoint of another run, under a changed config.

    ``out_dir`` gets the source's checkpoint of ``generation``, its ``metrics.csv`` and
    ``lineage.bin`` (cut to the generations before it when the fork runs) and ``config`` as its
    ``config.json``, with ``_fork`` recording the source folder, the generation and each changed
    field as ``[source value, fork value]``. ``evolve(config, out_dir, resume=True)`` then
    continues it: the generations before ``generation`` are the source's, those after it are
    played under ``config``. Besides what a resume may change, a fork may change the traced
    hyperparameters (:data:`FORK_MAY_CHANGE`: the rate bounds, clips, ``noise_std``...), which
    the continued state takes from ``config``; the source folder is only read.

    Args:
        source: the results folder to fork.
        out_dir: the new results folder (must not exist, or be empty).
        config: the fork's config: the source's, with fields of :data:`FORK_MAY_CHANGE`
            changed (and ``switch_intervals`` after ``generation``).
        generation: the checkpoint to fork at; default the source's latest.
        check_only: only check all of that, and write nothing.
        stored: the source's config, when the caller has read it already.

    Returns:
        The generation forked at.

    Raises:
        ConfigError: a source without config or checkpoints, a generation with no checkpoint,
            a change to any other field, or an ``out_dir`` that is not empty.

    Example:
        >>> cfg = load_run_config("results/ll").replace(rate_min=0.3)  # doctest: +SKIP
        >>> fork("results/ll", "results/ll-floor", cfg, generation=5000)  # doctest: +SKIP
        >>> evolve(cfg, "results/ll-floor", resume=True)  # doctest: +SKIP
    """
    plan = plan_fork(source, out_dir, config, generation, stored)
    return plan.generation if check_only else write_fork(plan)


@dataclasses.dataclass(frozen=True)
class ForkPlan:
    """A fork checked and ready to write (:func:`plan_fork`, then :func:`write_fork`)."""

    source: Path
    out: Path
    generation: int
    stored: Config
    config: Config


def plan_fork(
    source: str | Path,
    out_dir: str | Path,
    config: Config,
    generation: int | None = None,
    stored: Config | None = None,
) -> ForkPlan:
    """Every check of :func:`fork`, reading the source once and writing nothing: the command
    line plans a fork before it builds anything, and writes it after.

    Raises:
        ConfigError: as :func:`fork`.
    """
    source, out = Path(source), Path(out_dir)
    stored = stored if stored is not None else load_run_config(source, "--fork")
    ckpt_dir = source / CHECKPOINT_DIR
    steps: list[int] = []
    if ckpt_dir.is_dir():
        with Checkpoints(ckpt_dir, read_only=True) as ckpts:
            steps = ckpts.steps()
            if steps:
                generation = _fork_step(ckpts, generation, warn=True)
    if not steps:
        raise ConfigError("--fork", str(source), "a results folder with a checkpoint")
    assert generation is not None  # set from the checkpoints above
    if generation not in steps:
        near = sorted(steps, key=lambda s: abs(s - generation))[:3]
        raise ConfigError(
            "--fork-at",
            generation,
            f"a generation with a checkpoint in {source} ({len(steps)} from {steps[0]} to "
            f"{steps[-1]}; nearest: {sorted(near)})",
        )
    if generation > config.generations:
        raise ConfigError(
            "generations", config.generations, f"must be >= the fork's generation ({generation})"
        )
    check_resumable(stored, config, generation, FORK_MAY_CHANGE, "fork")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError("--out", str(out), "a new or empty folder for the fork")
    return ForkPlan(source, out, generation, stored, config)


def write_fork(plan: ForkPlan) -> int:
    """Write a planned fork's folder (:func:`plan_fork`); returns the generation forked at."""
    source, out, generation, stored, config = (
        plan.source, plan.out, plan.generation, plan.stored, plan.config
    )  # fmt: skip
    ckpt_dir = source / CHECKPOINT_DIR
    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ckpt_dir / str(generation), out / CHECKPOINT_DIR / str(generation))
    for name in ("metrics.csv", lineage_lib.FILE):
        if (source / name).exists():
            shutil.copy2(source / name, out / name)
    a, b = stored.to_dict(), config.to_dict()
    changed = {k: [a[k], b[k]] for k in a if a[k] != b[k]}
    meta = {"source": str(source.absolute()), "generation": generation, "changed": changed}
    (out / "config.json").write_text(json.dumps({**b, "_fork": meta}, indent=2, default=str))
    return generation


def _fork_step(ckpts: Checkpoints, generation: int | None, warn: bool) -> int:
    """The checkpoint a fork starts from: ``generation`` if given (refused if damaged), else
    the newest whose files match their digest (with ``warn``, a line on stderr if newer ones
    do not)."""
    steps = ckpts.steps()
    if generation is not None:
        if generation in steps:
            try:
                ckpts.verify(generation)
            except DamagedCheckpoint as e:
                raise ConfigError(
                    "--fork-at", generation, f"an intact checkpoint of {steps}: {e.reason}"
                ) from None
        return generation
    damaged: list[DamagedCheckpoint] = []
    for step in reversed(steps):
        try:
            ckpts.verify(step)
        except DamagedCheckpoint as e:
            damaged.append(e)
            continue
        if damaged and warn:
            line = f"selfref-ghn: {describe_damaged(damaged)}; forking at checkpoint {step}"
            print(line, file=sys.stderr, flush=True)
        return step
    raise ConfigError(
        "--fork", str(ckpts.directory), f"no intact checkpoint: {describe_damaged(damaged)}"
    )


def restore_intact(ckpts: Checkpoints, template: Any, out: Path) -> tuple[Any, int]:
    """The newest checkpoint that restores (:meth:`Checkpoints.restore_intact`). Damaged ones
    newer than it are moved to ``out/damaged_checkpoints/``, so that the resumed run writes
    those generations again. In a multi-process run every process reads first, process 0 alone
    moves (and says so), then every process forgets the moved steps."""
    main = distributed.is_main_process()
    state, step = ckpts.restore_intact(template, warn=main)
    newer = [s for s in ckpts.steps() if s > step]
    if newer:
        distributed.sync("selfref_ghn.evolve: checkpoints read")
        if main:
            aside = out / DAMAGED_DIR
            aside.mkdir(exist_ok=True)
            for s in newer:
                dest, i = aside / str(s), 1
                while dest.exists():
                    dest, i = aside / f"{s}.{i}", i + 1
                shutil.move(str(ckpts.directory / str(s)), str(dest))
        distributed.sync("selfref_ghn.evolve: damaged checkpoints moved")
        ckpts.manager.reload()  # every process: a step it still listed would not be saved
    return state, step
