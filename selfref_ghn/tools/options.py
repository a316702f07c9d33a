"""Command-line options shared by the commands that start runs (``run``, ``compare``,
``sweep``, ``assess``): a preset and its overrides, the XLA:CPU and device flags, and the
config they give (:func:`config_from_args`). :mod:`selfref_ghn.tools.cli` builds the parser from
them and each command module's ``register``.
"""

from __future__ import annotations

import argparse
from typing import Any

from selfref_ghn import presets
from selfref_ghn.config import Config, ConfigError
from selfref_ghn.run.compile_cache import add_compile_cache_option


def parse_sets(pairs: list[str]) -> dict[str, str]:
    out = {}
    for p in pairs:
        if "=" not in p:
            raise ConfigError("--set", p, "expected key=value")
        k, v = p.split("=", 1)
        out[k.strip()] = v
    return out


def add_run_options(p: argparse.ArgumentParser, preset_optional: bool = False) -> None:
    """Options shared by commands that take a preset: seed, generations, --set, --debug, the
    XLA:CPU options and --compile-cache."""
    p.add_argument(
        "preset",
        nargs="?" if preset_optional else None,
        help=f"one of: {', '.join(presets.names())}",
    )
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--generations", type=int, default=None)
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field"
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    add_fast_cpu_loops_option(p)
    add_compile_cache_option(p)
    p.add_argument(
        "--cpu-devices",
        type=device_count,
        default=None,
        metavar="N",
        help="run on N CPU devices, each on its own thread, and split the population over them "
        "(0: one per core; N must divide the population; selfref_ghn.run.xla_cpu)",
    )


def add_fast_cpu_loops_option(p: argparse.ArgumentParser) -> None:
    """``--fast-cpu-loops``, applied by :func:`main` before anything compiles."""
    p.add_argument(
        "--fast-cpu-loops",
        action="store_true",
        help="XLA:CPU compiles each small loop as one function and uses its own kernels instead "
        "of YNNPACK fusions: faster physics on CPU; results may differ from the default's in "
        "float rounding (selfref_ghn.run.xla_cpu)",
    )


def device_count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected 0 (one per core) or more, got {n}")
    return n


def add_logger_option(p: argparse.ArgumentParser) -> None:
    """``--logger``: trackers besides ``metrics.csv`` (:mod:`selfref_ghn.run.tracking`)."""
    p.add_argument(
        "--logger",
        default=None,
        metavar="csv|wandb|tensorboard",
        help="where the metrics also go: wandb, tensorboard or both (csv,wandb,tensorboard); "
        "metrics.csv is always written; a resume keeps its run's (selfref_ghn.run.tracking)",
    )


def add_device_options(p: argparse.ArgumentParser) -> None:
    """``--devices`` and the multi-host flags (docs/scaling.md)."""
    p.add_argument(
        "--devices",
        type=int,
        default=None,
        metavar="N",
        help="split the population over the first N devices (default: all)",
    )
    p.add_argument(
        "--coordinator", default=None, metavar="HOST:PORT", help="multi-host: process 0's address"
    )
    p.add_argument("--num-processes", type=int, default=None, metavar="N", help="multi-host")
    p.add_argument("--process-id", type=int, default=None, metavar="I", help="multi-host")


def config_from_args(args, stored: Config | None = None):
    """The preset's config with ``--seed``, ``--generations`` and ``--set`` applied; with no
    preset, the config of ``--resume``'s or ``--fork``'s folder (``stored``, when the caller has
    read it already)."""
    if args.preset is None and stored is not None:
        cfg = stored
    elif args.preset is None:
        resume: Any = getattr(args, "resume", None)
        fork: Any = getattr(args, "fork", None)
        if resume is None and fork is None:
            raise ConfigError("preset", None, f"one of {presets.names()} (or --resume DIR)")
        from selfref_ghn.run.folder import load_run_config

        cfg = load_run_config(resume, "--resume") if resume else load_run_config(fork, "--fork")
    else:
        cfg = presets.get(args.preset)
    sets = parse_sets(args.set)
    if args.seed is not None:
        sets["seed"] = str(args.seed)
    if args.generations is not None:
        sets["generations"] = str(args.generations)
    for field in ("checkpoint_every", "keep_checkpoints"):
        if getattr(args, field, None) is not None:
            sets[field] = str(getattr(args, field))
    return cfg.with_overrides(sets) if sets else cfg
