"""``lane_cond``: a ``lax.cond`` whose costly branch runs, under ``vmap``, only where needed.

Under ``vmap`` a ``lax.cond`` with a batched predicate becomes a ``select``: both branches run
on every lane. For the LunarLander physics that is the costly case: a batch of a thousand
landers almost always has a few touching the ground, and the contact sweeps (or the
time-of-impact pass, or an auto-reset) would run for all of them. :func:`lane_cond` keeps the
unbatched meaning of ``lax.cond`` and, through a custom batching rule
(:func:`jax.custom_batching.custom_vmap`), runs ``false_fn`` on every lane and ``true_fn``
only on the lanes whose predicate holds: they are gathered into chunks of a fixed size, and a
``while_loop`` runs as many chunks as there are such lanes (none when there are none). Every
lane's result is the one its own branch computes, so results are those of ``lax.cond`` per lane.

Nested ``vmap``s (members x episodes) are merged into one batch axis first, so the lanes are
gathered across the whole batch.

Both branches must be functions of ``operand`` alone (no traced values closed over).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.custom_batching import custom_vmap


def chunk_size(batch: int) -> int:
    """Lanes per chunk of the costly branch: an eighth of the batch, at least 8."""
    return int(min(batch, max(8, -(-batch // 8))))


def _broadcast(tree, batched, size):
    return jax.tree.map(
        lambda x, b: x if b else jnp.broadcast_to(x, (size, *jnp.shape(x))), tree, batched
    )


def _compacted(true_fn: Callable, false_fn: Callable) -> Callable:
    """``f(pred[B], operand[B, ...])``: ``false_fn`` on all lanes, ``true_fn`` where ``pred``."""

    @custom_vmap
    def run(pred, operand):
        batch = pred.shape[0]
        out = jax.vmap(false_fn)(operand)
        k = chunk_size(batch)
        chunks = -(-batch // k)
        # lanes whose predicate holds first (in order), then ``batch`` as padding
        idx = jnp.nonzero(pred, size=chunks * k, fill_value=batch)[0]
        count = jnp.sum(pred.astype(jnp.int32))

        def body(loop):
            i, out = loop
            sel = jax.lax.dynamic_slice(idx, (i * k,), (k,))
            valid = sel < batch
            sub = jax.tree.map(lambda x: x[jnp.where(valid, sel, 0)], operand)
            res = jax.vmap(true_fn)(sub)
            dest = jnp.where(valid, sel, batch)  # out of bounds: dropped
            out = jax.tree.map(lambda o, r: o.at[dest].set(r, mode="drop"), out, res)
            return i + 1, out

        _, out = jax.lax.while_loop(lambda loop: loop[0] * k < count, body, (0, out))
        return out

    @run.def_vmap
    def _merge(axis_size, in_batched, pred, operand):
        # another vmap around the batched call: fold its axis into the batch axis
        pred_b, op_b = in_batched
        pred = _broadcast(pred, pred_b, axis_size)
        operand = _broadcast(operand, op_b, axis_size)
        inner = pred.shape[1]
        flat = lambda x: x.reshape(axis_size * inner, *x.shape[2:])
        out = run(flat(pred), jax.tree.map(flat, operand))
        out = jax.tree.map(lambda x: x.reshape(axis_size, inner, *x.shape[1:]), out)
        return out, jax.tree.map(lambda _: True, out)

    return run


def lane_cond(pred: jax.Array, true_fn: Callable, false_fn: Callable, operand: Any) -> Any:
    """``lax.cond(pred, true_fn, false_fn, operand)`` that, under ``vmap``, runs ``true_fn`` only
    on the lanes whose ``pred`` holds (see the module docstring).

    Args:
        pred: scalar boolean.
        true_fn, false_fn: functions of ``operand`` with the same output structure.
        operand: a pytree of arrays.
    """

    # Under jit, each branch is traced to a jaxpr once, at the unbatched operand: the
    # unbatched rule below, the batching rule (on gathered chunks) and every enclosing
    # lane_cond that batches this one reuse that trace instead of re-running Python.
    true_fn, false_fn = jax.jit(true_fn), jax.jit(false_fn)

    @custom_vmap
    def cond(pred, operand):
        return jax.lax.cond(pred, true_fn, false_fn, operand)

    @cond.def_vmap
    def _batched(axis_size, in_batched, pred, operand):
        pred_b, op_b = in_batched
        pred = _broadcast(pred, pred_b, axis_size)
        operand = _broadcast(operand, op_b, axis_size)
        out = _compacted(true_fn, false_fn)(pred, operand)
        return out, jax.tree.map(lambda _: True, out)

    return cond(jnp.asarray(pred, bool), jax.tree.map(jnp.asarray, operand))


__all__ = ["chunk_size", "lane_cond"]
