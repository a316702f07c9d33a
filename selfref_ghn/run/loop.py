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
from collections.abc import Callable
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
from selfref_ghn.run import distributed
from selfref_ghn.run import lineage as lineage_lib
from selfref_ghn.run.checkpoint import Checkpoints
from selfref_ghn.run.folder import (
    CHECKPOINT_DIR,
    COLUMNS,
    load_run_config,
    method_label,
    metric_value,
    peak_memory_mb,
    read_kept_rows,
    run_info,
    save_state,
    stored_json,
    write_summary,
)
from selfref_ghn.run.metrics import recovery
from selfref_ghn.run.plotting import plot_run
from selfref_ghn.run.resume import (
    check_resumable,
    checkpoint_interval,
    played_generations,
    restore_intact,
)


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
            distributed.check_processes(out, distributed.recorded_processes(stored_json(out)))
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
            kept = {k: v for k, v in stored_json(out).items() if k == "_fork"}
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
