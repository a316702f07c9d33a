"""PPO as the gradient reference of a comparison (DESIGN §1: the same tasks and budgets;
docs/baselines.md "PPO (gradient reference)").

PPO itself is rejax's (:class:`rejax.PPO`, its own ``init_state`` and ``train_iteration``),
with rejax's own hyperparameters for the environment (:data:`REJAX_CONFIGS`). This module
only schedules it on a switch task and writes a normal results folder:

* **Budget.** One SR-GHN generation evaluates ``num_members`` members for ``episodes``
  episodes of at most ``horizon`` steps: :func:`steps_per_generation` ``B`` is that count at
  full horizon (the most a generation may simulate; early terminations make the evolution's
  own ``env_steps`` smaller). PPO trains in whole iterations of ``I = num_envs * num_steps``
  steps; by the end of generation ``g`` it has run ``floor((g + 1) B / I)`` iterations
  (:func:`iterations_until`), so its ``env_steps`` is never above the budget and never a whole
  iteration behind it.
* **Switch.** Generation ``g`` trains on the environment in ``g``'s switch state
  (:meth:`~selfref_ghn.evolution.schedule.SwitchSchedule.apply`): ``env_params`` is a pytree
  field of rejax's algorithm, so a generation is ``algo.replace(env_params=...)`` followed by
  its iterations, all inside one compiled chunk of ``log_every`` generations (the train state,
  episodes in progress included, carries over a switch).
* **Evaluation.** Row ``g`` of ``metrics.csv`` is the return of the policy PPO has *before*
  generation ``g``'s training, greedy (the distribution's mode, as the evolved policies are
  deterministic), on ``g``'s switch state, over ``episodes`` episodes of at most ``horizon``
  steps through :func:`selfref_ghn.evolution.rollout.evaluate` with the keys of the
  evolution's member 0 (so the same episode starts). Like SR-GHN's row ``g`` it measures
  policies made from the data of earlier generations on ``g``'s environment. One policy, not
  a population: ``best_fitness = mean_fitness = median_fitness = survivor_mean_fitness``.

rejax 0.1.3 expects gymnax's older ``step`` (five values); :class:`FiveValueStep` gives it
that view of any environment (``done = terminated or truncated``), nothing else.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from selfref_ghn import prng
from selfref_ghn.config import Config, ConfigError
from selfref_ghn.evolution import rollout
from selfref_ghn.evolution.task import make_task
from selfref_ghn.types import Array

METHOD = "ppo"
INSTALL_HINT = "pip install 'selfref_ghn[ppo]'"

# rejax's PPO settings for gymnax's classic-control tasks: the ``ppo`` section of rejax's
# configs/gymnax/<task>.yaml, less ``env``, ``total_timesteps`` and ``eval_freq`` (the budget
# and the evaluation are the comparison's). Other environments get rejax's class defaults.
REJAX_CONFIGS: dict[str, dict[str, Any]] = {
    "CartPole-v1": dict(
        agent_kwargs={"activation": "tanh"}, num_envs=5, num_steps=100, num_epochs=5,
        num_minibatches=5, learning_rate=0.00075, max_grad_norm=0.5, gamma=0.99,
        gae_lambda=0.95, clip_eps=0.2, ent_coef=0.01, vf_coef=0.5,
    ),
    "Acrobot-v1": dict(
        agent_kwargs={"activation": "tanh"}, num_envs=5, num_steps=100, num_epochs=5,
        num_minibatches=5, learning_rate=0.00075, max_grad_norm=0.5, gamma=0.99,
        gae_lambda=0.95, clip_eps=0.2, ent_coef=0.01, vf_coef=0.5, normalize_observations=True,
    ),
    "Pendulum-v1": dict(
        agent_kwargs={"activation": "swish"}, num_envs=100, num_steps=100, num_epochs=10,
        num_minibatches=10, learning_rate=0.001, max_grad_norm=10, gamma=0.995,
        gae_lambda=0.95, clip_eps=0.2, ent_coef=0.0, vf_coef=0.5, normalize_observations=True,
    ),
    "MountainCar-v0": dict(
        agent_kwargs={"activation": "tanh"}, num_envs=10, num_steps=20, num_epochs=5,
        num_minibatches=5, learning_rate=2.5e-4, max_grad_norm=0.5, gamma=0.99,
        gae_lambda=0.98, clip_eps=0.2, ent_coef=0.0, vf_coef=0.5,
    ),
    "MountainCarContinuous-v0": dict(
        agent_kwargs={"activation": "relu"}, num_envs=5, num_steps=100, num_epochs=10,
        num_minibatches=10, learning_rate=0.0003, max_grad_norm=10, gamma=0.9,
        gae_lambda=0.95, clip_eps=0.2, ent_coef=0.0, vf_coef=0.5,
    ),
}  # fmt: skip
# this library's ids of the same tasks
_SAME_TASK = {"CartPole-Switch": "CartPole-v1"}


def _rejax() -> Any:
    """The rejax module, or a :class:`ConfigError` saying how to install it."""
    try:
        import rejax
    except ImportError:
        raise ConfigError(
            "method", METHOD, f"needs the optional dependency rejax: {INSTALL_HINT}"
        ) from None
    return rejax


def hyperparameters(config: Config) -> dict[str, Any]:
    """rejax's PPO settings for ``config.env_id`` (:data:`REJAX_CONFIGS`; ``{}``: rejax's
    defaults), then ``config.baseline_params`` over them.

    Example:
        >>> hyperparameters(Config(env_id="CartPole-Switch"))["num_envs"]
        5
    """
    base = REJAX_CONFIGS.get(_SAME_TASK.get(config.env_id, config.env_id), {})
    return {**base, **dict(config.baseline_params)}


def steps_per_generation(config: Config) -> int:
    """``B``: the environment steps one generation of the evolution may simulate (every
    member's ``episodes`` episodes at full ``horizon``).

    Example:
        >>> steps_per_generation(Config(population_size=5, num_children=1, horizon=50))
        500
    """
    return config.num_members * config.episodes * config.horizon


def iterations_until(generation: Array | int, budget: int, iteration: int) -> Array:
    """PPO iterations run by the end of ``generation``: ``floor((generation + 1) B / I)``.

    Example:
        >>> [int(iterations_until(g, 300, 500)) for g in range(4)]
        [0, 1, 1, 2]
    """
    n = jnp.asarray(generation, jnp.int32) + 1
    # (n B) // I without forming n B (int32): n (B // I) + (n (B % I)) // I
    return n * (budget // iteration) + n * (budget % iteration) // iteration


class FiveValueStep:
    """``env`` with gymnax's pre-1.0 ``step``: ``(obs, state, reward, done, info)``, ``done``
    being terminated or truncated (rejax 0.1.3's contract). Everything else is ``env``'s."""

    def __init__(self, env: Any):
        self.env = env

    def reset(self, key: Array, params: Any) -> tuple[Array, Any]:
        return self.env.reset(key, params)

    def step(self, key: Array, state: Any, action: Any, params: Any):
        obs, state, reward, terminated, truncated, info = self.env.step(key, state, action, params)
        return obs, state, reward, jnp.logical_or(terminated, truncated), info

    def action_space(self, params: Any = None) -> Any:
        return self.env.action_space(params)

    def observation_space(self, params: Any = None) -> Any:
        return self.env.observation_space(params)

    @property
    def default_params(self) -> Any:
        return self.env.default_params


def _with_horizon(params: Any, horizon: int) -> Any:
    """``params`` whose episodes are truncated at ``horizon`` steps at the latest (the
    evolution's episode length), through a switch wrapper's inner params."""
    if hasattr(params, "inverted") and hasattr(params, "env_params"):
        return params.replace(env_params=_with_horizon(params.env_params, horizon))
    steps = getattr(params, "max_steps_in_episode", None)
    if steps is None or isinstance(steps, property):
        return params
    return params.replace(max_steps_in_episode=min(int(steps), horizon))


class PPOState(struct.PyTreeNode):
    """A PPO run: rejax's train state, the next generation and the run key."""

    train: Any
    generation: Array
    key: Array


@dataclasses.dataclass(frozen=True, eq=False)
class PPORun:
    """The static pieces of a PPO run (build with :func:`create`).

    Attributes:
        algo: the rejax PPO algorithm (its ``env_params`` unswitched, horizon applied).
        env, eval_params: the task's environment and params, for the evaluation.
        schedule: the switch schedule.
        budget: ``B`` (:func:`steps_per_generation`).
        iteration: ``I = num_envs * num_steps``, the steps of one PPO iteration.
        config: the run configuration.
        train_def: ``{"def": ...}``, the structure of rejax's train state (its first init's).
    """

    algo: Any
    env: Any
    eval_params: Any
    schedule: Any
    budget: int
    iteration: int
    config: Config
    train_def: dict = dataclasses.field(default_factory=dict)


def create(config: Config, env: Any = None, env_params: Any = None) -> PPORun:
    """Validate ``config`` for PPO and build its run (nothing is compiled).

    Args:
        config: the run configuration (``method = "ppo"``).
        env, env_params: a gymnax-contract environment instead of ``config.env_id``'s.

    Raises:
        ConfigError: rejax is missing (field ``method``); ``baseline_params`` names a field
            rejax's PPO does not have or that it refuses.

    Example:
        >>> run = create(Config(method="ppo", population_size=5, num_children=1, horizon=50))
        >>> run.budget, run.iteration
        (500, 500)
    """
    rejax = _rejax()
    task = make_task(config.validate(), env, env_params)
    hp = hyperparameters(config)
    fields = set(rejax.PPO.__dataclass_fields__) | {"agent_kwargs"}
    for k in ("env", "env_params", "total_timesteps", "eval_freq", "eval_callback"):
        fields.discard(k)
    unknown = sorted(k for k in hp if k not in fields)
    if unknown:
        raise ConfigError(
            "baseline_params", unknown, f"not a setting of rejax's PPO; one of {sorted(fields)}"
        )
    train_params = _with_horizon(task.env_params, config.horizon)
    try:
        algo = rejax.PPO.create(env=FiveValueStep(task.env), env_params=train_params, **hp)
        iteration = algo.num_envs * algo.num_steps
        if iteration % algo.num_minibatches:
            raise ValueError(f"num_envs * num_steps = {iteration} not divisible by minibatches")
    except (TypeError, ValueError, AttributeError) as e:
        raise ConfigError("baseline_params", dict(config.baseline_params), str(e)) from None
    return PPORun(
        algo=algo,
        env=task.env,
        eval_params=task.env_params,
        schedule=task.schedule,
        budget=steps_per_generation(config),
        iteration=iteration,
        config=config,
    )


def init(run: PPORun) -> PPOState:
    """A fresh run: rejax's ``init_state`` from the run key's ``init`` stream."""
    key = jax.random.PRNGKey(run.config.seed)
    train = run.algo.init_state(prng.run_stream(key, "init", run.config.key_version))
    # rejax makes a new state class per init_state call, and starts some counters as Python
    # numbers: the run's one structure (and arrays) keep every init of a run one program
    treedef = run.train_def.setdefault("def", jax.tree.structure(train))
    train = jax.tree.unflatten(treedef, [jnp.asarray(x) for x in jax.tree.leaves(train)])
    return PPOState(train=train, generation=jnp.int32(0), key=key)


def greedy_action(run: PPORun, params: Any, obs: Array) -> Array:
    """The mode of the PPO policy's action distribution for one observation (``params``:
    actor params and, with observation normalisation, the running statistics)."""
    actor_params, rms = params
    algo = run.algo
    if algo.normalize_observations:
        obs = algo.normalize_obs(rms, obs)
    mode = algo.actor.apply(actor_params, obs[None], method=lambda m, o: m._action_dist(o).mode())
    action = jnp.squeeze(mode, 0)
    if not algo.discrete:
        space = algo.action_space
        action = jnp.clip(action, space.low, space.high)
    return action


def step(run: PPORun, state: PPOState) -> tuple[PPOState, dict[str, Array]]:
    """One generation: evaluate the current policy on this generation's environment, then
    train on it for the generation's whole iterations.

    Returns:
        ``(next_state, metrics)``: the ``metrics.csv`` columns of the generation.
    """
    cfg, g = run.config, state.generation
    inverted = run.schedule.inverted_at(g)
    eval_params = run.schedule.apply(run.eval_params, g)
    ts = state.train
    rms = getattr(ts, "obs_rms_state", None)
    ev_key = prng.generation_stream(state.key, g, "evaluate", cfg.key_version)
    ev = rollout.evaluate(
        rollout.member_key(ev_key, 0),
        run.env,
        eval_params,
        lambda p, o: greedy_action(run, p, o),
        (ts.actor_ts.params, rms),
        cfg.horizon,
        cfg.episodes,
    )
    algo = run.algo.replace(env_params=run.schedule.apply(run.algo.env_params, g))
    before = iterations_until(g - 1, run.budget, run.iteration)
    after = iterations_until(g, run.budget, run.iteration)
    ts = jax.lax.fori_loop(before, after, lambda _, t: algo.train_iteration(t), ts)
    leaves = jax.tree.leaves(ts.actor_ts.params)
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))
    ret = ev.fitness
    nan = jnp.float32(jnp.nan)
    metrics = {
        "generation": g,
        "inverted": inverted.astype(jnp.int32),
        "best_fitness": ret,
        "mean_fitness": ret,
        "median_fitness": ret,
        "survivor_mean_fitness": ret,
        "mutation_rate_mean": nan,
        "mutation_rate_min": nan,
        "mutation_rate_max": nan,
        "diversity": nan,
        "nonfinite_fitness": (~jnp.isfinite(ret)).astype(jnp.int32),
        "nonfinite_params": (~finite).astype(jnp.int32),
        "env_steps": after * run.iteration,
        "checksum": sum(jnp.sum(x) for x in leaves),
    }
    return state.replace(train=ts, generation=g + 1), metrics


def run_chunk(run: PPORun, state: PPOState, length: int, stop: Array | int):
    """``length`` generations in one ``lax.scan``; generations ``>= stop`` are skipped (state
    unchanged, ``generation = -1``), so the last, shorter chunk needs no second compilation."""

    def body(s: PPOState, _):
        go = s.generation < stop
        new, m = jax.lax.cond(
            go,
            lambda x: step(run, x),
            lambda x: (x, jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), m0)),
            s,
        )
        m = {**m, "generation": jnp.where(go, m["generation"], -1)}
        return new, m

    m0 = jax.eval_shape(lambda s: step(run, s)[1], state)
    return jax.lax.scan(body, state, None, length)


def train(
    config: Config, out_dir: str | Path | None = None, progress: bool = False
) -> tuple[PPOState, dict[str, np.ndarray], dict[str, Any]]:
    """A whole PPO run: one compiled chunk of ``log_every`` generations, called until
    ``generations``; writes a normal results folder (``config.json``, ``metrics.csv``,
    ``summary.json``, ``fitness.png``) that :mod:`selfref_ghn.tools.compare` reads back.

    Args:
        config: the run configuration (``method = "ppo"``).
        out_dir: results folder; ``None``: nothing is written.
        progress: print a line per chunk.

    Returns:
        ``(state, metrics, summary)`` as :func:`selfref_ghn.run.loop.evolve` returns them.

    Example:
        >>> cfg = Config(method="ppo", env_id="CartPole-v1", switch="reverse_actions")
        >>> state, metrics, summary = train(cfg, "results/ppo")  # doctest: +SKIP
    """
    from selfref_ghn.run.folder import COLUMNS, metric_value, run_info, write_summary
    from selfref_ghn.run.metrics import recovery
    from selfref_ghn.run.plotting import plot_run

    run = create(config)
    rejax = _rejax()
    state = init(run)
    L, G = config.log_every, config.generations
    chunk = jax.jit(lambda s, stop: run_chunk(run, s, L, stop))
    t0 = time.perf_counter()
    compiled = chunk.lower(state, G).compile()
    compile_time = time.perf_counter() - t0
    info = {
        "library": f"rejax {getattr(rejax, '__version__', _version('rejax'))}",
        "hyperparameters": _plain(hyperparameters(config)),
        "steps_per_generation": run.budget,
        "iteration_steps": run.iteration,
    }
    out = Path(out_dir) if out_dir is not None else None
    writer = file = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(
            json.dumps(
                {**config.to_dict(), "_ppo": info, "_run": run_info()}, indent=2, default=str
            )
        )
        file = (out / "metrics.csv").open("w", newline="")
        writer = csv.DictWriter(file, fieldnames=COLUMNS)
        writer.writeheader()
    rows: list[dict[str, float]] = []
    start = time.perf_counter()
    times: list[float] = []
    try:
        while int(state.generation) < G:
            t = time.perf_counter()
            state, m = compiled(state, G)
            m = jax.device_get(m)
            now = time.perf_counter()
            times.append(now - t)
            new = []
            for i in np.nonzero(m["generation"] >= 0)[0]:
                row = {k: metric_value(m[k][i]) for k in COLUMNS if k in m}
                row.update({k: 0 for k in COLUMNS if k not in m})
                row["wall_time"] = now - start
                new.append(row)
            rows.extend(new)
            if writer is not None and file is not None:
                writer.writerows(new)
                file.flush()
            if progress and new:
                r = new[-1]
                print(
                    f"[ppo] gen {int(r['generation']) + 1}/{G} | return {r['best_fitness']:.2f}"
                    f" | {int(r['env_steps'])} env steps" + (" | inverted" * int(r["inverted"])),
                    flush=True,
                )
    finally:
        if file is not None:
            file.close()
    metrics = {k: np.array([r[k] for r in rows]) for k in COLUMNS}
    points = [p for iv in config.switch_windows for p in iv if p < G]
    steady = times[1:] or times
    summary = {
        "compile_time_s": compile_time,
        "steady_generations_per_s": L * len(steady) / max(sum(steady), 1e-9),
        "wall_time_s": time.perf_counter() - start,
        "generations": len(rows),
        "resumed_from": None,
        "best_fitness_final": float(metrics["best_fitness"][-1]),
        "recovery_best": recovery(metrics["best_fitness"], points),
        "recovery_mean": recovery(metrics["mean_fitness"], points),
        "ppo": info,
    }
    if out is not None:
        write_summary(out / "summary.json", summary)
        title = f"PPO (rejax) on {config.env_id} (seed {config.seed})"
        plot_run(metrics, out / "fitness.png", config.switch_windows, title=title)
    return state, metrics, summary


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


def _plain(d: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(dict(d), default=str))
