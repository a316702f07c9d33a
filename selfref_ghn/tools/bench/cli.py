"""The benchmark's command line: its options, ``register(subparsers)`` for ``selfref-ghn
bench``, and :func:`main` for ``python -m selfref_ghn.tools.bench`` (and the per-case worker,
``--worker SPEC RESULT``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from selfref_ghn.tools.bench.cases import DEFAULT_SWEEP, FULL_SWEEP, WORKLOADS, Case, plan
from selfref_ghn.tools.bench.harness import measure_case
from selfref_ghn.tools.bench.report import markdown
from selfref_ghn.tools.bench.runner import json_default, run_benchmark


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The benchmark's command-line options."""
    p.add_argument("--out", type=Path, default=Path("bench_results"), help="results folder")
    p.add_argument(
        "--quick", action="store_true", help="a short version: small cases, fewer repeats"
    )
    p.add_argument(
        "--workloads",
        default=None,
        help="comma-separated workload letters from a,b,c,d,e,f (f or 'heads': head size "
        "against policy size; default: all; with --quick: a,c)",
    )
    p.add_argument(
        "--populations",
        default=None,
        help=f"sweep sizes for (c), comma-separated (default {','.join(map(str, DEFAULT_SWEEP))})",
    )
    p.add_argument(
        "--full-sweep",
        action="store_true",
        help=f"sweep {','.join(map(str, FULL_SWEEP))} (may exceed memory or time on a CPU)",
    )
    p.add_argument(
        "--only",
        default=None,
        help="comma-separated parts of case names: run only the cases whose name holds one "
        "(e.g. --workloads heads --only dense,conv)",
    )
    p.add_argument("--repeats", type=int, default=None, help="timed calls per method")
    p.add_argument("--chunk", type=int, default=None, help="generations per compiled call")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field in every case (e.g. horizon=50)",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=600.0,
        help="seconds after which no new case starts (default 600)",
    )
    p.add_argument(
        "--limit",
        type=float,
        default=870.0,
        help="seconds after which a running case is stopped (default 870: under 15 minutes)",
    )
    p.add_argument(
        "--in-process", action="store_true", help="no subprocess per case (peaks not per case)"
    )


def run_from_args(args: argparse.Namespace, argv: Sequence[str] | None = None) -> int:
    """Plan and run the benchmark from parsed arguments; returns an exit code."""
    if not args.in_process:
        # The parent only plans and reports: keep it off the accelerator, whose memory the
        # workers need (a GPU backend would preallocate most of it here).
        import jax

        jax.config.update("jax_platforms", "cpu")
    chosen = args.workloads or ("a,c" if args.quick else ",".join(WORKLOADS))
    workloads = [w.strip() for w in chosen.split(",") if w.strip()]
    populations = None
    if args.populations:
        populations = [int(x) for x in args.populations.split(",")]
    elif args.full_sweep:
        populations = list(FULL_SWEEP)
    overrides = {}
    for pair in args.set:
        if "=" not in pair:
            print(f"bench: --set expects key=value, got {pair!r}", file=sys.stderr)
            return 2
        k, v = pair.split("=", 1)
        overrides[k.strip()] = v
    cases, skipped = plan(
        workloads, args.quick, populations, overrides or None, args.repeats, args.chunk
    )
    if args.only:
        parts = [x.strip() for x in args.only.split(",") if x.strip()]
        cases = [c for c in cases if any(x in c.name for x in parts)]
    results = run_benchmark(
        cases,
        args.out,
        skipped,
        args.budget,
        args.in_process,
        argv=list(argv or []),
        limit_s=args.limit,
    )
    print(markdown(results))
    return 0 if all("error" not in c for c in results["cases"]) else 1


def register(subparsers: Any) -> None:
    """Add the ``bench`` subcommand to the ``selfref-ghn`` command line."""
    p = subparsers.add_parser("bench", help="benchmark SR-GHN against the rollout bound")
    add_arguments(p)
    p.set_defaults(func=lambda args: run_from_args(args, sys.argv[2:]))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m selfref_ghn.tools.bench``; ``--worker SPEC RESULT`` measures one case."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker"]:
        case = Case.from_json(json.loads(Path(argv[1]).read_text()))
        res = measure_case(
            case, lambda s: print(f"[bench worker] {s}", file=sys.stderr, flush=True)
        )
        Path(argv[2]).write_text(json.dumps(res, default=json_default))
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m selfref_ghn.tools.bench", description=sys.modules[__package__].__doc__
    )
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv), argv)
