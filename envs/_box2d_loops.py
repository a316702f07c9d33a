"""The Box2D solver's loops in its two modes, and a counter of their trips (DESIGN §3).

The LunarLander physics (:mod:`selfref_ghn.envs._box2d`) runs in one of two modes:

* ``"cpu"``: data-dependent loops. The position iterations stop at convergence (Box2D's early
  exit), the time-of-impact (TOI) sweeps at a fixed point, and under ``vmap`` the costly
  branches run only on the lanes that need them (:mod:`selfref_ghn.envs._lanes`). On a CPU a
  loop trip costs little beyond its work, so skipping work wins.
* ``"accelerator"``: every loop has a fixed trip count. A loop that Box2D stops early becomes
  a fixed count of iterations (:data:`ITERATIONS`) in which a lane that has stopped keeps its
  values (a ``jnp.where`` mask), so a lane that stops within them gets the early exit's
  result; the branches that the CPU mode runs on some lanes run on all of them, masked. The
  iterations are unrolled into trips of several iterations (:data:`UNROLL`). On a GPU every
  trip of a ``while_loop`` is a kernel launch and a device-to-host read of its condition, and
  a step is hundreds of such trips in the CPU mode.

``"auto"`` picks ``"cpu"`` on the CPU backend and ``"accelerator"`` on any other.

:func:`counting` counts the trips the loops make while a program runs (each loop body calls
:func:`tick`, which only while counting inserts a host callback): the latency proxy of
``benchmarks/bench_lunar_lander.py``.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp

SOLVERS = ("auto", "cpu", "accelerator")

# Iterations per trip of the accelerator mode's fixed loops; a loop of a single trip is
# straight-line code. Larger factors mean fewer trips and longer compiles.
UNROLL = {"velocity": 20, "position": 20, "toi_velocity": 10, "bisection": 14, "toi_position": 20}
# The accelerator mode's iteration counts of the loops that stop early in the CPU mode, where
# they are below Box2D's caps (up to 180 TOI velocity sweeps, until a fixed point; the 60
# position iterations are all kept: a lander that lands hard needs up to ~50 of them). A lane
# converged within them gets the CPU mode's result; the measured counts
# (docs/envs/lunar_lander.md): TOI sweeps within 9, but for one TOI solve in 18, which
# reached no exact fixed point.
ITERATIONS = {"toi_velocity": 20}

_COUNTS: collections.Counter | None = None
_QUIET = [False]  # while tracing the iterations inside a fixed loop's trip: no inner ticks


def resolve_solver(solver: str) -> str:
    """``"cpu"`` or ``"accelerator"`` for ``solver`` (``"auto"``: by ``jax.default_backend()``).

    Example:
        >>> resolve_solver("accelerator")
        'accelerator'
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver: expected one of {', '.join(SOLVERS)}, got {solver!r}")
    if solver == "auto":
        return "cpu" if jax.default_backend() == "cpu" else "accelerator"
    return solver


@contextlib.contextmanager
def counting() -> Iterator[collections.Counter]:
    """Count loop trips, by loop name, of the programs traced inside the context.

    JAX's caches are cleared on entry and exit, so that programs traced inside carry the
    counting callbacks and programs traced afterwards do not. Read the counter after
    ``jax.effects_barrier()``.

    Example:
        >>> with counting() as trips:
        ...     _ = jax.jit(lambda x: jax.lax.fori_loop(0, 3, lambda i, y: tick("f") or y, x))(1)
        ...     jax.effects_barrier()
        >>> trips["f"]
        3
    """
    global _COUNTS
    jax.clear_caches()
    _COUNTS = collections.Counter()
    try:
        yield _COUNTS
    finally:
        _COUNTS = None
        jax.clear_caches()


def tick(name: str) -> None:
    """In a loop body: count one trip of loop ``name`` while :func:`counting` (else nothing)."""
    counts = _COUNTS
    if counts is not None and not _QUIET[0]:
        jax.debug.callback(lambda: counts.update([name]))


def _select(keep, new, old):
    return jax.tree.map(lambda n, o: jnp.where(keep, n, o), new, old)


def fixed_loop(name: str, step: Callable, carry: Any, iterations: int) -> Any:
    """``step`` applied ``iterations`` times, ``UNROLL[name]`` iterations per loop trip (a loop
    with a single trip is straight-line code)."""
    if iterations <= 0:
        return carry
    unroll = min(UNROLL[name], iterations)
    trips, rest = divmod(iterations, unroll)

    def trip(_, carry):
        tick(name)
        return unrolled(step, carry, unroll)

    if trips > 1:
        carry = jax.lax.fori_loop(0, trips, trip, carry)
        trips = 0
    return unrolled(step, carry, trips * unroll + rest)


def unrolled(step: Callable, carry: Any, iterations: int) -> Any:
    """``step`` applied ``iterations`` times as straight-line code (no loop, no trips)."""
    quiet, _QUIET[0] = _QUIET[0], True
    try:
        for i in range(iterations):
            carry = step(carry)
            if i + 1 < iterations:
                carry = fence(carry)
    finally:
        _QUIET[0] = quiet
    return carry


def fence(tree: Any) -> Any:
    """``tree`` with its values stored once, not re-computed in each consumer's kernel.

    XLA:CPU fuses cheap elementwise producers into every consumer; along a chain of unrolled
    iterations that re-computes earlier iterations inside later ones, and the kernels grow
    until LLVM takes many minutes to compile them (a chain of 20 unrolled TOI position
    iterations: minutes of LLVM for one step at batch 4, against seconds with this fence).
    ``lax.optimization_barrier`` does not stop it: XLA:CPU removes barriers before its fusion
    pass. A division does: XLA does not copy an expensive op into several consumers. So the
    floating-point leaves (stacked by shape and dtype) are divided by a 1 that XLA cannot fold
    away, and read back as slices. Exact: ``x / 1 == x`` for every ``x``.
    """
    leaves, treedef = jax.tree.flatten(tree)
    groups: dict[tuple, list[int]] = collections.defaultdict(list)
    for i, x in enumerate(leaves):
        x = jnp.asarray(x)
        groups[x.shape, x.dtype].append(i)
    for (_, dtype), idx in groups.items():
        stacked = jnp.stack([leaves[i] for i in idx])
        if jnp.issubdtype(dtype, jnp.floating):
            # x / 1 with a 1 that XLA cannot fold (2 where x is NaN: NaN / 2 is NaN): exact
            one = jnp.where(jnp.isnan(stacked), 2.0, 1.0).astype(dtype)
            stacked = stacked / one
        for k, i in enumerate(idx):
            leaves[i] = stacked[k]
    return jax.tree.unflatten(treedef, leaves)


def masked_while(name: str, cond: Callable, body: Callable, init: Any, max_trips: int) -> Any:
    """``lax.while_loop(cond, body, init)`` as ``max_trips`` masked iterations (at most
    ``ITERATIONS[name]``): once ``cond`` fails, later iterations keep the carry. Equal to the
    while loop when it makes no more trips than that (the solver's loops cap their trips)."""
    max_trips = min(max_trips, ITERATIONS.get(name, max_trips))
    return fixed_loop(name, lambda c: _select(cond(c), body(c), c), init, max_trips)


__all__ = [
    "ITERATIONS",
    "SOLVERS",
    "UNROLL",
    "counting",
    "fixed_loop",
    "masked_while",
    "resolve_solver",
    "tick",
]
