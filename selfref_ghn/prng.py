"""A run's random streams (DESIGN §4), and fast noise for self-mutation's constant term (§2).

**Streams.** Every random draw of a run comes from the run key through a path of fold-ins whose
first step names what the draw is for, so that no two uses can meet. With key version 2 (the
default for new runs, :data:`KEY_VERSION`):

* ``run_stream(key, "init")``: the initial population (member ``i``: ``member(init, i)``);
  ``"es_init"``: an evosax algorithm's own initial state;
* ``generation_stream(key, g, name)``, drawn from generation ``g``'s key
  ``fold_in(fold_in(key, GENERATIONS), g)``: ``"mutate"`` (parent ``i``'s child ``j``:
  ``member(member(mutate, i), j)``), ``"evaluate"`` (member ``m``'s episodes:
  ``member(evaluate, m)``), and an evosax algorithm's ``"ask"`` and ``"tell"``.

Key version 1 is what runs recorded before versions existed used: generation ``g``'s key was
``fold_in(key, g)`` and the initial population's ``fold_in(key, 2)``, the same key as
generation 2's, so generation 2's mutation stream was member 0's initialisation key and its
evaluation stream member 1's (the baselines met again at generation 4, whose key was their
evosax initial state's). A run's ``config.json`` records its ``key_version``; a ``config.json``
without one is version 1, so an old run resumes exactly as it started.
``tests/test_prng.py`` enumerates every derived key of short runs and finds no two uses
that meet under version 2 (and the meetings above under version 1).

**Fast noise.**

Every child adds an independent draw to each of its parameters: for P=1024, C=2 and a
16k-parameter SR-GHN that is 33M draws per generation, which with JAX's threefry generator and
its inverse-erf transform costs more than the whole CartPole rollout on a CPU (measured: 1.3 s
against 0.29 s for this module on the same 33M draws, 2-core CPU).

:func:`fast_normal` draws from a counter-based integer hash instead: two rounds of the
*lowbias32* finaliser of (element index, seed) give 32 uniform bits per hash; two hashes give
eight uniform bytes, whose standardised sum (Irwin-Hall, n=8) has mean 0, variance 1,
skewness 0, kurtosis 2.85 (a Gaussian's is 3) and support ±4.9. That is the distribution of
the constant noise with ``Config.noise_rng = "fast"`` (the default); ``"threefry"`` uses
``jax.random.normal`` for an exact Gaussian. ``tests/test_prng.py`` checks the moments and the
independence of draws across elements and keys.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from selfref_ghn.types import Array

KEY_VERSIONS = (1, 2)
KEY_VERSION = 2  # new runs; a config.json without a key_version was written with version 1
# Version 2: the run key's streams, then a generation's (both sets disjoint from each other's
# indices because they fold into different keys).
_RUN_STREAMS = {"init": 0, "generations": 1, "es_init": 2}
_GENERATION_STREAMS = {"mutate": 0, "evaluate": 1, "ask": 2, "tell": 3}
# Version 1: generation g's key was fold_in(key, g) itself (no "generations" stream).
_V1_RUN_STREAMS = {"init": 2, "es_init": 4}
_V1_GENERATION_STREAMS = {"mutate": 0, "evaluate": 1, "ask": 0, "tell": 3}

# Tests only: called as ``recorder(label, parent, data, child)`` for every derived key.
_recorder: Callable[..., None] | None = None


def _derive(key: Array, data: Array | int, label: str) -> Array:
    child = jax.random.fold_in(key, data)
    if _recorder is not None:
        rec = _recorder
        jax.debug.callback(lambda k, d, c: rec(label, k, d, c), key, data, child)
    return child


def _check_version(version: int) -> None:
    if version not in KEY_VERSIONS:
        raise ValueError(f"key_version {version!r}: one of {KEY_VERSIONS}")


def run_stream(key: Array, name: str, version: int = KEY_VERSION) -> Array:
    """The run key's stream ``name`` (``"init"`` or ``"es_init"``).

    Example:
        >>> init = run_stream(jax.random.PRNGKey(0), "init")
        >>> member0 = member(init, 0)
    """
    _check_version(version)
    tags = _RUN_STREAMS if version >= 2 else _V1_RUN_STREAMS
    return _derive(key, tags[name], f"run/{name}")


def generation_stream(
    key: Array, generation: Array | int, name: str, version: int = KEY_VERSION
) -> Array:
    """Generation ``generation``'s stream ``name``: ``"mutate"``, ``"evaluate"``, ``"ask"``
    or ``"tell"`` (an evosax algorithm's), from the run key ``key``.

    Example:
        >>> evaluate = generation_stream(jax.random.PRNGKey(0), 7, "evaluate")
        >>> member3 = member(evaluate, 3)  # member 3's episodes in generation 7
    """
    _check_version(version)
    if version >= 2:
        key = _derive(key, _RUN_STREAMS["generations"], "run/generations")
    gen_key = _derive(key, generation, "generation")
    tags = _GENERATION_STREAMS if version >= 2 else _V1_GENERATION_STREAMS
    return _derive(gen_key, tags[name], f"generation/{name}")


def member(key: Array, index: Array | int) -> Array:
    """The ``index``-th member's (or child's) key of a stream."""
    return _derive(key, index, "member")


NOISE_RNGS = ("fast", "threefry")
_GOLDEN = 0x9E3779B9
# Irwin-Hall of 8 uniform bytes in {0..255}: mean 8 * 127.5, variance 8 * (256^2 - 1) / 12.
_IH_MEAN = 8 * 127.5
_IH_STD = (8 * (256.0**2 - 1.0) / 12.0) ** 0.5


def _lowbias32(x: Array) -> Array:
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def _byte_sum(x: Array) -> Array:
    m = jnp.uint32(0xFF)
    return (x & m) + ((x >> 8) & m) + ((x >> 16) & m) + (x >> 24)


def fast_normal(
    key: Array, shape: tuple[int, ...], dtype=jnp.float32, key_version: int = KEY_VERSION
) -> Array:
    """Approximately standard normal draws of ``shape`` from ``key`` (see module docstring).

    Args:
        key: a JAX PRNG key (one threefry draw turns it into the hash seed).
        shape: output shape.
        dtype: output dtype.
        key_version: 2 (default) seeds the hash with 64 bits drawn from ``key``, so two
            children's noise meets only if their keys do; 1 (runs recorded before key
            versions) with 32, where 2,048 children x 1,000 generations expect about 490
            pairs of children with the same noise.

    Returns:
        Draws with mean 0, variance 1 and kurtosis 2.85, bounded by ±4.9.

    Example:
        >>> z = fast_normal(jax.random.key(0), (1000,))
        >>> abs(float(z.mean())) < 0.2
        True
    """
    _check_version(key_version)
    if key_version >= 2:
        seed, seed2 = jax.random.bits(key, (2,), jnp.uint32)
    else:
        seed = seed2 = jax.random.bits(key, (), jnp.uint32)
    size = 1
    for d in shape:
        size *= d
    idx = jnp.arange(size, dtype=jnp.uint32) * jnp.uint32((2 * _GOLDEN) & 0xFFFFFFFF)
    mixed = _lowbias32(seed)
    h1 = _lowbias32(_lowbias32(idx ^ mixed) + seed2)
    h2 = _lowbias32(_lowbias32((idx + jnp.uint32(_GOLDEN)) ^ mixed) + seed2)
    total = (_byte_sum(h1) + _byte_sum(h2)).astype(jnp.float32)
    return ((total - _IH_MEAN) * (1.0 / _IH_STD)).reshape(shape).astype(dtype)


def normal(
    key: Array,
    shape: tuple[int, ...],
    dtype=jnp.float32,
    impl: str = "fast",
    key_version: int = KEY_VERSION,
) -> Array:
    """Noise draws with the chosen generator (``"fast"`` or ``"threefry"``)."""
    if impl == "fast":
        return fast_normal(key, shape, dtype, key_version)
    return jax.random.normal(key, shape, dtype)
