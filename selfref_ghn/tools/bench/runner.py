"""Running the benchmark: every case in a fresh worker process (so peaks are per case), under
a time budget, with ``OUT/bench.json``, ``OUT/bench.md`` and the population plot rewritten after
each case, and the heads plot at the end."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from selfref_ghn.tools.bench import heads
from selfref_ghn.tools.bench.cases import Case
from selfref_ghn.tools.bench.harness import measure_case
from selfref_ghn.tools.bench.machine import machine_info
from selfref_ghn.tools.bench.report import markdown, plot_population


def _run_worker(case: Case, timeout_s: float | None) -> dict[str, Any]:
    """Measure ``case`` in a fresh Python process; errors become ``{"error": ...}``."""
    with tempfile.TemporaryDirectory() as tmp:
        spec, result = Path(tmp) / "case.json", Path(tmp) / "result.json"
        spec.write_text(json.dumps(case.to_json()))
        cmd = [sys.executable, "-m", "selfref_ghn.tools.bench", "--worker", str(spec), str(result)]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, timeout=timeout_s, stdout=sys.stderr)
        except subprocess.TimeoutExpired:
            return {**case.to_json(), "error": f"timed out after {timeout_s:.0f} s"}
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not result.exists():
            why = f"worker exited with status {proc.returncode}"
            if proc.returncode in (-9, 137):
                why += " (killed: out of memory?)"
            return {**case.to_json(), "error": why, "wall_s": wall}
        out = json.loads(result.read_text())
        out["wall_s"] = wall
        return out


def run_benchmark(
    cases: Sequence[Case],
    out_dir: str | Path,
    skipped: Sequence[dict[str, str]] = (),
    budget_s: float | None = None,
    in_process: bool = False,
    argv: Sequence[str] | None = None,
    limit_s: float | None = None,
) -> dict[str, Any]:
    """Measure every case (one subprocess each), then write JSON, markdown and the plot.

    Args:
        cases: from :func:`plan`.
        out_dir: results folder (created).
        skipped: notes for workloads that were not run.
        budget_s: stop starting new cases once this much wall time has passed.
        in_process: measure in this process instead (tests; peaks are then not per case).
        argv: the command line, recorded in the JSON.
        limit_s: stop a case still running at this wall time (recorded as timed out), so
            the whole run ends by then; default ``budget_s * 1.45``.

    Returns:
        The results dict written to ``bench.json``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results: dict[str, Any] = {
        "command": " ".join(["python -m selfref_ghn.tools.bench", *(argv or [])]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine_info(),
        "skipped": list(skipped),
        "cases": [],
    }

    def say(msg: str) -> None:
        print(f"[bench {time.perf_counter() - start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    failed_sweep = False
    for case in cases:
        elapsed = time.perf_counter() - start
        if budget_s is not None and elapsed > budget_s:
            results["skipped"].append(
                {"workload": case.workload, "case": case.name, "reason": "time budget spent"}
            )
            continue
        if case.workload == "c" and failed_sweep:
            results["skipped"].append(
                {"workload": "c", "case": case.name, "reason": "a smaller population failed"}
            )
            continue
        env = case.config.env_id if case.env_spec is None else "synthetic env"
        say(f"case {case.name}: P={case.config.population_size} {env}")
        if in_process:
            res = measure_case(case, say)
        else:
            limit = limit_s if limit_s is not None else (budget_s and budget_s * 1.45)
            remaining = None if not limit else max(limit - elapsed, 60.0)
            res = _run_worker(case, remaining)
        if "error" in res:
            say(f"case {case.name} failed: {res['error']}")
            failed_sweep = failed_sweep or case.workload == "c"
        results["cases"].append(res)
        _write_outputs(results, out, time.perf_counter() - start)
    measured = [c["device"] for c in results["cases"] if "device" in c]
    if measured:  # the workers' backend, not the planning process's
        results["machine"].update(measured[0])
    results["machine"]["load_average_end"] = (
        list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    )
    _write_outputs(results, out, time.perf_counter() - start)
    plot_population(results, out / "performance_population.png")
    heads.plot(results, out / "performance_heads.png")
    say(f"wrote {out / 'bench.json'} and {out / 'bench.md'}")
    return results


def _write_outputs(results: dict[str, Any], out: Path, wall_s: float) -> None:
    results["total_wall_s"] = wall_s
    (out / "bench.json").write_text(json.dumps(results, indent=2, default=json_default))
    (out / "bench.md").write_text(markdown(results))


def json_default(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    try:
        return float(x)
    except (TypeError, ValueError):
        return str(x)
