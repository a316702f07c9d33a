"""Assessing a run's champion on fresh episodes, apart from the episodes it was selected on.

A member's fitness during evolution is its return on one generation's episodes (``episodes``
per evaluation, usually one), and the survivors are the best of those draws: slot 0 of a
population is the luckiest as much as the best. :func:`assess_run` asks the question a
researcher reports: how well does the champion do on many episodes it has never seen?

* ``select_episodes = 0``: survivor ``member`` (default 0) is assessed on ``episodes`` fresh
  episodes.
* ``select_episodes = M > 0``: every survivor is first evaluated on ``M`` selection episodes,
  the one with the best mean is the champion, and the champion is then assessed on
  ``episodes`` further episodes drawn with a different key, so that the reported figure is not
  the maximum of noisy draws.

Episodes run as in evolution (:func:`selfref_ghn.evolution.rollout.episode`: same reset, policy,
observation statistics when ``obs_norm``; rewards after the episode's end left out), with the
switch schedule applied at ``generation`` (default the last generation the state was evaluated
at), so a checkpoint taken before a switch is assessed on the original task.

From the command line: ``selfref-ghn assess DIR [--episodes 100] [--select-episodes 10]
[--checkpoint GEN] [--generation G] [--solved 200]``; it prints (and with ``--out`` writes) a
JSON summary.

Example:
    >>> out = assess_run("results/ll", episodes=100, select_episodes=10)  # doctest: +SKIP
    >>> out["mean"], out["solved_fraction"]                              # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from selfref_ghn.config import ConfigError
from selfref_ghn.evolution.rollout import episode

_RUNNERS: dict = {}


def _runner(evo: Any, episodes: int, horizon: int):
    """The compiled ``(flat policies, key, env_params, obs_stats) -> (returns, live)``, kept
    per ``(evo, episodes, horizon)`` so that assessing several states of a run compiles once."""
    cache_key = (id(evo), episodes, horizon)
    if cache_key in _RUNNERS and _RUNNERS[cache_key][0] is evo:
        return _RUNNERS[cache_key][1]

    @jax.jit
    def run(flat, key, env_params, obs_stats):
        def one(f):
            params = evo.ghn.policy_graph.unravel(f)
            keys = jax.random.split(key, episodes)
            ret, live, *_ = jax.vmap(
                lambda k: episode(
                    k, evo.env, env_params, evo.policy_fn, params, horizon, obs_stats
                )
            )(keys)
            return ret, live

        return jax.vmap(one)(flat)

    _RUNNERS[cache_key] = (evo, run)
    return run


def _returns(evo: Any, state: Any, members: np.ndarray, key, episodes: int, env_params, horizon):
    """``(len(members), episodes)`` returns and live steps of the given survivors."""
    obs_stats = state.obs_stats if evo.config.obs_norm else None
    flat = jnp.asarray(state.policy)[jnp.asarray(members)]
    run = _runner(evo, episodes, horizon)
    ret, live = jax.device_get(run(flat, key, env_params, obs_stats))
    return np.asarray(ret, np.float64), np.asarray(live)


def _check(episodes, select_episodes, horizon, member=0, population_size=None) -> None:
    """Refuse bad arguments before anything is loaded or compiled."""
    if episodes < 1:
        raise ConfigError("episodes", episodes, "at least 1")
    if select_episodes < 0:
        raise ConfigError("select_episodes", select_episodes, "0 (off) or more")
    if horizon is not None and horizon < 1:
        raise ConfigError("horizon", horizon, "at least 1")
    if population_size is not None and not 0 <= member < population_size:
        raise ConfigError("member", member, f"in [0, {population_size})")


def load_state_at(evo: Any, run_dir: Path, checkpoint: int | None) -> tuple[Any, str]:
    """The run's state at checkpoint ``checkpoint`` (a generation), or its newest state
    (:func:`selfref_ghn.tools.render.load_run_state`, which passes over damaged ones). A checkpoint
    asked for by its generation is not replaced by another: a damaged one is an error."""
    from selfref_ghn.run.checkpoint import Checkpoints, DamagedCheckpoint
    from selfref_ghn.run.folder import CHECKPOINT_DIR
    from selfref_ghn.tools.render import load_run_state

    if checkpoint is None:
        return load_run_state(evo, run_dir)
    folder = run_dir / CHECKPOINT_DIR
    if not folder.is_dir():
        raise ConfigError("checkpoint", checkpoint, f"a checkpoint, but {folder} does not exist")
    with Checkpoints(folder, read_only=True) as ckpts:
        steps = ckpts.steps()
        if checkpoint not in steps:
            raise ConfigError("checkpoint", checkpoint, f"one of the saved generations {steps}")
        try:
            state = ckpts.restore(jax.eval_shape(evo.init), checkpoint)
        except DamagedCheckpoint as e:
            raise ConfigError(
                "checkpoint", checkpoint, f"an intact checkpoint of {steps}: {e.reason}"
            ) from None
        return state, f"{CHECKPOINT_DIR}/{checkpoint}"


def assess_run(
    run_dir: str | Path,
    episodes: int = 100,
    select_episodes: int = 0,
    member: int = 0,
    seed: int = 1,
    checkpoint: int | None = None,
    generation: int | None = None,
    horizon: int | None = None,
    solved: float | None = None,
) -> dict[str, Any]:
    """Mean return of a run's champion over fresh episodes.

    Args:
        run_dir: a results folder written by :func:`selfref_ghn.run.loop.evolve`.
        episodes: number of fresh episodes the champion is assessed on.
        select_episodes: if positive, pick the champion as the survivor with the best mean over
            this many selection episodes (independent of the assessment episodes); otherwise
            assess survivor slot ``member``.
        member: survivor slot assessed when ``select_episodes`` is 0.
        seed: seeds the selection and assessment episodes (``jax.random.PRNGKey(seed)``).
        checkpoint: assess the checkpoint of this generation (default: the final state, or the
            latest checkpoint of a run that has not finished).
        generation: apply the switch schedule at this generation (default the last generation
            the state was evaluated at, ``state.generation - 1``).
        horizon: episode length (default the run's ``horizon``).
        solved: also report the fraction of episodes with a return of at least this.

    Returns:
        A JSON-ready dict: ``mean``, ``std``, ``min``, ``max``, ``median``, ``returns`` (per
        episode), ``ended_early`` (fraction of episodes that ended before ``horizon``),
        ``member``, ``inverted``, ``state``, ``generation``, the selection's per-survivor means
        when used, and ``solved_fraction`` when ``solved`` is given.

    Raises:
        ConfigError: a missing folder or state, or an argument out of range.
    """
    from selfref_ghn.evolution.generation import Evolution
    from selfref_ghn.run.folder import load_run_config

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise ConfigError("dir", str(run_dir), "a results folder (with config.json)")
    _check(episodes, select_episodes, horizon)
    evo = Evolution.create(load_run_config(run_dir, "dir"))
    _check(episodes, select_episodes, horizon, member, evo.config.population_size)
    state, source = load_state_at(evo, run_dir, checkpoint)
    out = assess_state(
        evo, state, episodes, select_episodes, member, seed, generation, horizon, solved
    )
    return {"state": source, **out}


def assess_state(
    evo: Any,
    state: Any,
    episodes: int = 100,
    select_episodes: int = 0,
    member: int = 0,
    seed: int = 1,
    generation: int | None = None,
    horizon: int | None = None,
    solved: float | None = None,
) -> dict[str, Any]:
    """:func:`assess_run` on a state in memory (``evo``: its :class:`Evolution`).

    Assessing several states of one run with the same ``evo`` compiles the episodes once.
    """
    P = evo.config.population_size
    _check(episodes, select_episodes, horizon, member, P)
    horizon = evo.config.horizon if horizon is None else int(horizon)
    gen = max(int(state.generation) - 1, 0) if generation is None else int(generation)
    env_params = evo.schedule.apply(evo.env_params, gen)
    key_select, key_assess = jax.random.split(jax.random.PRNGKey(seed))

    out: dict[str, Any] = {"generation": int(state.generation)}
    if select_episodes:
        ret, _ = _returns(
            evo, state, np.arange(P), key_select, select_episodes, env_params, horizon
        )
        means = ret.mean(1)
        member = int(np.argmax(means))
        out["selection_episodes"] = select_episodes
        out["selection_means"] = [round(float(m), 3) for m in means]
    ret, live = _returns(evo, state, np.array([member]), key_assess, episodes, env_params, horizon)
    ret, live = ret[0], live[0]
    out.update(
        member=member,
        schedule_generation=gen,
        inverted=bool(evo.schedule.inverted_at(gen)),
        episodes=episodes,
        horizon=horizon,
        mean=float(ret.mean()),
        std=float(ret.std()),
        median=float(np.median(ret)),
        min=float(ret.min()),
        max=float(ret.max()),
        ended_early=float(np.mean(live < horizon)),
        returns=[round(float(r), 3) for r in ret],
    )
    if solved is not None:
        out["solved"] = float(solved)
        out["solved_fraction"] = float(np.mean(ret >= solved))
    return out


def cmd_assess(args: argparse.Namespace) -> int:
    """``selfref-ghn assess``: print (and write) the champion's fresh-episode statistics."""
    out = assess_run(
        args.dir,
        episodes=args.episodes,
        select_episodes=args.select_episodes,
        member=args.member,
        seed=args.seed,
        checkpoint=args.checkpoint,
        generation=args.generation,
        horizon=args.horizon,
        solved=args.solved,
    )
    short = {k: v for k, v in out.items() if k not in ("returns", "selection_means")}
    print(json.dumps(short, indent=1))
    if args.out is not None:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return 0


def register(subparsers) -> None:
    """Add ``assess DIR [--episodes N] [--select-episodes M] [--checkpoint GEN] ...``."""
    from selfref_ghn.tools.options import add_fast_cpu_loops_option

    p = subparsers.add_parser(
        "assess", help="a run's champion on fresh episodes (mean return, spread, solved rate)"
    )
    p.add_argument("dir", type=Path, help="a results folder (final state or checkpoints)")
    p.add_argument("--episodes", type=int, default=100, help="fresh episodes (default 100)")
    p.add_argument(
        "--select-episodes",
        type=int,
        default=0,
        metavar="M",
        help="pick the survivor with the best mean over M other episodes (default: slot 0)",
    )
    p.add_argument("--member", type=int, default=0, help="survivor slot without selection")
    p.add_argument("--seed", type=int, default=1, help="seeds the episodes")
    p.add_argument("--checkpoint", type=int, default=None, metavar="GEN", help="a checkpoint")
    p.add_argument(
        "--generation", type=int, default=None, help="apply the switch schedule at this generation"
    )
    p.add_argument("--horizon", type=int, default=None, help="episode length (default: run's)")
    p.add_argument("--solved", type=float, default=None, help="report the fraction >= this")
    p.add_argument("--out", type=Path, default=None, help="also write the full JSON here")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    add_fast_cpu_loops_option(p)  # replay a run made with it under its float rounding
    p.set_defaults(func=cmd_assess)
