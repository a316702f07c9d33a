"""Throughput of the pure-JAX LunarLander against Gymnasium's Box2D one (DESIGN §3).

Measures, on this machine's CPU: the compile time of the batched JAX step, and env-steps per
second at several batch sizes for (a) the JAX env (``vmap`` + ``lax.scan`` of gymnax ``step``
with auto-reset, random discrete actions) and (b) Gymnasium's ``SyncVectorEnv`` of
``LunarLander-v3`` (random actions, auto-reset). The two are timed in alternating rounds
(``--rounds``, sharing ``--gym-seconds`` each), so that both meet the machine in the same state;
the figures are medians over the rounds, and the ratio is the median of the rounds' ratios.
Writes ``lunar_lander_bench.json`` (config, library versions, git hash, per-round figures) to
``--out``.

Usage:
    python benchmarks/bench_lunar_lander.py --out DIR [--batches 1 64 1024] [--steps 50]
        [--warmup 300] [--gym-seconds 5] [--rounds 5] [--fast-cpu-loops] [--cpu-devices N]

``--fast-cpu-loops`` sets XLA:CPU's small-loop option and turns off its YNNPACK fusions, and
``--cpu-devices N`` presents the CPU as N devices, each stepping its share of the batch on its
own thread (selfref_ghn.run.xla_cpu), as the command line's options of those names do; the JSON
records ``XLA_FLAGS`` and the devices.
Gymnasium's ``SyncVectorEnv`` steps its environments one after another on one core.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from selfref_ghn.evolution.sharding import AXIS, per_member
from selfref_ghn.run.xla_cpu import fuse_small_cpu_loops, skip_ynn_fusions, use_cpu_devices


def _git_hash() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True).strip()
    except Exception:  # noqa: BLE001
        return "unknown"


def jax_stepper(
    batch: int, steps: int, toi: bool, warmup: int = 0, devices: int = 1
) -> tuple[dict, Callable[[float], float]]:
    """The batched JAX step, compiled and warmed up, and a timer for it.

    Args:
        batch: number of parallel environments.
        steps: scan length of one call.
        toi: emulate Box2D's time-of-impact pass.
        warmup: steps run before timing, so that the batch holds episodes of every age
            (flying, touching down, resting, just reset) as in a long run.
        devices: split the batch over the first ``devices`` devices, each device stepping its
            own landers (``selfref_ghn.evolution.sharding.per_member``, as the library's runs do).

    Returns:
        ``(info, timed)``: compile and reset times, and ``timed(seconds)``, which runs whole
        calls for at least ``seconds`` (at least one) and returns the env steps/s.
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
    key_sets = [jax.block_until_ready(step_keys(1000 + i)) for i in range(4)]
    box = {"state": state, "calls": 0}

    def timed(seconds: float) -> float:
        n, t0 = 0, time.perf_counter()
        while n == 0 or time.perf_counter() - t0 < seconds:
            k = key_sets[box["calls"] % len(key_sets)]
            box["state"], _ = jax.block_until_ready(compiled(box["state"], k))
            box["calls"] += 1
            n += 1
        return batch * steps * n / (time.perf_counter() - t0)

    info = {
        "batch": batch,
        "steps": steps,
        "toi": toi,
        "warmup": warmup,
        "devices": devices,
        "reset_compile_and_run_s": reset_s,
        "compile_s": compile_s,
    }
    return info, timed


def gymnasium_stepper(batch: int, warmup: int = 0) -> tuple[Any, Callable[[float], float]]:
    """Gymnasium's ``SyncVectorEnv`` at ``batch`` with random actions after ``warmup``
    untimed steps, and ``timed(seconds)``: steps for ``seconds``, returns env steps/s."""
    env = gym.make_vec("LunarLander-v3", num_envs=batch, vectorization_mode="sync")
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(warmup):
        env.step(rng.integers(0, 4, size=batch))

    def timed(seconds: float) -> float:
        n, t0 = 0, time.perf_counter()
        while n == 0 or time.perf_counter() - t0 < seconds:
            env.step(rng.integers(0, 4, size=batch))
            n += 1
        return batch * n / (time.perf_counter() - t0)

    return env, timed


def interleaved(
    batch: int, args: argparse.Namespace, devices: int, toi: bool = True
) -> tuple[dict, dict]:
    """Both envs at ``batch``, timed in ``args.rounds`` alternating rounds of
    ``args.gym_seconds / args.rounds`` seconds each, so that both see the machine in the same
    state (a shared machine's speed drifts over minutes); the figures are the medians over
    the rounds, and the ratio the median of the rounds' ratios."""
    env, gym_timed = gymnasium_stepper(batch, args.warmup)
    info, jax_timed = jax_stepper(batch, args.steps, toi, args.warmup, devices)
    share = args.gym_seconds / args.rounds
    gym_sps, jax_sps = [], []
    for _ in range(args.rounds):
        gym_sps.append(gym_timed(share))
        jax_sps.append(jax_timed(share))
    env.close()
    ratios = [j / g for j, g in zip(jax_sps, gym_sps, strict=True)]
    jax_rec = {
        **info,
        "rounds_env_steps_per_s": jax_sps,
        "env_steps_per_s": float(np.median(jax_sps)),
        "ratio_per_round": ratios,
        "ratio_median": float(np.median(ratios)),
    }
    gym_rec = {
        "batch": batch,
        "warmup": args.warmup,
        "rounds_env_steps_per_s": gym_sps,
        "env_steps_per_s": float(np.median(gym_sps)),
        "seconds": args.gym_seconds,
    }
    return jax_rec, gym_rec


def main() -> None:
    """Run the benchmark and write the JSON file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64, 1024])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument(
        "--gym-seconds",
        type=float,
        default=5.0,
        help="seconds of stepping for each env, split over the rounds",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="alternating rounds of Gymnasium and JAX timing (figures: medians over rounds)",
    )
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
        d = n_dev if b % n_dev == 0 else 1  # batch 1 runs on one device
        for toi in (True, False) if args.no_toi else (True,):
            jax_rec, gym_rec = interleaved(b, args, d, toi)
            results["jax"].append(jax_rec)
            if toi:
                results["gymnasium"].append(gym_rec)
            print(
                f"batch {b} (toi={toi}): JAX {jax_rec['env_steps_per_s']:,.0f} steps/s, "
                f"Gymnasium {gym_rec['env_steps_per_s']:,.0f}, "
                f"ratio {jax_rec['ratio_median']:.2f}x "
                f"(rounds {', '.join(f'{r:.2f}' for r in jax_rec['ratio_per_round'])}), "
                f"compile {jax_rec['compile_s']:.1f} s",
                flush=True,
            )
    speedup = {str(r["batch"]): r["ratio_median"] for r in results["jax"] if r["toi"]}
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
