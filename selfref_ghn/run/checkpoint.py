"""Checkpoints of the run state through orbax (DESIGN §4: the host wakes every N generations
to log and checkpoint; STYLE rule 6: orbax for checkpoints).

A run's checkpoints live in ``<results>/checkpoints/<generation>/``, one per saved generation
(the step number is the state's ``generation``: the next generation to run), the last
``keep`` kept. The state is :class:`selfref_ghn.evolution.generation.EvoState`, a pytree of plain
arrays
(keys are raw ``uint32`` PRNG keys), saved with orbax's ``StandardSave``.

Atomicity comes from orbax: a checkpoint is written into a temporary folder
(``<generation>.orbax-checkpoint-tmp...``) and renamed into place only once complete, so a
crash during a write leaves the previous checkpoint the latest usable one; leftover temporary
folders are ignored by :meth:`Checkpoints.latest_step` and removed when the folder is opened
again. ``tests/test_checkpoint.py`` kills a run inside that window to check it.

For that test, the environment variable ``SELFREF_GHN_CHECKPOINT_DELAY`` (seconds) makes every
write pause after its data is written and before it is finalised.

Damage after a checkpoint was finalised (a disk error, a truncated copy, an edited file) is
caught on restore: every write ends with ``selfref_digest.json`` (the SHA-256 of each file of
the checkpoint), checked before orbax reads anything, and any error orbax raises while reading
becomes a :class:`DamagedCheckpoint`. :meth:`Checkpoints.restore_intact` falls back to the
newest checkpoint that restores, with one line on stderr (docs/reliability.md). Checkpoints
written before digests existed are read without that check.

Example:
    >>> ckpts = Checkpoints("results/run/checkpoints", keep=3)  # doctest: +SKIP
    >>> ckpts.save(state)                                        # doctest: +SKIP
    >>> state = ckpts.restore(jax.eval_shape(evo.init))          # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from selfref_ghn.config import ConfigError

DELAY_ENV = "SELFREF_GHN_CHECKPOINT_DELAY"
DIGEST_FILE = "selfref_digest.json"


class DamagedCheckpoint(ConfigError):
    """A finalised checkpoint that cannot be read back as written (a :class:`ConfigError`, so
    that the command line reports one that is not passed over as one message, status 2).

    Attributes:
        step: its generation.
        reason: one line saying what is wrong.
    """

    def __init__(self, directory: Path, step: int, reason: str):
        super().__init__("checkpoints", str(directory), f"checkpoint {step} is damaged: {reason}")
        self.directory, self.step, self.reason = directory, step, reason


class _Handler(ocp.StandardCheckpointHandler):
    """orbax's standard handler, with an optional pause before finalising (tests only)."""

    def finalize(self, directory) -> None:
        delay = float(os.environ.get(DELAY_ENV, "0") or 0)
        if delay > 0:
            time.sleep(delay)
        super().finalize(directory)
        _write_digest(Path(directory))


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
            state: an :class:`~selfref_ghn.evolution.generation.EvoState` (or any pytree with a
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
                (a multi-process run: :func:`selfref_ghn.run.distributed.restore_target`), the rest
                onto this process's first device.
            step: the generation to restore; default the latest.

        Returns:
            The restored state.

        Raises:
            FileNotFoundError: when there is no checkpoint.
            DamagedCheckpoint: a file differs from its digest, orbax cannot read it, or the
                state it holds is not of generation ``step``.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        self.verify(step)
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=_sharding(x)), template
        )
        _quiet_abandoned_reads()
        try:
            state = self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except (MemoryError, PermissionError) as e:  # the machine's, not the checkpoint's
            raise ConfigError(
                "checkpoints", str(self.directory), f"checkpoint {step} unreadable here: {e}"
            ) from None
        except Exception as e:  # orbax and tensorstore raise many kinds for unreadable files
            raise DamagedCheckpoint(self.directory, step, _one_line(e)) from None
        generation = getattr(state, "generation", None)  # (on this process, if it has it)
        if getattr(generation, "is_fully_addressable", True) and generation is not None:
            if int(generation) != step:
                raise DamagedCheckpoint(
                    self.directory, step, f"it holds generation {int(generation)}"
                )
        return state

    def verify(self, step: int) -> None:
        """Check every file of checkpoint ``step`` against the digest written with it.

        Raises:
            DamagedCheckpoint: a file is missing or differs, or the digest is unreadable.
        """
        root = self.directory / str(step)
        for digest in sorted(root.rglob(DIGEST_FILE)):
            try:
                listed = json.loads(digest.read_text())
            except (OSError, ValueError):
                listed = None
            if not isinstance(listed, dict):
                raise DamagedCheckpoint(
                    self.directory, step, f"{digest.relative_to(root)} is unreadable"
                )
            for name, want in sorted(listed.items()):
                path = digest.parent / str(name)
                try:
                    got = _sha256(path)
                except OSError:
                    got = None
                if got != want:
                    what = "is missing" if got is None else "differs from its digest"
                    raise DamagedCheckpoint(
                        self.directory, step, f"{path.relative_to(root)} {what}"
                    )

    def restore_intact(self, template: Any, warn: bool = True) -> tuple[Any, int]:
        """The newest checkpoint that restores, falling back past damaged ones.

        Args:
            template: as for :meth:`restore`.
            warn: print one line on stderr naming the damaged checkpoints and the one used.

        Returns:
            ``(state, step)``.

        Raises:
            FileNotFoundError: when there is no checkpoint.
            ConfigError: every checkpoint is damaged (the message names the folder).
        """
        if not self.steps():
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        state, step, damaged = self.newest_intact(template)
        if step is not None:
            if damaged and warn:
                line = f"selfref-ghn: {describe_damaged(damaged)}; using checkpoint {step}"
                print(line, file=sys.stderr, flush=True)
            return state, step
        raise ConfigError(
            "checkpoints",
            str(self.directory),
            f"no intact checkpoint: {describe_damaged(damaged)}",
        )

    def newest_intact(
        self, template: Any, newer_than: int = -1
    ) -> tuple[Any, int | None, list[DamagedCheckpoint]]:
        """The newest checkpoint after generation ``newer_than`` that restores.

        Returns:
            ``(state, step, damaged)``: ``(None, None, damaged)`` if none does; ``damaged``
            lists the newer ones passed over, newest first.
        """
        damaged: list[DamagedCheckpoint] = []
        for step in reversed(self.steps()):
            if step <= newer_than:
                break
            try:
                return self.restore(template, step), step, damaged
            except DamagedCheckpoint as e:
                damaged.append(e)
        return None, None, damaged

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


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_digest(directory: Path) -> None:
    """Write the SHA-256 of every file under ``directory`` (one checkpoint item) beside them."""
    files = sorted(f for f in directory.rglob("*") if f.is_file() and f.name != DIGEST_FILE)
    digest = {str(f.relative_to(directory)): _sha256(f) for f in files}
    (directory / DIGEST_FILE).write_text(json.dumps(digest, indent=0))


def _quiet_abandoned_reads() -> None:
    """When a read fails, the other reads orbax started are abandoned: each is later reported
    as a traceback on stderr, as its coroutine is collected ("Exception ignored in
    <coroutine>") or as tensorstore completes it after orbax closed its event loop
    ("RuntimeError: Event loop is closed", or asyncio's "exception was never retrieved").
    Leave those out of ``sys.unraisablehook``'s and asyncio's reports (and report anything
    else as before)."""
    previous = sys.unraisablehook
    if getattr(previous, "_selfref_quiet", False):
        return
    logging.getLogger("asyncio").addFilter(_unretrieved_read_errors)

    def hook(unraisable: Any) -> None:
        code = getattr(unraisable.object, "cr_code", None)
        if code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename:
            return
        error = unraisable.exc_value
        if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
            return
        previous(unraisable)

    hook._selfref_quiet = True  # type: ignore[attr-defined]  # marks the hook as installed
    sys.unraisablehook = hook


def _unretrieved_read_errors(record: logging.LogRecord) -> bool:
    """A logging filter: false for asyncio's report of a tensorstore read no one awaited."""
    text = record.getMessage()
    return not ("exception was never retrieved" in text and "tensorstore" in text.lower())


def _one_line(e: BaseException, limit: int = 160) -> str:
    text = " ".join(str(e).split(" See full TensorStore details")[0].split())
    text = text or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_damaged(damaged: list[DamagedCheckpoint]) -> str:
    """``checkpoint 9 in DIR is damaged (reason)``, or for several ``checkpoints 9, 6 ...``."""
    first = damaged[0]
    steps = ", ".join(str(d.step) for d in damaged)
    noun = "checkpoint" if len(damaged) == 1 else "checkpoints"
    verb = "is" if len(damaged) == 1 else "are"
    return f"{noun} {steps} in {first.directory} {verb} damaged ({first.reason})"


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
