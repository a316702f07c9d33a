"""rejax's PPO on CartPole-v1 on this machine (docs/baselines.md "PPO (gradient reference)").

Three timings of the same number of environment steps, in one process:

* ``env only``: the environment stepped with random actions, ``num_envs`` at once in one
  ``lax.scan`` (gymnax's auto-resetting ``step``): the floor any trainer pays;
* ``rejax train``: rejax's own ``PPO.train`` with its CartPole settings
  (:data:`selfref_ghn.tools.ppo.REJAX_CONFIGS`), one evaluation at the end;
* ``compare's ppo``: :func:`selfref_ghn.tools.ppo.train`, the comparison's method (the same
  iterations in generations of ``B = 10 x 500`` steps, each with its greedy evaluation of one
  episode).

Each is compiled first and timed on a second call; the final greedy return of rejax's run is
printed (CartPole-v1's best is 500).

    python benchmarks/bench_ppo.py [--steps 100000]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import jax
import numpy as np

from selfref_ghn.config import Config
from selfref_ghn.tools import ppo


def _timed(fn, *args):
    jax.block_until_ready(fn(*args))  # compile (and a first run)
    t = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return time.perf_counter() - t, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=100_000)
    args = p.parse_args()
    hp = ppo.REJAX_CONFIGS["CartPole-v1"]
    n_envs, n_steps = hp["num_envs"], hp["num_steps"]
    steps = args.steps // (n_envs * n_steps) * n_envs * n_steps
    base = Config(method="ppo", env_id="CartPole-v1", switch="reverse_actions", horizon=500)
    run = ppo.create(base)
    env, params = run.algo.env, run.algo.env_params

    def env_only(key):
        k0, k1 = jax.random.split(key)
        obs, state = jax.vmap(env.reset, (0, None))(jax.random.split(k0, n_envs), params)

        def body(state, k):
            ka, ks = jax.random.split(k)
            a = jax.random.randint(ka, (n_envs,), 0, 2)
            _, state, r, _, _ = jax.vmap(env.step, (0, 0, 0, None))(
                jax.random.split(ks, n_envs), state, a, params
            )
            return state, r.sum()

        return jax.lax.scan(body, state, jax.random.split(k1, steps // n_envs))[1].sum()

    t_env, _ = _timed(jax.jit(env_only), jax.random.PRNGKey(0))
    algo = run.algo.replace(total_timesteps=steps, eval_freq=steps, skip_initial_evaluation=True)
    t_rejax, (_, (_, returns)) = _timed(jax.jit(algo.train), jax.random.PRNGKey(0))
    # compare's method: generations of B = 10 x 500 steps, the same number of iterations
    gens = steps // 5000
    cfg = base.replace(population_size=5, num_children=1, generations=gens, log_every=gens)
    with tempfile.TemporaryDirectory() as d:
        _, _, summary = ppo.train(cfg, d)
    t_ours = cfg.generations / summary["steady_generations_per_s"]
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, {steps} environment steps")
    print("| what | s | steps/s | x env only |\n|---|---|---|---|")
    for name, t in (("env only", t_env), ("rejax train", t_rejax)):
        print(f"| {name} | {t:.2f} | {steps / t:,.0f} | {t / t_env:.1f} |")
    print(f"| compare's ppo | {t_ours:.2f} | {steps / t_ours:,.0f} | {t_ours / t_env:.1f} |")
    print(f"rejax's final return (sampled actions, 128 episodes): {float(np.mean(returns)):.1f}")


if __name__ == "__main__":
    main()
