"""Lineage: who descends from whom, and the champion's ancestry (DESIGN §2 "Evolution loop":
(mu + lambda) truncation; the paper's analysis of how mutation rates are inherited).

Every generation the step reports, for each of the ``P`` survivors (in rank order), the member
index it came from (``selected``: parents are members ``0..P-1``, the children of parent ``i``
are ``P + i*C .. P + i*C + C - 1``), the fitness it survived with (``survivor_fitness``), and
every parent's mean mutation rate (``parent_rate``). The runner appends these, one fixed-size
record per generation, to ``<results>/lineage.bin``: little-endian records of
:func:`record_dtype` (``generation`` int32, then ``selected`` int32, ``survivor_fitness``
float32 and ``parent_rate`` float32, each ``(P,)``), read with ``np.fromfile``. On resume the
file is truncated to the checkpoint's generation, exactly like ``metrics.csv``.

``selfref-ghn lineage DIR`` traces the champion (survivor slot 0 after the last generation)
back to generation 0 and draws it: the whole survivor tree in grey, the champion's line in
colour, and its return and mutation rate along the way (``DIR/lineage.png``).

Example:
    >>> recs = read("results/run/lineage.bin", population_size=30)    # doctest: +SKIP
    >>> path = ancestry(recs, num_children=2)                           # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

FILE = "lineage.bin"


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


def records(metrics: Mapping[str, np.ndarray], rows: Sequence[int], population_size: int):
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


def truncate(path: str | Path, population_size: int, generation: int) -> int:
    """Keep only the records of generations ``< generation`` (used on resume).

    Args:
        path: a ``lineage.bin`` (a missing file is created empty).
        population_size: ``P``.
        generation: the checkpoint's generation.

    Returns:
        The number of records kept.

    Raises:
        ValueError: if the kept records are not generations ``0 .. generation - 1`` in order.
    """
    recs = read(path, population_size)
    keep = recs[recs["generation"] < generation]
    if not np.array_equal(keep["generation"], np.arange(len(keep))) or len(keep) != generation:
        raise ValueError(
            f"{path} holds generations {keep['generation'].tolist()[:5]}... "
            f"but the checkpoint is at generation {generation}"
        )
    tmp = Path(str(path) + ".tmp")
    keep.tofile(tmp)
    os.replace(tmp, path)
    return len(keep)


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
    out = {
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
    ax.add_collection(LineCollection(segs[~born], colors="0.8", linewidths=0.5))
    ax.add_collection(LineCollection(segs[born], colors="tab:orange", alpha=0.25, linewidths=0.5))
    g = line["generation"]
    ax.step(np.r_[g, G], np.r_[line["parent_slot"][:1], line["slot"]], where="post", color="k")
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
    out = [
        f"champion after generation {G - 1}: return {line['fitness'][-1]:.2f}; its line was "
        f"born as a child {len(births)} times in {G} generations; mutation rate along it "
        f"{line['rate'].min():.3f} .. {line['rate'].max():.3f} (mean {line['rate'].mean():.3f})",
        f"{'generation':>10} {'from slot':>9} {'to slot':>7} {'rate':>7} {'return':>9}",
    ]
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

    run = Path(args.dir)
    try:
        cfg = json.loads((run / "config.json").read_text())
        P, C = int(cfg["population_size"]), int(cfg["num_children"])
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError("DIR", str(run), f"a results folder with a config.json ({e})") from e
    recs = read(run / FILE, P)
    if len(recs) == 0:
        raise ConfigError("DIR", str(run), f"a results folder with a non-empty {FILE}")
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
        [tuple(iv) for iv in cfg.get("switch_intervals", [])],
        title=f"champion's ancestry: {cfg.get('env_id', '')} (seed {cfg.get('seed', '')})",
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
