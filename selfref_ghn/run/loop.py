"""The one host loop of a run (DESIGN §4: the host wakes every N generations to log, checkpoint
and draw progress).

The compiled chunk (:meth:`Evolution.compiled_chunk`) runs ``log_every`` generations per call;
between calls the host appends the new rows to ``metrics.csv`` and the new lineage records to
``lineage.bin`` (flushed, so an interrupted run keeps every finished generation), prints a
progress line and, every ``checkpoint_every`` generations (rounded up to a multiple of
``log_every``: checkpoints fall on chunk boundaries) and at the end, writes an orbax checkpoint.
What the folder holds is :mod:`selfref_ghn.run.folder`; resume and fork are
:mod:`selfref_ghn.run.resume`.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import jax
import jax.numpy as jnp
import numpy as np

from selfref_ghn.config import Config, ConfigError, Hyperparams
from selfref_ghn.evolution import memory
from selfref_ghn.evolution import monitor as monitor_lib
from selfref_ghn.evolution import sharding as sharding_lib
from selfref_ghn.evolution.generation import Evolution, EvoState
from selfref_ghn.run import distributed, tracking
from selfref_ghn.run import lineage as lineage_lib
from selfref_ghn.run.checkpoint import Checkpoints
from selfref_ghn.run.folder import (
    CHECKPOINT_DIR,
    COLUMNS,
    StoredRun,
    method_label,
    metric_value,
    peak_memory_mb,
    read_kept_rows,
    read_run,
    run_info,
    save_state,
    write_summary,
)
from selfref_ghn.run.metrics import recovery
from selfref_ghn.run.plotting import plot_run
from selfref_ghn.run.resume import (
    check_resumable,
    checkpoint_interval,
    restore_intact,
)


def _progress_line(
    row: dict[str, float], total: int, gens_per_s: float, flags: Sequence[str] = ()
) -> str:
    flag = " | inverted" if row["inverted"] else ""
    warn = f" | ! {', '.join(flags)}" if flags else ""
    return (
        f"gen {int(row['generation']) + 1:>5d}/{total} | best {row['best_fitness']:8.2f} "
        f"mean {row['mean_fitness']:8.2f} | rate {row['mutation_rate_mean']:.3f} "
        f"[{row['mutation_rate_min']:.3f}, {row['mutation_rate_max']:.3f}] | "
        f"div {row['diversity']:.4f} | {gens_per_s:6.1f} gen/s{flag}{warn}"
    )


class RunFiles:
    """One run's rows on the host and, with a folder, its ``metrics.csv`` and ``lineage.bin``.

    Args:
        out: the run's folder (``metrics.csv`` is appended to, or created with its header);
            ``None``: rows are kept in memory only.
        population: ``P``, the survivors per generation (lineage records).
        rows: the rows already played (a resume's kept rows), continued by :meth:`add`.
        tracker: also sends each chunk's new rows to W&B or TensorBoard
            (:mod:`selfref_ghn.run.tracking`).
    """

    def __init__(
        self, out: Path | None, population: int, rows: list[dict] | None = None, tracker=None
    ):
        self.out, self.population, self.tracker = out, population, tracker
        self.rows: list[dict[str, float]] = rows if rows is not None else []
        self.steps = int(self.rows[-1]["env_steps"]) if self.rows else 0
        self._file = self._writer = None
        if out is not None:
            path = out / "metrics.csv"
            fresh = not path.exists() or path.stat().st_size == 0
            self._file = path.open("a", newline="")
            self._writer = csv.DictWriter(self._file, fieldnames=COLUMNS)
            if fresh:
                self._writer.writeheader()

    def add(self, m: dict[str, np.ndarray], wall_time: float) -> list[dict[str, float]]:
        """The rows of the generations a chunk played (``m``: its metrics on the host, one
        entry per scan step, ``generation = -1`` where skipped), written and flushed."""
        done = np.nonzero(m["generation"] >= 0)[0]
        new = []
        for i in done:
            self.steps += int(m["live_steps"][i])
            row = {k: metric_value(m[k][i]) for k in COLUMNS if k in m}
            row["env_steps"] = self.steps
            row["wall_time"] = wall_time
            new.append(row)
        self.rows.extend(new)
        if self._writer is not None and self._file is not None and self.out is not None:
            self._writer.writerows(new)
            self._file.flush()
            lineage_lib.append(
                self.out / lineage_lib.FILE, lineage_lib.records(m, done, self.population)
            )
        if self.tracker is not None:
            self.tracker.log(new)
        return new

    def sync(self) -> None:
        """Rows written so far reach the disk (before a checkpoint that covers them)."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def host_loop(
    compiled: Callable[[Any, int], tuple[Any, dict]],
    state: Any,
    stop: int,
    length: int,
    runs: list[RunFiles],
    *,
    start_generation: int,
    stopped: bool = False,
    every: int = 0,
    save: Callable[[Any], None] | None = None,
    on_chunk: Callable[[Any, list[list[dict]], float, int], None] | None = None,
    wants_state: bool = False,
    overlap: bool = True,
    wall_start: float | None = None,
) -> tuple[Any, list[tuple[float, int]]]:
    """The host side of every run (``evolve``, the sweep's batched runs, and through them
    compare): call the compiled chunk until generation ``stop``, turning each chunk's metrics
    into rows (:class:`RunFiles`), checkpointing every ``every`` generations.

    With ``overlap``, chunk ``k + 1`` is dispatched before chunk ``k``'s metrics are read and
    written, so the device computes while the host writes CSV, lineage and progress. The chunk
    donates its state, so where chunk ``k``'s state is still needed (a checkpoint falls in it,
    or ``wants_state``) a copy is queued before the next dispatch. Whether to dispatch is
    decided on the host without waiting: the generation the dispatched chunks reach is known
    (``min(start + k * length, stop)``), and a run whose rows say ``monitor_stop`` (or that
    played fewer generations than that) was stopped by the runaway monitor. A chunk dispatched
    past a stop plays nothing (skipped generations leave the state unchanged), so the files are
    identical to the one-chunk-at-a-time loop's (``overlap=False``).

    Args:
        compiled: ``(state, stop) -> (state, metrics)``, the state donated; for a batch of runs
            every state leaf and metric has a leading run axis (one entry of ``runs`` each).
        state: the state to continue (generation ``start_generation``).
        stop: the generation to stop at.
        length: generations per chunk.
        runs: one :class:`RunFiles` per run.
        start_generation: the state's generation (every run of a batch starts at the same one).
        stopped: the state's monitor has already stopped it (nothing is dispatched).
        every: checkpoint when a chunk ends past a multiple of ``every`` (0: never here).
        save: called with the state after such a chunk.
        on_chunk: called after each chunk with its state (a copy nobody else holds, or ``None``
            unless ``wants_state``), each run's new rows, the seconds since the previous chunk
            ended and the generations played.
        wants_state: ``on_chunk`` needs each chunk's state.
        overlap: keep one chunk running while the host handles the previous one.
        wall_start: the ``perf_counter`` time that ``wall_time`` counts from.

    Returns:
        ``(state, chunk_times)``: the final state and ``(seconds, generations)`` per chunk.
    """
    batched = np.ndim(state.generation) == 1  # a batch of runs: a leading run axis
    wall_start = time.perf_counter() if wall_start is None else wall_start
    live = [not stopped] * len(runs)
    reached = start_generation  # the generation every live run reaches once dispatched work ends
    last_saved = start_generation
    queue: list[tuple[dict, int, int, Any]] = []
    chunk_times: list[tuple[float, int]] = []
    t_last = time.perf_counter()

    def handle(item: tuple[dict, int, int, Any], current: Any) -> None:
        nonlocal t_last, last_saved
        m, before, after, snapshot = item
        m = jax.device_get(m)
        if not any(live):
            return  # dispatched before the host saw the monitor stop: it played nothing
        now = time.perf_counter()
        new_rows = []
        for i, run in enumerate(runs):
            mi = {k: v[i] for k, v in m.items()} if batched else m
            new = run.add(mi, now - wall_start)
            if len(new) < after - before or any(r.get("monitor_stop") for r in new):
                live[i] = False  # the monitor stopped this run (it plays nothing more)
            new_rows.append(new)
        played = max(len(r) for r in new_rows)
        chunk_times.append((now - t_last, played))
        t_last = now
        s = snapshot if snapshot is not None else current
        gen = before + played
        if save is not None and every and gen // every > last_saved // every:
            save(s)
            last_saved = gen
        if on_chunk is not None:
            state_out = None
            if wants_state:
                state_out = snapshot if snapshot is not None else jax.tree.map(jnp.copy, s)
            on_chunk(state_out, new_rows, chunk_times[-1][0], played)

    while reached < stop and any(live):
        state, m = compiled(state, stop)
        before, reached = reached, min(reached + length, stop)
        snapshot = None
        crosses = every and reached // every > before // every
        if overlap and (wants_state or (save is not None and crosses)):
            snapshot = jax.tree.map(jnp.copy, state)  # queued before the next chunk donates it
        queue.append((m, before, reached, snapshot))
        if overlap and len(queue) < 2:
            continue  # dispatch the next chunk, then write this one's rows while it runs
        handle(queue.pop(0), state)
    while queue:  # the last chunk (or one dispatched past a monitor stop: it plays nothing)
        handle(queue.pop(0), state)
    return state, chunk_times


def evolve(
    config: Config,
    out_dir: str | Path | None = None,
    evo: Evolution | None = None,
    state: EvoState | None = None,
    progress: bool | TextIO = True,
    callback: Callable[[EvoState, list[dict[str, float]]], None] | None = None,
    resume: bool | StoredRun = False,
    overlap: bool = True,
    loggers: str | list[str] | tuple[str, ...] | None = None,
    tracking_root: str | Path | None = None,
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
            :data:`RESUME_MAY_CHANGE`. A :class:`~selfref_ghn.run.folder.StoredRun` the
            caller already read (:func:`~selfref_ghn.run.folder.read_run`) is used as it is.
        overlap: dispatch each chunk before writing the previous one's rows, so the device
            works while the host writes (:func:`host_loop`); ``False``: one chunk at a time.
            The files are the same either way (``tests/test_loop.py``).
        loggers: where the rows go besides ``metrics.csv``: ``"wandb"``, ``"tensorboard"``
            or both (:mod:`selfref_ghn.run.tracking`); ``None``: a resume keeps those it had.
        tracking_root: the folder of the comparison or sweep this run belongs to (its W&B
            group and TensorBoard log dir).

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
    loggers = tracking.resolve(loggers, out if resume else None)  # a missing extra: no compile
    P = config.population_size
    rows: list[dict[str, float]] = []
    ckpts: Checkpoints | None = None
    resumed_from = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        record = None
        if resume:  # config.json read once, the checkpoints opened once
            record = resume if isinstance(resume, StoredRun) else read_run(out)
            distributed.check_processes(out, distributed.recorded_processes(record.stored))
        elif (out / CHECKPOINT_DIR).exists() and any((out / CHECKPOINT_DIR).iterdir()):
            raise ConfigError(
                "--out",
                str(out),
                "holds checkpoints of an earlier run: resume it (--resume) or choose another "
                "folder",
            )
        ckpts = Checkpoints(out / CHECKPOINT_DIR, config.keep_checkpoints)
        kept = {}  # a fork's record survives its resumes
        if record is not None:
            check_resumable(record.config, config, ckpts.latest_step() or 0)
            kept = {k: v for k, v in record.stored.items() if k == "_fork"}
        if resume and (latest := ckpts.latest_step()) is not None:
            resumed_from = latest
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
            restored, resumed_from = restore_intact(ckpts, template, out)
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
        rows = read_kept_rows(out / "metrics.csv", start_gen if resume else 0, rewrite=main)
        if main:
            lineage_lib.truncate(
                out / lineage_lib.FILE, P, start_gen if resume else 0, config.num_children
            )
    wall_offset = rows[-1]["wall_time"] if rows else 0.0
    tracker = tracking.open_run(
        loggers, out if main else None, config, rows, resume=bool(resume), root=tracking_root
    )

    chunk = config.log_every
    if isinstance(evo, Evolution):
        memory.check(evo)  # a population that cannot fit: a ConfigError before compiling
    sizes = evo.sizes() if hasattr(evo, "sizes") else {}
    t0 = time.perf_counter()
    compiled = evo.compiled_chunk(chunk).lower(state, config.generations).compile()
    compile_time = time.perf_counter() - t0
    if stream:
        print(
            f"compiled in {compile_time:.1f} s: {config.env_id}, P={config.population_size}, "
            f"C={config.num_children}, {evo.describe()}"
            + "".join(
                f", {v} {k.replace('_', ' ')}"
                for k, v in sizes.items()
                if k != "ghn_params" and v is not None
            )
            + (f"; resumed at generation {resumed_from}" if resumed_from is not None else ""),
            file=stream,
            flush=True,
        )

    files = RunFiles(out if main else None, P, rows, tracker)
    every = checkpoint_interval(config)
    ckpt_times: list[float] = []
    warnings: dict[str, int] = {}
    start = time.perf_counter()

    def save(s: EvoState) -> None:
        if ckpts is None or int(s.generation) in ckpts.steps():
            return
        files.sync()  # the rows a checkpoint covers are on disk before it
        t = time.perf_counter()
        ckpts.save(sharding_lib.gather(s) if single_process else s)
        ckpt_times.append(time.perf_counter() - t)

    def on_chunk(s: EvoState | None, new_rows: list[list[dict]], dt: float, n: int) -> None:
        new = new_rows[0]
        flags = [k for k in monitor_lib.FLAGS if any(r[f"monitor_{k}"] for r in new)]
        for r in new:
            for k in monitor_lib.FLAGS:
                if r[f"monitor_{k}"]:
                    warnings.setdefault(k, int(r["generation"]))
        if stream and new:
            print(
                _progress_line(new[-1], config.generations, n / max(dt, 1e-9), flags),
                file=stream,
                flush=True,
            )
        if callback is not None and s is not None:  # a copy the run does not touch again
            callback(s, new)

    try:
        state, chunk_times = host_loop(
            compiled,
            state,
            config.generations,
            chunk,
            [files],
            start_generation=start_gen,
            stopped=bool(int(state.monitor.stopped)),
            every=every if ckpts else 0,
            save=save,
            on_chunk=on_chunk,
            wants_state=callback is not None,
            overlap=overlap,
            wall_start=start - wall_offset,
        )
        save(state)
    except BaseException:
        tracking.close(tracker, failed=True)
        raise
    finally:
        files.close()

    metrics = {k: np.array([r[k] for r in rows]) for k in COLUMNS} if rows else {}
    steady = chunk_times[1:] or chunk_times
    gens_per_s = sum(n for _, n in steady) / max(sum(t for t, _ in steady), 1e-9)
    switch_points = [p for iv in config.switch_windows for p in iv if p < config.generations]
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
        **sizes,
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
                config.switch_windows,
                title=f"{method_label(config)} on {config.env_id} (seed {config.seed})",
            )
        tracking.close(tracker, [out / "fitness.png"])
    if ckpts:
        ckpts.close()
    if stop and stream:
        print(stop["message"], file=stream, flush=True)
    return state, metrics, summary
