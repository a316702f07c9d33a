"""A vmapped sweep of 16 seeds against 16 separate runs (DESIGN §4;
:mod:`selfref_ghn.tools.sweep`).

The sweep batches the seeds along a leading run axis: one compiled program, one chunk call per
``log_every`` generations for all 16 runs. The separate runs are timed two ways: with one
compilation each (what 16 ``selfref-ghn run`` commands do) and with one compilation shared (a
lower bound: execution only). The script checks, seed by seed, that the sweep's metrics equal
the separate runs' (exact best/median return and survivors).

    python benchmarks/bench_sweep.py [--seeds 16] [--population 16] [--generations 20]
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from selfref_ghn.config import Config
from selfref_ghn.evolution.generation import Evolution


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=16)
    p.add_argument("--population", type=int, default=16)
    p.add_argument("--generations", type=int, default=20)
    p.add_argument("--horizon", type=int, default=200)
    args = p.parse_args()
    G = args.generations
    cfg = Config(population_size=args.population, horizon=args.horizon, generations=G,
                 log_every=G, switch_intervals=((G // 2, G),))  # fmt: skip
    evo = Evolution.create(cfg, devices=1)
    seeds = list(range(args.seeds))

    # the sweep: one program over a run axis
    t0 = time.perf_counter()
    state = jax.tree.map(
        lambda *x: jnp.stack(x), *[evo.init(jax.random.PRNGKey(s)) for s in seeds]
    )
    chunk = jax.jit(jax.vmap(lambda s, stop: evo.run_chunk(s, G, stop), in_axes=(0, None)))
    compiled = chunk.lower(state, G).compile()
    t_compile = time.perf_counter() - t0
    t1 = time.perf_counter()
    _, m = compiled(state, G)
    m = jax.device_get(m)
    t_sweep_run = time.perf_counter() - t1

    # separate runs: one compilation each (as separate commands), then execution alone
    t_sep_compile = []
    for s in seeds[:2]:  # two measured compilations; the rest assumed equal
        t = time.perf_counter()
        Evolution.create(cfg.replace(seed=s), devices=1).compiled_chunk(G).lower(
            evo.init(), G
        ).compile()
        t_sep_compile.append(time.perf_counter() - t)
    one = evo.compiled_chunk(G).lower(evo.init(), G).compile()
    t2 = time.perf_counter()
    same = True
    for i, s in enumerate(seeds):
        _, alone = one(evo.init(jax.random.PRNGKey(s)), G)
        alone = jax.device_get(alone)
        same &= np.array_equal(alone["best_fitness"], m["best_fitness"][i])
        same &= np.array_equal(alone["selected"], m["selected"][i])
    t_sep_run = time.perf_counter() - t2
    c = float(np.mean(t_sep_compile))
    n = len(seeds)
    print(
        f"CartPole-Switch, {n} seeds, P={args.population}, C=2, horizon {args.horizon}, "
        f"{G} generations, {os.cpu_count()} CPU cores; seed-by-seed identical: {same}\n"
    )
    print("| | compile (s) | run (s) | total (s) |\n|---|---|---|---|")
    print(f"| vmapped sweep (1 program) | {t_compile:.1f} | {t_sweep_run:.1f} | "
          f"{t_compile + t_sweep_run:.1f} |")  # fmt: skip
    print(f"| {n} separate runs, compiled once each | {n} x {c:.1f} | {t_sep_run:.1f} | "
          f"{n * c + t_sep_run:.1f} |")  # fmt: skip
    print(f"| {n} separate runs, one shared compilation | {c:.1f} | {t_sep_run:.1f} | "
          f"{c + t_sep_run:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
