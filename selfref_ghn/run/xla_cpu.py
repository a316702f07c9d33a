"""XLA:CPU options: every core used (:func:`use_cpu_devices`), each small ``while`` loop
compiled as one function (:func:`fuse_small_cpu_loops`), and XLA's own kernels instead of
YNNPACK fusions (:func:`skip_ynn_fusions`).

Every core
----------
XLA:CPU runs one program on one device with one thread for its sequence of kernels; only large
kernels are split over more cores. A physics step of many small kernels (the LunarLander
solver) therefore keeps a single core busy whatever the batch size. :func:`use_cpu_devices`
makes JAX present the CPU as ``n`` devices (``jax_num_cpu_devices``); each device runs its part
of a program on its own thread, and the library's runs split the population over all devices by
default (:mod:`selfref_ghn.evolution.sharding`, each device playing its own members' episodes).
Results
are those of one device, up to float rounding in reductions over members (the same seed selects
the same survivors: tests/test_sharding.py). Opt-in (``selfref-ghn ... --cpu-devices N``)
because the population must then divide over ``n`` devices. On GPU and TPU machines it changes
only the (unused) CPU backend.

Small loops
-----------

XLA:CPU runs a compiled program as a sequence of kernels, dispatched one at a time; a
``while`` loop dispatches its body's kernels again on every trip. A physics step with 180
sequential-impulse sweeps of a few dozen small kernels each (the LunarLander solver) spends
much of its time on that dispatch. XLA can instead compile a loop whose buffers are small
(by its cost model's bytes accessed) into one function that runs every trip itself: the
option ``xla_cpu_small_while_loop_byte_threshold`` (an ``xla_backend_extra_options`` entry)
sets how small. On GPU and TPU the option does nothing.

It is opt-in (``selfref-ghn ... --fast-cpu-loops``, or :func:`fuse_small_cpu_loops` in a
script) because float rounding then depends on how a loop was compiled: a program is as
deterministic as before, but two different programs that compute the same thing agree only to
rounding where without it they agree bit for bit (the early-stopping rollout and the
fixed-horizon scan of ``selfref_ghn.evolution.rollout``, on CartPole: tests/test_rollout.py).
Measured
figures: docs/envs/lunar_lander.md.

No YNNPACK fusions
------------------

XLA:CPU hands some fused operations (here: small reductions, such as a sum over a lander's
three bodies) to the YNNPACK library. For arrays this small each such call costs far more
than XLA's own kernel: on the LunarLander step at batch 512 the 30 YNNPACK fusions took about
a sixth of the kernel time. :func:`skip_ynn_fusions` sets ``xla_cpu_experimental_ynn_fusion_type``
to nothing, so XLA emits its own kernels for them. Results change only in float rounding (the
order of a few sums). ``--fast-cpu-loops`` sets this option as well.

All of these must run before JAX creates its backends: before the first computation, and before
importing a module that builds arrays when imported (``selfref_ghn.envs.lunar_lander`` does;
``selfref_ghn`` and ``selfref_ghn.envs`` do not). XLA reads ``XLA_FLAGS`` once, when JAX creates
its first backend. A ``XLA_FLAGS`` that already sets the small-loop option is left alone.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable

OPTION = "xla_cpu_small_while_loop_byte_threshold"
YNN_OPTION = "xla_cpu_experimental_ynn_fusion_type"
DEFAULT_MAX_BYTES = 10_000_000
_EXTRA = "--xla_backend_extra_options="


def _backends_initialized() -> bool:
    try:
        from jax._src import xla_bridge
    except ImportError:  # pragma: no cover - JAX moved it; assume the early case
        return False
    probe = getattr(xla_bridge, "backends_are_initialized", None)
    return bool(probe()) if probe is not None else False


def with_small_loop_option(flags: str, max_bytes: int) -> str:
    """``flags`` (an ``XLA_FLAGS`` value) with the option set to ``max_bytes``, merged into an
    existing ``--xla_backend_extra_options`` entry if there is one."""
    entry = f"{OPTION}={max_bytes}"
    match = re.search(r"--xla_backend_extra_options=(\S*)", flags)
    if match is None:
        return f"{flags} {_EXTRA}{entry}".strip()
    merged = ",".join(x for x in (match.group(1), entry) if x)
    return flags[: match.start()] + _EXTRA + merged + flags[match.end() :]


def _set_flag(caller: str, option: str, edit: Callable[[str], str]) -> bool:
    """Set ``XLA_FLAGS`` to ``edit(XLA_FLAGS)`` unless it already names ``option`` or JAX has
    already created its backends (then warn on behalf of ``caller``)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if option in flags:
        return False
    if _backends_initialized():
        warnings.warn(
            f"{caller}: JAX has already created its backends, so {option} cannot take effect "
            "in this process; call it before the first JAX computation",
            stacklevel=3,
        )
        return False
    os.environ["XLA_FLAGS"] = edit(flags)
    return True


def fuse_small_cpu_loops(max_bytes: int = DEFAULT_MAX_BYTES) -> bool:
    """Set the XLA:CPU small-loop option in ``XLA_FLAGS`` for this process.

    Args:
        max_bytes: loops whose bytes accessed (XLA's estimate) stay under this are compiled as
            one function each.

    Returns:
        True if the option was set; False if ``XLA_FLAGS`` already names it (left as it is) or
        JAX has already created a backend (too late: a warning says so).

    Raises:
        ValueError: ``max_bytes`` is not a positive integer.
    """
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
        raise ValueError(f"max_bytes must be a positive integer, got {max_bytes!r}")
    return _set_flag(
        "fuse_small_cpu_loops", OPTION, lambda flags: with_small_loop_option(flags, max_bytes)
    )


def skip_ynn_fusions() -> bool:
    """Make XLA:CPU emit its own kernels where it would call YNNPACK fusions (set
    ``xla_cpu_experimental_ynn_fusion_type`` to no type in ``XLA_FLAGS``).

    Returns:
        True if set; False if ``XLA_FLAGS`` already names the option (left as it is) or JAX
        has already created a backend (too late: a warning says so).
    """
    return _set_flag(
        "skip_ynn_fusions", YNN_OPTION, lambda flags: f"{flags} --{YNN_OPTION}=".strip()
    )


def default_cpu_devices() -> int:
    """The cores this process may run on (its CPU affinity where the platform reports it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def use_cpu_devices(n: int | None = None) -> bool:
    """Make JAX present this machine's CPU as ``n`` devices, each running on its own thread.

    Args:
        n: the number of CPU devices; ``None``: one per core (:func:`default_cpu_devices`).

    Returns:
        True if set; False if JAX has already created its backends (too late: a warning says
        so and nothing changes).

    Raises:
        ValueError: ``n`` is not a positive integer.
    """
    n = default_cpu_devices() if n is None else n
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"the number of CPU devices must be a positive integer, got {n!r}")
    if _backends_initialized():
        warnings.warn(
            f"use_cpu_devices: JAX has already created its backends, so {n} CPU devices cannot "
            "take effect in this process; call it before the first JAX computation",
            stacklevel=2,
        )
        return False
    import jax

    jax.config.update("jax_num_cpu_devices", n)
    return True


__all__ = [
    "DEFAULT_MAX_BYTES",
    "OPTION",
    "YNN_OPTION",
    "default_cpu_devices",
    "fuse_small_cpu_loops",
    "skip_ynn_fusions",
    "use_cpu_devices",
    "with_small_loop_option",
]
