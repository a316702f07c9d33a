"""The (mu + lambda) selection shared by :class:`selfref_ghn.evolution.Evolution` and the
ask-tell strategy (:mod:`selfref_ghn.ask_tell`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from selfref_ghn.types import Array


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


__all__ = ["survivors"]
