"""Checkpoints of the run state through orbax (DESIGN §4: the host wakes every N generations
to log and checkpoint; STYLE rule 6: orbax for checkpoints).

A run's checkpoints live in ``<results>/checkpoints/<generation>/``, one per saved generation
(the step number is the state's ``generation``: the next generation to run), the last
``keep`` kept. The state is :class:`selfref_ghn.evolution.EvoState`, a pytree of plain arrays
(keys are raw ``uint32`` PRNG keys), saved with orbax's ``StandardSave``.

Atomicity comes from orbax: a checkpoint is written into a temporary folder
(``<generation>.orbax-checkpoint-tmp...``) and renamed into place only once complete, so a
crash during a write leaves the previous checkpoint the latest usable one; leftover temporary
folders are ignored by :meth:`Checkpoints.latest_step` and removed when the folder is opened
again. ``tests/test_checkpoint.py`` kills a run inside that window to check it.

For that test, the environment variable ``SELFREF_GHN_CHECKPOINT_DELAY`` (seconds) makes every
write pause after its data is written and before it is finalised.

Example:
    >>> ckpts = Checkpoints("results/run/checkpoints", keep=3)  # doctest: +SKIP
    >>> ckpts.save(state)                                        # doctest: +SKIP
    >>> state = ckpts.restore(evo.init())                         # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

DELAY_ENV = "SELFREF_GHN_CHECKPOINT_DELAY"


class _Handler(ocp.StandardCheckpointHandler):
    """orbax's standard handler, with an optional pause before finalising (tests only)."""

    def finalize(self, directory) -> None:
        delay = float(os.environ.get(DELAY_ENV, "0") or 0)
        if delay > 0:
            time.sleep(delay)
        super().finalize(directory)


class Checkpoints:
    """The checkpoints of one run: save, list, restore (a thin layer over orbax).

    Args:
        directory: the checkpoint folder (created).
        keep: how many of the latest checkpoints to keep.
        read_only: only to list and restore: leftover temporary folders are left alone (their
            cleanup runs in the background, which a short-lived reader would cut off).
    """

    def __init__(self, directory: str | Path, keep: int = 3, read_only: bool = False):
        self.directory = Path(directory).absolute()
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep,
                create=True,
                enable_async_checkpointing=False,
                cleanup_tmp_directories=not read_only,
            ),
            handler_registry=_registry(),
        )

    def __enter__(self) -> Checkpoints:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def steps(self) -> list[int]:
        """Generations with a finalised checkpoint, ascending."""
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        """The latest finalised checkpoint's generation, or ``None``."""
        return self.manager.latest_step()

    def save(self, state: Any) -> int:
        """Write ``state`` as the checkpoint of generation ``state.generation``.

        Args:
            state: an :class:`~selfref_ghn.evolution.EvoState` (or any pytree with a
                ``generation`` field).

        Returns:
            The generation saved (an existing checkpoint of that generation is kept as is).
        """
        step = int(state.generation)
        if step not in self.manager.all_steps():
            # arrays split across processes are saved as they are: each process writes its own
            # shards (every process must call save); anything else is saved from the host
            tree = state if _spans_processes(state) else jax.device_get(state)
            self.manager.save(step, args=ocp.args.StandardSave(tree))
            self.manager.wait_until_finished()
        return step

    def restore(self, template: Any, step: int | None = None) -> Any:
        """Read a checkpoint into ``template``'s structure.

        Args:
            template: a state (or its ``jax.eval_shape``) giving structure, shapes and dtypes;
                leaves that are :class:`jax.ShapeDtypeStruct` with a sharding are read into it
                (a multi-process run: :func:`selfref_ghn.distributed.restore_target`), the rest
                onto this process's first device.
            step: the generation to restore; default the latest.

        Returns:
            The restored state.

        Raises:
            FileNotFoundError: when there is no checkpoint.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=_sharding(x)), template
        )
        return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def size_bytes(self, step: int | None = None) -> int:
        """Bytes on disk of one checkpoint (default the latest)."""
        step = self.latest_step() if step is None else step
        if step is None:
            return 0
        root = self.directory / str(step)
        return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())

    def close(self) -> None:
        """Wait for pending writes and release orbax's resources."""
        self.manager.close()


def _registry() -> ocp.handlers.DefaultCheckpointHandlerRegistry:
    handler = _Handler()
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    registry.add("default", ocp.args.StandardSave, handler)
    registry.add("default", ocp.args.StandardRestore, handler)
    return registry


def _sharding(x: Any) -> jax.sharding.Sharding:
    """The sharding an abstract leaf names, else this process's first device."""
    if isinstance(x, jax.ShapeDtypeStruct) and x.sharding is not None:
        return x.sharding
    return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


def _spans_processes(tree: Any) -> bool:
    """Whether any leaf is a global array with shards on other processes."""
    return any(
        isinstance(x, jax.Array) and not x.is_fully_addressable for x in jax.tree.leaves(tree)
    )
