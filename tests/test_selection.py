"""The (mu + lambda) selection's tie rule (``Config.selection_ties``)."""

import jax.numpy as jnp
import numpy as np

from selfref_ghn.config import Config
from selfref_ghn.evolution.selection import gather_survivors, selection_fitness, survivors
from selfref_ghn.run.resume import check_resumable

# P = 3 parents (indices 0..2), C = 2 children each (indices 3..8)
FIT = jnp.array([5.0, 1.0, 1.0, 1.0, 9.0, 1.0, 5.0, 0.0, 1.0])


def test_parents_win_ties_by_default():
    top, sel = survivors(FIT, 3)
    np.testing.assert_array_equal(top, [9.0, 5.0, 5.0])
    # the child scoring 9 beats everyone; of the two 5s the parent (index 0) ranks first
    np.testing.assert_array_equal(sel, [4, 0, 6])
    _, sel = survivors(jnp.zeros(9), 3)
    np.testing.assert_array_equal(sel, [0, 1, 2])  # all equal: the parents stay


def test_children_win_ties_when_asked():
    top, sel = survivors(FIT, 3, "children")
    np.testing.assert_array_equal(top, [9.0, 5.0, 5.0])
    np.testing.assert_array_equal(sel, [4, 6, 0])  # the child's 5 now ranks first
    _, sel = survivors(jnp.zeros(9), 3, "children")
    np.testing.assert_array_equal(sel, [3, 4, 5])  # all equal: children replace the parents
    # a strictly better parent still survives over worse children
    fit = jnp.array([7.0, 6.0, 5.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    np.testing.assert_array_equal(survivors(fit, 3, "children")[1], [0, 1, 2])


def test_tie_rule_may_change_on_resume():
    a = Config(population_size=4, generations=10)
    check_resumable(a, Config(population_size=4, generations=10, selection_ties="children"))


def test_selection_fitness_mixes_each_parent_with_its_finite_childrens_mean():
    """Hand-computed: P = 3, C = 2, child_factor 0.25; a parent whose children all failed
    keeps its own fitness, a failed parent stays failed, children are unchanged."""
    inf = float("inf")
    fit = jnp.array([4.0, 2.0, -inf, 8.0, 2.0, -inf, -inf, 6.0, 1.0])
    got = selection_fitness(fit, 3, 0.25)
    np.testing.assert_allclose(got[:3], [0.75 * 4 + 0.25 * 5, 2.0, -inf])
    np.testing.assert_array_equal(got[3:], fit[3:])
    parents, children = jnp.arange(3.0)[:, None], 10 + jnp.arange(6.0)[:, None]
    np.testing.assert_array_equal(
        gather_survivors(jnp.array([4, 0, 8]), parents, children), [[11.0], [0.0], [15.0]]
    )
