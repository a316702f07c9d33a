"""Throughput of the Ant environments on CPU (DESIGN §3): brax backends and Ant-v5.

For each environment and batch size, ``jit(vmap(env.step))`` (gymnax ``step``: auto-reset
included) is compiled ahead of time (``step_compile_s``: wall time of ``.lower().compile()``);
the start state is one ``jit(env.reset)`` state broadcast to the batch (``reset_compile_s``:
compile plus first call). Throughput is batch * steps / wall time of ``--steps``
consecutive batched steps with uniform random actions (best of ``--repeats``, after one
warm-up step). Compile times grow with machine load: the JSON records the load average.

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


def write_result(
    out: str, benchmark: str, name: str, config: dict, records: list, started: float
) -> str:
    """Write ``records`` with the machine and versions they were measured on to ``out/name``."""
    from importlib.metadata import version

    result = {
        "benchmark": benchmark,
        "config": config,
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
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, name)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {path} in {result['total_s']} s")
    return path


def time_steps(step, keys, state, actions, params, repeats: int) -> tuple:
    """Compile the batched ``step``, run it once, then time ``len(actions)`` consecutive steps
    ``repeats`` times. Returns ``(compile_s, times, last_obs, last_reward)``."""
    t0 = time.perf_counter()
    step_c = step.lower(keys, state, actions[0], params).compile()
    compile_s = time.perf_counter() - t0
    state = jax.block_until_ready(step_c(keys, state, actions[0], params)[1])  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for t in range(len(actions)):
            obs, state, reward, *_ = step_c(keys, state, actions[t], params)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - t0)
    return compile_s, times, obs, reward


def bench_one(name: str, factory, batch: int, steps: int, repeats: int) -> dict[str, Any]:
    """Compile times and env-steps/s of one environment at one batch size."""
    t0 = time.perf_counter()
    env, params = factory()
    construct_s = time.perf_counter() - t0
    step = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))
    keys = jax.random.split(jax.random.key(0), batch)
    t0 = time.perf_counter()
    _, state = jax.jit(env.reset)(keys[0], params)  # one member, broadcast to the batch
    state = jax.block_until_ready(
        jax.tree.map(lambda x: jnp.broadcast_to(x, (batch, *jnp.shape(x))), state)
    )
    reset_compile_s = time.perf_counter() - t0
    actions = jax.random.uniform(jax.random.key(1), (steps, batch, 8), minval=-1.0, maxval=1.0)
    step_compile_s, times, obs, reward = time_steps(step, keys, state, actions, params, repeats)
    best = min(times)
    record = {
        "env": name,
        "batch": batch,
        "steps": steps,
        "construct_s": round(construct_s, 3),
        "reset_compile_s": round(reset_compile_s, 2),
        "step_compile_s": round(step_compile_s, 2),
        "run_s": [round(t, 4) for t in times],
        "env_steps_per_s": round(batch * steps / best, 1),
        "finite": bool(jnp.isfinite(obs).all() & jnp.isfinite(reward).all()),
    }
    print(json.dumps(record), flush=True)
    return record


def main() -> None:
    """Run the benchmark and write ``bench_ant.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--quick", action="store_true", help="Ant-v5 only, batch 64, 3 steps")
    parser.add_argument("--steps", type=int, default=None, help="env steps per rollout")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (best is kept)")
    args = parser.parse_args()

    ant_v5_steps = 3  # batched Ant-v5 runs at tens of env-steps/s on 2 cores
    if args.quick:
        envs = {"Ant-v5": ant.make_ant_v5}
        batches, steps, repeats = (64,), args.steps or ant_v5_steps, args.repeats or 1
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
                n, r = (min(steps, ant_v5_steps), 1) if name == "Ant-v5" else (steps, repeats)
                records.append(bench_one(name, factory, batch, n, r))
            except Exception as err:  # a backend failing is a result to report, not to hide
                records.append({"env": name, "batch": batch, "error": repr(err)})
                print(json.dumps(records[-1]), flush=True)

    config = {"quick": args.quick, "steps": steps, "repeats": repeats, "batches": batches}
    write_result(args.out, "bench_ant", "bench_ant.json", config, records, started)


if __name__ == "__main__":
    main()
