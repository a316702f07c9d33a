"""Throughput of a brax task's four backends on CPU (DESIGN §3), to pick its default backend.

For each backend, ``jit(vmap(env.step))`` (gymnax ``step``: auto-reset included) at one batch
size is compiled ahead of time (``step_compile_s``: wall time of ``.lower().compile()``);
throughput is batch * steps / wall time of ``--steps`` consecutive batched steps with uniform
random actions (best of ``--repeats``, after one warm-up step). Backends are measured in
turn, in the same process, so their ratios are comparable; the JSON records the load average.

Usage:
    python benchmarks/bench_brax.py --out DIR [--task halfcheetah] [--batch 64] [--steps 20]

Writes ``DIR/bench_brax_<task>.json`` with the configuration, library version, git hash,
machine load and one record per backend.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import jax
import jax.numpy as jnp
from bench_ant import time_steps, write_result
from selfref_ghn.envs import brax_envs


def bench_backend(task: str, backend: str, batch: int, steps: int, repeats: int) -> dict[str, Any]:
    """Compile time and env-steps/s of one backend."""
    env, params = brax_envs.make_brax(task, backend)
    keys = jax.random.split(jax.random.key(0), batch)
    _, state = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))(keys, params)
    actions = jax.random.uniform(
        jax.random.key(1), (steps, batch, env.num_actions), minval=-1.0, maxval=1.0
    )
    step = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))
    step_compile_s, times, obs, reward = time_steps(step, keys, state, actions, params, repeats)
    record = {
        "task": task,
        "backend": backend,
        "batch": batch,
        "steps": steps,
        "dt": env.dt,
        "step_compile_s": round(step_compile_s, 2),
        "run_s": [round(t, 4) for t in times],
        "env_steps_per_s": round(batch * steps / min(times), 1),
        "sim_s_per_s": round(batch * steps * env.dt / min(times), 1),
        "finite": bool(jnp.isfinite(obs).all() & jnp.isfinite(reward).all()),
    }
    print(json.dumps(record), flush=True)
    return record


def main() -> None:
    """Run the benchmark and write ``bench_brax_<task>.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--task", default="halfcheetah", choices=sorted(brax_envs.TASKS))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="env steps per timed run")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs (best is kept)")
    parser.add_argument("--backends", default=",".join(brax_envs.BRAX_BACKENDS))
    args = parser.parse_args()

    started = time.time()
    records = []
    for backend in args.backends.split(","):
        try:
            records.append(bench_backend(args.task, backend, args.batch, args.steps, args.repeats))
        except Exception as err:  # a backend failing is a result to report, not to hide
            records.append({"backend": backend, "error": repr(err)})
            print(json.dumps(records[-1]), flush=True)

    name = f"bench_brax_{args.task}.json"
    write_result(args.out, "bench_brax", name, vars(args), records, started)


if __name__ == "__main__":
    main()
