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
from selfref_ghn.envs._box2d_loops import tick


def chunk_size(batch: int) -> int:
    """Lanes per chunk of the costly branch: a sixteenth of the batch, at least 8.

    Smaller chunks waste less on padding (the last chunk's unused lanes) and cost one more
    trip of the loop each; on XLA:CPU a sixteenth stepped the LunarLander batch 6-21% faster
    than an eighth at 256-1024 landers (docs/envs/lunar_lander.md).
    """
    return int(min(batch, max(8, -(-batch // 16))))


def true_indices(pred: jax.Array, size: int, fill: int) -> jax.Array:
    """``jnp.nonzero(pred, size=size, fill_value=fill)[0]`` for a 1-D ``pred``.

    The same algorithm without ``nonzero``'s unravelling of flat indices (a floor division and
    a remainder, which XLA copies into every gather and scatter that reads the indices: some
    3,000 operations over the LunarLander step's compactions).
    """
    flat = jnp.cumsum(jnp.bincount(jnp.cumsum(pred), length=size))
    return jnp.where(jnp.arange(size) < jnp.sum(pred), flat, fill)


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
        idx = true_indices(pred, chunks * k, batch)
        count = jnp.sum(pred.astype(jnp.int32))

        def body(loop):
            tick("lane_cond")
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

    return _fold_outer_vmaps(run)


def _fold_outer_vmaps(run):
    """Give ``run`` (a ``custom_vmap`` of arrays batched on their leading axis) the batching
    rule of another ``vmap`` around it: that axis is folded into the batch axis."""

    @run.def_vmap
    def _merge(axis_size, in_batched, *args):
        args = [_broadcast(x, b, axis_size) for x, b in zip(args, in_batched, strict=True)]
        inner = jax.tree.leaves(args)[0].shape[1]
        flat = lambda x: x.reshape(axis_size * inner, *x.shape[2:])
        out = run(*jax.tree.map(flat, args))
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


def _widths(batch: int) -> list[int]:
    """Widths of the levels of :func:`lane_while`: the batch, then a sixteenth of it if that is
    at least 16 lanes. (A third level, a sixteenth again, compiled the loop body once more for
    about 3% more speed.)"""
    widths = [batch]
    if batch // 16 >= 16:
        widths.append(batch // 16)
    return widths


def _shrink_loop(cond_fun: Callable, body_fun: Callable, x, valid, widths):
    """Run ``body_fun`` on the lanes of ``x`` (leading axis) that are ``valid`` and satisfy
    ``cond_fun``, until none does; once at most ``widths[1]`` lanes are left, they are gathered
    and the loop goes on at that width."""
    batch = valid.shape[0]
    step, test = jax.vmap(body_fun), jax.vmap(cond_fun)

    def active(x):
        return valid & test(x)

    def body(x):
        a = active(x)
        return jax.tree.map(lambda n, o: _select(a, n, o), step(x), x)

    if len(widths) == 1:
        return jax.lax.while_loop(lambda x: jnp.any(active(x)), body, x)
    k = widths[1]
    x = jax.lax.while_loop(lambda x: jnp.sum(active(x).astype(jnp.int32)) > k, body, x)
    a = active(x)

    def narrow(x):
        idx = true_indices(a, k, batch)
        ok = idx < batch
        sub = jax.tree.map(lambda y: y[jnp.where(ok, idx, 0)], x)
        sub = _shrink_loop(cond_fun, body_fun, sub, ok, widths[1:])
        dest = jnp.where(ok, idx, batch)  # out of bounds: dropped
        return jax.tree.map(lambda o, r: o.at[dest].set(r, mode="drop"), x, sub)

    return jax.lax.cond(jnp.any(a), narrow, lambda x: x, x)


def _select(mask, new, old):
    return jnp.where(mask.reshape(mask.shape + (1,) * (new.ndim - 1)), new, old)


def _shrinking(cond_fun: Callable, body_fun: Callable) -> Callable:
    @custom_vmap
    def run(x):
        batch = jax.tree.leaves(x)[0].shape[0]
        return _shrink_loop(cond_fun, body_fun, x, jnp.ones(batch, bool), _widths(batch))

    return _fold_outer_vmaps(run)


def lane_while(cond_fun: Callable, body_fun: Callable, init_val: Any) -> Any:
    """``lax.while_loop(cond_fun, body_fun, init_val)`` that, under ``vmap``, stops computing the
    lanes that have finished.

    Under ``vmap`` a ``while_loop`` runs its body on every lane until the last lane's
    condition fails. This one runs at full width only while more than a sixteenth of the lanes
    go on; the remaining lanes are then gathered into a batch of a sixteenth of the width, and
    the loop goes on there. Each lane's result is the one
    ``lax.while_loop`` gives it. Both functions must be functions of the carry alone.
    """
    cond_fun, body_fun = jax.jit(cond_fun), jax.jit(body_fun)

    @custom_vmap
    def loop(init):
        return jax.lax.while_loop(cond_fun, body_fun, init)

    @loop.def_vmap
    def _batched(axis_size, in_batched, init):
        (init_b,) = in_batched
        init = _broadcast(init, init_b, axis_size)
        out = _shrinking(cond_fun, body_fun)(init)
        return out, jax.tree.map(lambda _: True, out)

    return loop(jax.tree.map(jnp.asarray, init_val))


def stacked_vmap(f: Callable) -> Callable:
    """``jax.vmap(f)`` over a short leading axis (the bodies of a scene) that, under an
    enclosing ``vmap``, keeps that axis outside the batch axis.

    A plain nested ``vmap`` puts the batch axis first (``[batch, n]``): XLA:CPU's elementwise
    kernels then loop over ``n`` innermost, a few lanes at a time. Here the batching rule moves
    ``n`` in front (``[n, batch]``), maps ``f`` over both, and moves it back: the kernels run
    along the batch. Arguments that the enclosing ``vmap`` does not batch stay unbatched.
    """

    @custom_vmap
    def run(*args):
        return jax.vmap(f)(*args)

    @run.def_vmap
    def _batched(axis_size, in_batched, *args):
        in_batched = tuple(in_batched)
        moved = jax.tree.map(lambda x, b: jnp.moveaxis(x, 0, 1) if b else x, args, in_batched)
        in_axes = jax.tree.map(lambda b: 0 if b else None, in_batched)
        out = jax.vmap(jax.vmap(f, in_axes=tuple(in_axes)))(*moved)
        out = jax.tree.map(lambda x: jnp.moveaxis(x, 0, 1), out)
        return out, jax.tree.map(lambda _: True, out)

    return run


__all__ = ["chunk_size", "lane_cond", "lane_while", "stacked_vmap", "true_indices"]
