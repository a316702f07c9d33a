"""Running observation normalisation carried in the evolved state (DESIGN §2).

Statistics are merged from the evaluated members' rollouts inside the compiled loop (Chan et
al.'s parallel update); policies see ``clip((obs - mean) / std, -clip, clip)`` with the
statistics as they stood at the start of the generation.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import struct

from selfref_ghn.types import Array


@struct.dataclass
class RunningStats:
    """Mean and variance of observations, and the number of observations behind them."""

    mean: Array
    var: Array
    count: Array

    @classmethod
    def create(cls, shape: tuple[int, ...]) -> RunningStats:
        return cls(jnp.zeros(shape), jnp.ones(shape), jnp.zeros(()))

    def normalize(self, obs: Array, clip: float = 10.0) -> Array:
        return jnp.clip((obs - self.mean) / jnp.sqrt(self.var + 1e-8), -clip, clip)

    def merge(self, total: Array, total_sq: Array, n: Array) -> RunningStats:
        """Fold in a batch given by its sum, sum of squares and count."""
        n = n.astype(jnp.float32)
        safe_n = jnp.maximum(n, 1.0)
        b_mean = total / safe_n
        b_var = jnp.maximum(total_sq / safe_n - b_mean**2, 0.0)
        count = self.count + n
        safe_count = jnp.maximum(count, 1.0)
        delta = b_mean - self.mean
        mean = self.mean + delta * n / safe_count
        m2 = self.var * self.count + b_var * n + delta**2 * self.count * n / safe_count
        var = jnp.where(count > 0, m2 / safe_count, self.var)
        return RunningStats(
            mean=jnp.where(n > 0, mean, self.mean),
            var=jnp.where(n > 0, var, self.var),
            count=count,
        )
