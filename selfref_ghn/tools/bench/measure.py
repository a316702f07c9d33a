"""Measurement primitives of the benchmark: timed compilation, XLA's FLOP count, medians, and
peak host (``VmHWM``, resettable on Linux) and device memory."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any


def _vm_hwm_mb() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def reset_peak() -> bool:
    """Reset this process's peak resident memory (Linux ``clear_refs``); ``False`` if not."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_peak_mb() -> float:
    """Peak resident memory of this process since the last reset, in MiB."""
    hwm = _vm_hwm_mb()
    if hwm is not None:
        return hwm
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def device_memory_mb() -> dict[str, float] | None:
    """The device's current and peak bytes in use, in MiB; ``None`` if it reports none."""
    import jax

    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - backends without memory stats
        return None
    if not stats:
        return None
    return {k: v / 2**20 for k, v in stats.items() if k in ("peak_bytes_in_use", "bytes_in_use")}


def timed_compile(fn: Any, *args: Any) -> tuple[Callable, float]:
    """Compile jitted ``fn`` for ``args``: ``(compiled, seconds)``."""
    t0 = time.perf_counter()
    compiled = fn.lower(*args).compile()
    return compiled, time.perf_counter() - t0


def xla_gflop(compiled: Any) -> float | None:
    """XLA's own count of floating-point operations of a compiled call, in GFLOP."""
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return float(cost["flops"]) / 1e9 if cost and "flops" in cost else None
    except Exception:  # noqa: BLE001 - not every backend reports costs
        return None


def median(xs: Sequence[float]) -> float:
    """The median of ``xs`` as a float."""
    return float(statistics.median(xs))
