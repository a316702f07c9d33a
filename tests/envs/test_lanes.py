"""``lane_cond``: ``lax.cond`` per lane, with the costly branch run only where it is needed."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from selfref_ghn.envs._lanes import chunk_size, lane_cond


def _true(op):
    return {"y": op["x"] * 2.0 + op["c"], "n": jnp.sum(op["x"])}


def _false(op):
    return {"y": op["x"] - 1.0, "n": jnp.zeros(())}


def _same(a, b):
    return all(
        bool(jnp.all(x == y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def test_unbatched_is_lax_cond():
    x = jnp.arange(3.0)
    for p in (True, False):
        op = {"x": x, "c": jnp.float32(0.5)}
        assert _same(lane_cond(p, _true, _false, op), jax.lax.cond(p, _true, _false, op))


@pytest.mark.parametrize("prob", [0.0, 0.2, 1.0])
def test_nested_vmap_matches_cond_per_lane(prob):
    k = jax.random.key(0)
    p = jax.random.bernoulli(k, prob, (5, 7))
    x = jax.random.normal(jax.random.key(1), (5, 7, 3))
    c = jnp.float32(0.5)  # unbatched operand leaf

    def ours(p, x, c):
        return lane_cond(p, _true, _false, {"x": x, "c": c})

    def ref(p, x, c):
        return jax.lax.cond(p, _true, _false, {"x": x, "c": c})

    nest = lambda f: jax.jit(jax.vmap(jax.vmap(f, (0, 0, None)), (0, 0, None)))
    assert _same(nest(ours)(p, x, c), nest(ref)(p, x, c))
    # predicate batched on the outer axis only
    po = p[:, 0]
    outer = lambda f: jax.jit(jax.vmap(jax.vmap(f, (None, 0, None)), (0, 0, None)))
    assert _same(outer(ours)(po, x, c), outer(ref)(po, x, c))


def test_inside_a_scan_under_vmap():
    def run(cond, p, x):
        def body(carry, q):
            out = cond(q, _true, _false, {"x": carry, "c": jnp.float32(1.0)})
            return out["y"], out["n"]

        return jax.lax.scan(body, x, p)

    p = jax.random.bernoulli(jax.random.key(2), 0.3, (9, 4))
    x = jax.random.normal(jax.random.key(3), (9, 3))
    ours = jax.jit(jax.vmap(lambda p, x: run(lane_cond, p, x)))(p, x)
    ref = jax.jit(jax.vmap(lambda p, x: run(jax.lax.cond, p, x)))(p, x)
    assert _same(ours, ref)


@pytest.mark.parametrize("active", [0, 3, 128, 300, 1024])
def test_costly_branch_runs_on_gathered_chunks_only(active):
    """Count the lanes ``true_fn`` sees: whole chunks of the lanes that need it, not the batch."""
    batch = 1024
    seen = []

    def costly(op):
        jax.debug.callback(lambda v: seen.append(np.asarray(v)), op["x"])
        return _true(op)

    pred = jnp.arange(batch) < active
    x = jnp.arange(batch, dtype=jnp.float32)
    f = jax.jit(jax.vmap(lambda p, x: lane_cond(p, costly, _false, {"x": x, "c": 0.0})))
    out = jax.block_until_ready(f(pred, x))
    k = chunk_size(batch)
    assert len(seen) == -(-active // k) * k  # lanes in the chunks run, padding included
    expected = jnp.where(pred, 2.0 * x, x - 1.0)
    np.testing.assert_array_equal(out["y"], expected)


def _collatz_loop():
    def cond(c):
        return (c[0] != 1) & (c[1] < 200)

    def body(c):
        n, i = c
        return jnp.where(n % 2 == 0, n // 2, 3 * n + 1), i + 1

    return cond, body


@pytest.mark.parametrize(("batch", "levels"), [(5, 1), (255, 1), (300, 2), (1024, 2)])
def test_lane_while_equals_while_loop_per_lane(batch, levels):
    # lanes finish after very different numbers of steps (Collatz stopping times), so the
    # loop narrows to a sixteenth of the batch while some lanes go on
    from selfref_ghn.envs._lanes import _widths, lane_while

    cond, body = _collatz_loop()
    n0 = jnp.arange(1, batch + 1, dtype=jnp.int32) * 7
    init = (n0, jnp.zeros(batch, jnp.int32))
    want = jax.vmap(lambda n, i: jax.lax.while_loop(cond, body, (n, i)))(*init)
    got = jax.jit(jax.vmap(lambda n, i: lane_while(cond, body, (n, i))))(*init)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
    assert len(_widths(batch)) == levels
    if levels > 1:  # a few lanes go on far longer than most, so the loop does narrow
        assert int(want[1].max()) > 2 * int(np.median(np.asarray(want[1])))
    # unbatched: plain while_loop
    assert [int(x) for x in lane_while(cond, body, (jnp.int32(27), jnp.int32(0)))] == [1, 111]


def test_lane_while_nested_vmap():
    from selfref_ghn.envs._lanes import lane_while

    cond, body = _collatz_loop()
    n0 = jnp.arange(1, 129, dtype=jnp.int32).reshape(4, 32) * 3
    init = (n0, jnp.zeros_like(n0))
    f = lambda g: jax.vmap(jax.vmap(lambda n, i: g(cond, body, (n, i))))(*init)
    got, want = jax.jit(lambda: f(lane_while))(), f(jax.lax.while_loop)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def test_stacked_vmap_equals_vmap_and_keeps_the_stack_outside_the_batch():
    """``stacked_vmap(f)`` is ``jax.vmap(f)`` (unbatched, under one ``vmap`` and two, with an
    unbatched argument); under a ``vmap`` its kernels see the stacked axis outside the batch."""
    from selfref_ghn.envs._lanes import stacked_vmap

    def f(k, x, y):  # a loop inside, as the solver's per-body loops have
        out = jax.lax.fori_loop(0, 3, lambda _, v: v * k + y["b"], x)
        return {"out": out, "sum": out + y["b"]}

    k = jnp.array([1.0, 2.0, -0.5])  # per stacked entry, not batched
    x = jnp.arange(12.0).reshape(4, 3)  # batch 4, stack 3
    y = {"b": jnp.linspace(-1.0, 1.0, 12).reshape(4, 3)}
    assert _same(
        stacked_vmap(f)(k, x[0], {"b": y["b"][0]}), jax.vmap(f)(k, x[0], {"b": y["b"][0]})
    )
    g = lambda h: jax.vmap(lambda x, y: h(f)(k, x, y))(x, y)
    assert _same(jax.jit(lambda: g(stacked_vmap))(), g(jax.vmap))
    xx, yy = jnp.stack([x, -x]), {"b": jnp.stack([y["b"], 2 * y["b"]])}
    gg = lambda h: jax.vmap(jax.vmap(lambda x, y: h(f)(k, x, y)))(xx, yy)
    assert _same(jax.jit(lambda: gg(stacked_vmap))(), gg(jax.vmap))
    # in the compiled program the loop runs on [3, 4] arrays (stack outside the batch)
    text = jax.jit(lambda: g(stacked_vmap)).lower().as_text()
    assert "tensor<3x4xf32>" in text
    assert "tensor<3x4xf32>" not in jax.jit(lambda: g(jax.vmap)).lower().as_text()


@pytest.mark.parametrize("p", [0.0, 0.05, 0.5, 1.0])
def test_true_indices_equal_nonzero(p):
    from selfref_ghn.envs._lanes import true_indices

    pred = jax.random.uniform(jax.random.key(3), (300,)) < p
    for size in (16, 37, 300):
        want = jnp.nonzero(pred, size=size, fill_value=300)[0]
        got = jax.jit(true_indices, static_argnums=(1, 2))(pred, size, 300)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
