"""Runaway monitor: what a self-modifying population can do wrong (DESIGN §2 "Known failure
signatures", §4: it runs inside the compiled loop, no host round-trip).

A pure ``update(monitor_state, metrics, config, hparams)`` watches each generation's metrics
for five conditions:

* ``rate_pinned``: the population's mean mutation rate within ``monitor_rate_margin`` of a rate
  bound (``rate_max``, 1 by default: the rate is a max of sigmoids; or ``rate_min``);
* ``diversity_high`` / ``diversity_low``: diversity (mean per-parameter std over members)
  above ``monitor_diversity_max`` or below ``monitor_diversity_min``;
* ``return_collapse``: the best return fell below its peak since the last switch by more than
  ``monitor_collapse`` times the peak's magnitude, with no switch in between;
* ``nonfinite``: any non-finite fitness or parameter among the evaluated members.

A condition *trips* once it has held ``monitor_patience`` consecutive generations
(``nonfinite``: at once). Per ``Config.monitor``: ``"off"`` watches nothing (the flag columns
stay 0), ``"warn"`` reports tripped conditions as ``monitor_<name>`` metrics (CSV columns and
the progress line), ``"stop"`` also halts the run: the compiled loop skips every later
generation, and the host writes a checkpoint and exits with :data:`EXIT_MONITOR_STOP`.

Example:
    >>> mon = init()
    >>> mon, flags = update(mon, metrics, config, hparams)  # doctest: +SKIP
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import struct

from selfref_ghn.config import Config, Hyperparams
from selfref_ghn.types import Array, Metrics

FLAGS = ("rate_pinned", "diversity_high", "diversity_low", "return_collapse", "nonfinite")
# Metrics (and metrics.csv columns) the monitor adds to every generation.
COLUMNS = tuple(f"monitor_{name}" for name in FLAGS) + ("monitor_stop",)
# Exit status of ``selfref-ghn run`` when the monitor stopped the run (docs/reliability.md).
EXIT_MONITOR_STOP = 3


class MonitorState(struct.PyTreeNode):
    """What the monitor carries from one generation to the next (part of the run state).

    Attributes:
        streak: ``(len(FLAGS),)`` int32 consecutive generations each condition has held.
        peak: ``()`` best return since the last switch (``-inf`` before the first).
        last_inverted: ``()`` int32 the previous generation's ``inverted`` (-1 before any).
        stopped: ``()`` int32, 1 once a ``stop`` policy tripped.
        stop_generation: ``()`` int32 the generation that tripped it (-1: none).
        stop_flags: ``()`` int32 bit mask over :data:`FLAGS` of what tripped it.
    """

    streak: Array
    peak: Array
    last_inverted: Array
    stopped: Array
    stop_generation: Array
    stop_flags: Array


def init() -> MonitorState:
    """A fresh monitor state.

    Returns:
        :class:`MonitorState` with no streaks and no stop.
    """
    return MonitorState(
        streak=jnp.zeros((len(FLAGS),), jnp.int32),
        peak=jnp.float32(-jnp.inf),
        last_inverted=jnp.int32(-1),
        stopped=jnp.int32(0),
        stop_generation=jnp.int32(-1),
        stop_flags=jnp.int32(0),
    )


def release(state: MonitorState) -> MonitorState:
    """The state with a past stop cleared (used when a stopped run is resumed).

    Args:
        state: a restored monitor state.

    Returns:
        The same state, not stopped, with every streak reset.
    """
    return state.replace(
        streak=jnp.zeros_like(state.streak),
        stopped=jnp.zeros_like(state.stopped),
        stop_generation=jnp.full_like(state.stop_generation, -1),
        stop_flags=jnp.zeros_like(state.stop_flags),
    )


def running(state: MonitorState) -> Array:
    """``()`` bool: whether the run may continue (no stop has tripped)."""
    return state.stopped == 0


def conditions(
    state: MonitorState, metrics: Metrics, config: Config, hparams: Hyperparams
) -> tuple[Array, Array]:
    """This generation's raw conditions, before patience.

    Args:
        state: the monitor state before this generation.
        metrics: the generation's metrics (``mutation_rate_mean, diversity, best_fitness,
            inverted, nonfinite_fitness, nonfinite_params``).
        config: thresholds (``monitor_*`` fields).
        hparams: the rate bounds ``rate_min, rate_max``.

    Returns:
        ``(held, peak)``: ``(len(FLAGS),)`` bool, and the updated peak return.
    """
    rate = metrics["mutation_rate_mean"]
    margin = config.monitor_rate_margin
    pinned = (rate >= hparams.rate_max - margin) | (rate <= hparams.rate_min + margin)
    div = metrics["diversity"]
    best = metrics["best_fitness"]
    switched = metrics["inverted"].astype(jnp.int32) != state.last_inverted
    peak = jnp.where(switched, -jnp.inf, state.peak)
    collapse = jnp.isfinite(peak) & (
        best < peak - config.monitor_collapse * jnp.maximum(jnp.abs(peak), 1e-6)
    )
    nonfinite = (metrics["nonfinite_fitness"] > 0) | (metrics["nonfinite_params"] > 0)
    nonfinite = nonfinite | ~jnp.isfinite(rate) | ~jnp.isfinite(div)
    held = jnp.stack(
        [
            pinned,
            div > config.monitor_diversity_max,
            div < config.monitor_diversity_min,
            collapse,
            nonfinite,
        ]
    )
    peak = jnp.where(jnp.isfinite(best), jnp.maximum(peak, best), peak)
    return held, peak


def update(
    state: MonitorState, metrics: Metrics, config: Config, hparams: Hyperparams
) -> tuple[MonitorState, dict[str, Array]]:
    """Advance the monitor by one generation.

    Args:
        state: the monitor state before this generation.
        metrics: the generation's metrics (see :func:`conditions`).
        config: the policy ``monitor`` and its thresholds.
        hparams: the rate bounds.

    Returns:
        ``(state, flags)``: ``flags`` maps each of :data:`COLUMNS` to an int32 scalar
        (1: the condition has tripped; ``monitor_stop``: this generation stopped the run).
    """
    if config.monitor == "off":
        return state, {c: jnp.int32(0) for c in COLUMNS}
    held, peak = conditions(state, metrics, config, hparams)
    streak = jnp.where(held, state.streak + 1, 0)
    patience = jnp.array(
        [1 if name == "nonfinite" else config.monitor_patience for name in FLAGS], jnp.int32
    )
    tripped = streak >= patience
    mask = jnp.sum(jnp.where(tripped, 2 ** jnp.arange(len(FLAGS)), 0)).astype(jnp.int32)
    stop_now = (config.monitor == "stop") & tripped.any() & (state.stopped == 0)
    new = MonitorState(
        streak=streak.astype(jnp.int32),
        peak=peak.astype(jnp.float32),
        last_inverted=metrics["inverted"].astype(jnp.int32),
        stopped=jnp.where(stop_now, 1, state.stopped).astype(jnp.int32),
        stop_generation=jnp.where(stop_now, metrics["generation"], state.stop_generation).astype(
            jnp.int32
        ),
        stop_flags=jnp.where(stop_now, mask, state.stop_flags).astype(jnp.int32),
    )
    flags = {f"monitor_{name}": tripped[i].astype(jnp.int32) for i, name in enumerate(FLAGS)}
    flags["monitor_stop"] = stop_now.astype(jnp.int32)
    return new, flags


def flag_names(mask: int) -> list[str]:
    """Names of the conditions in a bit mask such as ``MonitorState.stop_flags``."""
    return [name for i, name in enumerate(FLAGS) if int(mask) >> i & 1]


def explain(name: str, row: dict[str, float], config: Config) -> str:
    """A host-side sentence saying why condition ``name`` tripped, from a metrics row.

    Args:
        name: one of :data:`FLAGS`.
        row: the tripping generation's metrics row.
        config: the thresholds.

    Returns:
        E.g. ``"diversity 7.2 > monitor_diversity_max 5.0"``.
    """
    if name == "rate_pinned":
        return (
            f"mean mutation rate {row['mutation_rate_mean']:.4f} within "
            f"monitor_rate_margin {config.monitor_rate_margin} of its bounds "
            f"[{config.rate_min}, {config.rate_max}] for {config.monitor_patience} generations"
        )
    if name == "diversity_high":
        return (
            f"diversity {row['diversity']:.4g} > monitor_diversity_max "
            f"{config.monitor_diversity_max} for {config.monitor_patience} generations"
        )
    if name == "diversity_low":
        return (
            f"diversity {row['diversity']:.4g} < monitor_diversity_min "
            f"{config.monitor_diversity_min} for {config.monitor_patience} generations"
        )
    if name == "return_collapse":
        return (
            f"best return {row['best_fitness']:.4g} fell by more than monitor_collapse "
            f"{config.monitor_collapse} of its peak since the last switch, for "
            f"{config.monitor_patience} generations"
        )
    return (
        f"{int(row['nonfinite_fitness'])} non-finite fitness values, "
        f"{int(row['nonfinite_params'])} members with non-finite parameters"
    )
