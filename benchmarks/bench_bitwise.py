"""What ``Config.bitwise_block`` costs: milliseconds per generation with and without it.

Both modes are compiled in one process on ``--devices`` (simulated CPU) devices, and each one's
chunk of ``--chunk`` generations is timed from the same states (generation 0 and generation 50
of a run without it), alternating the modes, ``--rounds`` times; the median per generation and
its ratio to ``bitwise_block=0`` are printed. Timing from the same states matters: the two modes
round differently, so their runs part ways and their episodes last differently long.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 \\
        python benchmarks/bench_bitwise.py --devices 1 --population 16 --blocks 0,1,4
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from selfref_ghn.config import Config
from selfref_ghn.evolution.generation import Evolution


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=1)
    ap.add_argument("--population", type=int, default=16)
    ap.add_argument("--blocks", default="0,1", help="bitwise_block values; the first is the base")
    ap.add_argument("--chunk", type=int, default=10, help="generations per timed call")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()
    blocks = [int(b) for b in args.blocks.split(",")]
    G = 200
    base = Config(
        population_size=args.population, generations=G, seed=args.seed,
        switch_intervals=((10, 30),),
    )  # fmt: skip
    evos = {
        b: Evolution.create(base.replace(bitwise_block=b), devices=args.devices) for b in blocks
    }
    chunks = {b: e.compiled_chunk(args.chunk) for b, e in evos.items()}
    first = evos[blocks[0]]
    state = first.distribute(first.init())
    starts = {0: jax.device_get(state)}
    state, _ = first.compiled_chunk(50)(state, G)
    starts[50] = jax.device_get(state)
    for b in blocks:  # compile
        jax.block_until_ready(chunks[b](evos[b].distribute(starts[0]), G))
    times: dict[tuple[int, int], list[float]] = {(b, g): [] for b in blocks for g in starts}
    for _ in range(args.rounds):
        for g, start in starts.items():
            for b in blocks:
                x = jax.block_until_ready(evos[b].distribute(start))
                t = time.perf_counter()
                jax.block_until_ready(chunks[b](x, G))
                times[b, g].append(time.perf_counter() - t)
    for g in starts:
        med = {b: float(np.median(times[b, g])) / args.chunk for b in blocks}
        cells = [
            f"bitwise_block={b}: {1e3 * med[b]:.1f} ms/gen (x{med[b] / med[blocks[0]]:.2f})"
            for b in blocks
        ]
        print(
            f"{args.devices} devices, P={args.population}, from generation {g}: "
            + ", ".join(cells)
        )


if __name__ == "__main__":
    main()
