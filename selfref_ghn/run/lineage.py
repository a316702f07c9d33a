"""Lineage: who descends from whom, and the champion's ancestry (DESIGN §2 "Evolution loop":
(mu + lambda) truncation; the paper's analysis of how mutation rates are inherited).

Every generation the step reports, for each of the ``P`` survivors (in rank order), the member
index it came from (``selected``: parents are members ``0..P-1``, the children of parent ``i``
are ``P + i*C .. P + i*C + C - 1``), the fitness it survived with (``survivor_fitness``), and
every parent's mean mutation rate (``parent_rate``). The runner appends these, one fixed-size
record per generation, to ``<results>/lineage.bin``: little-endian records of
:func:`record_dtype` (``generation`` int32, then ``selected`` int32, ``survivor_fitness``
float32 and ``parent_rate`` float32, each ``(P,)``), read with ``np.fromfile``. On resume the
file is truncated to the checkpoint's generation, exactly like ``metrics.csv``. A file missing,
cut short or damaged before that generation does not stop a resume: the generations it lacks
are recorded as unknown (``selected`` -1, fitness and rate NaN; :func:`truncate`).

``selfref-ghn lineage DIR`` traces the champion (survivor slot 0 after the last generation)
back to generation 0 and draws it: the whole survivor tree in grey, the champion's line in
colour, and its return and mutation rate along the way (``DIR/lineage.png``).

Example:
    >>> recs = read("results/run/lineage.bin", population_size=30)    # doctest: +SKIP
    >>> path = ancestry(recs, num_children=2)                           # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

FILE = "lineage.bin"
UNKNOWN = -1  # ``selected`` of a generation whose record was lost


def record_dtype(population_size: int) -> np.dtype:
    """The structured dtype of one generation's lineage record.

    Args:
        population_size: ``P``.

    Returns:
        ``np.dtype`` with fields ``generation, selected, survivor_fitness, parent_rate``.
    """
    P = int(population_size)
    return np.dtype(
        [
            ("generation", "<i4"),
            ("selected", "<i4", (P,)),
            ("survivor_fitness", "<f4", (P,)),
            ("parent_rate", "<f4", (P,)),
        ]
    )


def records(
    metrics: Mapping[str, np.ndarray], rows: Sequence[int] | np.ndarray, population_size: int
):
    """Lineage records of some generations of a chunk's stacked metrics.

    Args:
        metrics: a chunk's metrics (``generation, selected, survivor_fitness, parent_rate``).
        rows: indices along the chunk axis of the generations to keep.
        population_size: ``P``.

    Returns:
        A structured array of :func:`record_dtype`, one record per row.
    """
    rows = np.asarray(rows, dtype=np.int64)
    out = np.zeros(len(rows), record_dtype(population_size))
    for name in out.dtype.names:
        out[name] = np.asarray(metrics[name])[rows]
    return out


def append(path: str | Path, recs: np.ndarray) -> None:
    """Append records to ``path`` and flush them to the operating system."""
    with open(path, "ab") as f:
        recs.tofile(f)
        f.flush()
        os.fsync(f.fileno())


def read(path: str | Path, population_size: int) -> np.ndarray:
    """All complete records in ``path`` (a partial trailing record, from a crash, is ignored).

    Args:
        path: a ``lineage.bin``.
        population_size: ``P``.

    Returns:
        Structured array of :func:`record_dtype`.
    """
    dtype = record_dtype(population_size)
    path = Path(path)
    if not path.exists():
        return np.zeros(0, dtype)
    data = path.read_bytes()
    n = len(data) // dtype.itemsize
    return np.frombuffer(data[: n * dtype.itemsize], dtype).copy()


def unknown_records(generations: Sequence[int], population_size: int) -> np.ndarray:
    """Records standing for lost ones: ``selected`` is :data:`UNKNOWN`, fitness and rate NaN."""
    out = np.zeros(len(generations), record_dtype(population_size))
    out["generation"] = np.asarray(generations, np.int32)
    out["selected"] = UNKNOWN
    out["survivor_fitness"] = np.nan
    out["parent_rate"] = np.nan
    return out


def in_order(recs: np.ndarray) -> int:
    """How many leading records are generations ``0, 1, 2, ...`` (the rest are damaged)."""
    ok = recs["generation"] == np.arange(len(recs))
    return len(recs) if ok.all() else int(np.argmin(ok))


def truncate(
    path: str | Path,
    population_size: int,
    generation: int,
    num_children: int,
    warn: bool = True,
) -> int:
    """Keep only the records of generations ``< generation`` (used on resume).

    Records are kept while they are well formed (:func:`valid_prefix`: the ``i``-th is
    generation ``i``, its ``selected`` are member indices), the same rule the ``lineage``
    command reads them by. If fewer than ``generation`` are
    (the file is missing, cut short or damaged), the generations lost are recorded as unknown
    (:func:`unknown_records`) so that the file stays one record per generation, the file as it
    was is kept as ``lineage.bin.damaged``, and one line on stderr says so.

    Args:
        path: a ``lineage.bin`` (a missing file is created).
        population_size: ``P``.
        generation: the checkpoint's generation.
        num_children: ``C``.
        warn: print that line.

    Returns:
        The number of records kept as they were.
    """
    path = Path(path)
    recs = read(path, population_size)
    keep = recs[: min(valid_prefix(recs, num_children), generation)]
    kept = len(keep)
    if kept < generation:
        if path.exists() and path.stat().st_size:
            shutil.copy2(path, str(path) + ".damaged")
        keep = np.concatenate([keep, unknown_records(range(kept, generation), population_size)])
        if warn:
            print(
                f"selfref-ghn: {path} holds {kept} of the {generation} generations before the "
                f"checkpoint; generations {kept}..{generation - 1} are recorded as unknown "
                f"(selected {UNKNOWN})",
                file=sys.stderr,
                flush=True,
            )
    tmp = Path(str(path) + ".tmp")
    keep.tofile(tmp)
    os.replace(tmp, path)
    return kept


def valid_prefix(recs: np.ndarray, num_children: int) -> int:
    """How many leading records are well formed: generations ``0, 1, 2, ...`` whose ``selected``
    are member indices (or all :data:`UNKNOWN`) and whose parent rates are numbers or NaN."""
    n = in_order(recs)
    if n == 0:
        return 0
    sel = recs["selected"][:n]
    P = sel.shape[1]
    members = ((sel >= 0) & (sel < P * (1 + num_children))).all(1)
    ok = members | (sel == UNKNOWN).all(1)
    return n if ok.all() else int(np.argmin(ok))


def ancestry(recs: np.ndarray, num_children: int, champion: int = 0) -> dict[str, np.ndarray]:
    """The line of descent of survivor ``champion`` after the last recorded generation.

    Args:
        recs: lineage records of generations ``0 .. G-1`` (:func:`read`).
        num_children: ``C``.
        champion: the survivor slot to trace (0: the best).

    Returns:
        Arrays indexed by generation ``g = 0 .. G-1``: ``generation``; ``slot``, the ancestor's
        survivor slot after ``g``; ``parent_slot``, its parent's slot before ``g``; ``child``,
        whether it was born at ``g`` (else a parent kept); ``fitness``, the return it survived
        ``g`` with; ``rate``, the parent's mean mutation rate at ``g`` (the rate the ancestor
        was made with, or carried).
    """
    G = len(recs)
    P = recs["selected"].shape[1] if G else 0
    out: dict[str, np.ndarray] = {
        "generation": np.arange(G),
        "slot": np.zeros(G, np.int32),
        "parent_slot": np.zeros(G, np.int32),
        "child": np.zeros(G, bool),
        "fitness": np.zeros(G, np.float32),
        "rate": np.zeros(G, np.float32),
    }
    slot = int(champion)
    for g in range(G - 1, -1, -1):
        member = int(recs["selected"][g][slot])
        if member == UNKNOWN:  # a lost record: the line before it is not known
            out["slot"][: g + 1] = out["parent_slot"][: g + 1] = UNKNOWN
            out["fitness"][: g + 1] = out["rate"][: g + 1] = np.nan
            break
        child = member >= P
        parent = (member - P) // num_children if child else member
        out["slot"][g] = slot
        out["parent_slot"][g] = parent
        out["child"][g] = child
        out["fitness"][g] = recs["survivor_fitness"][g][slot]
        out["rate"][g] = recs["parent_rate"][g][parent]
        slot = parent
    return out


def plot_ancestry(
    recs: np.ndarray,
    line: Mapping[str, np.ndarray],
    num_children: int,
    path: str | Path,
    switch_intervals: Sequence[Sequence[int]] = (),
    title: str = "",
) -> Path:
    """Draw the survivor tree with the champion's line, its return and its mutation rate.

    Args:
        recs: lineage records.
        line: :func:`ancestry` of the champion.
        num_children: ``C``.
        path: output PNG.
        switch_intervals: inverted intervals to shade.
        title: figure title.

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    G, P = recs["selected"].shape
    sel = recs["selected"].astype(np.int64)
    parent = np.where(sel >= P, (sel - P) // num_children, sel)
    gens = np.repeat(np.arange(G), P)
    segs = np.stack(
        [np.stack([gens, parent.ravel()], 1), np.stack([gens + 1, np.tile(np.arange(P), G)], 1)],
        1,
    )
    fig, axes = plt.subplots(3, 1, figsize=(9, 7.5), sharex=True, height_ratios=(2, 1, 1))
    ax = axes[0]
    for start, end in switch_intervals:
        for a in axes:
            a.axvspan(start, end, color="tab:red", alpha=0.1, lw=0)
    born = (sel >= P).ravel()
    known = (sel != UNKNOWN).ravel()
    ax.add_collection(LineCollection(segs[~born & known], colors="0.8", linewidths=0.5))
    ax.add_collection(LineCollection(segs[born], colors="tab:orange", alpha=0.25, linewidths=0.5))
    g = line["generation"]
    first = int(np.argmax(line["slot"] != UNKNOWN)) if (line["slot"] != UNKNOWN).any() else G
    ax.step(
        np.r_[g[first:], G],
        np.r_[line["parent_slot"][first : first + 1], line["slot"][first:]],
        where="post",
        color="k",
    )
    ax.plot(g[line["child"]] + 1, line["slot"][line["child"]], "o", ms=3, color="tab:red")
    ax.set_xlim(0, G)
    ax.set_ylim(P - 0.5, -0.5)
    ax.set_ylabel("survivor slot (rank)")
    ax.set_title(title or "champion's ancestry (red dots: born as a child)")
    axes[1].plot(g, line["fitness"], color="tab:blue")
    axes[1].set_ylabel("return")
    axes[2].plot(g, line["rate"], color="tab:green")
    axes[2].set_ylabel("mutation rate")
    axes[2].set_xlabel("generation")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summary_lines(line: Mapping[str, np.ndarray], rows: int = 20) -> list[str]:
    """Text for the terminal: the champion's births (mutation events) along its line."""
    G = len(line["generation"])
    if G == 0:
        return ["no generations recorded"]
    births = np.nonzero(line["child"])[0]
    known = np.flatnonzero(line["slot"] != UNKNOWN)
    if len(known) == 0:
        return [f"champion after generation {G - 1}: its line is not recorded (lost records)"]
    rate = line["rate"][known]
    out = [
        f"champion after generation {G - 1}: return {line['fitness'][-1]:.2f}; its line was "
        f"born as a child {len(births)} times in {len(known)} generations; mutation rate along "
        f"it {np.nanmin(rate):.3f} .. {np.nanmax(rate):.3f} (mean {np.nanmean(rate):.3f})",
        f"{'generation':>10} {'from slot':>9} {'to slot':>7} {'rate':>7} {'return':>9}",
    ]
    if known[0] > 0:
        out.insert(1, f"(the line before generation {known[0]} is not recorded: lost records)")
    for g in births[-rows:]:
        out.append(
            f"{g:>10d} {line['parent_slot'][g]:>9d} {line['slot'][g]:>7d} "
            f"{line['rate'][g]:>7.3f} {line['fitness'][g]:>9.2f}"
        )
    if len(births) > rows:
        out.append(f"({len(births) - rows} earlier births not shown; --rows N shows more)")
    return out


def cmd_lineage(args: argparse.Namespace) -> int:
    """``selfref-ghn lineage DIR``: print and draw the champion's ancestry."""
    from selfref_ghn.config import ConfigError
    from selfref_ghn.run.folder import load_run_config

    run = Path(args.dir)
    cfg = load_run_config(run, "DIR")
    P, C = cfg.population_size, cfg.num_children
    try:
        recs = read(run / FILE, P)
    except OSError as e:
        raise ConfigError(FILE, str(run / FILE), f"a readable file ({e})") from None
    if len(recs) == 0:
        raise ConfigError("DIR", str(run), f"a results folder with a non-empty {FILE}")
    n = valid_prefix(recs, C)
    if n == 0:
        raise ConfigError(FILE, str(run / FILE), f"records of this run (P={P}, C={C})")
    if n < len(recs):
        print(
            f"selfref-ghn: {run / FILE}: record {n} is damaged; it and the {len(recs) - n - 1} "
            f"after it are left out",
            file=sys.stderr,
        )
        recs = recs[:n]
    if not 0 <= args.champion < P:
        raise ConfigError("--champion", args.champion, f"a survivor slot in [0, {P})")
    line = ancestry(recs, C, args.champion)
    for text in summary_lines(line, args.rows):
        print(text)
    out = args.out or run / "lineage.png"
    plot_ancestry(
        recs,
        line,
        C,
        out,
        [tuple(iv) for iv in cfg.switch_windows],
        title=f"champion's ancestry: {cfg.env_id} (seed {cfg.seed})",
    )
    print(f"figure: {out}")
    return 0


def register(subparsers) -> None:
    """Add ``lineage DIR [--champion SLOT] [--rows N] [--out PNG]`` to the command line."""
    p = subparsers.add_parser("lineage", help="draw the champion's ancestry of a run")
    p.add_argument("dir", type=Path, help="a results folder")
    p.add_argument("--champion", type=int, default=0, help="survivor slot to trace (0: best)")
    p.add_argument("--rows", type=int, default=20, help="births listed (the latest N)")
    p.add_argument("--out", type=Path, default=None, help="figure path (DIR/lineage.png)")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    p.set_defaults(func=cmd_lineage)
