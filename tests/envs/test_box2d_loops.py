"""The solver's loop modes and trip counter (``selfref_ghn.envs._box2d_loops``).

The accelerator mode's fixed, masked loops must give every lane the result of the CPU mode's
data-dependent ``while_loop``; the counter must count trips of the compiled loops (once per
trip under ``vmap``, not once per lane).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from selfref_ghn.envs import _box2d_loops as loops


def _collatz(x0, cap):
    """A loop whose trip count depends on the data: Collatz steps until 1, at most ``cap``."""
    cond = lambda c: (c[0] < cap) & (c[1] != 1)
    body = lambda c: (c[0] + 1, jnp.where(c[1] % 2 == 0, c[1] // 2, 3 * c[1] + 1))
    return cond, body, (jnp.array(0, jnp.int32), jnp.asarray(x0, jnp.int32))


@pytest.mark.parametrize("unroll", [1, 4, 7, 20])
def test_masked_while_equals_while_loop_per_lane(monkeypatch, unroll):
    monkeypatch.setitem(loops.UNROLL, "toi_position", unroll)
    xs = jnp.array([1, 2, 3, 6, 7, 9, 27, 97])
    cap = 20  # some lanes stop at 1, others at the cap

    def reference(x):
        cond, body, init = _collatz(x, cap)
        return jax.lax.while_loop(cond, body, init)

    def masked(x):
        cond, body, init = _collatz(x, cap)
        return loops.masked_while("toi_position", cond, body, init, cap)

    ref = jax.jit(jax.vmap(reference))(xs)
    got = jax.jit(jax.vmap(masked))(xs)
    np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(ref[0]))
    np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(ref[1]))
    # hand-checked: 6 -> 3 -> 10 -> 5 -> 16 -> 8 -> 4 -> 2 -> 1 is 8 steps; 27 hits the cap
    assert int(ref[0][3]) == 8 and int(ref[0][6]) == cap


def test_masked_while_stops_at_the_accelerator_count():
    """A loop named in ``ITERATIONS`` runs at most that many iterations, masked."""
    cond, body, init = _collatz(27, 100)
    n, _ = jax.jit(lambda: loops.masked_while("toi_velocity", cond, body, init, 100))()
    assert int(n) == loops.ITERATIONS["toi_velocity"] < 100


@pytest.mark.parametrize("iterations,unroll,trips", [(180, 30, 6), (60, 25, 2), (14, 14, 0)])
def test_fixed_loop_counts_its_trips(monkeypatch, iterations, unroll, trips):
    """``iterations`` steps in ``iterations // unroll`` loop trips (a single trip is no loop),
    the rest unrolled after the loop; the result is the plain loop's."""
    monkeypatch.setitem(loops.UNROLL, "velocity", unroll)
    step = lambda c: c * 1.01 + 1.0
    with loops.counting() as counts:
        got = jax.jit(lambda x: loops.fixed_loop("velocity", step, x, iterations))(1.0)
        jax.effects_barrier()
    ref = jax.lax.fori_loop(0, iterations, lambda _, c: step(c), 1.0)
    assert float(got) == pytest.approx(float(ref), rel=1e-6)
    assert counts["velocity"] == trips


def test_counting_counts_trips_not_lanes():
    """Under ``vmap`` a while loop runs until its last lane stops: that many trips, once each."""

    def f(x):
        def body(c):
            loops.tick("position")
            return c + 1

        return jax.lax.while_loop(lambda c: c < x, body, 0)

    with loops.counting() as counts:
        out = jax.jit(jax.vmap(f))(jnp.array([3, 5, 1, 0]))
        jax.effects_barrier()
    np.testing.assert_array_equal(np.asarray(out), [3, 5, 1, 0])
    assert counts["position"] == 5
    # outside the context nothing is counted, and a new trace has no callbacks
    jax.jit(jax.vmap(f))(jnp.array([2, 2]))
    jax.effects_barrier()
    assert counts["position"] == 5


def test_resolve_solver():
    assert loops.resolve_solver("cpu") == "cpu"
    assert loops.resolve_solver("accelerator") == "accelerator"
    expected = "cpu" if jax.default_backend() == "cpu" else "accelerator"
    assert loops.resolve_solver("auto") == expected
    with pytest.raises(ValueError, match="solver"):
        loops.resolve_solver("gpu")
