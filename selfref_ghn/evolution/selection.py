"""The (mu + lambda) selection (DESIGN §2 "Evolution loop") shared by
:class:`selfref_ghn.evolution.generation.Evolution`, the ask-tell strategy
(:mod:`selfref_ghn.evolution.ask_tell`)
and the phase profile (:mod:`selfref_ghn.tools.bench`): one selection-fitness rule
(:func:`selection_fitness`), one truncation (:func:`survivors`)."""

from __future__ import annotations

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


__all__ = ["gather_survivors", "selection_fitness", "survivors"]
