"""Throughput of the pure-JAX LunarLander against Gymnasium's Box2D one (DESIGN §3).

Measures, on this machine's CPU: the compile time of the batched JAX step, and env-steps per
second at several batch sizes for (a) the JAX env (``vmap`` + ``lax.scan`` of gymnax ``step``
with auto-reset, random discrete actions) and (b) Gymnasium's ``SyncVectorEnv`` of
``LunarLander-v3`` (random actions, auto-reset). The two are timed in alternating rounds
(``--rounds``, sharing ``--gym-seconds`` each), so that both meet the machine in the same state;
the figures are medians over the rounds, and the ratio is the median of the rounds' ratios.
Writes ``lunar_lander_bench.json`` (config, library versions, git hash, per-round figures) to
``--out``.

``--solvers cpu accelerator`` times the JAX env in each solver mode (``envs._box2d_loops``), in
the same alternating rounds; ``--baseline REV`` adds the CPU mode of the LunarLander modules as
they were at git revision ``REV`` (imported as a separate package), so that old and new code
are timed side by side in one process, and first checks whether the two lower to the same
program. ``--trips`` adds the latency proxy for accelerators,
for each solver: the sequential loop trips per env step (counted while running, by loop, on a
fresh batch, whose landers are still in free flight, and after ``--warmup`` steps, when some
touch the ground) and the number of while loops and fusions in the compiled batched step, for
both modes.

Usage:
    python benchmarks/bench_lunar_lander.py --out DIR [--batches 1 64 1024] [--steps 50]
        [--warmup 300] [--gym-seconds 5] [--rounds 5] [--fast-cpu-loops] [--cpu-devices N]
        [--solvers cpu accelerator] [--baseline REV] [--trips]

``--fast-cpu-loops`` sets XLA:CPU's small-loop option and turns off its YNNPACK fusions, and
``--cpu-devices N`` presents the CPU as N devices, each stepping its share of the batch on its
own thread (selfref_ghn.run.xla_cpu), as the command line's options of those names do; the JSON
records ``XLA_FLAGS`` and the devices.
Gymnasium's ``SyncVectorEnv`` steps its environments one after another on one core.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
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


def load_baseline(rev: str):
    """The LunarLander modules of git revision ``rev`` (``envs/lunar_lander.py`` and the
    modules it imports), imported as the separate package ``ll_baseline``."""
    root = tempfile.mkdtemp()
    pkg = os.path.join(root, "ll_baseline")
    os.makedirs(pkg)
    paths = subprocess.check_output(["git", "ls-tree", "--name-only", rev, "envs/"], text=True)
    for path in paths.split():
        name = os.path.basename(path)
        if name == "lunar_lander.py" or re.match(r"_(box2d|lunar|lanes)\w*\.py$", name):
            src = subprocess.check_output(["git", "show", f"{rev}:{path}"], text=True)
            with open(os.path.join(pkg, name), "w") as f:
                f.write(src.replace("selfref_ghn.envs", "ll_baseline"))
    with open(os.path.join(pkg, "__init__.py"), "w") as f:
        f.write("")
    sys.path.insert(0, root)
    return importlib.import_module("ll_baseline.lunar_lander")


def _make(solver: str | None, toi: bool = True):
    """``(env, params)``: ``solver`` a mode of this checkout, or ``None``: the baseline's."""
    if solver is None:
        return sys.modules["ll_baseline.lunar_lander"].make_lunar_lander(toi=toi)
    from selfref_ghn.envs import lunar_lander as ll

    return ll.make_lunar_lander(toi=toi, solver=solver)


def _random_steps(env, params, steps: int):
    """``f(state, keys[batch, steps])``: ``steps`` batched auto-resetting steps with random
    discrete actions; returns the state and the number of landers with a contact point."""

    def run(state, keys):
        def body(state, k):
            ka = jax.vmap(jax.random.split)(k)
            acts = jax.vmap(lambda kk: jax.random.randint(kk, (), 0, 4))(ka[:, 0])
            state = jax.vmap(env.step, in_axes=(0, 0, 0, None))(ka[:, 1], state, acts, params)[1]
            return state, jnp.sum(jnp.any(state.phys.touching, axis=(1, 2)))

        return jax.lax.scan(body, state, jnp.swapaxes(keys, 0, 1))

    return run


def loop_trips(solver: str, batch: int, warmup: int, steps: int = 10) -> dict:
    """Sequential loop trips per env step of the batched step (``envs._box2d_loops.counting``):
    on a fresh batch (``steps`` steps after the reset, every lander in free flight) and after
    ``warmup`` more random steps (some landers touching the ground), in total and by loop."""
    from selfref_ghn.envs._box2d_loops import counting

    env, params = _make(solver)
    out = {}
    with counting() as trips:
        keys = jax.random.split(jax.random.key(0), batch)
        _, state = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))(keys, params)
        run = jax.jit(_random_steps(env, params, steps))

        def measure(state, seed):
            jax.effects_barrier()
            before = dict(trips)
            state, touching = jax.block_until_ready(
                run(state, jax.random.split(jax.random.key(seed), (batch, steps)))
            )
            jax.effects_barrier()
            per_loop = {k: (n - before.get(k, 0)) / steps for k, n in trips.items()}
            rec = {
                "trips_per_step": sum(per_loop.values()),
                "by_loop": {k: v for k, v in sorted(per_loop.items()) if v},
                "landers_touching_per_step": float(np.mean(np.asarray(touching))),
            }
            return state, rec

        state, out["fresh_batch"] = measure(state, 1)
        for i in range(max(0, warmup - steps) // steps):
            state = run(state, jax.random.split(jax.random.key(100 + i), (batch, steps)))[0]
        state, out["after_warmup"] = measure(state, 2)
    return out


def same_program_as_baseline(batch: int, steps: int = 10) -> bool:
    """Whether the CPU mode's batched, scanned step lowers to the very program (StableHLO text
    without source locations) that the ``--baseline`` revision's does."""

    def text(solver):
        env, params = _make(solver)
        keys = jax.random.split(jax.random.key(0), batch)
        _, state = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))(keys, params)
        run = jax.jit(_random_steps(env, params, steps))
        lowered = run.lower(state, jax.random.split(jax.random.key(1), (batch, steps)))
        return re.sub(r"loc\([^)]*\)", "", lowered.as_text(debug_info=False))

    return text("cpu") == text(None)


def hlo_counts(solver: str, batch: int) -> dict:
    """While loops and fusions in the compiled batched ``env.step`` (XLA's optimised HLO), and
    its compile time."""
    env, params = _make(solver)
    keys = jax.random.split(jax.random.key(0), batch)
    _, state = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))(keys, params)
    step = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))
    t0 = time.perf_counter()
    text = step.lower(keys, state, jnp.zeros(batch, jnp.int32), params).compile().as_text()
    return {
        "while_loops": len(re.findall(r"\swhile\(", text)),
        "fusions": len(re.findall(r"\sfusion\(", text)),
        "compile_s": time.perf_counter() - t0,
    }


def jax_stepper(
    batch: int,
    steps: int,
    toi: bool,
    warmup: int = 0,
    devices: int = 1,
    solver: str | None = "cpu",
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
        solver: the solver mode, or ``None`` for the ``--baseline`` revision's env.

    Returns:
        ``(info, timed)``: compile and reset times, and ``timed(seconds)``, which runs whole
        calls for at least ``seconds`` (at least one) and returns the env steps/s.
    """
    # the env module is imported in _make: it builds arrays, which starts JAX's backend (after
    # main() has had the chance to set XLA_FLAGS and the CPU device count)
    if batch % devices:
        raise ValueError(f"batch {batch} does not split over {devices} devices")
    mesh = None if devices == 1 else Mesh(np.array(jax.devices()[:devices]), (AXIS,))
    env, params = _make(solver, toi)
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
        "solver": "baseline" if solver is None else solver,
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
) -> tuple[list[dict], dict]:
    """Gymnasium and the JAX env (each of ``args.solvers``, and the ``--baseline`` revision's)
    at ``batch``, timed in ``args.rounds`` alternating rounds of ``args.gym_seconds /
    args.rounds`` seconds each, so that all see the machine in the same state (a shared
    machine's speed drifts over minutes); the figures are the medians over the rounds, and
    the ratios the medians of the rounds' ratios (against Gymnasium, and the CPU mode against
    the baseline)."""
    env, gym_timed = gymnasium_stepper(batch, args.warmup)
    solvers = list(args.solvers) + ([None] if args.baseline else [])
    steppers = [jax_stepper(batch, args.steps, toi, args.warmup, devices, s) for s in solvers]
    share = args.gym_seconds / args.rounds
    gym_sps, jax_sps = [], [[] for _ in steppers]
    for _ in range(args.rounds):
        gym_sps.append(gym_timed(share))
        for sps, (_, timed) in zip(jax_sps, steppers, strict=True):
            sps.append(timed(share))
    env.close()
    recs = []
    for sps, (info, _) in zip(jax_sps, steppers, strict=True):
        ratios = [j / g for j, g in zip(sps, gym_sps, strict=True)]
        recs.append(
            {
                **info,
                "rounds_env_steps_per_s": sps,
                "env_steps_per_s": float(np.median(sps)),
                "ratio_per_round": ratios,
                "ratio_median": float(np.median(ratios)),
            }
        )
    if args.baseline and "cpu" in args.solvers:
        cpu = recs[list(args.solvers).index("cpu")]
        ratios = [n / o for n, o in zip(cpu["rounds_env_steps_per_s"], jax_sps[-1], strict=True)]
        cpu["vs_baseline_per_round"] = ratios
        cpu["vs_baseline_median"] = float(np.median(ratios))
    gym_rec = {
        "batch": batch,
        "warmup": args.warmup,
        "rounds_env_steps_per_s": gym_sps,
        "env_steps_per_s": float(np.median(gym_sps)),
        "seconds": args.gym_seconds,
    }
    return recs, gym_rec


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
    parser.add_argument(
        "--solvers",
        nargs="+",
        choices=["cpu", "accelerator"],
        default=["cpu"],
        help="solver modes of the JAX env to time (default: cpu)",
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also time the CPU mode of the LunarLander modules at git revision REV",
    )
    parser.add_argument(
        "--trips",
        action="store_true",
        help="count loop trips per step and while loops and fusions in the compiled step",
    )
    parser.add_argument(
        "--trip-solvers",
        nargs="+",
        choices=["cpu", "accelerator"],
        default=["cpu", "accelerator"],
        help="solver modes whose loop trips --trips counts (default: both)",
    )
    parser.add_argument(
        "--trips-only", action="store_true", help="with --trips: no throughput timing"
    )
    args = parser.parse_args()
    if args.fast_cpu_loops:
        fuse_small_cpu_loops()
        skip_ynn_fusions()
    if args.cpu_devices != 1:
        use_cpu_devices(args.cpu_devices or None)
    jnp.zeros(())  # initialise the backend before timing
    os.makedirs(args.out, exist_ok=True)
    same = {}
    if args.baseline:
        load_baseline(args.baseline)
        for b in args.batches:
            same[str(b)] = same_program_as_baseline(b)
            print(f"batch {b}: CPU mode lowers to the baseline's program: {same[str(b)]}")

    results = {"jax": [], "gymnasium": [], "latency_proxy": []}
    for b in args.batches if args.trips else []:
        for solver in args.trip_solvers:
            rec = {"batch": b, "solver": solver, **loop_trips(solver, b, args.warmup)}
            rec.update(hlo_counts(solver, b))
            results["latency_proxy"].append(rec)
            fresh, warm = rec["fresh_batch"], rec["after_warmup"]
            print(
                f"batch {b} {solver}: loop trips per step {fresh['trips_per_step']:.1f} "
                f"(fresh batch), {warm['trips_per_step']:.1f} (after warm-up, "
                f"{warm['landers_touching_per_step']:.1f} landers touching); compiled step: "
                f"{rec['while_loops']} while loops, {rec['fusions']} fusions",
                flush=True,
            )
    n_dev = len(jax.devices())
    for b in [] if args.trips_only else args.batches:
        d = n_dev if b % n_dev == 0 else 1  # batch 1 runs on one device
        for toi in (True, False) if args.no_toi else (True,):
            jax_recs, gym_rec = interleaved(b, args, d, toi)
            results["jax"].extend(jax_recs)
            if toi:
                results["gymnasium"].append(gym_rec)
            for jax_rec in jax_recs:
                vs_base = jax_rec.get("vs_baseline_median")
                print(
                    f"batch {b} (toi={toi}, {jax_rec['solver']}): JAX "
                    f"{jax_rec['env_steps_per_s']:,.0f} steps/s, "
                    f"Gymnasium {gym_rec['env_steps_per_s']:,.0f}, "
                    f"ratio {jax_rec['ratio_median']:.2f}x "
                    f"(rounds {', '.join(f'{r:.2f}' for r in jax_rec['ratio_per_round'])}), "
                    f"compile {jax_rec['compile_s']:.1f} s"
                    + ("" if vs_base is None else f", {vs_base:.3f}x the baseline's steps/s"),
                    flush=True,
                )
    speedup = {
        str(r["batch"]): r["ratio_median"]
        for r in results["jax"]
        if r["toi"] and r["solver"] == args.solvers[0]
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
        "cpu_program_same_as_baseline": same,
    }
    path = os.path.join(args.out, "lunar_lander_bench.json")
    with open(path, "w") as f:
        json.dump(record, f, indent=2)
    print(json.dumps(speedup, indent=2))
    print("wrote", path)


if __name__ == "__main__":
    main()
