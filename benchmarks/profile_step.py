"""Phase profile of one SR-GHN generation (mutation, policy generation, rollouts, the whole step,
and the compiled chunk per generation), next to the rollout bound.

    python benchmarks/profile_step.py --population 1024 [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp

from selfref_ghn.config import Config


def timeit(f, *args, repeats: int = 3) -> float:
    jax.block_until_ready(f(*args))
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(f(*args))
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    from selfref_ghn.evolution.generation import Evolution

    ap = argparse.ArgumentParser()
    ap.add_argument("--population", type=int, default=1024)
    ap.add_argument("--chunk", type=int, default=5)
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    overrides = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    for k, v in overrides.items():
        if isinstance(v, list):
            overrides[k] = tuple(tuple(x) if isinstance(x, list) else x for x in v)
    cfg = Config(population_size=args.population, generations=10**6, **overrides)
    evo = Evolution.create(cfg)
    s = evo.init()
    kids, _ = jax.jit(evo.mutate_population)(s)
    pol = jnp.concatenate([s.policy, jax.jit(evo.policies)(kids)])
    out = {
        "device": str(jax.devices()[0]),
        "population": cfg.population_size,
        "members": cfg.num_members,
        "mutate_ms": 1e3 * timeit(jax.jit(evo.mutate_population), s),
        "policygen_ms": 1e3 * timeit(jax.jit(evo.policies), kids),
        "evaluate_ms": 1e3 * timeit(jax.jit(evo.evaluate_members), s, pol),
        "step_ms": 1e3 * timeit(jax.jit(evo.step), s),
    }
    chunk = evo.compiled_chunk(args.chunk)
    s2, _ = chunk(evo.init(), cfg.generations)
    t = time.perf_counter()
    s2, _ = chunk(s2, cfg.generations)
    jax.block_until_ready(s2)
    out["chunk_ms_per_generation"] = 1e3 * (time.perf_counter() - t) / args.chunk
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
