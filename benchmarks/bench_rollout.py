"""Evaluation time with and without the rollout's early stop (selfref_ghn.evolution.rollout).

Evaluates one SR-GHN population's policies (``P * (1 + C)`` members, ``episodes`` each, as one
generation does) on an environment, timing the compiled evaluation with ``exact_horizon=True``
(a ``lax.scan`` over the whole horizon) and ``False`` (a ``while_loop`` that stops once every
episode of the batch has ended), interleaved ``--repeats`` times in one process. The policies
are those of a results folder's state (``--run DIR``: final state or latest checkpoint) or of
a fresh population (``--env``). Both modes must give the same fitness; the script checks it.
Writes ``rollout_bench.json`` to ``--out``.

Usage:
    python benchmarks/bench_rollout.py --out DIR --env LunarLander-Switch --horizon 1000
    python benchmarks/bench_rollout.py --out DIR --run results/ll-p16-long-seed0
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from selfref_ghn.config import Config
from selfref_ghn.evolution.generation import Evolution
from selfref_ghn.evolution.rollout import evaluate


def _population(args):
    """``(evo, state, policies, source)``: the run's or a fresh population's policies."""
    if args.run is not None:
        from selfref_ghn.run.folder import load_run_config
        from selfref_ghn.tools.render import load_run_state

        evo = Evolution.create(load_run_config(args.run))
        state, source = load_run_state(evo, args.run)
        source = f"{args.run}: {source}"
    else:
        cfg = Config(
            env_id=args.env,
            horizon=args.horizon,
            population_size=args.population,
            num_children=2,
            generations=1,
        )
        evo = Evolution.create(cfg)
        state = evo.init(jax.random.PRNGKey(args.seed))
        source = f"fresh population, seed {args.seed}"
    # one generation's members: the parents, then their children
    children, _ = jax.jit(evo.mutate_population)(state)
    policies = jnp.concatenate([state.policy, jax.jit(evo.policies)(children)])
    return evo, state, policies, source


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--run", type=Path, default=None, help="a results folder")
    ap.add_argument("--env", default="LunarLander-Switch")
    ap.add_argument("--horizon", type=int, default=1000)
    ap.add_argument("--population", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    evo, state, policies, source = _population(args)
    cfg = evo.config
    obs_stats = state.obs_stats if cfg.obs_norm else None

    def make(exact: bool):
        @jax.jit
        def run(key, policies):
            def one(m, flat):
                return evaluate(
                    jax.random.fold_in(key, m),
                    evo.env,
                    evo.env_params,
                    evo.policy_fn,
                    evo.ghn.policy_graph.unravel(flat),
                    cfg.horizon,
                    cfg.episodes,
                    obs_stats,
                    exact_horizon=exact,
                )

            return jax.vmap(one)(jnp.arange(policies.shape[0]), policies)

        return run

    key = jax.random.PRNGKey(args.seed + 1)
    results = {}
    runs = {"scan": make(True), "early_stop": make(False)}
    fitness = {}
    for name, fn in runs.items():
        t0 = time.perf_counter()
        ev = jax.block_until_ready(fn(key, policies))
        results[name] = {"first_call_s": time.perf_counter() - t0, "times_s": []}
        fitness[name] = np.asarray(ev.fitness)
        live = int(np.asarray(ev.live_steps).sum())
        longest = int(np.asarray(ev.live_steps).max())  # a member's episodes, summed
    if not np.array_equal(fitness["scan"], fitness["early_stop"]):
        raise SystemExit("the two modes disagree: a bug")
    for _ in range(args.repeats):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(key, policies))
            results[name]["times_s"].append(time.perf_counter() - t0)
    members = int(policies.shape[0])
    simulated = members * cfg.episodes * cfg.horizon
    for name in runs:
        results[name]["median_s"] = float(np.median(results[name]["times_s"]))
    ratio = results["scan"]["median_s"] / results["early_stop"]["median_s"]
    out = {
        "source": source,
        "env_id": cfg.env_id,
        "horizon": cfg.horizon,
        "members": members,
        "episodes": cfg.episodes,
        "live_steps": live,
        "live_fraction": live / simulated,
        "longest_member_live_steps": longest,
        "mean_fitness": float(fitness["scan"].mean()),
        "results": results,
        "speedup": ratio,
        "devices": [str(d) for d in jax.devices()],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rollout_bench.json").write_text(json.dumps(out, indent=1) + "\n")
    print(
        f"{source}: {members} members x {cfg.episodes} episodes, horizon {cfg.horizon}; "
        f"live steps {live} of {simulated} ({100 * live / simulated:.0f}%), "
        f"longest member {longest}, mean fitness {out['mean_fitness']:.1f}\n"
        f"scan {results['scan']['median_s'] * 1e3:.0f} ms, early stop "
        f"{results['early_stop']['median_s'] * 1e3:.0f} ms per evaluation: {ratio:.2f}x"
    )


if __name__ == "__main__":
    main()
