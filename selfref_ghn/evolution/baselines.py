"""evosax baselines on the SR-GHN harness (DESIGN §1 users (2), §2 "Evolution loop", §3).

The paper's claim is comparative: after a switch SR-GHNs recover where OpenES, CMA-ES, a simple
GA, GESMR and SAMR do not. :class:`BaselineEvolution` runs any evosax 0.3 algorithm, used as it
is (its own ``init``/``ask``/``tell``), on exactly the task an
:class:`~selfref_ghn.evolution.generation.
Evolution` sees:

* the same policy module, evolved directly: a solution is the policy's parameters, flattened
  with ``jax.flatten_util.ravel_pytree`` (evosax's own layout);
* the same environment, switch schedule (:meth:`SwitchSchedule.apply`), horizon, episodes and
  observation normalisation, through the same :func:`selfref_ghn.evolution.rollout.evaluate`;
* the same budget: evosax's population size is ``config.num_members`` = P·(1+C), the episodes
  SR-GHN evaluates per generation;
* the same keys: member ``m`` of generation ``g`` is evaluated with the generation's
  ``"evaluate"`` stream (:mod:`selfref_ghn.prng`), as in :class:`Evolution`, so for one seed
  every method sees the same episode starts;
* the same interface (``create/init/step/run_chunk/compiled_chunk/describe/config``) and the
  same metric keys, so :func:`selfref_ghn.run.loop.evolve` writes the same results folder.

Returns are maximised everywhere; evosax minimises, so the sign flips here, at the ``tell``
boundary only. A member with non-finite parameters or return is told ``+inf`` (the worst).

Metric conventions (documented in ``docs/baselines.md``): ``mutation_rate_mean/min/max`` are the
mean/min/max of the algorithm state's ``std`` field as used to sample this generation (Open_ES,
SimpleGA: one std; CMA_ES: the global step size; GESMR_GA: one per group; SAMR_GA: one per
member), NaN for algorithms without one. ``survivor_mean_fitness`` is the mean return of the
best ``num_elites`` members (evosax's own elite count). ``diversity`` is the mean over policy
parameters of the population's standard deviation (SR-GHN's is over GHN parameters, so the two
are not comparable). ``selected`` (written to ``lineage.npy``) holds the indices of the best
``population_size`` members, best first; it implies no parent-child relation.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.flatten_util import ravel_pytree

from selfref_ghn import prng
from selfref_ghn.config import Config, ConfigError, Hyperparams, algorithm_class
from selfref_ghn.evolution import monitor as monitor_lib
from selfref_ghn.evolution.generation import diversity, scan_generations
from selfref_ghn.evolution.normalize import RunningStats
from selfref_ghn.evolution.rollout import evaluate_flat
from selfref_ghn.evolution.schedule import SwitchSchedule
from selfref_ghn.evolution.task import make_task
from selfref_ghn.types import Array, Metrics, Params


def make_algorithm(config: Config, num_dims: int) -> tuple[Any, Any]:
    """The evosax strategy and its params for ``config`` (population ``config.num_members``).

    The constructor gets ``std_schedule = constant(baseline_sigma)`` and
    ``optimizer = adam(baseline_lr)`` where it takes them; the default params get
    ``std_init = baseline_sigma`` where they have it, then ``baseline_params`` overrides.

    Args:
        config: the run configuration (``method`` names the algorithm).
        num_dims: length of a flat solution.

    Returns:
        ``(strategy, params)``.
    """
    cls = algorithm_class(config.method)
    accepted = inspect.signature(cls).parameters
    kwargs: dict[str, Any] = {}
    if "std_schedule" in accepted:
        kwargs["std_schedule"] = optax.constant_schedule(config.baseline_sigma)
    if "optimizer" in accepted:
        kwargs["optimizer"] = optax.adam(config.baseline_lr)
    es = cls(config.num_members, jnp.zeros((num_dims,), jnp.float32), **kwargs)
    params = es.default_params
    if hasattr(params, "std_init"):
        params = params.replace(std_init=jnp.asarray(config.baseline_sigma, jnp.float32))
    if config.baseline_params:
        params = params.replace(**dict(config.baseline_params))
    return es, params


def _is_population_based(es: Any) -> bool:
    from evosax.algorithms.population_based.base import PopulationBasedAlgorithm

    return isinstance(es, PopulationBasedAlgorithm)


def _strong(tree: Any) -> Any:
    """Every leaf a strongly typed array, so a compiled chunk accepts its own output."""
    return jax.tree.map(lambda x: jnp.asarray(x, dtype=jnp.asarray(x).dtype), tree)


class BaselineState(struct.PyTreeNode):
    """An evosax run and everything needed to continue it exactly.

    Attributes:
        es_state: the evosax algorithm's state.
        es_params: the evosax algorithm's params (traced hyperparameters).
        generation: ``()`` int32, the next generation to run.
        key: ``(2,)`` uint32 run key; every draw folds in the generation (and member index).
        obs_stats: running observation statistics (unused unless ``obs_norm``).
        hparams: SR-GHN's traced hyperparameters (only the runaway monitor reads them here).
        monitor: the runaway monitor's state (:mod:`selfref_ghn.evolution.monitor`).
    """

    es_state: Any
    es_params: Any
    generation: Array
    key: Array
    obs_stats: RunningStats
    hparams: Hyperparams
    monitor: monitor_lib.MonitorState


@dataclasses.dataclass(frozen=True, eq=False)
class BaselineEvolution:
    """An evosax algorithm on one task, with
    :class:`~selfref_ghn.evolution.generation.Evolution`'s API.

    Example:
        >>> cfg = Config(method="open_es", population_size=4, horizon=50, generations=5)
        >>> evo = BaselineEvolution.create(cfg)
        >>> state, metrics = jax.jit(evo.step)(evo.init())
        >>> int(state.generation)
        1
    """

    config: Config
    env: Any
    env_params: Any
    policy: nn.Module
    policy_fn: Callable[[Params, Array], Array]
    template: Params
    unravel: Callable[[Array], Params]
    num_dims: int
    es: Any
    es_params: Any
    schedule: SwitchSchedule
    obs_shape: tuple[int, ...]

    @classmethod
    def create(
        cls,
        config: Config,
        env: Any = None,
        env_params: Any = None,
        policy: nn.Module | None = None,
        action_fn: Callable[[Array], Array] | None = None,
    ) -> BaselineEvolution:
        """Validate ``config`` and build the static pieces of a baseline run.

        Args:
            config: the run configuration; ``config.method`` names the evosax algorithm.
            env, env_params: a gymnax-contract environment; default ``envs.make(config.env_id)``.
            policy: any flax module mapping an observation to outputs; default an
                :class:`MLPPolicy` with ``config.policy_hidden`` (the one SR-GHN generates).
            action_fn: outputs -> action; default chosen from the action space.

        Returns:
            The :class:`BaselineEvolution`.
        """
        config = config.validate()
        if config.method == "srghn":
            raise ConfigError("method", config.method, "a baseline: use Evolution for srghn")
        task = make_task(config, env, env_params, policy, action_fn)
        template = task.policy.init(jax.random.key(0), jnp.zeros(task.obs_shape))["params"]
        flat, unravel = ravel_pytree(template)
        es, es_params = make_algorithm(config, int(flat.size))
        return cls(
            config=config,
            env=task.env,
            env_params=task.env_params,
            policy=task.policy,
            policy_fn=task.policy_fn,
            template=template,
            unravel=unravel,
            num_dims=int(flat.size),
            es=es,
            es_params=es_params,
            schedule=task.schedule,
            obs_shape=task.obs_shape,
        )

    def describe(self) -> str:
        """One line for progress output."""
        return (
            f"evosax {type(self.es).__name__} (population {self.es.population_size}), "
            f"{self.num_dims} policy parameters"
        )

    def sizes(self) -> dict[str, int | None]:
        """What the run evolves, for ``summary.json``: the policy's parameters (no GHN, no
        basis)."""
        return {"ghn_params": None, "policy_params": self.num_dims, "basis_floats": None}

    # ------------------------------------------------------------------------------- init
    def initial_solution(self, key: Array) -> Array:
        """A flat policy from the policy module's own initialiser."""
        params = self.policy.init(key, jnp.zeros(self.obs_shape))["params"]
        return ravel_pytree(params)[0]

    def init(self, key: Array | None = None) -> BaselineState:
        """The algorithm's initial state (generation 0), from ``key`` or ``config.seed``.

        Distribution-based algorithms start from a mean drawn by the policy's initialiser
        (the run's ``"init"`` stream); population-based ones from ``num_members`` such draws
        (its members ``0..num_members-1``), not yet evaluated (told ``+inf``).
        """
        key = jax.random.PRNGKey(self.config.seed) if key is None else key
        init_key = prng.run_stream(key, "init", self.config.key_version)
        es_key = prng.run_stream(key, "es_init", self.config.key_version)
        if _is_population_based(self.es):
            n = self.config.num_members
            pop = jax.vmap(lambda i: self.initial_solution(prng.member(init_key, i)))(
                jnp.arange(n)
            )
            es_state = self.es.init(es_key, pop, jnp.full((n,), jnp.inf), self.es_params)
        else:
            es_state = self.es.init(es_key, self.initial_solution(init_key), self.es_params)
        return _strong(
            BaselineState(
                es_state=es_state,
                es_params=self.es_params,
                generation=jnp.int32(0),
                key=key,
                obs_stats=RunningStats.create((math.prod(self.obs_shape),)),
                hparams=Hyperparams.from_config(self.config),
                monitor=monitor_lib.init(),
            )
        )

    # ------------------------------------------------------------------------------- step
    def evaluate_members(self, state: BaselineState, members: Array):
        """Return of every flat member on fresh episodes, with the schedule applied."""
        cfg = self.config
        eval_key = prng.generation_stream(
            state.key, state.generation, "evaluate", self.config.key_version
        )
        env_params = self.schedule.apply(self.env_params, state.generation)
        obs_stats = state.obs_stats if cfg.obs_norm else None

        idx = jnp.arange(members.shape[0])
        return evaluate_flat(
            eval_key, idx, members, self.env, env_params, self.policy_fn, self.unravel, cfg,
            obs_stats,
        )  # fmt: skip

    def step(self, state: BaselineState) -> tuple[BaselineState, Metrics]:
        """One generation: ask, evaluate, tell (with the sign flipped).

        Args:
            state: the current :class:`BaselineState`.

        Returns:
            ``(next_state, metrics)`` with :class:`Evolution`'s metric keys (see the module
            docstring for what the rate, survivor and ``selected`` entries mean here).
        """
        cfg = self.config
        ask_key, tell_key = (
            prng.generation_stream(state.key, state.generation, name, cfg.key_version)
            for name in ("ask", "tell")
        )
        members, es_state = self.es.ask(ask_key, state.es_state, state.es_params)
        ev = self.evaluate_members(state, members)
        params_finite = jnp.all(jnp.isfinite(members), axis=1)
        finite = jnp.isfinite(ev.fitness) & params_finite
        loss = jnp.where(finite, -ev.fitness, jnp.inf)  # evosax minimises
        new_es_state, _ = self.es.tell(tell_key, members, loss, es_state, state.es_params)

        safe_fit = jnp.where(finite, ev.fitness, jnp.nan)
        ranked_fit = jnp.where(finite, ev.fitness, -jnp.inf)
        top_fit, selected = jax.lax.top_k(ranked_fit, cfg.population_size)
        elite_fit = jax.lax.top_k(ranked_fit, self.es.num_elites)[0]
        std = getattr(es_state, "std", None)
        std = jnp.full((1,), jnp.nan) if std is None else jnp.ravel(jnp.asarray(std, jnp.float32))

        obs_stats = state.obs_stats
        if cfg.obs_norm:
            obs_stats = obs_stats.merge(
                ev.obs_sum.sum(0), ev.obs_sq_sum.sum(0), ev.obs_count.sum()
            )
        metrics = {
            "generation": state.generation,
            "inverted": self.schedule.inverted_at(state.generation).astype(jnp.int32),
            "best_fitness": jnp.nanmax(safe_fit),
            "mean_fitness": jnp.nanmean(safe_fit),
            "median_fitness": jnp.nanmedian(safe_fit),
            "survivor_mean_fitness": jnp.mean(
                jnp.where(jnp.isfinite(elite_fit), elite_fit, jnp.nan)
            ),
            "mutation_rate_mean": jnp.nanmean(std),
            "mutation_rate_min": jnp.nanmin(std),
            "mutation_rate_max": jnp.nanmax(std),
            "diversity": diversity((members,), params_finite),
            "nonfinite_fitness": jnp.sum(~jnp.isfinite(ev.fitness)).astype(jnp.int32),
            "nonfinite_params": jnp.sum(~params_finite).astype(jnp.int32),
            "live_steps": jnp.sum(ev.live_steps),
            "checksum": _checksum(new_es_state),
            "selected": selected.astype(jnp.int32),
            "survivor_fitness": top_fit,  # (P,) for lineage
            "parent_rate": _per_member(std, selected, members.shape[0]),  # (P,) for lineage
        }
        new_state = state.replace(
            es_state=_like(new_es_state, state.es_state),
            generation=state.generation + 1,
            obs_stats=obs_stats,
        )
        return new_state, metrics

    # ------------------------------------------------------------------------------- loop
    def run_chunk(self, state: BaselineState, length: int, stop_at: Array | int | None = None):
        """``length`` generations in one ``lax.scan``; generations ``>= stop_at`` are skipped.

        Skipped iterations leave the state unchanged and return metrics with
        ``generation = -1``; the runaway monitor runs after every generation (both as
        :meth:`Evolution.run_chunk`).

        Returns:
            ``(state, metrics)`` with every metric stacked along a leading ``length`` axis.
        """
        return scan_generations(self.step, self.config, state, length, stop_at)

    def compiled_chunk(self, length: int):
        """``jax.jit`` of :meth:`run_chunk` with the state donated: compile once per run."""
        return jax.jit(lambda s, stop: self.run_chunk(s, length, stop), donate_argnums=0)


def _per_member(std: Array, selected: Array, num_members: int) -> Array:
    """The step size of each selected member: its own where the algorithm keeps one per member
    (SAMR_GA), else the algorithm's mean step size."""
    if std.shape[0] == num_members:
        return std[selected]
    return jnp.full(selected.shape, jnp.nanmean(std), jnp.float32)


def _like(new: Any, old: Any) -> Any:
    """``new`` cast leaf by leaf to ``old``'s dtypes (evosax may promote a counter or a std)."""
    return jax.tree.map(lambda n, o: jnp.asarray(n, o.dtype), new, old)


def _checksum(tree: Any) -> Array:
    """Sum of the finite floating-point entries of an algorithm state (detects divergence)."""
    total = jnp.float32(0.0)
    for leaf in jax.tree.leaves(tree):
        leaf = jnp.asarray(leaf)
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            total = total + jnp.sum(jnp.where(jnp.isfinite(leaf), leaf, 0.0)).astype(jnp.float32)
    return total


def make_evolution(config: Config, **kwargs: Any):
    """:class:`Evolution` for ``method = "srghn"``, else :class:`BaselineEvolution`.

    Args:
        config: the run configuration.
        **kwargs: ``env``, ``env_params``, ``policy``, ``action_fn`` as for ``create``.

    Returns:
        The evolution object for :func:`selfref_ghn.run.loop.evolve`'s ``evo`` argument.
    """
    if config.method == "srghn":
        from selfref_ghn.evolution.generation import Evolution

        return Evolution.create(config, **kwargs)
    return BaselineEvolution.create(config, **kwargs)
