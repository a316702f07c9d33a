"""Generations/s against device count (DESIGN §4: the population axis over a device mesh).

Each device count runs in its own subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (simulated CPU devices: each runs on its
own thread, so on a small CPU more devices than cores cannot be faster; on GPUs/TPUs each device
adds its own compute). Same seed everywhere; the script also checks that every count selects the
same survivors.

    python benchmarks/bench_devices.py [--counts 1,2,4,8] [--population 16] [--generations 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import json, sys, time
import jax, numpy as np
from selfref_ghn.config import Config
from selfref_ghn.evolution.generation import Evolution
n, P, G, H = (int(a) for a in sys.argv[1:5])
cfg = Config(population_size=P, horizon=H, generations=2 * G, log_every=G)
evo = Evolution.create(cfg, devices=n)
t = time.perf_counter()
chunk = evo.compiled_chunk(G).lower(evo.distribute(evo.init()), 2 * G).compile()
compile_s = time.perf_counter() - t
s, m = chunk(evo.distribute(evo.init()), 2 * G)  # first chunk (warm-up)
jax.block_until_ready(s)
t = time.perf_counter()
s, m2 = chunk(s, 2 * G)
jax.block_until_ready(s)
run_s = time.perf_counter() - t
sel = np.concatenate([np.asarray(m["selected"]), np.asarray(m2["selected"])])
print(json.dumps({"devices": n, "compile_s": compile_s, "gens_per_s": G / run_s,
                  "selected_hash": int(np.sum(sel * np.arange(sel.size).reshape(sel.shape)))}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--counts", default="1,2,4,8")
    p.add_argument("--population", type=int, default=16)
    p.add_argument("--generations", type=int, default=20)
    p.add_argument("--horizon", type=int, default=500)
    args = p.parse_args()
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
           "JAX_PLATFORMS": "cpu"}  # fmt: skip
    rows = []
    for n in (int(c) for c in args.counts.split(",")):
        argv = [str(n), str(args.population), str(args.generations), str(args.horizon)]
        out = subprocess.run([sys.executable, "-c", CHILD, *argv], cwd=ROOT, env=env,
                             capture_output=True, text=True, check=True)  # fmt: skip
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"devices {n}: {rows[-1]['gens_per_s']:.2f} gen/s", file=sys.stderr, flush=True)
    same = len({r["selected_hash"] for r in rows}) == 1
    print(
        f"CartPole-Switch, P={args.population}, C=2, horizon {args.horizon}, "
        f"{os.cpu_count()} CPU cores, simulated devices; same survivors on every count: {same}"
    )
    print("\n| devices | compile (s) | generations/s |\n|---|---|---|")
    for r in rows:
        print(f"| {r['devices']} | {r['compile_s']:.1f} | {r['gens_per_s']:.2f} |")


if __name__ == "__main__":
    main()
