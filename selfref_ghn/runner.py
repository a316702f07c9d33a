"""Running an evolution on the host: results folder, progress, metrics file, figure (DESIGN §4).

The compiled chunk (:meth:`Evolution.compiled_chunk`) runs ``log_every`` generations per call;
between calls the host appends the new rows to ``metrics.csv`` (flushed, so an interrupted run
keeps every finished generation), prints a progress line and appends lineage. A results folder
holds:

* ``config.json``: the config, the library version and git hash, jax version and devices;
* ``metrics.csv``: one row per generation (:data:`selfref_ghn.metrics.CSV_COLUMNS`);
* ``lineage.npy``: ``(generations, P)`` int32, the member index each survivor came from;
* ``final_state.npz``: the final population (flat parameters, fitness, keys, statistics);
* ``summary.json``: compile time, steady generations/s, peak memory, recovery after switches;
* ``fitness.png``: return, mutation rate and diversity over generations.
"""

from __future__ import annotations

import csv
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import jax
import numpy as np

import selfref_ghn
from selfref_ghn.config import Config
from selfref_ghn.evolution import Evolution, EvoState
from selfref_ghn.metrics import CSV_COLUMNS, recovery
from selfref_ghn.plotting import plot_run


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
        "python": sys.version.split()[0],
    }


def peak_memory_mb() -> float:
    """Peak resident memory of this process, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _progress_line(row: dict[str, float], total: int, gens_per_s: float) -> str:
    flag = " | inverted" if row["inverted"] else ""
    return (
        f"gen {int(row['generation']) + 1:>5d}/{total} | best {row['best_fitness']:8.2f} "
        f"mean {row['mean_fitness']:8.2f} | rate {row['mutation_rate_mean']:.3f} "
        f"[{row['mutation_rate_min']:.3f}, {row['mutation_rate_max']:.3f}] | "
        f"div {row['diversity']:.4f} | {gens_per_s:6.1f} gen/s{flag}"
    )


def evolve(
    config: Config,
    out_dir: str | Path | None = None,
    evo: Evolution | None = None,
    state: EvoState | None = None,
    progress: bool | TextIO = True,
    callback: Callable[[EvoState, list[dict[str, float]]], None] | None = None,
) -> tuple[EvoState, dict[str, np.ndarray], dict[str, Any]]:
    """Run ``config.generations`` generations, logging every ``config.log_every``.

    Args:
        config: the run configuration.
        out_dir: results folder (created); ``None`` writes nothing.
        evo: a prebuilt :class:`Evolution` (custom env/policy); default from ``config``.
        state: a state to continue from; default ``evo.init()``.
        progress: print a progress line per chunk (``True``: to stdout; or a stream).
        callback: called after each chunk with the state and that chunk's metric rows.

    Returns:
        ``(final_state, metrics, summary)``: metric columns as arrays, and the summary dict.

    Example:
        >>> cfg = Config(population_size=8, generations=5)
        >>> state, metrics, summary = evolve(cfg, "results/demo")  # doctest: +SKIP
    """
    evo = evo or Evolution.create(config)
    config = evo.config
    stream = sys.stdout if progress is True else (progress or None)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(
            json.dumps({**config.to_dict(), "_run": run_info()}, indent=2, default=str)
        )
    state = evo.init() if state is None else state
    chunk = config.log_every
    t0 = time.perf_counter()
    compiled = evo.compiled_chunk(chunk).lower(state, config.generations).compile()
    compile_time = time.perf_counter() - t0
    if stream:
        print(
            f"compiled in {compile_time:.1f} s: {config.env_id}, P={config.population_size}, "
            f"C={config.num_children}, {evo.describe()}",
            file=stream,
            flush=True,
        )

    rows: list[dict[str, float]] = []
    lineage: list[np.ndarray] = []
    csv_file = (out / "metrics.csv").open("w", newline="") if out is not None else None
    writer = csv.DictWriter(csv_file, fieldnames=CSV_COLUMNS) if csv_file else None
    if writer:
        writer.writeheader()
    steps_total = 0
    chunk_times: list[tuple[float, int]] = []
    start = time.perf_counter()
    try:
        while int(state.generation) < config.generations:
            t_chunk = time.perf_counter()
            state, m = compiled(state, config.generations)
            m = jax.device_get(m)
            chunk_times.append((time.perf_counter() - t_chunk, int((m["generation"] >= 0).sum())))
            new_rows = []
            for i in np.nonzero(m["generation"] >= 0)[0]:
                steps_total += int(m["live_steps"][i])
                row = {k: float(m[k][i]) for k in CSV_COLUMNS if k in m}
                row["env_steps"] = steps_total
                row["wall_time"] = time.perf_counter() - start
                new_rows.append(row)
                lineage.append(np.asarray(m["selected"][i], np.int32))
            rows.extend(new_rows)
            if writer:
                writer.writerows(new_rows)
                csv_file.flush()
            if stream and new_rows:
                dt, n = chunk_times[-1]
                print(
                    _progress_line(new_rows[-1], config.generations, n / dt),
                    file=stream,
                    flush=True,
                )
            if callback:
                callback(state, new_rows)
    finally:
        if csv_file:
            csv_file.close()

    metrics = {k: np.array([r[k] for r in rows]) for k in CSV_COLUMNS} if rows else {}
    steady = chunk_times[1:] or chunk_times
    gens_per_s = sum(n for _, n in steady) / max(sum(t for t, _ in steady), 1e-9)
    switch_points = [p for iv in config.switch_intervals for p in iv if p < config.generations]
    summary = {
        "compile_time_s": compile_time,
        "steady_generations_per_s": gens_per_s,
        "wall_time_s": time.perf_counter() - start,
        "peak_memory_mb": peak_memory_mb(),
        "generations": len(rows),
        "best_fitness_final": float(metrics["best_fitness"][-1]) if rows else None,
        "recovery_best": recovery(metrics["best_fitness"], switch_points) if rows else [],
        "recovery_mean": recovery(metrics["mean_fitness"], switch_points) if rows else [],
    }
    if out is not None:
        np.save(out / "lineage.npy", np.stack(lineage) if lineage else np.zeros((0,), np.int32))
        save_state(state, out / "final_state.npz")
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        if rows:
            plot_run(
                metrics,
                out / "fitness.png",
                config.switch_intervals,
                title=f"SR-GHN on {config.env_id} (seed {config.seed})",
            )
    return state, metrics, summary


def save_state(state: EvoState, path: str | Path) -> None:
    """Save a state's leaves to ``.npz`` keyed by their pytree paths."""
    flat = jax.tree_util.tree_flatten_with_path(jax.device_get(state))[0]
    arrays = {jax.tree_util.keystr(p).strip("."): np.asarray(v) for p, v in flat}
    np.savez_compressed(path, **arrays)


def load_state(evo: Evolution, path: str | Path) -> EvoState:
    """Load a state saved by :func:`save_state` into ``evo``'s state structure."""
    data = np.load(path)
    template = jax.eval_shape(evo.init)
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = [data[jax.tree_util.keystr(p).strip(".")] for p, _ in paths]
    return jax.tree_util.tree_unflatten(treedef, [jax.numpy.asarray(x) for x in leaves])
