"""Running an evolution on the host: results folder, progress, metrics, checkpoints, resume
(DESIGN §4: the host wakes every N generations to log, checkpoint and draw progress).

The compiled chunk (:meth:`Evolution.compiled_chunk`) runs ``log_every`` generations per call;
between calls the host appends the new rows to ``metrics.csv`` and the new lineage records to
``lineage.bin`` (flushed, so an interrupted run keeps every finished generation), prints a
progress line and, every ``checkpoint_every`` generations (rounded up to a multiple of
``log_every``: checkpoints fall on chunk boundaries) and at the end, writes an orbax checkpoint.
A results folder holds:

* ``config.json``: the config, the library version and git hash, jax version and devices;
* ``metrics.csv``: one row per generation (:data:`selfref_ghn.run.metrics.CSV_COLUMNS`, then the
  runaway monitor's :data:`selfref_ghn.evolution.monitor.COLUMNS`);
* ``lineage.bin``: per generation, each survivor's member index, fitness and its parent's
  mutation rate (:mod:`selfref_ghn.run.lineage`); ``lineage.npy``: ``(generations, P)`` int32, the
  member index each survivor came from, written at the end;
* ``checkpoints/<generation>/``: the last ``keep_checkpoints`` states (:mod:`.checkpoint`);
* ``final_state.npz``: the final population (flat parameters, fitness, keys, statistics);
* ``summary.json``: compile time, steady generations/s, peak memory, recovery after switches,
  checkpoint count, time and size, and what the monitor reported;
* ``fitness.png``: return, mutation rate and diversity over generations.

``evolve(..., resume=True)`` continues a results folder from its latest checkpoint: rows and
lineage records past the checkpoint's generation (written after it, before a crash) are cut,
so every generation appears exactly once, and since every random key comes from the state the
continued run is identical to an uninterrupted one (docs/reliability.md). :func:`fork` starts
a new folder from any checkpoint of a run, under a config whose traced hyperparameters may
differ (a rate floor from generation G on, say); the source folder is only read.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import jax
import jax.numpy as jnp
import numpy as np

import selfref_ghn
from selfref_ghn.config import Config, ConfigError, Hyperparams
from selfref_ghn.evolution import memory
from selfref_ghn.evolution import monitor as monitor_lib
from selfref_ghn.evolution import sharding as sharding_lib
from selfref_ghn.evolution.generation import Evolution, EvoState
from selfref_ghn.evolution.schedule import inverted_host
from selfref_ghn.run import distributed
from selfref_ghn.run import lineage as lineage_lib
from selfref_ghn.run.checkpoint import Checkpoints, DamagedCheckpoint, describe_damaged
from selfref_ghn.run.metrics import CSV_COLUMNS, csv_rows, parse_row, recovery
from selfref_ghn.run.plotting import plot_run

# metrics.csv columns: the step's, then the runaway monitor's flags.
COLUMNS = CSV_COLUMNS + monitor_lib.COLUMNS
CHECKPOINT_DIR = "checkpoints"
DAMAGED_DIR = "damaged_checkpoints"  # where a resume moves checkpoints it could not restore
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


def git_hash() -> str:
    """The library's git commit, or ``'unknown'`` outside a checkout."""
    try:
        root = Path(selfref_ghn.__file__).resolve().parent.parent
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_info() -> dict[str, Any]:
    """Provenance written beside every run."""
    return {
        "library_version": selfref_ghn.__version__,
        "git_hash": git_hash(),
        "jax_version": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "processes": jax.process_count(),  # a run resumes only on as many (distributed.py)
        "python": sys.version.split()[0],
        # compiler flags change float rounding (e.g. --fast-cpu-loops, selfref_ghn.run.xla_cpu)
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def peak_memory_mb() -> float:
    """Peak resident memory of this process, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _progress_line(
    row: dict[str, float], total: int, gens_per_s: float, flags: list[str] = ()
) -> str:
    flag = " | inverted" if row["inverted"] else ""
    warn = f" | ! {', '.join(flags)}" if flags else ""
    return (
        f"gen {int(row['generation']) + 1:>5d}/{total} | best {row['best_fitness']:8.2f} "
        f"mean {row['mean_fitness']:8.2f} | rate {row['mutation_rate_mean']:.3f} "
        f"[{row['mutation_rate_min']:.3f}, {row['mutation_rate_max']:.3f}] | "
        f"div {row['diversity']:.4f} | {gens_per_s:6.1f} gen/s{flag}{warn}"
    )


def method_label(config: Config) -> str:
    """``"SR-GHN"`` (with its mutation mode when not ``self``) or the evosax algorithm's name."""
    if config.method != "srghn":
        return config.method
    return "SR-GHN" if config.mutation_mode == "self" else f"SR-GHN ({config.mutation_mode})"


def checkpoint_interval(config: Config) -> int:
    """``checkpoint_every`` rounded up to a multiple of ``log_every`` (0: only at the end)."""
    n, k = config.checkpoint_every, config.log_every
    return 0 if n <= 0 else -(-n // k) * k


def load_run_config(run_dir: str | Path, option: str = "--resume") -> Config:
    """The :class:`Config` a results folder was run with (its ``config.json``).

    Raises:
        ConfigError: if the folder has no readable ``config.json`` or it is not a valid config.
    """
    path = Path(run_dir) / "config.json"
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(
            option, str(run_dir), f"a results folder with a config.json ({e})"
        ) from None
    if not isinstance(stored, dict):
        raise ConfigError(option, str(run_dir), "config.json must hold a JSON object")
    fields = {k: v for k, v in stored.items() if not k.startswith("_")}
    fields.setdefault("key_version", 1)  # written before key versions existed
    return Config.from_dict(fields)


def _stored_json(run_dir: Path) -> dict[str, Any]:
    try:
        stored = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return stored if isinstance(stored, dict) else {}


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
    source, out = Path(source), Path(out_dir)
    stored = load_run_config(source, "--fork")
    ckpt_dir = source / CHECKPOINT_DIR
    steps: list[int] = []
    if ckpt_dir.is_dir():
        with Checkpoints(ckpt_dir, read_only=True) as ckpts:
            steps = ckpts.steps()
            if steps:
                generation = _fork_step(ckpts, generation, warn=not check_only)
    if not steps:
        raise ConfigError("--fork", str(source), "a results folder with a checkpoint")
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
    if check_only:
        return generation
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


def _restore_intact(ckpts: Checkpoints, template: Any, out: Path) -> tuple[Any, int]:
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


def metric_value(x: Any) -> int | float:
    """A metric as written to ``metrics.csv``: integers and flags as ``int``, else ``float``.

    Example:
        >>> metric_value(np.int32(3)), metric_value(np.bool_(True)), metric_value(np.float32(2))
        (3, 1, 2.0)
    """
    x = np.asarray(x)
    return int(x) if x.dtype == bool or np.issubdtype(x.dtype, np.integer) else float(x)


def _read_kept_rows(path: Path, generation: int, rewrite: bool = True) -> list[dict[str, float]]:
    """Rows of generations ``< generation`` from ``metrics.csv``; with ``rewrite``, the file is
    rewritten with just those (atomically), so appending continues it."""
    rows: list[dict[str, float]] = []
    texts: list[dict[str, str]] = []  # the kept rows exactly as written, rewritten verbatim
    bad_line = None
    if generation > 0 and path.exists():
        # a byte that is not UTF-8 fails its row, not the whole file
        with path.open(newline="", errors="replace") as f:
            header, lines = csv_rows(f)
            missing = [k for k in CSV_COLUMNS if k not in header]
            if missing:
                raise ConfigError(
                    "metrics.csv",
                    str(path),
                    f"a header with the columns {list(CSV_COLUMNS)} (missing: {missing})",
                )
            absent = [k for k in COLUMNS if k not in header]  # older files: no monitor flags
            for line, raw in lines:
                row = (
                    None
                    if raw is None
                    else parse_row(raw, [k for k in COLUMNS if k not in absent])
                )
                if row is None or int(row["generation"]) != len(rows):
                    bad_line = line  # cut short by a crash, or damaged: nothing after is kept
                    break
                if row["generation"] >= generation:
                    break
                raw.update(dict.fromkeys(absent, "0"))
                rows.append({**row, **dict.fromkeys(absent, 0.0)})
                texts.append(raw)
    if len(rows) != generation:
        where = f"; line {bad_line} is cut short or malformed" if bad_line else ""
        raise ConfigError(
            "metrics.csv",
            str(path),
            f"must hold generations 0..{generation - 1} (the checkpoint's), found "
            f"{len(rows)}{where}",
        )
    if not rewrite:
        return rows
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(texts)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return rows


def evolve(
    config: Config,
    out_dir: str | Path | None = None,
    evo: Evolution | None = None,
    state: EvoState | None = None,
    progress: bool | TextIO = True,
    callback: Callable[[EvoState, list[dict[str, float]]], None] | None = None,
    resume: bool = False,
) -> tuple[EvoState, dict[str, np.ndarray], dict[str, Any]]:
    """Run ``config.generations`` generations, logging every ``config.log_every``.

    Args:
        config: the run configuration.
        out_dir: results folder (created); ``None`` writes nothing (and checkpoints nothing).
        evo: a prebuilt :class:`Evolution` (custom env/policy); default from ``config``.
        state: a state to continue from; default ``evo.init()`` (or the latest checkpoint).
            It is copied: the compiled loop donates (reuses) only its own buffers, so the
            caller's ``state`` stays valid and unchanged.
        progress: print a progress line per chunk (``True``: to stdout; or a stream).
        callback: called after each chunk with the state and that chunk's metric rows; the
            state is a copy the run does not touch again, safe to keep.
        resume: continue ``out_dir`` from its latest checkpoint (from generation 0 if it has
            none). Its ``config.json`` must match ``config`` except for
            :data:`RESUME_MAY_CHANGE`.

    Returns:
        ``(final_state, metrics, summary)``: metric columns as arrays (every generation of the
        run, including those before a resume), and the summary dict; ``summary["monitor_stop"]``
        says what stopped the run, if the monitor did.

    Raises:
        ConfigError: a config mismatch on resume, or a fresh run into a folder that already
            holds checkpoints.

    Example:
        >>> cfg = Config(population_size=8, generations=5)
        >>> state, metrics, summary = evolve(cfg, "results/demo")  # doctest: +SKIP
    """
    evo = evo or Evolution.create(config)
    config = evo.config
    # the caller's state is copied: the compiled chunk donates the state it is given
    state = None if state is None else jax.tree.map(jnp.copy, state)
    single_process = jax.process_count() == 1
    # multi-host (selfref_ghn.run.distributed): every process reads the folder and writes its own
    # shards of each checkpoint; only process 0 writes the host-side files
    main = distributed.is_main_process()
    if not main:
        progress = False
    stream = sys.stdout if progress is True else (progress or None)
    out = Path(out_dir) if out_dir is not None else None
    P = config.population_size
    rows: list[dict[str, float]] = []
    ckpts: Checkpoints | None = None
    resumed_from = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        if resume:
            distributed.check_processes(out, distributed.recorded_processes(_stored_json(out)))
            check_resumable(load_run_config(out), config, played_generations(out))
        elif (out / CHECKPOINT_DIR).exists() and any((out / CHECKPOINT_DIR).iterdir()):
            raise ConfigError(
                "--out",
                str(out),
                "holds checkpoints of an earlier run: resume it (--resume) or choose another "
                "folder",
            )
        ckpts = Checkpoints(out / CHECKPOINT_DIR, config.keep_checkpoints)
        kept = {}  # a fork's record survives its resumes
        if resume and (out / "config.json").exists():
            kept = {k: v for k, v in _stored_json(out).items() if k == "_fork"}
        if resume and ckpts.latest_step() is not None:
            resumed_from = ckpts.latest_step()
            if resumed_from > config.generations:
                raise ConfigError(
                    "generations",
                    config.generations,
                    f"must be >= the latest checkpoint's generation ({resumed_from})",
                )
            if single_process:
                template = jax.eval_shape(evo.init) if state is None else state
            else:  # each process reads its own shards, straight into the run's shardings
                template = distributed.restore_target(
                    evo.init if state is None else lambda: state, getattr(evo, "mesh", None)
                )
            restored, resumed_from = _restore_intact(ckpts, template, out)
            state = restored.replace(monitor=monitor_lib.release(restored.monitor))
            if hasattr(state, "hparams"):  # equal to the checkpoint's, except in a fork
                state = state.replace(hparams=Hyperparams.from_config(config))
            fork_record = kept.get("_fork", {})
            if "seed" in fork_record.get("changed", {}) and int(state.generation) == (
                fork_record.get("generation")
            ):  # a fork with a new seed: its draws from the fork's generation on
                state = state.replace(key=jax.random.PRNGKey(config.seed))
        distributed.sync("selfref_ghn.evolve: folder read")  # before process 0 rewrites it
        if main:
            info = {**run_info(), "resumed_from": resumed_from}
            (out / "config.json").write_text(
                json.dumps({**config.to_dict(), **kept, "_run": info}, indent=2, default=str)
            )
    state = evo.init() if state is None else state
    if hasattr(evo, "distribute"):  # the population split over the run's devices
        state = evo.distribute(state)
    start_gen = int(state.generation)
    if out is not None:  # every process reads the rows kept; process 0 cuts the files to them
        rows = _read_kept_rows(out / "metrics.csv", start_gen if resume else 0, rewrite=main)
        if main:
            lineage_lib.truncate(
                out / lineage_lib.FILE, P, start_gen if resume else 0, config.num_children
            )
    steps_total = int(rows[-1]["env_steps"]) if rows else 0
    wall_offset = rows[-1]["wall_time"] if rows else 0.0

    chunk = config.log_every
    if isinstance(evo, Evolution):
        memory.check(evo)  # a population that cannot fit: a ConfigError before compiling
    t0 = time.perf_counter()
    compiled = evo.compiled_chunk(chunk).lower(state, config.generations).compile()
    compile_time = time.perf_counter() - t0
    if stream:
        print(
            f"compiled in {compile_time:.1f} s: {config.env_id}, P={config.population_size}, "
            f"C={config.num_children}, {evo.describe()}"
            + (f"; resumed at generation {resumed_from}" if resumed_from is not None else ""),
            file=stream,
            flush=True,
        )

    csv_file = (out / "metrics.csv").open("a", newline="") if out is not None and main else None
    writer = csv.DictWriter(csv_file, fieldnames=COLUMNS) if csv_file else None
    every = checkpoint_interval(config)
    last_saved = start_gen
    ckpt_times: list[float] = []
    warnings: dict[str, int] = {}
    chunk_times: list[tuple[float, int]] = []
    start = time.perf_counter()

    def checkpoint() -> None:
        if ckpts is None or int(state.generation) in ckpts.steps():
            return
        if csv_file:
            csv_file.flush()
            os.fsync(csv_file.fileno())
        t = time.perf_counter()
        ckpts.save(sharding_lib.gather(state) if single_process else state)
        ckpt_times.append(time.perf_counter() - t)

    try:
        while int(state.generation) < config.generations and not int(state.monitor.stopped):
            t_chunk = time.perf_counter()
            state, m = compiled(state, config.generations)
            m = jax.device_get(m)
            done = np.nonzero(m["generation"] >= 0)[0]
            chunk_times.append((time.perf_counter() - t_chunk, len(done)))
            new_rows = []
            for i in done:
                steps_total += int(m["live_steps"][i])
                row = {k: metric_value(m[k][i]) for k in COLUMNS if k in m}
                row["env_steps"] = steps_total
                row["wall_time"] = wall_offset + time.perf_counter() - start
                new_rows.append(row)
            rows.extend(new_rows)
            flags = [n for n in monitor_lib.FLAGS if any(r[f"monitor_{n}"] for r in new_rows)]
            for r in new_rows:
                for n in monitor_lib.FLAGS:
                    if r[f"monitor_{n}"]:
                        warnings.setdefault(n, int(r["generation"]))
            if writer:
                writer.writerows(new_rows)
                csv_file.flush()
                lineage_lib.append(out / lineage_lib.FILE, lineage_lib.records(m, done, P))
            gen = int(state.generation)
            if ckpts and every and gen // every > last_saved // every:
                checkpoint()
                last_saved = gen
            if stream and new_rows:
                dt, n = chunk_times[-1]
                print(
                    _progress_line(new_rows[-1], config.generations, n / dt, flags),
                    file=stream,
                    flush=True,
                )
            if callback:  # a copy: the next chunk donates ``state``
                callback(jax.tree.map(jnp.copy, state), new_rows)
        if ckpts:
            checkpoint()
    finally:
        if csv_file:
            csv_file.close()

    metrics = {k: np.array([r[k] for r in rows]) for k in COLUMNS} if rows else {}
    steady = chunk_times[1:] or chunk_times
    gens_per_s = sum(n for _, n in steady) / max(sum(t for t, _ in steady), 1e-9)
    switch_points = [p for iv in config.switch_intervals for p in iv if p < config.generations]
    stop = None
    if int(state.monitor.stopped):
        g = int(state.monitor.stop_generation)
        names = monitor_lib.flag_names(int(state.monitor.stop_flags))
        row = next(r for r in rows if int(r["generation"]) == g)
        stop = {
            "generation": g,
            "flags": names,
            "message": f"monitor stopped the run at generation {g}: "
            + "; ".join(f"{n}: {monitor_lib.explain(n, row, config)}" for n in names),
        }
    summary = {
        "compile_time_s": compile_time,
        "steady_generations_per_s": gens_per_s,
        "wall_time_s": time.perf_counter() - start,
        "peak_memory_mb": peak_memory_mb(),
        "generations": len(rows),
        "resumed_from": resumed_from,
        "best_fitness_final": float(metrics["best_fitness"][-1]) if rows else None,
        "recovery_best": recovery(metrics["best_fitness"], switch_points) if rows else [],
        "recovery_mean": recovery(metrics["mean_fitness"], switch_points) if rows else [],
        "checkpoint_every": every,
        "checkpoints_written": len(ckpt_times),
        "checkpoint_time_s": float(sum(ckpt_times)),
        "checkpoint_size_bytes": ckpts.size_bytes() if ckpts else 0,
        "monitor_warnings": warnings,
        "monitor_stop": stop,
    }
    final_host = sharding_lib.gather(state)  # every process: a collective in multi-host runs
    if out is not None and main:
        recs = lineage_lib.read(out / lineage_lib.FILE, P)
        np.save(out / "lineage.npy", recs["selected"] if len(recs) else np.zeros((0, P), np.int32))
        save_state(final_host, out / "final_state.npz")
        write_summary(out / "summary.json", summary)
        if rows:
            plot_run(
                metrics,
                out / "fitness.png",
                config.switch_intervals,
                title=f"{method_label(config)} on {config.env_id} (seed {config.seed})",
            )
    if ckpts:
        ckpts.close()
    if stop and stream:
        print(stop["message"], file=stream, flush=True)
    return state, metrics, summary


def save_state(state: EvoState, path: str | Path) -> None:
    """Save a state's leaves to ``.npz`` keyed by their pytree paths (atomically: a write cut
    short leaves the file as it was)."""
    flat = jax.tree_util.tree_flatten_with_path(jax.device_get(state))[0]
    arrays = {jax.tree_util.keystr(p).strip("."): np.asarray(v) for p, v in flat}
    tmp = Path(str(path) + ".tmp")
    with tmp.open("wb") as f:
        np.savez_compressed(f, **arrays)
    os.replace(tmp, path)


def load_state(evo: Evolution, path: str | Path) -> EvoState:
    """Load a state saved by :func:`save_state` into ``evo``'s state structure.

    The structure, shapes and dtypes come from ``jax.eval_shape(evo.init)`` (no population is
    computed); every entry of the file must match them.

    Raises:
        ConfigError: naming the file, when it cannot be read, lacks an entry of the state, or
            holds one of another shape or dtype (a file of another run, or a damaged one).
    """
    path = Path(path)
    paths, treedef = jax.tree_util.tree_flatten_with_path(jax.eval_shape(evo.init))
    leaves = []
    try:
        with np.load(path, allow_pickle=False) as data:
            for p, want in paths:
                name = jax.tree_util.keystr(p).strip(".")
                if name not in data.files:
                    raise ConfigError(path.name, str(path), f"no entry {name!r}: {_NOT_THIS_RUN}")
                x = data[name]
                if x.shape != want.shape or x.dtype != want.dtype:
                    raise ConfigError(
                        path.name,
                        str(path),
                        f"entry {name!r} is {x.dtype}{list(x.shape)}, this run's is "
                        f"{want.dtype}{list(want.shape)}: {_NOT_THIS_RUN}",
                    )
                leaves.append(x)
    except ConfigError:
        raise
    except Exception as e:  # a damaged zip raises many kinds (BadZipFile, zlib.error, EOFError)
        raise ConfigError(
            path.name, str(path), f"a readable state file ({type(e).__name__}: {e})"
        ) from None
    return jax.tree_util.tree_unflatten(treedef, [jax.numpy.asarray(x) for x in leaves])


_NOT_THIS_RUN = "not a state of this run's config (damaged, or from another run)"


def _json_ready(x: Any) -> Any:
    """``x`` with NaN and infinities as ``None`` (strict JSON has no literal for them)."""
    if isinstance(x, dict):
        return {k: _json_ready(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_ready(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def write_summary(path: str | Path, summary: dict[str, Any]) -> None:
    """Write ``summary.json`` as strict JSON: a value that is not a finite number (a recovery
    that was never reached, say) is ``null``. Atomic: a write cut short leaves the file as it
    was."""
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(_json_ready(summary), indent=2, allow_nan=False))
    os.replace(tmp, path)


def read_summary(path: str | Path) -> dict[str, Any]:
    """A run's ``summary.json``, with ``null`` recovery figures read back as NaN (files written
    before ``null`` was used hold ``NaN`` literals, which are read as NaN too).

    Raises:
        ConfigError: naming the file, when it is not a JSON object.
    """
    path = Path(path)
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(path.name, str(path), f"a readable JSON file ({e})") from None
    if not isinstance(summary, dict):
        raise ConfigError(path.name, str(path), "a JSON object")
    for key in ("recovery_best", "recovery_mean"):
        rows = summary.get(key)
        if isinstance(rows, list):
            summary[key] = [
                {k: float("nan") if v is None else v for k, v in r.items()}
                if isinstance(r, dict)
                else r
                for r in rows
            ]
    return summary
