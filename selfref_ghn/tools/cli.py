"""Command line: ``selfref-ghn run PRESET [--seed N] [--generations N] [--out DIR] [--set k=v]``.

User errors (an unknown preset or key, a bad value) print one message naming the field, the
value and what is allowed, and exit with status 2 before anything compiles; ``--debug`` shows
the traceback instead.

``run`` also takes ``--checkpoint-every N``, ``--keep-checkpoints K`` and ``--resume DIR``
(continue DIR from its latest checkpoint; the preset may then be omitted) or ``--fork DIR
[--fork-at G] --out NEW`` (a new run from DIR's checkpoint G, under a config that may change
the traced hyperparameters: :func:`selfref_ghn.run.resume.fork`). Exit status: 0 done,
2 user error, 3 the runaway monitor stopped the run (checkpoint written), 130 interrupted
(docs/reliability.md).

Commands that take a preset (and ``assess``, to replay a run's episodes with the same float
rounding) also take ``--fast-cpu-loops``: XLA:CPU compiles each small loop
as one function and uses its own kernels instead of YNNPACK fusions
(:mod:`selfref_ghn.run.xla_cpu`;
faster on CPU, float rounding may differ), and
``--cpu-devices N``: the CPU seen as N devices on their own threads, the population split over
them (every core busy; N must divide the population).

Every command but ``bench`` keeps its compiled programs in JAX's persistent compilation cache
(:mod:`selfref_ghn.run.compile_cache`; ``--compile-cache PATH|off`` or
``SELFREF_GHN_COMPILE_CACHE`` moves or disables it), so a second run of the same shapes
loads them instead of compiling.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from selfref_ghn import presets
from selfref_ghn.config import ConfigError
from selfref_ghn.run.xla_cpu import fuse_small_cpu_loops, skip_ynn_fusions, use_cpu_devices
from selfref_ghn.tools.options import (
    add_device_options,
    add_logger_option,
    add_run_options,
    config_from_args,
)

# Modules adding subcommands: each has ``register(subparsers)``, which adds its parser and sets
# ``func`` (``args -> exit code``) with ``parser.set_defaults``.
_COMMAND_MODULES: tuple[str, ...] = (
    "selfref_ghn.tools.compare",
    "selfref_ghn.run.lineage",
    "selfref_ghn.tools.bench",
    "selfref_ghn.tools.sweep",
    "selfref_ghn.tools.suite",
    "selfref_ghn.tools.render",
    "selfref_ghn.tools.assess",
    "selfref_ghn.run.plotting",
)
# Commands run without the persistent compilation cache: presets and plot compile nothing,
# bench measures compile times.
_UNCACHED_COMMANDS = frozenset({"presets", "plot", "bench"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="selfref-ghn", description="Self-Referential Graph HyperNetworks in JAX."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="evolve SR-GHNs on a preset")
    add_run_options(run, preset_optional=True)
    run.add_argument("--out", type=Path, default=None, help="results folder")
    run.add_argument("--quiet", action="store_true", help="no progress lines")
    run.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        metavar="N",
        help="checkpoint every N generations (rounded up to a multiple of log_every); "
        "one is always written at the end",
    )
    run.add_argument(
        "--keep-checkpoints", type=int, default=None, metavar="K", help="keep the last K"
    )
    run.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="DIR",
        help="continue the run in DIR from its latest checkpoint (preset optional)",
    )
    run.add_argument(
        "--fork",
        type=Path,
        default=None,
        metavar="DIR",
        help="start the new run --out from a checkpoint of the run in DIR, under DIR's config "
        "changed by --set (the rate bounds, clips and noise may change too; preset optional)",
    )
    run.add_argument(
        "--fork-at",
        type=int,
        default=None,
        metavar="G",
        help="the checkpoint --fork starts from (default DIR's latest)",
    )
    add_device_options(run)
    add_logger_option(run)

    sub.add_parser("presets", help="list presets")
    for module in _COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def _cpu_devices_hint(cfg, args) -> str | None:
    """A line suggesting ``--cpu-devices`` for a one-device CPU run on a machine with more
    cores, or None."""
    import jax

    from selfref_ghn.evolution.sharding import divisors_up_to
    from selfref_ghn.run.xla_cpu import default_cpu_devices

    if args.cpu_devices is not None or cfg.method != "srghn" or jax.process_count() > 1:
        return None
    if jax.default_backend() != "cpu" or len(jax.devices()) != 1:
        return None
    n = max(divisors_up_to(cfg.population_size, default_cpu_devices()))
    if n == 1:
        return None
    return (
        f"note: this run uses one of {default_cpu_devices()} CPU cores; "
        f"--cpu-devices {n} splits the population over {n} (docs/scaling.md)"
    )


def recovery_line(r: dict) -> str:
    """The end-of-run line for one switch of ``summary.json``'s ``recovery_best`` (raw), or of
    a normalised recovery (a row with a ``floor``, :func:`selfref_ghn.run.metrics.recovery`).

    Example:
        >>> recovery_line({"switch": 50, "level": 500.0, "drop": 490.0, "gens_to_90": 7})
        'switch at 50: level 500.0, drop 490.0, back to 90% in 7 generations'
        >>> r = {"switch": 50, "level": -150.0, "drop": 950.0, "gens_to_90": 5, "floor": -1200.0}
        >>> recovery_line(r).split(", ")[::2]
        ['switch at 50: level -150.0 (floor -1200.0)', 'back to 90% (normalised) in 5 generations']
    """
    if r.get("floor") is None:
        level, target = f"level {r['level']:.1f}", "90%"
        undefined = "" if r["level"] > 0 else "the level is not positive"
    else:
        level = f"level {r['level']:.1f} (floor {r['floor']:.1f})"
        target, undefined = "90% (normalised)", r.get("undefined", "")
    if undefined:
        back = f"recovery not measured ({undefined})"
    elif math.isnan(r["gens_to_90"]):
        back = f"not back to {target} before the next switch or the end"
    else:
        back = f"back to {target} in {r['gens_to_90']} generations"
    return f"switch at {r['switch']}: {level}, drop {r['drop']:.1f}, {back}"


def cmd_run(args) -> int:
    if args.fork is not None and args.resume is not None:
        raise ConfigError("--fork", str(args.fork), "not with --resume (a fork is a new run)")
    if args.fork is None and args.fork_at is not None:
        raise ConfigError("--fork-at", str(args.fork_at), "only with --fork DIR")
    if args.fork is not None and args.out is None:
        raise ConfigError("--out", None, "the new results folder, with --fork")
    from selfref_ghn.run.folder import read_run

    # a resumed or forked run's config.json, read once (no jax work yet)
    record = None
    if args.resume is not None or args.fork is not None:
        record = read_run(*((args.resume, "--resume") if args.resume else (args.fork, "--fork")))
    cfg = config_from_args(args, record.config if record else None)
    from selfref_ghn.run.tracking import resolve

    loggers = resolve(args.logger, args.resume)  # a missing extra: exit 2, nothing built
    from selfref_ghn.run.distributed import initialize

    # before any jax work (reading a run's checkpoints for --resume starts jax's backend)
    if initialize(args.coordinator, args.num_processes, args.process_id) and args.fork:
        raise ConfigError(
            "--fork",
            str(args.fork),
            "a fork is made by one process (no --coordinator, outside a multi-task job) and "
            "continues on one (docs/scaling.md)",
        )
    from selfref_ghn.evolution.generation import Evolution
    from selfref_ghn.run.loop import evolve

    if args.resume is not None and args.out is not None and args.out != args.resume:
        raise ConfigError("--out", str(args.out), "omit it, or give --resume's folder")
    # a resume or fork is checked before anything is built
    if args.resume is not None and record is not None:
        from selfref_ghn.run.resume import check_resumable, played_generations

        check_resumable(record.config, cfg, played_generations(args.resume))
    plan = None
    if args.fork is not None:
        from selfref_ghn.run.resume import plan_fork, write_fork

        stored = record.config if record else None
        plan = plan_fork(args.fork, args.out, cfg, args.fork_at, stored=stored)
    # validates env/policy compatibility and the split over devices before compiling
    evo: Any  # Evolution or BaselineEvolution: the same interface
    if cfg.method == "srghn":
        evo = Evolution.create(cfg, devices=args.devices)
    else:
        from selfref_ghn.evolution.baselines import BaselineEvolution

        if args.devices not in (None, 1):
            raise ConfigError(
                "--devices", str(args.devices), f"1 (method {cfg.method!r} runs on one device)"
            )
        evo = BaselineEvolution.create(cfg)
    if plan is not None:
        at = write_fork(plan)
        if not args.quiet:
            print(f"forked {args.fork} at generation {at} into {args.out}", file=sys.stderr)
    hint = _cpu_devices_hint(cfg, args)
    if hint and not args.quiet:
        print(hint, file=sys.stderr)
    out = (
        args.resume
        or args.out
        or Path("results") / f"{args.preset}-seed{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    resume: Any = args.resume is not None or args.fork is not None
    if args.resume is not None:
        resume = record  # evolve checks it against cfg and the checkpoints, before compiling
    run = {"progress": not args.quiet, "resume": resume, "loggers": loggers}
    _, _, summary = evolve(cfg, out, evo=evo, **run)
    print(f"results: {out}")
    print(
        f"compile {summary['compile_time_s']:.1f} s | {summary['steady_generations_per_s']:.1f} "
        f"gen/s | peak memory {summary['peak_memory_mb']:.0f} MiB | "
        f"final best {summary['best_fitness_final']:.1f}"
    )
    for r in summary["recovery_best"]:
        print(recovery_line(r))
    if summary["monitor_stop"]:
        from selfref_ghn.evolution.monitor import EXIT_MONITOR_STOP

        print(f"selfref-ghn: {summary['monitor_stop']['message']}", file=sys.stderr)
        print(
            f"checkpoint written; continue with: selfref-ghn run --resume {out}", file=sys.stderr
        )
        return EXIT_MONITOR_STOP
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    if getattr(args, "fast_cpu_loops", False):
        fuse_small_cpu_loops()  # before anything compiles
        skip_ynn_fusions()
    cpu_devices = getattr(args, "cpu_devices", None)
    if cpu_devices is not None:
        use_cpu_devices(cpu_devices or None)
    if args.command not in _UNCACHED_COMMANDS:
        from selfref_ghn.run.compile_cache import enable_compile_cache

        enable_compile_cache(getattr(args, "compile_cache", None))  # before anything compiles
    try:
        if args.command == "presets":
            for name in presets.names():
                print(name)
            return 0
        if args.command == "run":
            return cmd_run(args)
        if hasattr(args, "func"):
            return args.func(args)
    except ConfigError as e:
        if debug:
            raise
        print(f"selfref-ghn: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("selfref-ghn: interrupted; finished generations are in metrics.csv", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # whatever read the output has gone (`selfref-ghn plot DIR | head`): stop without a
        # traceback, and point stdout at nothing so that the flush at exit does not fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 1


if __name__ == "__main__":
    sys.exit(main())
