"""The (mu + lambda) selection (DESIGN §2 "Evolution loop") shared by
:class:`selfref_ghn.evolution.generation.Evolution`, the ask-tell strategy
(:mod:`selfref_ghn.evolution.ask_tell`)
and the phase profile (:mod:`selfref_ghn.tools.bench`): one selection-fitness rule
(:func:`selection_fitness`), one truncation (:func:`survivors`), and the evolution modes
(``Config.evolution_mode``, :data:`SELECT`): who is evaluated and who competes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from selfref_ghn.types import Array


def selection_fitness(fitness: Array, num_parents: int, child_factor: Array | float) -> Array:
    """The fitness members are selected with: each parent's mixed with its children's mean.

    Args:
        fitness: ``(P + P*C,)`` returns, parents first, then parent ``i``'s children at
            ``P + i*C .. P + i*C + C - 1``; ``-inf`` for a member that must not survive.
        num_parents: ``P``.
        child_factor: a parent's fitness is ``(1 - child_factor) * own + child_factor *
            mean(finite children)`` (its own alone if no child is finite); a parent whose own
            fitness is not finite stays ``-inf``.

    Returns:
        ``(P + P*C,)`` the selection fitness (children's unchanged).

    Example:
        >>> import jax.numpy as jnp
        >>> selection_fitness(jnp.array([1.0, 3.0, 5.0]), 1, 0.5).tolist()
        [2.5, 3.0, 5.0]
    """
    P = num_parents
    kid = fitness[P:].reshape(P, -1)
    ok = jnp.isfinite(kid)
    kid_mean = jnp.sum(jnp.where(ok, kid, 0.0), 1) / jnp.maximum(ok.sum(1), 1)
    kid_mean = jnp.where(ok.any(1), kid_mean, fitness[:P])
    parent = jnp.where(
        jnp.isfinite(fitness[:P]),
        (1.0 - child_factor) * fitness[:P] + child_factor * kid_mean,
        -jnp.inf,
    )
    return jnp.concatenate([parent, fitness[P:]])


def gather_survivors(selected: Array, parents: Array, children: Array) -> Array:
    """Rows ``selected`` of the population ``parents`` then ``children``, without
    concatenating the two: ``(P, ...)``."""
    P = parents.shape[0]
    from_parent = (selected < P).reshape((-1,) + (1,) * (parents.ndim - 1))
    return jnp.where(
        from_parent, parents[jnp.minimum(selected, P - 1)], children[jnp.maximum(selected - P, 0)]
    )


def survivors(fitness: Array, num_parents: int, ties: str = "parents") -> tuple[Array, Array]:
    """The (mu + lambda) selection: the ``num_parents`` best of ``fitness``.

    Args:
        fitness: ``(P + P*C,)`` selection fitness, parents (``0..P-1``) first, then children.
        num_parents: ``P``.
        ties: who wins a tie: ``"parents"`` (``lax.top_k``'s lower index first, so a child
            must beat a parent) or ``"children"`` (the children are ranked first, so a child
            as good as a parent survives in its place: neutral drift on a plateau).

    Returns:
        ``(top_fitness, selected)``: the survivors' fitness, best first, and their indices
        into ``fitness``.

    Example:
        >>> import jax.numpy as jnp
        >>> fit = jnp.array([1.0, 0.0, 1.0, 2.0])  # P = 2 parents, then 2 children
        >>> survivors(fit, 2)[1].tolist(), survivors(fit, 2, "children")[1].tolist()
        ([3, 0], [3, 2])
    """
    if ties == "parents":
        return jax.lax.top_k(fitness, num_parents)
    order = jnp.concatenate([jnp.arange(num_parents, fitness.shape[0]), jnp.arange(num_parents)])
    top, pos = jax.lax.top_k(fitness[order], num_parents)
    return top, order[pos]


class Selection(NamedTuple):
    """What one evolution mode's selection returns (every field ``(P,)``, best first)."""

    top: Array  # the survivors' selection fitness
    selected: Array  # their indices: parents 0..P-1, then parent i's children at P + i*C + j
    carried: Array  # the fitness the next state keeps for them (EvoState.fitness)


def elitist_union(
    parents: Array, children: Array, child_factor: Array | float, ties: str = "parents"
) -> Selection:
    """The paper's (mu + lambda): parents re-evaluated beside their children, the best ``P`` of
    the union survive; each carries its selection fitness.

    Args:
        parents: ``(P,)`` parents' fitness, measured this generation (``-inf``: never survives).
        children: ``(P*C,)`` children's fitness, parent ``i``'s at ``i*C .. i*C + C - 1``.
        child_factor: mixing of a parent's fitness with its children's mean
            (:func:`selection_fitness`).
        ties: who wins a tie (:func:`survivors`).

    Returns:
        The :class:`Selection`.

    Example:
        >>> import jax.numpy as jnp
        >>> kids = jnp.array([0.0, 2.0, 3.0, 5.0])  # P = 2 parents, C = 2 children each
        >>> elitist_union(jnp.array([1.0, 4.0]), kids, 0.0).selected.tolist()
        [5, 1]
    """
    P = parents.shape[0]
    top, selected = survivors(
        selection_fitness(jnp.concatenate([parents, children]), P, child_factor), P, ties
    )
    return Selection(top, selected, top)


def generational(
    parents: Array, children: Array, child_factor: Array | float, ties: str = "parents"
) -> Selection:
    """Children replace their parents: the best ``P`` children survive (``parents``,
    ``child_factor`` and ``ties`` are not used: parents are not evaluated).

    Example:
        >>> import jax.numpy as jnp
        >>> kids = jnp.array([0.0, 2.0, 3.0, 1.0])
        >>> generational(jnp.array([9.0, 9.0]), kids, 0.0).selected.tolist()
        [4, 3]
    """
    del child_factor, ties
    P = parents.shape[0]
    top, pos = jax.lax.top_k(children, P)
    return Selection(top, pos + P, top)


def cached_elitist(
    parents: Array, children: Array, child_factor: Array | float, ties: str = "parents"
) -> Selection:
    """(mu + lambda) without re-evaluation: ``parents`` is the fitness each parent was measured
    with when it was first selected (cached in the state); the union with the freshly evaluated
    children is ranked as in :func:`elitist_union`. Each survivor carries its own measured
    fitness (a parent's cached one, unchanged; a child's new one), not its mixed selection
    fitness, so ``child_factor`` mixes a parent's own return with its current children's
    mean every generation, as in :func:`elitist_union`.

    Example:
        >>> import jax.numpy as jnp
        >>> sel = cached_elitist(jnp.array([1.0, 4.0]), jnp.array([0.0, 2.0, 3.0, 5.0]), 0.5)
        >>> sel.selected.tolist(), sel.carried.tolist()
        ([5, 1], [5.0, 4.0])
    """
    P = parents.shape[0]
    own = jnp.concatenate([parents, children])
    top, selected = survivors(selection_fitness(own, P, child_factor), P, ties)
    return Selection(top, selected, own[selected])


# Config.evolution_mode -> its selection; chosen once, when the step is traced.
SELECT: dict[str, Callable[..., Selection]] = {
    "elitist_union": elitist_union,
    "generational": generational,
    "cached_elitist": cached_elitist,
}


def evaluates_parents(mode: str) -> bool:
    """Whether ``mode`` plays the parents' episodes again every generation."""
    return mode == "elitist_union"


__all__ = [
    "SELECT",
    "Selection",
    "cached_elitist",
    "elitist_union",
    "evaluates_parents",
    "gather_survivors",
    "generational",
    "selection_fitness",
    "survivors",
]
