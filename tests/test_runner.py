"""``evolve`` as a library call: what a caller passes in or is handed stays valid."""

import jax
import numpy as np

from selfref_ghn.config import Config
from selfref_ghn.evolution import Evolution
from selfref_ghn.runner import evolve
from tests.conftest import TINY


def test_evolve_leaves_the_callers_state_and_the_callbacks_states_valid():
    """The compiled chunk donates its input state; evolve must donate only its own copies."""
    cfg = Config(**{**TINY, "horizon": 10})
    evo = Evolution.create(cfg)
    start = evo.init()
    before = np.asarray(start.params).copy()
    seen = []
    final, _, _ = evolve(
        cfg, evo=evo, state=start, progress=False, callback=lambda s, rows: seen.append(s)
    )
    np.testing.assert_array_equal(np.asarray(start.params), before)  # not deleted, unchanged
    assert [int(s.generation) for s in seen] == [3, 6]
    for s in seen:  # every state handed out is still readable after the later chunks ran
        assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(s.params))
    np.testing.assert_array_equal(np.asarray(seen[-1].params), np.asarray(final.params))
