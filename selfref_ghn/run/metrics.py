"""Per-generation metrics and recovery after switches (DESIGN §2 "Known failure signatures").

The generation step returns scalars (best/mean/median fitness, the population's mutation rate
mean/min/max, diversity, non-finite counts, a checksum of the survivors' parameters) so that the
known failure modes are visible in ``metrics.csv``: a rate pinned near 1 or falling after a
switch, no recovery after the switch back, and runs that differ between compilations of the
same seed (compare ``checksum``).

:func:`recovery` measures, for each switch, how fast a curve gets back to its pre-switch level.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TextIO

import numpy as np

# Columns written to metrics.csv, in order (wall_time and env_steps are added by the host).
CSV_COLUMNS = (
    "generation", "inverted", "best_fitness", "mean_fitness", "median_fitness",
    "survivor_mean_fitness", "mutation_rate_mean", "mutation_rate_min", "mutation_rate_max",
    "diversity", "nonfinite_fitness", "nonfinite_params", "env_steps", "checksum", "wall_time",
)  # fmt: skip


def parse_row(raw: Mapping[str | None, object], names: Iterable[str]) -> dict[str, float] | None:
    """The numbers of one ``metrics.csv`` row (a :class:`csv.DictReader` row), or ``None`` if it
    is cut short or malformed: a column of ``names`` empty or not a number, more fields than
    the header, or a ``generation`` that is not a whole number >= 0.

    Integer columns may be written either way (``3`` or ``3.0``, as files written before
    integers were written as integers hold them).

    Example:
        >>> parse_row({"generation": "3", "best_fitness": "1.5"}, ["generation", "best_fitness"])
        {'generation': 3.0, 'best_fitness': 1.5}
        >>> parse_row({"generation": "3", "best_fitness": "1."}, ["generation", "best_fitness"])
        {'generation': 3.0, 'best_fitness': 1.0}
        >>> parse_row({"generation": "3", "best_fitness": None}, ["generation", "best_fitness"])
    """
    if raw.get(None):  # fields beyond the header's
        return None
    row = {}
    for k in names:
        value = raw.get(k)
        if not isinstance(value, str):
            return None
        try:
            row[k] = float(value)
        except ValueError:
            return None
    g = row.get("generation", 0.0)
    return row if g >= 0 and g.is_integer() else None


def read_csv(path: str | Path) -> dict[str, np.ndarray]:
    """The columns of a run's ``metrics.csv`` as float arrays (those of :data:`CSV_COLUMNS` it
    has; empty if it has no rows). Reading stops at a row cut short (a run being written, or
    one killed mid-write) or malformed, and at a row whose generation is not the next one:
    the rows before it are returned (:func:`read_rows` also says where it stopped).

    Raises:
        OSError: if the file cannot be read.
    """
    return read_rows(path)[0]


def csv_rows(f: TextIO) -> tuple[list[str], Iterator[tuple[int, dict[str, str] | None]]]:
    """The header of an open ``metrics.csv`` and its rows, each with its line number.

    A line the ``csv`` module cannot split (a field over its size limit, say, as in a file
    zero-filled after a crash) comes as ``None`` and ends the rows; a header it cannot split is
    an empty header.
    """
    reader = csv.DictReader(f)
    try:
        header = list(reader.fieldnames or ())
    except csv.Error:
        return [], iter(())

    def rows() -> Iterator[tuple[int, dict[str, str] | None]]:
        while True:
            try:
                raw = next(reader)
            except StopIteration:
                return
            except csv.Error:
                yield reader.line_num, None
                return
            yield reader.line_num, raw

    return header, rows()


def read_rows(path: str | Path) -> tuple[dict[str, np.ndarray], int | None, int]:
    """:func:`read_csv`, and where it stopped.

    Returns:
        ``(columns, bad_line, lines_after)``: the line number of the first row that was cut
        short or malformed (``None`` if every row was read) and how many lines follow it.

    Raises:
        OSError: if the file cannot be read.
    """
    # a byte that is not UTF-8 fails its row, not the whole file
    with Path(path).open(newline="", errors="replace") as f:
        header, lines = csv_rows(f)
        names = [k for k in CSV_COLUMNS if k in header]
        rows: list[list[float]] = []
        bad_line = None
        for line, raw in lines:
            row = None if raw is None else parse_row(raw, names)
            if row is None or ("generation" in row and row["generation"] != len(rows)):
                bad_line = line
                break
            rows.append([row[k] for k in names])
        after = sum(1 for _ in f) if bad_line is not None else 0
    if not rows:
        return {}, bad_line, after
    return dict(zip(names, np.array(rows, dtype=np.float64).T, strict=True)), bad_line, after


def recovery(
    curve: Sequence[float],
    switch_points: Sequence[int],
    fractions: Sequence[float] = (0.5, 0.9, 1.0),
    window: int = 10,
    hold: int = 1,
) -> list[dict[str, float]]:
    """Recovery of ``curve`` after each switch.

    For a switch at generation ``s`` the *level* is the mean of ``curve`` over the ``window``
    generations before ``s``; the *drop* is ``level - min(curve[s : s + window])``. For each
    fraction ``f``, ``gens_to_{f}`` is the number of generations after ``s`` until the curve is
    at least ``f * level`` and stays there for ``hold`` generations (0: never fell below; NaN:
    never recovered before the run or the next switch ended). ``auc`` is the mean of
    ``curve / level`` from ``s`` to the next switch. Both need a positive level: for a level
    of 0 or below (LunarLander's returns often are), a fraction of it is not a target above
    it (50% of -180 is -90), so ``gens_to_*`` and ``auc`` are NaN.

    Args:
        curve: one value per generation (e.g. best return).
        switch_points: generations at which the environment changes.
        fractions: recovery thresholds as fractions of the level.
        window: generations averaged for the level.
        hold: generations the threshold must hold.

    Returns:
        One dict per switch with ``switch, level, drop, gens_to_<pct>, auc``.

    Example:
        >>> r = recovery([10, 10, 10, 2, 5, 10, 10], [3], window=3)
        >>> r[0]["gens_to_90"]
        2
    """
    y = np.asarray(curve, dtype=np.float64)
    points = [int(p) for p in switch_points if 0 < int(p) < len(y)]
    out = []
    for k, s in enumerate(points):
        end = points[k + 1] if k + 1 < len(points) else len(y)
        level = float(np.mean(y[max(0, s - window) : s]))
        seg = y[s:end]
        row: dict[str, float] = {
            "switch": s,
            "level": level,
            "drop": float(level - np.min(y[s : min(end, s + window)])),
        }
        for f in fractions:
            gens = float("nan")
            if level > 0:  # a fraction of a level <= 0 is no target (see above)
                ok = seg >= f * level - 1e-9
                for t in range(len(seg) - hold + 1):
                    if ok[t : t + hold].all():
                        gens = t
                        break
            row[f"gens_to_{round(100 * f)}"] = gens
        row["auc"] = float(np.mean(seg / level)) if level > 0 and len(seg) else float("nan")
        out.append(row)
    return out


RECOVERY_CURVES = ("best_fitness", "mean_fitness")


def recovery_curves(
    metrics: Mapping[str, Sequence[float]],
    switch_points: Sequence[int],
    curves: Sequence[str] = RECOVERY_CURVES,
    hold: int = 10,
    window: int = 10,
) -> list[dict[str, float | str]]:
    """:func:`recovery` of several metric columns, the same way for every method.

    The comparison of methods (``selfref-ghn compare``) uses this with ``hold=10``: a curve
    counts as back to ``f`` of its pre-switch level only once it stays there for 10 generations.

    Args:
        metrics: metric columns by name (as returned by :func:`selfref_ghn.run.loop.evolve`).
        switch_points: generations at which the environment changes.
        curves: the columns to measure (default best and mean return).
        hold: generations a threshold must hold.
        window: generations averaged for the pre-switch level.

    Returns:
        One dict per curve and switch: :func:`recovery`'s keys plus ``curve``.

    Example:
        >>> m = {"best_fitness": [10] * 3 + [2] + [10] * 12, "mean_fitness": [5] * 16}
        >>> [r["gens_to_90"] for r in recovery_curves(m, [3], window=3)]
        [1, 0]
    """
    rows: list[dict[str, float | str]] = []
    for name in curves:
        for r in recovery(metrics[name], switch_points, window=window, hold=hold):
            rows.append({"curve": name, **r})
    return rows
