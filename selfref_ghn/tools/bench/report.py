"""The benchmark's reports: markdown tables of ``bench.json`` (throughput, compile time and
memory, phase profile, policy width, heads: :func:`selfref_ghn.tools.bench.heads.markdown`) and
the plot of throughput against population size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selfref_ghn.tools.bench import heads
from selfref_ghn.tools.bench.harness import METHOD_LABELS, METHODS


def _fmt(x: float | None, digits: int = 1) -> str:
    if x is None:
        return "n/a"
    if abs(x) >= 1e6:
        return f"{x / 1e6:.{digits}f} M"
    if abs(x) >= 1e4:
        return f"{x / 1e3:.0f} k"
    return f"{x:.{digits}f}"


def markdown(results: dict[str, Any]) -> str:
    """The results as markdown tables: throughput, compile and memory, profile, width.

    Args:
        results: the dict written to ``bench.json``.

    Returns:
        Markdown text.
    """
    m = results["machine"]
    lines = [
        f"Command: `{results['command']}`  ",
        f"Git: `{m['git_hash']}`, jax {m['jax_version']} ({m['backend']}), "
        f"{m['cpu_model']}, {m['cpus_usable']} usable cores, load average at start "
        + ", ".join(f"{x:.1f}" for x in (m.get("load_average") or []))
        + (
            ", at end " + ", ".join(f"{x:.1f}" for x in m["load_average_end"])
            if m.get("load_average_end")
            else ""
        )
        + f"; total {results.get('total_wall_s', 0):.0f} s."
        + (
            f"  \nUncommitted changes measured: {', '.join(m['git_modified_files'])}."
            if m.get("git_modified_files")
            else ""
        ),
        "",
        "### Generation time (median ms per generation; ratios < 1 would beat the bound)",
        "",
        "| case | env | P | C | members | horizon | policy | SR-GHN ms | bound ms | Open_ES ms "
        "| SR/bound | SR/Open_ES | SR-GHN env-steps/s | bound env-steps/s |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    # workload (f) has no Open_ES and its own table (selfref_ghn.tools.bench.heads)
    ok = [c for c in results["cases"] if "error" not in c and c["workload"] != "f"]
    for c in ok:
        ms = {k: c["methods"][k]["generation_s"] * 1e3 for k in METHODS}
        lines.append(
            f"| {c['name']} | {c['env_id']} | {c['population_size']} | {c['num_children']} "
            f"| {c['members']} | {c['horizon']} | {c['policy_hidden']} | {ms['sr_ghn']:.1f} "
            f"| {ms['rollout_bound']:.1f} | {ms['open_es']:.1f} "
            f"| {c['ratios']['sr_ghn_over_bound']:.2f} | {c['ratios']['sr_ghn_over_open_es']:.2f} "
            f"| {_fmt(c['methods']['sr_ghn']['env_steps_per_s'])} "
            f"| {_fmt(c['methods']['rollout_bound']['env_steps_per_s'])} |"
        )
    lines += [
        "",
        "### Compile time (s) and peak host memory (MiB, resident; reset before each method)",
        "",
        "| case | SR-GHN compile | bound compile | Open_ES compile | SR-GHN peak RSS "
        "| bound peak RSS | Open_ES peak RSS | process peak | SR-GHN device peak |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in ok:
        mm = c["methods"]
        dev = (mm["sr_ghn"].get("device_memory_mb") or {}).get("peak_bytes_in_use")
        lines.append(
            f"| {c['name']} | {mm['sr_ghn']['compile_s']:.1f} "
            f"| {mm['rollout_bound']['compile_s']:.1f} | {mm['open_es']['compile_s']:.1f} "
            f"| {mm['sr_ghn']['peak_rss_mb']:.0f} | {mm['rollout_bound']['peak_rss_mb']:.0f} "
            f"| {mm['open_es']['peak_rss_mb']:.0f} | {c['process_peak_rss_mb']:.0f} "
            f"| {_fmt(dev, 0)} |"
        )
    if not ok:  # only workload (f) ran: keep the command and machine lines, no empty tables
        del lines[2:]
    prof = [c for c in ok if c.get("profile")]
    if prof:
        lines += [
            "",
            "### Phase profile of one SR-GHN generation (each phase jitted alone on the fused "
            "step's inputs; ms, fraction)",
            "",
            "| case | generation | mutation | policy generation | rollout | selection "
            "| sum of phases "
            "| step alone | step / sum | fused generation | rollout bound |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for c in prof:
            p = c["profile"]
            s, f = p["seconds"], p["fractions"]

            def cell(k: str, s: dict = s, f: dict = f) -> str:
                return f"{s[k] * 1e3:.1f} ({f.get(k, 0) * 100:.0f}%)" if k in s else "n/a"

            lines.append(
                f"| {c['name']} | {p.get('generation', 'n/a')} | {cell('mutation')} "
                f"| {cell('policy_generation')} "
                f"| {cell('rollout')} | {cell('selection')} | {p['sum_of_phases_s'] * 1e3:.1f} "
                f"| {_fmt(p['step_s'] and p['step_s'] * 1e3)} "
                f"| {_fmt(p['step_over_phases'], 2)} "
                f"| {p['fused_generation_s'] * 1e3:.1f} | {p['rollout_bound_s'] * 1e3:.1f} |"
            )
            if p.get("errors"):
                lines.append(f"| {c['name']} errors | | {p['errors']} | | | | | | | | |")
        lines += [
            "",
            "*generation*: the state profiled, the one the timed calls ended with; "
            "*step alone*: `Evolution.step` jitted alone, timed in the same rounds as the phases; "
            "*step / sum*: its median ratio to the phases' sum over those rounds; *fused "
            "generation*: one generation of `compiled_chunk` (the first table).",
        ]
        work = [c for c in prof if c["profile"].get("gflop")]
        if work:
            lines += [
                "",
                "Work per phase (GFLOP per generation: XLA's static count of the compiled phase, "
                "which counts a loop body once, so the scanned GNN rounds and environment steps "
                "are undercounted: a lower bound):",
                "",
                "| case | mutation | policy generation | rollout | selection |",
                "|---|---:|---:|---:|---:|",
            ]
            for c in work:
                g = c["profile"]["gflop"]
                cells = " | ".join(
                    _fmt(g.get(k), 3) if g.get(k) is not None else "n/a"
                    for k in ("mutation", "policy_generation", "rollout", "selection")
                )
                lines.append(f"| {c['name']} | {cells} |")
    width = [c for c in ok if c["workload"] == "e"]
    if width:
        lines += [
            "",
            "### Policy width (workload e): hypernetwork part = generation - rollout bound",
            "",
            "| case | policy | SR-GHN ms | rollout part (bound) ms | hypernetwork part ms |",
            "|---|---|---:|---:|---:|",
        ]
        for c in width:
            lines.append(
                f"| {c['name']} | {c['policy_hidden']} "
                f"| {c['methods']['sr_ghn']['generation_s'] * 1e3:.1f} "
                f"| {c['rollout_s'] * 1e3:.1f} | {c['hypernetwork_s'] * 1e3:.1f} |"
            )
        if len(width) == 2:
            hn = width[1]["hypernetwork_s"] - width[0]["hypernetwork_s"]
            ro = width[1]["rollout_s"] - width[0]["rollout_s"]
            lines.append(
                f"\nWidening the policy added {hn * 1e3:.1f} ms to the hypernetwork part and "
                f"{ro * 1e3:.1f} ms to the rollout part."
            )
    head_lines = heads.markdown(results)
    if head_lines:
        lines += ["", *head_lines]
    bad = [c for c in results["cases"] if "error" in c]
    notes = [
        f"- {s.get('case', s.get('env', s['workload']))}: skipped ({s['reason']})"
        for s in results["skipped"]
    ] + [f"- {c['name']}: failed ({c['error']})" for c in bad]
    if notes:
        lines += ["", "Not measured:", "", *notes]
    return "\n".join(lines) + "\n"


def plot_population(results: dict[str, Any], path: str | Path) -> bool:
    """Throughput (env-steps/s) against population size, CartPole cases (workloads b, c).

    Returns:
        ``True`` if a plot was written (it needs at least one such case).
    """
    pts = [
        c
        for c in results["cases"]
        if "error" not in c
        and c["workload"] in ("b", "c")
        and c["policy_hidden"] == [32]
        and c["env_id"].startswith("CartPole")
    ]
    if not pts:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts.sort(key=lambda c: c["population_size"])
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, marker in zip(METHODS, "osd", strict=True):
        ax.plot(
            [c["population_size"] for c in pts],
            [c["methods"][name]["env_steps_per_s"] for c in pts],
            marker=marker,
            label=METHOD_LABELS[name],
        )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("population size P (members evaluated: 3P)")
    ax.set_ylabel("simulated env steps / s")
    m = results["machine"]
    ax.set_title(f"CartPole-Switch, horizon 500 ({m['backend']}, {m['cpus_usable']} cores)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
