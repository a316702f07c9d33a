"""Type aliases shared across the package."""

from __future__ import annotations

from typing import Any

import jax

Array = jax.Array
PRNGKey = jax.Array
PyTree = Any
Params = Any  # a pytree of arrays
Metrics = dict[str, jax.Array]
