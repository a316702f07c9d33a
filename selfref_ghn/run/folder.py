"""A run's results folder (DESIGN §4): what it holds, how each file is written and read back.

A results folder holds:

* ``config.json``: the config, the library version and git hash, jax version and devices
  (:func:`run_info`); :func:`load_run_config` reads it back;
* ``metrics.csv``: one row per generation (:data:`COLUMNS`: the step's
  :data:`selfref_ghn.run.metrics.CSV_COLUMNS`, then the runaway monitor's
  :data:`selfref_ghn.evolution.monitor.COLUMNS`); :func:`read_kept_rows` reads the rows a resume
  keeps and cuts the file to them;
* ``lineage.bin`` and ``lineage.npy``: who descends from whom (:mod:`selfref_ghn.run.lineage`);
* ``checkpoints/<generation>/``: the last ``keep_checkpoints`` states
  (:mod:`selfref_ghn.run.checkpoint`); ``damaged_checkpoints/``: those a resume could not read;
* ``final_state.npz``: the final population (:func:`save_state`, :func:`load_state`);
* ``summary.json``: what the run evolves (``ghn_params``, ``policy_params``, ``basis_floats``),
  compile time, steady generations/s, peak memory, recovery after switches,
  checkpoint count, time and size, and what the monitor reported (:func:`write_summary`,
  :func:`read_summary`);
* ``fitness.png``: return, mutation rate and diversity over generations
  (:mod:`selfref_ghn.run.plotting`);
* with ``--logger``: ``tracking.json`` (the trackers, the W&B run id, what each has logged),
  ``wandb/`` and ``tensorboard/`` (:mod:`selfref_ghn.run.tracking`).

The host loop that writes them is :mod:`selfref_ghn.run.loop`; resume and fork rules are
:mod:`selfref_ghn.run.resume`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np

import selfref_ghn
from selfref_ghn.config import Config, ConfigError
from selfref_ghn.evolution import monitor as monitor_lib
from selfref_ghn.evolution.generation import Evolution, EvoState
from selfref_ghn.run.metrics import CSV_COLUMNS, csv_rows, parse_row

# metrics.csv columns: the step's, then the runaway monitor's flags.
COLUMNS = CSV_COLUMNS + monitor_lib.COLUMNS


CHECKPOINT_DIR = "checkpoints"


DAMAGED_DIR = "damaged_checkpoints"  # where a resume moves checkpoints it could not restore


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


def method_label(config: Config) -> str:
    """``"SR-GHN"`` (with its mutation mode when not ``self``) or the evosax algorithm's name."""
    if config.method != "srghn":
        return config.method
    return "SR-GHN" if config.mutation_mode == "self" else f"SR-GHN ({config.mutation_mode})"


@dataclasses.dataclass(frozen=True)
class StoredRun:
    """A results folder's ``config.json``, read once: the whole object (with the ``_run``
    provenance and a fork's ``_fork`` record) and the :class:`Config` it holds."""

    stored: dict[str, Any]
    config: Config


def read_run(run_dir: str | Path, option: str = "--resume") -> StoredRun:
    """A results folder's ``config.json`` (:class:`StoredRun`); ``option`` names the command
    line option that gave the folder, for the error.

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
    return StoredRun(stored, Config.from_dict(fields))


def load_run_config(run_dir: str | Path, option: str = "--resume") -> Config:
    """The :class:`Config` a results folder was run with (its ``config.json``).

    Raises:
        ConfigError: if the folder has no readable ``config.json`` or it is not a valid config.
    """
    return read_run(run_dir, option).config


def metric_value(x: Any) -> int | float:
    """A metric as written to ``metrics.csv``: integers and flags as ``int``, else ``float``.

    Example:
        >>> metric_value(np.int32(3)), metric_value(np.bool_(True)), metric_value(np.float32(2))
        (3, 1, 2.0)
    """
    x = np.asarray(x)
    return int(x) if x.dtype == bool or np.issubdtype(x.dtype, np.integer) else float(x)


def read_kept_rows(path: Path, generation: int, rewrite: bool = True) -> list[dict[str, float]]:
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
                if raw is None or row is None or int(row["generation"]) != len(rows):
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


def save_state(state: EvoState, path: str | Path) -> None:
    """Save a state's leaves to ``.npz`` keyed by their pytree paths (atomically: a write cut
    short leaves the file as it was)."""
    flat = jax.tree_util.tree_flatten_with_path(jax.device_get(state))[0]
    arrays: dict[str, Any] = {jax.tree_util.keystr(p).strip("."): np.asarray(v) for p, v in flat}
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
