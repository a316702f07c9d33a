"""Throughput of the pure-JAX LunarLander against Gymnasium's Box2D one (DESIGN §3).

Measures, on this machine's CPU: the compile time of the batched JAX step, and env-steps per
second at several batch sizes for (a) the JAX env (``vmap`` + ``lax.scan`` of gymnax ``step``
with auto-reset, random discrete actions) and (b) Gymnasium's ``SyncVectorEnv`` of
``LunarLander-v3`` (random actions, auto-reset). Writes ``lunar_lander_bench.json`` (config,
library versions, git hash and metrics) to ``--out``.

Usage:
    python benchmarks/bench_lunar_lander.py --out DIR [--batches 1 64 1024] [--steps 50]
        [--warmup 300] [--fast-cpu-loops] [--cpu-devices N]

``--fast-cpu-loops`` sets XLA:CPU's small-loop option and turns off its YNNPACK fusions, and
``--cpu-devices N`` presents the CPU as
N devices, each stepping its share of the batch on its own thread (selfref_ghn.xla_cpu), as the
command line's options of those names do; the JSON records ``XLA_FLAGS`` and the devices.
Gymnasium's ``SyncVectorEnv`` steps its environments one after another on one core.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from selfref_ghn.sharding import AXIS, per_member
from selfref_ghn.xla_cpu import fuse_small_cpu_loops, skip_ynn_fusions, use_cpu_devices


def _git_hash() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True).strip()
    except Exception:  # noqa: BLE001
        return "unknown"


def bench_jax(batch: int, steps: int, toi: bool, warmup: int = 0, devices: int = 1) -> dict:
    """Compile time and steps/s of ``steps`` vmapped steps at ``batch``.

    Args:
        batch: number of parallel environments.
        steps: scan length of one timed call.
        toi: emulate Box2D's time-of-impact pass.
        warmup: steps run before timing, so that the batch holds episodes of every age
            (flying, touching down, resting, just reset) as in a long run.
        devices: split the batch over the first ``devices`` devices, each device stepping its
            own landers (``selfref_ghn.sharding.per_member``, as the library's runs do).

    Returns:
        A dict of measurements.
    """
    # imported here: the module builds arrays, which starts JAX's backend (after main() has
    # had the chance to set XLA_FLAGS and the CPU device count)
    from selfref_ghn.envs import lunar_lander as ll

    if batch % devices:
        raise ValueError(f"batch {batch} does not split over {devices} devices")
    mesh = None if devices == 1 else Mesh(np.array(jax.devices()[:devices]), (AXIS,))
    env, params = ll.make_lunar_lander(toi=toi)
    keys = jax.random.split(jax.random.key(0), batch)
    t0 = time.perf_counter()
    reset = jax.vmap(env.reset, in_axes=(0, None))
    _, state = jax.block_until_ready(
        jax.jit(lambda k, p: per_member(reset, mesh, (k,), (p,)))(keys, params)
    )
    reset_s = time.perf_counter() - t0

    def run_block(state, keys, params):  # one device's landers; keys: (landers, steps)
        def body(state, k):
            ka = jax.vmap(jax.random.split)(k)
            acts = jax.vmap(lambda kk: jax.random.randint(kk, (), 0, 4))(ka[:, 0])
            out = jax.vmap(env.step, in_axes=(0, 0, 0, None))(ka[:, 1], state, acts, params)
            return out[1], out[2]

        state, rewards = jax.lax.scan(body, state, jnp.swapaxes(keys, 0, 1))
        return state, jnp.swapaxes(rewards, 0, 1)

    f = jax.jit(lambda s, k: per_member(run_block, mesh, (s, k), (params,)))

    def step_keys(i):
        return jax.random.split(jax.random.key(i), (batch, steps))

    t0 = time.perf_counter()
    compiled = f.lower(state, step_keys(1)).compile()
    compile_s = time.perf_counter() - t0
    for i in range(max(1, -(-warmup // steps))):  # warm-up
        state, _ = jax.block_until_ready(compiled(state, step_keys(100 + i)))
    timed_keys = jax.block_until_ready(step_keys(3))
    t0 = time.perf_counter()
    state, r = jax.block_until_ready(compiled(state, timed_keys))
    run_s = time.perf_counter() - t0
    return {
        "batch": batch,
        "steps": steps,
        "toi": toi,
        "warmup": warmup,
        "devices": devices,
        "reset_compile_and_run_s": reset_s,
        "compile_s": compile_s,
        "run_s": run_s,
        "env_steps_per_s": batch * steps / run_s,
    }


def bench_gymnasium(batch: int, seconds: float, warmup: int = 0) -> dict:
    """Steps/s of Gymnasium's ``SyncVectorEnv`` at ``batch`` with random actions, timed after
    ``warmup`` untimed steps."""
    env = gym.make_vec("LunarLander-v3", num_envs=batch, vectorization_mode="sync")
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(warmup):
        env.step(rng.integers(0, 4, size=batch))
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        env.step(rng.integers(0, 4, size=batch))
        n += 1
    dt = time.perf_counter() - t0
    env.close()
    return {"batch": batch, "env_steps_per_s": batch * n / dt, "seconds": dt, "warmup": warmup}


def main() -> None:
    """Run the benchmark and write the JSON file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64, 1024])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--gym-seconds", type=float, default=5.0)
    parser.add_argument(
        "--warmup",
        type=int,
        default=300,
        help="untimed steps before timing (random-action episodes last about 100 steps)",
    )
    parser.add_argument("--no-toi", action="store_true", help="also time the env without TOI")
    parser.add_argument(
        "--fast-cpu-loops",
        action="store_true",
        help="set XLA:CPU's small-loop option and skip YNNPACK fusions, as the CLI's "
        "--fast-cpu-loops does",
    )
    parser.add_argument(
        "--cpu-devices",
        type=int,
        default=1,
        metavar="N",
        help="present the CPU as N devices (one thread each) and split each batch over them, "
        "as the CLI's --cpu-devices does (0: one per core)",
    )
    args = parser.parse_args()
    if args.fast_cpu_loops:
        fuse_small_cpu_loops()
        skip_ynn_fusions()
    if args.cpu_devices != 1:
        use_cpu_devices(args.cpu_devices or None)
    jnp.zeros(())  # initialise the backend before timing
    os.makedirs(args.out, exist_ok=True)

    results = {"jax": [], "gymnasium": []}
    n_dev = len(jax.devices())
    for b in args.batches:
        results["gymnasium"].append(bench_gymnasium(b, args.gym_seconds, args.warmup))
        print("gymnasium", results["gymnasium"][-1], flush=True)
        d = n_dev if b % n_dev == 0 else 1  # batch 1 runs on one device
        results["jax"].append(bench_jax(b, args.steps, toi=True, warmup=args.warmup, devices=d))
        print("jax", results["jax"][-1], flush=True)
        if args.no_toi:
            results["jax"].append(
                bench_jax(b, args.steps, toi=False, warmup=args.warmup, devices=d)
            )
            print("jax", results["jax"][-1], flush=True)
    gym_by_batch = {r["batch"]: r["env_steps_per_s"] for r in results["gymnasium"]}
    speedup = {
        str(r["batch"]): r["env_steps_per_s"] / gym_by_batch[r["batch"]]
        for r in results["jax"]
        if r["toi"]
    }
    record = {
        "config": vars(args),
        "versions": {
            "jax": jax.__version__,
            "gymnasium": gym.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "git_hash": _git_hash(),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "device": str(jax.devices()[0]),
        "devices": [str(x) for x in jax.devices()],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "results": results,
        "speedup_vs_gymnasium": speedup,
    }
    path = os.path.join(args.out, "lunar_lander_bench.json")
    with open(path, "w") as f:
        json.dump(record, f, indent=2)
    print(json.dumps(speedup, indent=2))
    print("wrote", path)


if __name__ == "__main__":
    main()
