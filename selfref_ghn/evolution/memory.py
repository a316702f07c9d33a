"""How much memory a population needs, checked before compiling (DESIGN §4: the population axis
over devices; a population that would not fit should say so before XLA tries).

:func:`estimate` adds up, per device, the arrays one generation holds at its peak, from the
config and the static shapes (no compilation):

* the state (``EvoState``: parents' flat SR-GHN parameters and policies, fitness, basis...),
  twice: the chunk's input and its output (donated, but both are live inside the scan);
* the ``P*C`` children, and per child the mutation's temporaries (Gaussian coefficients, the
  projected update, the constant noise: about three more copies of a member's parameters);
* the deterministic head of every member (``N_policy x P_max`` rows) and the ``P(1+C)`` flat
  policies;
* the rollouts: per evaluated member (the children only, in the evolution modes that do not
  re-evaluate parents) and episode, the environment state and observation carried through
  the time ``lax.scan`` (double-buffered; nothing is stored per time step, so the horizon does
  not multiply it);
* the metrics of one chunk (``log_every`` generations).

Population-axis terms are divided by the number of devices; a vmapped sweep
(:mod:`selfref_ghn.tools.sweep`) multiplies everything by its number of runs. The estimate is a
floor
(XLA adds fusion temporaries and its own buffers), so :func:`check` refuses a population only
when it needs more than ``fraction`` (default 0.9) of what is available: the device's memory
limit on an accelerator, the host's available RAM on CPU. The error says which population would
fit.
"""

from __future__ import annotations

import math
import os
from typing import Any

import jax
import numpy as np

from selfref_ghn.config import ConfigError
from selfref_ghn.evolution.selection import evaluates_parents

F32 = 4


def _nbytes(tree: Any) -> int:
    return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def estimate(evo: Any, population_size: int | None = None, runs: int = 1) -> dict[str, int]:
    """Bytes one generation needs per device, by part, for ``evo`` (an :class:`Evolution`).

    Args:
        evo: the run's :class:`~selfref_ghn.evolution.generation.Evolution` (config, shapes, mesh).
        population_size: estimate for this ``P`` instead of the config's.
        runs: runs batched together (a vmapped sweep).

    Returns:
        ``{part: bytes}`` with a ``"total"`` entry.

    Example:
        >>> est = estimate(Evolution.create(Config(population_size=8)))  # doctest: +SKIP
        >>> est["total"] > est["state"]                                   # doctest: +SKIP
        True
    """
    cfg = evo.config
    P = cfg.population_size if population_size is None else population_size
    C, E = cfg.num_children, cfg.episodes
    M = P * (1 + C)
    evaluated = M if evaluates_parents(cfg.evolution_mode) else P * C
    devices = 1 if evo.mesh is None else evo.mesh.size
    n_ghn = evo.ghn.num_params
    pol = evo.ghn.policy_graph
    n_pol = pol.num_params
    per_state = _nbytes(jax.eval_shape(evo.init)) - cfg.population_size * (n_ghn + n_pol + 1) * F32
    env_state = jax.eval_shape(lambda k: evo.env.reset_env(k, evo.env_params), jax.random.key(0))
    rollout_per = _nbytes(env_state) * 2 + 64  # obs + env state, double-buffered, scalars
    parts = {
        "state": 2 * (per_state + P * (n_ghn + n_pol + 1) * F32 // devices),
        "children": P * C * n_ghn * F32 // devices,
        "mutation_temporaries": 3 * P * C * n_ghn * F32 // devices,
        "policy_head": M * (pol.num_nodes * pol.max_leaf_size + n_pol) * F32 // devices,
        "rollouts": evaluated * E * rollout_per // devices,
        "metrics": cfg.log_every * (3 * P + 32) * F32,
    }
    parts = {k: v * runs for k, v in parts.items()}
    parts["total"] = sum(parts.values())
    return parts


def available_bytes(evo: Any) -> tuple[int, str]:
    """Memory one device of ``evo``'s run may use, and where the number comes from."""
    device = jax.devices()[0] if evo.mesh is None else evo.mesh.devices.flat[0]
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - not every backend reports memory
        stats = None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), f"{device.platform} device memory limit"
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        free = int(info["MemAvailable"].split()[0]) * 1024
        return free // (1 if evo.mesh is None else evo.mesh.size), "available host RAM"
    except (OSError, KeyError, ValueError):
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")), "host RAM"


def check(evo: Any, runs: int = 1, fraction: float = 0.9, available: int | None = None) -> int:
    """Refuse, before compiling, a population that would not fit in memory.

    Args:
        evo: the run's :class:`~selfref_ghn.evolution.generation.Evolution`.
        runs: runs batched together (a vmapped sweep).
        fraction: share of the available memory the estimate may take.
        available: bytes available per device (default :func:`available_bytes`).

    Returns:
        The estimated bytes per device.

    Raises:
        ConfigError: (field ``population_size``) saying how much is needed, how much is
            available, and the largest population (a multiple of the device count) that fits.
    """
    need = estimate(evo, runs=runs)["total"]
    where = "given"
    if available is None:
        available, where = available_bytes(evo)
    budget = int(available * fraction)
    if need <= budget:
        return need
    step = 1 if evo.mesh is None else evo.mesh.size
    lo, hi = 0, evo.config.population_size // step  # in units of `step`; hi does not fit
    while hi - lo > 1:  # the largest multiple of `step` whose estimate fits
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if estimate(evo, mid * step, runs)["total"] <= budget else (lo, mid)
    lo *= step
    fits = f"at most population_size={lo}" if lo else "no population of this model"
    raise ConfigError(
        "population_size",
        evo.config.population_size,
        f"needs about {need / 2**30:.2f} GiB per device"
        + (f" for {runs} batched runs" if runs > 1 else "")
        + f", {available / 2**30:.2f} GiB {where} ({fraction:.0%} usable): {fits} fits"
        + (", or use more devices (--devices)" if jax.device_count() > step else ""),
    )
