"""One run over several processes (DESIGN §4: "Beyond one machine, the same program runs
multi-host through ``jax.distributed``").

:func:`initialize` connects this process to the others before jax starts its backend; from then
on ``jax.devices()`` lists every process's devices, the run's mesh
(:func:`selfref_ghn.sharding.make_mesh`) spans them, and every process runs the same compiled
chunk on its own slice of the population. Every process computes the same initial state from
the seed; only process 0 writes the results folder (:func:`selfref_ghn.runner.evolve`).

Where the coordinator comes from, in order:

1. the arguments (``--coordinator HOST:PORT --num-processes N --process-id I``);
2. the cluster's environment, through jax's own auto-detection (Slurm: ``SLURM_JOB_ID``,
   ``SLURM_NTASKS``, ``SLURM_PROCID``, ...; also Open MPI and Kubernetes/GKE), when it says the
   job has more than one task;
3. otherwise nothing is initialised: a single-process run.

On CPU, cross-process collectives need an implementation: :func:`initialize` selects gloo
(``jax_cpu_collectives_implementation``), which is how ``tests/test_distributed.py`` runs two
processes over loopback.
"""

from __future__ import annotations

import os

import jax

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
