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
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

# Columns written to metrics.csv, in order (wall_time and env_steps are added by the host).
CSV_COLUMNS = (
    "generation", "inverted", "best_fitness", "mean_fitness", "median_fitness",
    "survivor_mean_fitness", "mutation_rate_mean", "mutation_rate_min", "mutation_rate_max",
    "diversity", "nonfinite_fitness", "nonfinite_params", "env_steps", "checksum", "wall_time",
)  # fmt: skip


def parse_row(raw: Mapping[Any, object], names: Iterable[str]) -> dict[str, float] | None:
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


# Why a normalised recovery is undefined (the ``undefined`` key of :func:`recovery`'s rows).
NOT_ABOVE_FLOOR = "pre-switch level not above the floor"

FLOOR_POLICIES = ("random", "zero")
RECOVERY_DEFINITIONS = ("raw", "normalised")


def recovery(
    curve: Sequence[float] | np.ndarray,
    switch_points: Sequence[int],
    fractions: Sequence[float] = (0.5, 0.9, 1.0),
    window: int = 10,
    hold: int = 1,
    floor: float | None = None,
) -> list[dict[str, float]]:
    """Recovery of ``curve`` after each switch.

    For a switch at generation ``s`` the *level* is the mean of ``curve`` over the ``window``
    generations before ``s``; the *drop* is ``level - min(curve[s : s + window])``. For each
    fraction ``f``, ``gens_to_{f}`` is the number of generations after ``s`` until the curve
    reaches its target and stays there for ``hold`` generations (0: never fell below; NaN:
    never recovered before the run or the next switch ended). Two definitions of the target:

    * raw (``floor=None``): the curve is at least ``f * level``; ``auc`` is the mean of
      ``curve / level`` from ``s`` to the next switch. Both need a positive level: for a level
      of 0 or below (LunarLander's, Pendulum's returns), a fraction of it is not a target
      above it (50% of -180 is -90), so ``gens_to_*`` and ``auc`` are NaN.
    * normalised (``floor`` given, e.g. from :func:`measure_floor`): the curve is measured
      as ``(curve - floor) / (level - floor)``, 0 at the floor, 1 at the pre-switch level, and
      ``gens_to_{f}`` counts until that is at least ``f``, i.e. the curve is at least
      ``floor + f * (level - floor)``; ``auc`` is its mean. This works for returns of any
      sign. Where ``level <= floor`` (the population was no better than the floor before the
      switch) there is nothing to recover: ``gens_to_*`` and ``auc`` are NaN and the row's
      ``undefined`` says why (:data:`NOT_ABOVE_FLOOR`); it is ``""`` where they are defined.

    Args:
        curve: one value per generation (e.g. best return).
        switch_points: generations at which the environment changes.
        fractions: recovery thresholds as fractions of the level (or of the way from the
            floor to it).
        window: generations averaged for the level.
        hold: generations the threshold must hold.
        floor: the floor return for the normalised definition; ``None``: raw.

    Returns:
        One dict per switch with ``switch, level, drop, gens_to_<pct>, auc``; normalised, also
        ``floor`` and ``undefined``.

    Raises:
        ValueError: if ``floor`` is not a finite number.

    Example:
        >>> r = recovery([10, 10, 10, 2, 5, 10, 10], [3], window=3)
        >>> r[0]["gens_to_90"]
        2
        >>> r = recovery([-150, -150, -1100, -600, -200], [2], window=2, floor=-1200)
        >>> r[0]["gens_to_50"], r[0]["gens_to_90"], r[0]["gens_to_100"]
        (1, 2, nan)
    """
    if floor is not None and not math.isfinite(floor):
        raise ValueError(f"floor must be a finite number, not {floor!r}")
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
        if floor is None:
            # a fraction of a level <= 0 is no target (see above)
            defined = level > 0
            norm = seg / level if defined else seg
            targets = [f * level - 1e-9 for f in fractions]
            seg_ok = seg
        else:
            span = level - float(floor)
            # a span within rounding of 0 is no span: no division by ~0
            defined = span > 1e-9 * max(1.0, abs(level), abs(float(floor)))
            norm = (seg - floor) / span if defined else seg
            targets = [f - 1e-9 for f in fractions]
            seg_ok = norm
        for f, target in zip(fractions, targets, strict=True):
            gens = float("nan")
            if defined:
                ok = seg_ok >= target
                for t in range(len(seg) - hold + 1):
                    if ok[t : t + hold].all():
                        gens = t
                        break
            row[f"gens_to_{round(100 * f)}"] = gens
        row["auc"] = float(np.mean(norm)) if defined and len(seg) else float("nan")
        if floor is not None:
            row["floor"] = float(floor)
            row["undefined"] = "" if defined else NOT_ABOVE_FLOOR  # type: ignore[assignment]
        out.append(row)
    return out


def measure_floor(
    config: Any,
    episodes: int = 100,
    policy: str = "random",
    seed: int = 0,
) -> float:
    """The floor return of ``config``'s environment: the mean return of a policy that does
    not look, through the same rollout as the runs (:func:`selfref_ghn.evolution.rollout.
    evaluate`, ``config.horizon`` steps, the environment's default, un-switched params).

    Args:
        config: a run configuration (its ``env_id``, ``env_kwargs`` and ``horizon``).
        episodes: episodes averaged.
        policy: ``"random"`` (an action drawn uniformly from the action space at every step)
            or ``"zero"`` (action 0 of a discrete space; zeros, clipped to the bounds, of a
            box).
        seed: seed of the episodes (and of the random actions).

    Returns:
        The mean return, e.g. about 22 for CartPole's random policy.

    Raises:
        ValueError: for an unknown ``policy`` or fewer than one episode.

    Example:
        >>> measure_floor(Config(env_id="CartPole-Switch"))  # doctest: +SKIP
        22.3
    """
    import jax
    import jax.numpy as jnp

    from selfref_ghn.evolution.rollout import evaluate
    from selfref_ghn.evolution.task import make_task

    if policy not in FLOOR_POLICIES:
        raise ValueError(f"policy must be one of {FLOOR_POLICIES}, not {policy!r}")
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, not {episodes}")
    task = make_task(config)
    env, params = task.env, task.env_params
    space = env.action_space(params)
    if hasattr(space, "n"):
        zero = jnp.zeros((), getattr(space, "dtype", jnp.int32))
    else:
        low = np.broadcast_to(np.asarray(space.low, np.float32), tuple(space.shape))
        high = np.broadcast_to(np.asarray(space.high, np.float32), tuple(space.shape))
        zero = jnp.asarray(np.clip(np.zeros(tuple(space.shape), np.float32), low, high))
    if policy == "random":
        env = _RandomActions(env)

    def run(key: Any) -> Any:
        return evaluate(
            key, env, params, lambda _p, _o: zero, None, config.horizon, episodes
        ).fitness

    return float(jax.jit(run)(jax.random.key(seed)))


def recovery_floor(
    config: Any, definition: str = "raw", floor: str | float = "random", episodes: int = 100
) -> tuple[float | None, dict[str, Any]]:
    """The floor a recovery ``definition`` is measured from, and a record of how it was found.

    Args:
        config: the run configuration whose environment the floor is of.
        definition: ``raw`` (no floor) or ``normalised``.
        floor: a policy of :data:`FLOOR_POLICIES` to measure it with (:func:`measure_floor`,
            ``episodes`` episodes), or a known floor return.
        episodes: episodes averaged when measured.

    Returns:
        ``(floor, info)``: the floor (``None`` for raw) and what a report records of it
        (``definition``; normalised: ``env_id``, ``floor``, ``floor_policy`` and, when
        measured, ``floor_episodes``).

    Raises:
        ValueError: for an unknown definition or policy, or a floor that is not finite.

    Example:
        >>> recovery_floor(None, "normalised", -1200.0)[1]["floor_policy"]
        'given'
    """
    if definition not in RECOVERY_DEFINITIONS:
        raise ValueError(f"definition must be one of {RECOVERY_DEFINITIONS}, not {definition!r}")
    if definition == "raw":
        return None, {"definition": "raw"}
    if isinstance(floor, str):
        value = measure_floor(config, episodes=episodes, policy=floor)
        how: dict[str, Any] = {"floor_policy": floor, "floor_episodes": episodes}
    elif math.isfinite(floor):
        value, how = float(floor), {"floor_policy": "given"}
    else:
        raise ValueError(f"floor must be a finite number, not {floor!r}")
    env_id = getattr(config, "env_id", None)
    return value, {"definition": "normalised", "env_id": env_id, "floor": value, **how}


def floor_text(info: Mapping[str, Any]) -> str:
    """How a report states its floor (``info`` from :func:`recovery_floor`).

    Example:
        >>> floor_text({"floor": 21.7, "floor_policy": "random", "floor_episodes": 100})
        'floor 21.7 (the mean return of a random-action policy over 100 episodes)'
    """
    if info.get("floor_policy") == "given":
        return f"floor {info['floor']:.1f} (given)"
    return (
        f"floor {info['floor']:.1f} (the mean return of a {info['floor_policy']}-action policy "
        f"over {info['floor_episodes']} episodes)"
    )


class _RandomActions:
    """An environment whose every step takes a uniformly random action, whatever it is given."""

    def __init__(self, env: Any) -> None:
        self.env = env

    def reset_env(self, key: Any, params: Any) -> Any:
        return self.env.reset_env(key, params)

    def is_truncated(self, state: Any, params: Any) -> Any:
        return self.env.is_truncated(state, params)

    def step_env(self, key: Any, state: Any, action: Any, params: Any) -> Any:
        import jax

        k_action, k_step = jax.random.split(key)
        action = self.env.action_space(params).sample(k_action)
        return self.env.step_env(k_step, state, action, params)


RECOVERY_CURVES = ("best_fitness", "mean_fitness")


def recovery_curves(
    metrics: Mapping[str, Sequence[float] | np.ndarray],
    switch_points: Sequence[int],
    curves: Sequence[str] = RECOVERY_CURVES,
    hold: int = 10,
    window: int = 10,
    floor: float | None = None,
) -> list[dict[str, Any]]:
    """:func:`recovery` of several metric columns, the same way for every method.

    The comparison of methods (``selfref-ghn compare``) uses this with ``hold=10``: a curve
    counts as back to ``f`` of its pre-switch level only once it stays there for 10 generations.

    Args:
        metrics: metric columns by name (as returned by :func:`selfref_ghn.run.loop.evolve`).
        switch_points: generations at which the environment changes.
        curves: the columns to measure (default best and mean return).
        hold: generations a threshold must hold.
        window: generations averaged for the pre-switch level.
        floor: the environment's floor return for the normalised definition (the same for
            every curve); ``None``: raw (see :func:`recovery`).

    Returns:
        One dict per curve and switch: :func:`recovery`'s keys plus ``curve``.

    Example:
        >>> m = {"best_fitness": [10] * 3 + [2] + [10] * 12, "mean_fitness": [5] * 16}
        >>> [r["gens_to_90"] for r in recovery_curves(m, [3], window=3)]
        [1, 0]
    """
    rows: list[dict[str, float | str]] = []
    for name in curves:
        for r in recovery(metrics[name], switch_points, window=window, hold=hold, floor=floor):
            rows.append({"curve": name, **r})
    return rows
