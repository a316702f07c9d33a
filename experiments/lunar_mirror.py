"""How far a LunarLander controller is from its own recovery: ``python
experiments/lunar_mirror.py RUN_DIR --checkpoint GEN [--select-episodes 10] [--episodes 100]
[--out PREFIX]``.

With the side engines swapped, the best controller is the old one looking at the mirrored
observation (:func:`selfref_ghn.envs.lunar_lander.mirror_observation`). For an MLP policy the
mirror is a change of its first layer only: the kernel rows of the horizontal position and
velocity, the angle and the angular velocity change sign, and the two leg rows trade places.
This script walks the straight line between a champion (``alpha = 1``) and its mirror image
(``alpha = -1``): the lateral rows scaled by ``alpha``, the leg rows mixed. Along it, it assesses
the policy on the original and on the swapped task (the same episodes for every ``alpha``), and
the champion with its side engines switched off (the same on both tasks), and writes
``PREFIX.json`` and ``PREFIX.png``.

It answers the question a run that does not recover raises: is the swapped task's optimum
close to the population, and is the way there downhill? The champion is picked as
``selfref-ghn assess`` picks it (best mean over ``--select-episodes`` fresh episodes).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `experiments` importable when run as a script

ALPHAS = (1.0, 0.75, 0.5, 0.25, 0.0, -0.25, -0.5, -0.75, -1.0)


def first_kernel_path(params: Any, obs_dim: int = 8):
    """Path of the policy's first-layer kernel: the first 2-D leaf with ``obs_dim`` rows."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if leaf.ndim == 2 and leaf.shape[0] == obs_dim:
            return path
    raise ValueError(f"no [{obs_dim}, width] first-layer kernel among the policy's leaves")


def toward_mirror(params: Any, alpha: float) -> Any:
    """The policy ``alpha`` of the way along the line to its mirror image.

    ``alpha = 1`` is the policy itself; ``alpha = -1`` is its mirror image, whose first-layer
    kernel is the old one with :func:`mirror_observation` applied to its rows, so that it acts
    on an observation as the original acts on ``mirror_observation(obs)``; ``alpha = 0``
    ignores the lateral inputs and sees both legs alike.
    """
    from selfref_ghn.envs.lunar_lander import mirror_observation

    path = first_kernel_path(params)

    def move(p, leaf):
        if p != path:
            return leaf
        mirrored = mirror_observation(leaf.T).T  # a signed permutation of the input rows
        return (1.0 + alpha) / 2.0 * leaf + (1.0 - alpha) / 2.0 * mirrored

    return jax.tree_util.tree_map_with_path(move, params)


def side_engines_off(params: Any, num_actions: int = 4) -> Any:
    """A discrete policy that never fires a side engine: the output bias of actions 1 and 3
    lowered by 1e4 (the last 1-D leaf with ``num_actions`` entries), so it scores the same
    with the engines swapped or not. Its return is the plateau a population can fall back to
    after a switch while it learns the side engines again."""
    paths = [
        p
        for p, leaf in jax.tree_util.tree_leaves_with_path(params)
        if leaf.ndim == 1 and leaf.shape[0] == num_actions
    ]
    if not paths:
        raise ValueError(f"no output bias with {num_actions} entries among the policy's leaves")
    sides = jnp.asarray([0.0, 1e4, 0.0, 1e4][:num_actions])

    def move(p, leaf):
        return leaf - sides if p == paths[-1] else leaf

    return jax.tree_util.tree_map_with_path(move, params)


def mirror_path(
    run_dir: str | Path,
    checkpoint: int | None = None,
    episodes: int = 100,
    select_episodes: int = 10,
    alphas: Sequence[float] = ALPHAS,
    seed: int = 7,
) -> dict[str, Any]:
    """Returns of a run's champion along the line to its mirror image, on both tasks.

    Returns:
        A JSON-ready dict: the run, checkpoint, champion slot, ``alphas``, and per task
        (``original``, ``swapped``) the mean, std and fraction of returns >= 200 at each alpha;
        ``distance``: the policy-space distance from the champion to its mirror image, next to
        the champion's norm and the mean distance from the champion to the other survivors.
    """
    from selfref_ghn.config import ConfigError
    from selfref_ghn.evolution.generation import Evolution
    from selfref_ghn.run.folder import load_run_config
    from selfref_ghn.tools.assess import _runner, assess_state, load_state_at

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise ConfigError("dir", str(run_dir), "a results folder (with config.json)")
    cfg = load_run_config(run_dir)
    if not cfg.env_id.startswith("LunarLander"):
        raise ConfigError("env_id", cfg.env_id, "a LunarLander run")
    evo = Evolution.create(cfg)
    state, source = load_state_at(evo, run_dir, checkpoint)
    member = 0
    if select_episodes:  # the champion `selfref-ghn assess --select-episodes N` picks (seed 1)
        member = assess_state(evo, state, select_episodes, select_episodes, seed=1)["member"]
    graph = evo.ghn.policy_graph
    flat = jnp.asarray(state.policy)[member]
    params = graph.unravel(flat)
    line = [toward_mirror(params, a) for a in alphas]
    discrete = evo.env.num_actions == 4 and not getattr(evo.env, "continuous", False)
    if discrete:
        line.append(side_engines_off(params))
    flats = jnp.stack([graph.ravel(p) for p in line])
    run = _runner(evo, episodes, cfg.horizon)
    obs_stats = state.obs_stats if cfg.obs_norm else None
    out: dict[str, Any] = {
        "run": str(run_dir),
        "state": source,
        "member": int(member),
        "episodes": episodes,
        "alphas": list(alphas),
    }
    for task, inverted in (("original", False), ("swapped", True)):
        env_params = evo.env_params.replace(inverted=inverted)
        ret, _ = jax.device_get(run(flats, jax.random.PRNGKey(seed + 1), env_params, obs_stats))
        ret = np.asarray(ret, np.float64)
        if discrete:
            off, ret = ret[-1], ret[:-1]
            out[task + "_side_engines_off"] = {
                "mean": round(float(off.mean()), 2),
                "std": round(float(off.std()), 2),
            }
        out[task] = {
            "mean": [round(float(r.mean()), 2) for r in ret],
            "std": [round(float(r.std()), 2) for r in ret],
            "solved_fraction": [float(np.mean(r >= 200.0)) for r in ret],
        }
    policies = np.asarray(state.policy, np.float64)
    others = np.delete(policies, member, axis=0) - policies[member]
    out["distance"] = {
        "to_mirror": float(np.linalg.norm(graph.ravel(toward_mirror(params, -1.0)) - flat)),
        "champion_norm": float(np.linalg.norm(np.asarray(flat))),
        "to_other_survivors_mean": float(np.linalg.norm(others, axis=1).mean()),
    }
    return out


def plot(result: dict[str, Any], path: str | Path) -> None:
    """Mean return (± std) along the line, on the original and the swapped task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = np.asarray(result["alphas"])
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for task, colour in (("original", "tab:blue"), ("swapped", "tab:red")):
        m, s = np.asarray(result[task]["mean"]), np.asarray(result[task]["std"])
        ax.plot(a, m, "o-", color=colour, label=f"{task} engines")
        ax.fill_between(a, m - s, m + s, color=colour, alpha=0.15)
    if "original_side_engines_off" in result:
        off = result["original_side_engines_off"]["mean"]
        ax.axhline(off, color="tab:green", lw=1.2, label="side engines off (either task)")
    ax.axhline(200, color="grey", lw=0.8, ls="--")
    ax.set_xlim(a.max() + 0.05, a.min() - 0.05)  # from the champion (1) to its mirror (-1)
    ax.set_xlabel("alpha: lateral input weights scaled (1 = champion, -1 = its mirror image)")
    ax.set_ylabel(f"return over {result['episodes']} episodes")
    ax.set_title(f"{Path(result['run']).name}, {result['state']}, member {result['member']}")
    ax.legend(loc="center left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--checkpoint", type=int, default=None)
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--select-episodes", type=int, default=10)
    ap.add_argument("--out", default=None, help="PREFIX for PREFIX.json and PREFIX.png")
    args = ap.parse_args(argv)
    from selfref_ghn.config import ConfigError
    from selfref_ghn.run.compile_cache import enable_compile_cache

    enable_compile_cache()

    if args.episodes < 1 or args.select_episodes < 0:
        raise SystemExit("--episodes must be at least 1 and --select-episodes at least 0")
    try:
        result = mirror_path(args.run_dir, args.checkpoint, args.episodes, args.select_episodes)
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None
    for task in ("original", "swapped"):
        pairs = zip(result["alphas"], result[task]["mean"], strict=True)
        cells = " ".join(f"{a:+.2f}:{m:7.1f}" for a, m in pairs)
        print(f"{task:>8} {cells}")
    if "original_side_engines_off" in result:
        off = result["original_side_engines_off"]
        print(f"side engines off (either task): {off['mean']:.1f} ± {off['std']:.1f}")
    d = result["distance"]
    print(
        f"distance to the mirror image {d['to_mirror']:.2f} (champion norm "
        f"{d['champion_norm']:.2f}; mean distance to the other survivors "
        f"{d['to_other_survivors_mean']:.2f})"
    )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(f"{args.out}.json").write_text(json.dumps(result, indent=1))
        plot(result, f"{args.out}.png")
        print(f"wrote {args.out}.json and {args.out}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
