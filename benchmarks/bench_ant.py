"""Throughput of the Ant environments on CPU (DESIGN §3): brax backends and Ant-v5.

For each environment and batch size, one jitted program resets a batch and then runs
``--steps`` environment steps under ``lax.scan`` with ``vmap`` over the batch (gymnax ``step``,
auto-reset included, uniform random actions). Compile time is the wall time of
``jit(...).lower(...).compile()``; throughput is batch * steps / wall time of the compiled
program (best of ``--repeats`` runs, after one warm-up run).

Usage:
    python benchmarks/bench_ant.py --out DIR [--quick]

Writes ``DIR/bench_ant.json`` with the configuration, library version, git hash, machine load
and one record per (environment, batch).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from typing import Any

import jax
import jax.numpy as jnp
from selfref_ghn.envs import ant


def _git_hash() -> str:
    """Current commit of the repository, or ``unknown``."""
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _rollout_fn(env: Any, params: Any, batch: int, steps: int):
    """Jittable ``key -> total reward``: reset a batch, then ``steps`` vmapped steps."""

    def rollout(key: jax.Array) -> jax.Array:
        k_reset, k_run = jax.random.split(key)
        _, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k_reset, batch), params)

        def body(carry, key):
            state, total = carry
            k_act, k_step = jax.random.split(key)
            action = jax.random.uniform(k_act, (batch, 8), minval=-1.0, maxval=1.0)
            _, state, reward, _, _, _ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
                jax.random.split(k_step, batch), state, action, params
            )
            return (state, total + reward.sum()), None

        (_, total), _ = jax.lax.scan(body, (state, 0.0), jax.random.split(k_run, steps))
        return total

    return rollout


def bench_one(name: str, factory, batch: int, steps: int, repeats: int) -> dict[str, Any]:
    """Compile time and env-steps/s of one environment at one batch size."""
    t0 = time.perf_counter()
    env, params = factory()
    construct_s = time.perf_counter() - t0
    key = jax.random.key(0)
    t0 = time.perf_counter()
    compiled = jax.jit(_rollout_fn(env, params, batch, steps)).lower(key).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(key))  # warm-up
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        total = jax.block_until_ready(compiled(jax.random.key(i + 1)))
        times.append(time.perf_counter() - t0)
    best = min(times)
    record = {
        "env": name,
        "batch": batch,
        "steps": steps,
        "construct_s": round(construct_s, 3),
        "compile_s": round(compile_s, 2),
        "run_s": [round(t, 4) for t in times],
        "env_steps_per_s": round(batch * steps / best, 1),
        "finite": bool(jnp.isfinite(total)),
    }
    print(json.dumps(record), flush=True)
    return record


def main() -> None:
    """Run the benchmark and write ``bench_ant.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--quick", action="store_true", help="Ant-v5 and default brax, batch 64")
    parser.add_argument("--steps", type=int, default=None, help="env steps per rollout")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (best is kept)")
    args = parser.parse_args()

    if args.quick:
        envs = {
            f"brax-ant-{ant.DEFAULT_BRAX_BACKEND}": lambda: ant.make_brax_ant(),
            "Ant-v5": ant.make_ant_v5,
        }
        batches, steps, repeats = (64,), args.steps or 5, args.repeats or 1
    else:
        envs = {
            f"brax-ant-{b}": (lambda b=b: ant.make_brax_ant(backend=b)) for b in ant.BRAX_BACKENDS
        }
        envs["Ant-v5"] = ant.make_ant_v5
        batches, steps, repeats = (64, 1024), args.steps or 10, args.repeats or 2

    started = time.time()
    records = []
    for name, factory in envs.items():
        for batch in batches:
            try:
                records.append(bench_one(name, factory, batch, steps, repeats))
            except Exception as err:  # a backend failing is a result to report, not to hide
                records.append({"env": name, "batch": batch, "error": repr(err)})
                print(json.dumps(records[-1]), flush=True)

    from importlib.metadata import version

    result = {
        "benchmark": "bench_ant",
        "config": {"quick": args.quick, "steps": steps, "repeats": repeats, "batches": batches},
        "selfref_ghn_version": version("selfref_ghn"),
        "jax_version": jax.__version__,
        "git_hash": _git_hash(),
        "devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "load_average_at_end": os.getloadavg(),
        "total_s": round(time.time() - started, 1),
        "results": records,
    }
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "bench_ant.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {path} in {result['total_s']} s")


if __name__ == "__main__":
    main()
