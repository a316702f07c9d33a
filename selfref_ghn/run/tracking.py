"""Experiment tracking beside ``metrics.csv`` (DESIGN §4: the host wakes every N generations to
log; DESIGN §5: the run tier holds the loggers): Weights & Biases and TensorBoard.

``metrics.csv`` is always written: it is the run's own record, which resume, compare, sweep and
the plots read. ``--logger wandb``, ``--logger tensorboard`` or both (``--logger
csv,wandb,tensorboard``; ``csv`` may be named, it changes nothing) send the same rows to a
tracker too. A :class:`Tracker` gets each chunk's new rows from the host loop
(:class:`selfref_ghn.run.loop.RunFiles`), never from inside the compiled step, and logs:

* every column of every generation, the generation as the step;
* the config (and the run folder's path) as the run's parameters: W&B's ``config``,
  TensorBoard's hparams plus a ``config`` text;
* the figures (``fitness.png``) as images, at the last generation, when the run ends.

The run folder's ``tracking.json`` keeps the loggers, the W&B run id and, per logger, the last
generation it logged. A resume continues the same tracked run: W&B resumes the run id
(``resume="allow"``) and skips the generations it already has (a resumed run replays them
identically); TensorBoard appends to the same event folder from the first generation it logs
again (``purge_step``: events of a crashed session past it are dropped, so no step appears
twice). An unreadable ``tracking.json`` is set aside: new tracked runs, given every row.

Grouped runs (compare, sweep, suite) pass their folder as ``root``: the W&B group is its name,
the W&B run name the run's path under it, and the TensorBoard events go to
``root/tensorboard/<that path>/``, one log dir for the whole group.

W&B comes from the extra ``selfref_ghn[wandb]`` (the ``wandb`` package, W&B's own client);
TensorBoard from ``selfref_ghn[tensorboard]``: ``tensorboardX`` writes the event files (it needs
neither TensorFlow nor PyTorch, and numpy and protobuf are all it brings) and ``tensorboard``
shows and reads them.
"""

from __future__ import annotations

import importlib
import json
import os
import secrets
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from selfref_ghn.config import Config, ConfigError

LOGGERS = ("csv", "wandb", "tensorboard")
# logger -> the module it needs (the extra of the same name installs it)
MODULES = {"wandb": "wandb", "tensorboard": "tensorboardX"}
FILE = "tracking.json"
PROJECT = "selfref-ghn"  # the W&B project unless WANDB_PROJECT names another


def parse_loggers(loggers: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"csv,tensorboard"`` (or a sequence of names) -> the loggers, ``csv`` first and always.

    Raises:
        ConfigError: naming ``--logger``, for a name that is not one of :data:`LOGGERS`.

    Example:
        >>> parse_loggers("tensorboard, wandb")
        ('csv', 'tensorboard', 'wandb')
        >>> parse_loggers(None)
        ('csv',)
    """
    if isinstance(loggers, str):
        loggers = loggers.split(",")
    names = [n.strip() for n in (loggers or ()) if n.strip()]
    for n in names:
        if n not in LOGGERS:
            raise ConfigError(
                "--logger", n, f"one or more of {', '.join(LOGGERS)}, e.g. csv,wandb"
            )
    return tuple(dict.fromkeys(["csv", *names]))


def require(loggers: Iterable[str], why: str = "") -> None:
    """Raise a :class:`ConfigError` naming ``--logger`` and the extra to install for the first
    logger whose package does not import (``why``: where the logger was asked for)."""
    for name in loggers:
        if name not in MODULES:
            continue
        try:
            importlib.import_module(MODULES[name])
        except ImportError:
            raise ConfigError(
                "--logger",
                name,
                f"needs the optional extra: pip install 'selfref_ghn[{name}]' (the "
                f"{MODULES[name]} package is not installed){why}",
            ) from None


def resolve(loggers: str | Iterable[str] | None, resumed: str | Path | None = None):
    """The loggers a run uses, their packages checked (before anything compiles).

    Args:
        loggers: names (:func:`parse_loggers`); ``None``: the ones a resumed run's
            ``tracking.json`` lists, else ``csv`` alone.
        resumed: the folder of the run being resumed, if it is one.

    Raises:
        ConfigError: an unknown name, or one whose extra is not installed.
    """
    why = ""
    if loggers is None and resumed is not None:
        loggers = _read_state(Path(resumed)).get("loggers")
        why = f"; {Path(resumed) / FILE} lists it (or pass --logger csv)"
    names = parse_loggers(loggers)
    require(names, why)
    return names


# tracking.json's fields, their defaults
_SHAPE: dict[str, Any] = {"through": {}, "wandb": {}, "loggers": []}


def _read_state(out: Path) -> dict[str, Any]:
    """``out/tracking.json``, or ``{}`` when it is missing or damaged (said on stderr)."""
    path = out / FILE
    if not path.exists():
        return {}
    try:
        state = json.loads(path.read_text())
        if not isinstance(state, dict):
            raise ValueError("not a JSON object")
        through, wandb, loggers = (state.get(k, d) for k, d in _SHAPE.items())
        if not (
            isinstance(through, dict)
            and all(type(v) is int for v in through.values())
            and isinstance(wandb, dict)
            and all(isinstance(v, (str, type(None))) for v in wandb.values())
            and isinstance(loggers, list)
            and all(n in LOGGERS for n in loggers)
        ):
            raise ValueError("not the fields selfref-ghn writes")
        return state
    except (OSError, ValueError) as e:
        print(f"selfref-ghn: {path} is unreadable ({e}); new tracked runs", file=sys.stderr)
        return {}


def _write_state(out: Path, state: Mapping[str, Any]) -> None:
    tmp = out / (FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, out / FILE)


def _flat_params(params: Mapping[str, Any]) -> dict[str, bool | int | float | str]:
    """Config values as hparams accepts them: lists and ``None`` as JSON text."""
    ok = (bool, int, float, str)
    return {k: v if isinstance(v, ok) else json.dumps(v, default=str) for k, v in params.items()}


class _Wandb:
    """One W&B run (``wandb.init(reinit="create_new")``: the runs of a sweep's batch are open
    together)."""

    def __init__(self, out: Path, params: dict, stored: dict, group: str | None, name: str):
        import wandb

        self.wandb = wandb
        self.ids: dict[str, Any] = {
            "id": stored.get("id") or secrets.token_hex(6),  # W&B ids: [0-9a-z]
            "project": stored.get("project") or os.environ.get("WANDB_PROJECT") or PROJECT,
            "group": group,
            "name": name,
        }
        try:
            self.run = wandb.init(
                dir=str(out), resume="allow", reinit="create_new",
                settings=wandb.Settings(console="off"), **self.ids,
            )  # fmt: skip
        except Exception as e:  # not logged in, no network in online mode, ...
            raise ConfigError(
                "--logger",
                "wandb",
                f"W&B could not start a run ({type(e).__name__}: {e}); run `wandb login`, or "
                "set WANDB_MODE=offline and `wandb sync` the run folder's wandb/ later",
            ) from None
        self.run.config.update(params, allow_val_change=True)

    def rows(self, rows: Sequence[Mapping[str, float]]) -> None:
        for row in rows:
            self.run.log(dict(row), step=int(row["generation"]))

    def images(self, images: Mapping[str, Path], step: int) -> None:
        self.run.log({k: self.wandb.Image(str(p)) for k, p in images.items()}, step=step)

    def close(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)


class _TensorBoard:
    """One TensorBoard event folder (tensorboardX's ``SummaryWriter``)."""

    def __init__(self, logdir: Path, params: dict, first: int):
        from tensorboardX import SummaryWriter
        from tensorboardX.summary import hparams

        self.ids = {"dir": str(logdir)}
        # purge_step: TensorBoard drops what earlier sessions wrote at steps >= first
        self.writer = SummaryWriter(str(logdir), purge_step=first, filename_suffix=f".{first}")
        for summary in hparams(_flat_params(params), {"best_fitness": 0, "mean_fitness": 0}):
            self.writer.file_writer.add_summary(summary)
        text = json.dumps(params, indent=2, default=str)
        self.writer.add_text("config", f"```json\n{text}\n```", first)

    def rows(self, rows: Sequence[Mapping[str, float]]) -> None:
        for row in rows:
            for k, v in row.items():
                self.writer.add_scalar(k, v, int(row["generation"]))
        self.writer.flush()

    def images(self, images: Mapping[str, Path], step: int) -> None:
        import numpy as np
        from PIL import Image

        for k, p in images.items():
            pixels = np.asarray(Image.open(p).convert("RGB"))
            self.writer.add_image(k, pixels, step, dataformats="HWC")

    def close(self, failed: bool) -> None:
        self.writer.close()


class Tracker:
    """The trackers of one run: :meth:`log` each chunk's new rows, :meth:`close` at the end.

    Built by :func:`open_run`; ``through[name]`` is the last generation ``name`` has logged
    (kept in ``tracking.json`` after each chunk).
    """

    def __init__(self, out: Path, state: dict[str, Any], backends: dict[str, Any]):
        self.out, self.state, self.backends = out, state, backends
        self.last = -1

    def log(self, rows: Sequence[Mapping[str, float]]) -> None:
        """Log the rows each tracker does not have yet (generation past its ``through``)."""
        through = self.state["through"]
        for name, backend in self.backends.items():
            new = [r for r in rows if int(r["generation"]) > through.get(name, -1)]
            if new:
                backend.rows(new)
                through[name] = int(new[-1]["generation"])
        if rows:
            self.last = max(self.last, int(rows[-1]["generation"]))
        _write_state(self.out, self.state)

    def close(self, images: Iterable[str | Path] = (), failed: bool = False) -> None:
        """Log the figures that exist (as images, at the last generation logged) and close
        every tracker; ``failed``: the run ended with an error."""
        found = {Path(p).stem: Path(p) for p in images if Path(p).exists()}
        for backend in self.backends.values():
            if found and self.last >= 0 and not failed:
                backend.images(found, self.last)
            backend.close(failed)
        self.backends = {}


def open_run(
    loggers: str | Iterable[str] | None,
    out: str | Path | None,
    config: Config,
    rows: Sequence[Mapping[str, float]] = (),
    *,
    resume: bool = False,
    root: str | Path | None = None,
    info: Mapping[str, Any] | None = None,
) -> Tracker | None:
    """Open the trackers of one run, and log the ``rows`` it already has that they lack.

    Args:
        loggers: names (:func:`resolve`; ``None`` on a resume: the ones it used before).
        out: the run folder; ``None`` (a run that writes nothing): no tracker.
        config: the run's config, logged as its parameters with ``run_dir`` (the folder).
        rows: the rows kept from before (a resume's or a fork's), logged where missing.
        resume: continue the tracked run of ``out/tracking.json`` (else a new one).
        root: a group's folder (compare, sweep, suite): W&B group and TensorBoard log dir.
        info: provenance logged with the config; default the library version, git hash and
            devices (:func:`~selfref_ghn.run.folder.run_info`).

    Returns:
        The :class:`Tracker`, or ``None`` with ``csv`` alone.

    Raises:
        ConfigError: an unknown logger, a missing extra, or a W&B run that cannot start.

    Example:
        >>> tracker = open_run("tensorboard", "results/demo", Config())  # doctest: +SKIP
        >>> tracker.log(rows); tracker.close(["results/demo/fitness.png"])  # doctest: +SKIP
    """
    names = resolve(loggers, out if resume else None)
    if out is None or names == ("csv",):
        return None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if info is None:
        from selfref_ghn.run.folder import run_info

        info = run_info()
    stored = _read_state(out) if resume else {}
    through = {k: int(v) for k, v in stored.get("through", {}).items() if k in names}
    state = {"loggers": list(names), "through": through}
    root_dir = Path(root) if root is not None else None
    try:
        name = str(out.resolve().relative_to(root_dir.resolve())) if root_dir else out.name
    except ValueError:  # a run folder outside its group's folder
        name = out.name
    params = {**config.to_dict(), "run_dir": str(out.absolute()), **(info or {})}
    start = int(rows[-1]["generation"]) + 1 if rows else 0
    backends: dict[str, Any] = {}
    if "wandb" in names:
        group = root_dir.name if root_dir else None
        backends["wandb"] = _Wandb(out, params, stored.get("wandb", {}), group, name)
        state["wandb"] = backends["wandb"].ids
    if "tensorboard" in names:
        logdir = root_dir / "tensorboard" / name if root_dir else out / "tensorboard"
        first = min(through.get("tensorboard", -1) + 1, start)
        through["tensorboard"] = first - 1  # what it had from first on is purged: logged again
        backends["tensorboard"] = _TensorBoard(logdir, params, first)
        state["tensorboard"] = backends["tensorboard"].ids
    tracker = Tracker(out, state, backends)
    tracker.log(list(rows))
    return tracker


def close(tracker: Tracker | None, images: Iterable[str | Path] = (), failed: bool = False):
    """:meth:`Tracker.close` where there is a tracker."""
    if tracker is not None:
        tracker.close(images, failed)
