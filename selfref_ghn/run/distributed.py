"""One run over several processes (DESIGN §4: "Beyond one machine, the same program runs
multi-host through ``jax.distributed``").

:func:`initialize` connects this process to the others before jax starts its backend; from then
on ``jax.devices()`` lists every process's devices, the run's mesh
(:func:`selfref_ghn.evolution.sharding.make_mesh`) spans them, and every process runs the same
compiled
chunk on its own slice of the population. Every process computes the same initial state from
the seed; only process 0 writes the results folder's host-side files, every process its own
shards of the checkpoints (:func:`selfref_ghn.run.loop.evolve`, below).

Where the coordinator comes from, in order:

1. the arguments (``--coordinator HOST:PORT --num-processes N --process-id I``);
2. the cluster's environment, through jax's own auto-detection (Slurm: ``SLURM_JOB_ID``,
   ``SLURM_NTASKS``, ``SLURM_PROCID``, ...; also Open MPI and Kubernetes/GKE), when it says the
   job has more than one task;
3. otherwise nothing is initialised: a single-process run.

On CPU, cross-process collectives need an implementation: :func:`initialize` selects gloo
(``jax_cpu_collectives_implementation``), which is how ``tests/test_distributed.py`` runs two
processes over loopback.

Checkpoints (:mod:`selfref_ghn.run.checkpoint`) span the processes: every process passes the same
results folder (a filesystem they all see), every process calls save and restore, and orbax has
each one write and read only the shards of the population its own devices hold
(:func:`restore_target` gives the shardings to read into); process 0 finalises each checkpoint.
The host-side files (``config.json``, ``metrics.csv``, lineage, summary, plot) are process 0's
alone. ``config.json`` records the process count (``_run.processes``), and a run resumes only
on that many processes (:func:`check_processes`): each process's shards of a checkpoint are
the population's split over that many, and the split changes the run's float rounding (unless
``Config.bitwise_block`` is set; docs/scaling.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

from selfref_ghn.config import ConfigError
from selfref_ghn.evolution import sharding as sharding_lib

# Environment variables that announce a multi-task job, with the one giving its task count.
_CLUSTER_TASKS = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")


def cluster_tasks() -> int:
    """Tasks in this job according to the scheduler's environment (1 outside one)."""
    for name in _CLUSTER_TASKS:
        try:
            return max(1, int(os.environ[name]))
        except (KeyError, ValueError):
            continue
    return 1


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Join a multi-process run, if one is asked for; call before any other jax work.

    Args:
        coordinator: ``host:port`` of process 0's coordination service.
        num_processes: how many processes take part.
        process_id: this process's index, ``0 .. num_processes - 1``.

    Returns:
        ``True`` if ``jax.distributed`` was initialised (by the arguments or the cluster's
        environment), ``False`` for a single-process run.

    Example:
        >>> initialize()  # outside a cluster job: nothing to join
        False
    """
    explicit = any(v is not None for v in (coordinator, num_processes, process_id))
    if not explicit and cluster_tasks() <= 1 and "JAX_COORDINATOR_ADDRESS" not in os.environ:
        return False
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator, num_processes=num_processes, process_id=process_id
    )
    return True


def is_main_process() -> bool:
    """Whether this process writes results (process 0)."""
    return jax.process_index() == 0


def sync(name: str) -> None:
    """Wait until every process has reached the point named ``name`` (a no-op in one process).

    Args:
        name: the same string on every process, naming the point.

    Example:
        >>> sync("results folder read")  # one process: returns at once
    """
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def recorded_processes(stored: dict[str, Any]) -> int:
    """The process count a run folder's ``config.json`` records.

    Args:
        stored: the parsed ``config.json``.

    Returns:
        Its ``_run.processes``; 1 for a folder from before the count was recorded
        (multi-process runs wrote no checkpoints then).

    Example:
        >>> recorded_processes({"_run": {"processes": 2}}), recorded_processes({})
        (2, 1)
    """
    run = stored.get("_run")
    try:
        return int(run.get("processes", 1)) if isinstance(run, dict) else 1
    except (TypeError, ValueError):
        return 1


def check_processes(run_dir: str | Path, recorded: int) -> None:
    """Refuse to resume a run on another number of processes than the one it ran on.

    Args:
        run_dir: the results folder being resumed (for the message).
        recorded: its process count (:func:`recorded_processes`).

    Raises:
        ConfigError: when ``jax.process_count()`` differs from ``recorded``, naming both.

    Example:
        >>> check_processes("results/r", 1)  # a single-process run resumed by one process
    """
    now = jax.process_count()
    if now != recorded:
        how = (
            f"{recorded} processes (--coordinator HOST:PORT --num-processes {recorded} "
            "--process-id I on each, or a cluster job of that many tasks)"
            if recorded > 1
            else "1 process (no --coordinator, outside a multi-task job)"
        )
        raise ConfigError(
            "--num-processes",
            now,
            f"the run in {run_dir} ran on {recorded} process(es) and resumes only on as many: "
            f"this run has {now}; resume it on {how}",
        )


def restore_target(init: Callable[[], Any], mesh: jax.sharding.Mesh | None) -> Any:
    """What a multi-process run reads a checkpoint into: the state's shapes and dtypes (from
    ``jax.eval_shape(init)``), each with the sharding the run keeps it in.

    Args:
        init: returns a state of the run's structure (``Evolution.init``); only traced.
        mesh: the run's mesh (:func:`selfref_ghn.evolution.sharding.state_shardings`); ``None``:
            every
            leaf on this process's first device.

    Returns:
        A pytree of :class:`jax.ShapeDtypeStruct` with shardings, for
        :meth:`selfref_ghn.run.checkpoint.Checkpoints.restore`.

    Example:
        >>> target = restore_target(evo.init, evo.mesh)  # doctest: +SKIP
        >>> state = Checkpoints("results/r/checkpoints").restore(target)  # doctest: +SKIP
    """
    shapes = jax.eval_shape(init)
    if mesh is None:
        local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        shardings = jax.tree.map(lambda _: local, shapes)
    else:
        shardings = sharding_lib.state_shardings(shapes, mesh)
    return jax.tree.map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings
    )
