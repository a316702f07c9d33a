"""Switch schedules: when an environment's controls are inverted (DESIGN §3).

A schedule is a pytree of half-open generation intervals ``[start, end)``. Inside the compiled
loop :meth:`SwitchSchedule.apply` sets the environment parameters' ``inverted`` field for the
current generation, so a whole run with switches is one program. A periodic schedule
(``Config.switch_every = k``: switched on alternate blocks of ``k`` generations, from ``k``) is
the same pytree, its windows listed by :func:`selfref_ghn.config.periodic_windows`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import struct

from selfref_ghn.config import periodic_windows
from selfref_ghn.types import Array


@struct.dataclass
class SwitchSchedule:
    """Inverted during each ``[start, end)`` interval of generations.

    Example:
        >>> s = SwitchSchedule.from_intervals([(50, 150)])
        >>> bool(s.inverted_at(49)), bool(s.inverted_at(50)), bool(s.inverted_at(150))
        (False, True, False)
    """

    intervals: Array  # (K, 2) int32

    @classmethod
    def from_intervals(cls, intervals: Sequence[Sequence[int]]) -> SwitchSchedule:
        arr = jnp.asarray(list(intervals), dtype=jnp.int32).reshape(-1, 2)
        return cls(intervals=arr)

    @classmethod
    def periodic(cls, every: int, generations: int) -> SwitchSchedule:
        """Switched on alternate blocks of ``every`` generations: ``[k, 2k), [3k, 4k), ...``.

        Example:
            >>> SwitchSchedule.periodic(10, 45).switch_points()
            [10, 20, 30, 40]
        """
        return cls.from_intervals(periodic_windows(every, generations))

    def inverted_at(self, generation: Array) -> Array:
        """Whether the controls are inverted at ``generation`` (a traced int is fine)."""
        if self.intervals.shape[0] == 0:
            return jnp.asarray(False)
        start, end = self.intervals[:, 0], self.intervals[:, 1]
        return jnp.any((generation >= start) & (generation < end))

    def apply(self, env_params: Any, generation: Array) -> Any:
        """``env_params`` with ``inverted`` set for ``generation``."""
        if self.intervals.shape[0] == 0 and not hasattr(env_params, "inverted"):
            return env_params
        return env_params.replace(inverted=self.inverted_at(generation))

    def switch_points(self) -> list[int]:
        """Generations at which the inversion flips (host-side helper)."""
        return sorted({int(x) for x in self.intervals.reshape(-1).tolist()})


def inverted_host(intervals: Sequence[Sequence[int]], generations: int) -> np.ndarray:
    """Host-side :meth:`SwitchSchedule.inverted_at` for generations ``0..generations-1``."""
    g = np.arange(generations)[:, None]
    iv = np.asarray(list(intervals), np.int64).reshape(-1, 2)
    return np.any((g >= iv[:, 0]) & (g < iv[:, 1]), axis=1)
