"""The generation step and the compiled loop (DESIGN §2 "Evolution loop", §4).

One generation, as one pure function of the state::

    parents --self-mutation (vmap)--> P x C children --det. head (vmap)--> policies
            --rollouts (vmap over members x episodes, lax.scan over time)--> fitness
            --(mu + lambda) truncation--> next parents

``Config.evolution_mode`` picks, when the step is traced, who plays episodes and who competes
(:data:`selfref_ghn.evolution.selection.SELECT`): parents and children (``elitist_union``, the
paper's), or the children only, the parents then dropped (``generational``) or ranked on the
fitness cached in the state (``cached_elitist``).

Random keys are derived per member through the run's named streams (:mod:`selfref_ghn.prng`:
generation, mutation or evaluation, member index), so every member's draws are the same
however the population is split over devices, and a resumed run continues exactly. Many
generations run inside one ``lax.scan`` (:meth:`Evolution.run_chunk`); the host wakes between
chunks only to log.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from selfref_ghn import prng
from selfref_ghn.config import Config, Hyperparams
from selfref_ghn.evolution import monitor as monitor_lib
from selfref_ghn.evolution import sharding as sharding_lib
from selfref_ghn.evolution.normalize import RunningStats
from selfref_ghn.evolution.rollout import evaluate_flat
from selfref_ghn.evolution.schedule import SwitchSchedule
from selfref_ghn.evolution.selection import SELECT, evaluates_parents, gather_survivors
from selfref_ghn.evolution.task import make_task
from selfref_ghn.model.mutation import mutate, mutation_params
from selfref_ghn.model.policy import policy_template
from selfref_ghn.model.srghn import SRGHN
from selfref_ghn.types import Array, Metrics, Params


class EvoState(struct.PyTreeNode):
    """The evolved population and everything needed to continue the run exactly.

    Attributes:
        params: ``(P, num_params)`` survivors' flat SR-GHN parameters.
        policy: ``(P, num_policy_params)`` the flat policy each survivor generates (kept so
            that parents' policies are not generated again).
        fitness: ``(P,)`` the (mixed) fitness they were selected with; with
            ``evolution_mode="cached_elitist"`` each one's own measured fitness, which stands
            in for a re-evaluation while it stays a parent (``-inf`` at generation 0).
        generation: ``()`` int32, the next generation to run.
        key: ``(2,)`` uint32 run key; every draw folds in the generation and member index.
        hparams: traced hyperparameters.
        basis: the stochastic head's fixed random basis (constant): ``(coeff_dim, S_max)``
            with the ``dense`` head, ``(coeff_dim, block_size)`` with the block heads.
        obs_stats: running observation statistics (unused unless ``obs_norm``).
        monitor: the runaway monitor's state (:mod:`selfref_ghn.evolution.monitor`).
    """

    params: Array
    policy: Array
    fitness: Array
    generation: Array
    key: Array
    hparams: Hyperparams
    basis: Array
    obs_stats: RunningStats
    monitor: monitor_lib.MonitorState


def diversity(blocks: tuple[Array, ...], finite: Array) -> Array:
    """Mean over parameters of the standard deviation across the finite members.

    ``blocks`` are row blocks of one population (parents, children: no concatenated copy of
    it); ``finite`` masks its members. Two passes, the mean and then the squared deviations
    from it: the one-pass ``E[x^2] - E[x]^2`` in float32 loses about 1e-3 per parameter to
    cancellation when ``|x|`` is near 1, the size of ``monitor_diversity_min``.
    """
    w = finite.astype(jnp.float32) / jnp.maximum(finite.sum(), 1)
    ends = list(itertools.accumulate(block.shape[0] for block in blocks))
    rows = [
        (wb, jnp.where(jnp.isfinite(block), block, 0.0))
        for wb, block in zip(jnp.split(w, ends[:-1]), blocks, strict=True)
    ]
    mean = sum(wb @ x for wb, x in rows)
    var = sum(wb @ jnp.square(x - mean) for wb, x in rows)
    return jnp.mean(jnp.sqrt(var))


def scan_generations(step: Callable, config: Config, state: Any, length: int, stop_at=None):
    """``length`` calls of ``step`` in one ``lax.scan``, with the runaway monitor after each.

    Shared by every algorithm with a ``step(state) -> (state, metrics)`` and a state carrying
    ``generation``, ``monitor`` and ``hparams``. Generations ``>= stop_at`` (default
    ``config.generations``), or after the monitor stopped the run, leave the state unchanged
    and return metrics filled with -1.
    """
    stop_at = config.generations if stop_at is None else stop_at

    def monitored_step(s):
        s, m = step(s)
        mon, flags = monitor_lib.update(s.monitor, m, config, s.hparams)
        return s.replace(monitor=mon), {**m, **flags}

    # jitted, the step is traced once: the cond below reuses the trace eval_shape made
    monitored = jax.jit(monitored_step)
    empty = jax.tree.map(
        lambda x: jnp.full(x.shape, -1, x.dtype), jax.eval_shape(monitored, state)[1]
    )

    def body(s, _):
        go = (s.generation < stop_at) & monitor_lib.running(s.monitor)
        return jax.lax.cond(go, monitored, lambda x: (x, empty), s)

    return jax.lax.scan(body, state, None, length=length)


@dataclasses.dataclass(frozen=True, eq=False)
class Evolution:
    """A population of SR-GHNs on one task: static configuration only.

    Build with :meth:`create`; then ``state = evo.init()`` and ``state, metrics =
    evo.step(state)`` are pure functions (wrap them in ``jax.jit`` or use
    :meth:`run_chunk`).

    Example:
        >>> evo = Evolution.create(Config(population_size=8, horizon=50, generations=5))
        >>> state = evo.init()
        >>> state, metrics = jax.jit(evo.step)(state)
        >>> int(state.generation)
        1
    """

    config: Config
    env: Any
    env_params: Any
    policy: nn.Module
    policy_fn: Callable[[Params, Array], Array]
    ghn: SRGHN
    schedule: SwitchSchedule
    obs_shape: tuple[int, ...]
    mesh: Any = None  # jax.sharding.Mesh over the population axis; None: one device

    @classmethod
    def create(
        cls,
        config: Config,
        env: Any = None,
        env_params: Any = None,
        policy: nn.Module | None = None,
        action_fn: Callable[[Array], Array] | None = None,
        devices: int | None = None,
        mesh: Any = None,
    ) -> Evolution:
        """Validate ``config`` and build the static pieces of a run.

        Args:
            config: the run configuration (validated here, before anything compiles).
            env, env_params: a gymnax-contract environment; default ``envs.make(config.env_id)``.
            policy: any flax module mapping an observation to outputs; default an
                :class:`MLPPolicy` with ``config.policy_hidden``.
            action_fn: outputs -> action; default chosen from the action space (argmax, or
                tanh rescaled to the box).
            devices: split the population over the first ``devices`` of ``jax.devices()``
                (default: all; :mod:`selfref_ghn.evolution.sharding`). Random draws do not depend
                on it;
                float rounding does, unless ``config.bitwise_block`` is set.
            mesh: a prebuilt one-axis mesh (axis ``"pop"``), instead of ``devices``.

        Returns:
            The :class:`Evolution`.

        Raises:
            ConfigError: an invalid config, or a population that does not split evenly over
                the devices.
        """
        config = config.validate()
        task = make_task(config, env, env_params, policy, action_fn)
        template = policy_template(task.policy, task.obs_shape)
        return cls(
            config=config,
            env=task.env,
            env_params=task.env_params,
            policy=task.policy,
            policy_fn=task.policy_fn,
            ghn=SRGHN.create(template, config),
            schedule=task.schedule,
            obs_shape=task.obs_shape,
            mesh=sharding_lib.make_mesh(config, devices, mesh),
        )

    def describe(self) -> str:
        """One line for progress output."""
        cfg = self.config
        head = "" if cfg.head == "dense" else f", {cfg.head} head"
        mode = "" if evaluates_parents(cfg.evolution_mode) else f", {cfg.evolution_mode}"
        return f"SR-GHN ({cfg.mutation_mode}{head}{mode}), {self.ghn.num_params} parameters"

    def sizes(self) -> dict[str, int | None]:
        """What the run costs, for ``summary.json`` and the start line: the SR-GHN's parameters,
        the policy's it generates, and the floats of every fixed random basis."""
        return {
            "ghn_params": self.ghn.num_params,
            "policy_params": self.ghn.policy_graph.num_params,
            "basis_floats": self.ghn.basis_floats,
        }

    # ------------------------------------------------------------------------------- init
    def init(self, key: Array | None = None, hparams: Hyperparams | None = None) -> EvoState:
        """The initial population (generation 0), from ``key`` or ``config.seed``."""
        key = jax.random.PRNGKey(self.config.seed) if key is None else key
        hparams = Hyperparams.from_config(self.config) if hparams is None else hparams
        P = self.config.population_size
        init_key = prng.run_stream(key, "init", self.config.key_version)
        params = jax.vmap(lambda i: self.ghn.init(prng.member(init_key, i)))(jnp.arange(P))
        return EvoState(
            params=params,
            policy=self.policies(params, split=False),
            fitness=jnp.full((P,), -jnp.inf, jnp.float32),
            generation=jnp.int32(0),
            key=key,
            hparams=hparams,
            basis=self.ghn.make_basis(),
            obs_stats=RunningStats.create((math.prod(self.obs_shape),)),
            monitor=monitor_lib.init(),
        )

    # ------------------------------------------------------------------------------- step
    def mutate_population(self, state: EvoState) -> tuple[Array, Array]:
        """Children of every parent: ``(P * C, num_params)``, and ``(P,)`` parents' mean rate."""
        cfg, hp = self.config, state.hparams
        mut_key = prng.generation_stream(state.key, state.generation, "mutate", cfg.key_version)

        def children_of(i: Array, parent: Array) -> tuple[Array, Array]:
            std, rate = mutation_params(self.ghn, parent, hp)
            pkey = prng.member(mut_key, i)
            kids = jax.vmap(
                lambda j: mutate(
                    prng.member(pkey, j), self.ghn, parent, std, rate, state.basis, hp
                )
            )(jnp.arange(cfg.num_children))
            return kids, jnp.mean(rate)

        parents = (jnp.arange(cfg.population_size), state.params)
        if cfg.bitwise_block:  # the same shapes for every parent on any device count
            kids, rates = sharding_lib.per_member(
                jax.vmap(children_of), self.mesh, parents, (), block=cfg.bitwise_block
            )
        else:
            kids, rates = jax.vmap(children_of)(*parents)
        return sharding_lib.constrain(kids.reshape(-1, self.ghn.num_params), self.mesh), rates

    def policies(self, members: Array, split: bool = True) -> Array:
        """Deterministic head of every member: ``(M, num_policy_params)`` flat policies
        (``split``: each device computes its own members' with ``bitwise_block``)."""
        graph = self.ghn.policy_graph
        heads = jax.vmap(lambda f: graph.ravel(self.ghn.policy_params(f)))
        if self.config.bitwise_block:
            mesh = self.mesh if split else None
            return sharding_lib.per_member(
                heads, mesh, (members,), (), block=self.config.bitwise_block
            )
        return heads(members)

    def evaluate_members(self, state: EvoState, policies: Array, first: int = 0):
        """Fitness of every member's flat policy on fresh episodes, with the schedule applied
        (``policies`` are members ``first, first + 1, ...``: their episode keys)."""
        cfg = self.config
        eval_key = prng.generation_stream(state.key, state.generation, "evaluate", cfg.key_version)
        env_params = self.schedule.apply(self.env_params, state.generation)
        obs_stats = state.obs_stats if cfg.obs_norm else None

        def block(members: Array, flats: Array, eval_key, env_params, obs_stats):
            unravel = self.ghn.policy_graph.unravel
            return evaluate_flat(
                eval_key, members, flats, self.env, env_params, self.policy_fn, unravel, cfg,
                obs_stats,
            )  # fmt: skip

        # with a mesh, each device plays its own members' episodes (sharding.per_member)
        return sharding_lib.per_member(
            block,
            self.mesh,
            (first + jnp.arange(policies.shape[0]), policies),
            (eval_key, env_params, obs_stats),
            block=cfg.bitwise_block,
        )

    def step(self, state: EvoState) -> tuple[EvoState, Metrics]:
        """One generation: mutate, generate policies, evaluate, select
        (``config.evolution_mode``: who is evaluated and who competes).

        Args:
            state: the current :class:`EvoState`.

        Returns:
            ``(next_state, metrics)``; ``metrics`` holds scalars for the log and ``selected``,
            the ``(P,)`` member indices that survived (parents are members ``0..P-1``, the
            children of parent ``i`` are ``P + i*C .. P + i*C + C - 1``). Its fitness
            statistics are of the members evaluated this generation (parents and children,
            or the children only).
        """
        cfg, hp = self.config, state.hparams
        P = cfg.population_size
        with_parents = evaluates_parents(cfg.evolution_mode)
        children, rates = self.mutate_population(state)
        # Materialise the children once: without the barrier XLA may fuse (and so repeat)
        # their generation, noise included, into each of their consumers.
        children = jax.lax.optimization_barrier(children)
        if with_parents:
            policies = jnp.concatenate([state.policy, self.policies(children)])
            policies = sharding_lib.constrain(policies, self.mesh)
            ev = self.evaluate_members(state, policies)
            measured = ev.fitness
        else:  # the children's episodes only, with the keys they have in elitist_union
            policies = sharding_lib.constrain(self.policies(children), self.mesh)
            ev = self.evaluate_members(state, policies, first=P)
            measured = jnp.concatenate([state.fitness, ev.fitness])
        if cfg.bitwise_block:  # reductions over members below: on whole arrays, in one order
            state, children, rates, ev, measured = sharding_lib.whole(
                (state, children, rates, ev, measured), self.mesh
            )

        # Parents and children stay apart (no (P(1+C), num_params) copy of the population).
        params_finite = jnp.concatenate(
            [jnp.all(jnp.isfinite(state.params), 1), jnp.all(jnp.isfinite(children), 1)]
        )
        # A member with non-finite parameters or fitness never survives selection.
        finite = jnp.isfinite(measured) & params_finite
        fitness = jnp.where(finite, measured, -jnp.inf)
        top_fit, selected, carried = SELECT[cfg.evolution_mode](
            fitness[:P], fitness[P:], hp.child_factor, cfg.selection_ties
        )
        new_params = gather_survivors(selected, state.params, children)
        if cfg.bitwise_block:  # its checksum too
            new_params = sharding_lib.whole(new_params, self.mesh)

        obs_stats = state.obs_stats
        if cfg.obs_norm:
            obs_stats = obs_stats.merge(
                ev.obs_sum.sum(0), ev.obs_sq_sum.sum(0), ev.obs_count.sum()
            )
        safe_fit = jnp.where(finite, fitness, jnp.nan)[0 if with_parents else P :]
        metrics = {
            "generation": state.generation,
            "inverted": self.schedule.inverted_at(state.generation).astype(jnp.int32),
            "best_fitness": jnp.nanmax(safe_fit),
            "mean_fitness": jnp.nanmean(safe_fit),
            "median_fitness": jnp.nanmedian(safe_fit),
            "survivor_mean_fitness": jnp.mean(jnp.where(jnp.isfinite(top_fit), top_fit, jnp.nan)),
            "mutation_rate_mean": jnp.nanmean(rates),
            "mutation_rate_min": jnp.nanmin(rates),
            "mutation_rate_max": jnp.nanmax(rates),
            "diversity": diversity((state.params, children), params_finite),
            "nonfinite_fitness": jnp.sum(~jnp.isfinite(ev.fitness)).astype(jnp.int32),
            "nonfinite_params": jnp.sum(~params_finite).astype(jnp.int32),
            "live_steps": jnp.sum(ev.live_steps),
            "checksum": jnp.sum(new_params),
            "selected": selected.astype(jnp.int32),
            "survivor_fitness": top_fit,  # (P,) for lineage
            "parent_rate": rates,  # (P,) each parent's mean mutation rate, for lineage
        }
        shard = lambda x: sharding_lib.constrain(x, self.mesh)  # noqa: E731
        new_state = state.replace(
            params=shard(new_params),
            policy=shard(
                policies[selected]
                if with_parents
                else gather_survivors(selected, state.policy, policies)
            ),
            fitness=shard(carried),
            generation=state.generation + 1,
            obs_stats=obs_stats,
        )
        return new_state, metrics

    # ------------------------------------------------------------------------------- loop
    def run_chunk(self, state: EvoState, length: int, stop_at: Array | int | None = None):
        """``length`` generations in one ``lax.scan``; generations ``>= stop_at`` are skipped.

        Skipped iterations leave the state unchanged and return metrics with
        ``generation = -1``, so a fixed chunk length serves the last, shorter chunk without a
        second compilation. The runaway monitor (:mod:`selfref_ghn.evolution.monitor`) runs after
        every
        generation and adds its flags to the metrics; once its ``stop`` policy trips, the rest
        of the chunk is skipped the same way.

        Returns:
            ``(state, metrics)`` with every metric stacked along a leading ``length`` axis.
        """
        return scan_generations(self.step, self.config, state, length, stop_at)

    def compiled_chunk(self, length: int):
        """``jax.jit`` of :meth:`run_chunk` with the state donated: compile once per run.

        With a mesh, the state keeps its population axis split over the devices between calls
        (place the first state with :meth:`distribute`) and the metrics come back replicated.
        """
        fn = lambda s, stop: self.run_chunk(s, length, stop)  # noqa: E731
        if self.mesh is None:
            return jax.jit(fn, donate_argnums=0)
        state_sh = sharding_lib.state_shardings(jax.eval_shape(self.init), self.mesh)
        rep = sharding_lib.replicated(self.mesh)
        return jax.jit(
            fn, in_shardings=(state_sh, rep), out_shardings=(state_sh, rep), donate_argnums=0
        )

    def distribute(self, state: EvoState) -> EvoState:
        """``state`` placed on this run's mesh (unchanged without one)."""
        return sharding_lib.distribute(state, self.mesh)
