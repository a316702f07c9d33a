"""Run configuration and its validation (DESIGN §2, STYLE rule 2).

Three tiers, never mixed:

* :class:`Config` is the flat, frozen, hashable description of a run. Its keys are the names
  used everywhere: in presets, in ``--set key=value`` and in ``config.json``.
* :class:`Hyperparams` is the pytree of *traced* hyperparameters (clips, noise, mixing), carried
  in the evolution state so that a sweep can ``vmap`` over them in one compiled program.
* The run state itself lives in :mod:`selfref_ghn.evolution.generation`.

``Config.validate()`` checks every field before anything compiles and raises
:class:`ConfigError` naming the field, the bad value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import typing
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
from flax import struct

# ConfigError and _parse_value: also imported from here by their callers
from selfref_ghn.config_values import ConfigError, _check_type, _coerce, _parse_value
from selfref_ghn.prng import KEY_VERSION, KEY_VERSIONS

MUTATION_MODES = ("self", "fixed_rate", "frozen_head", "external")
SELECTION_TIES = ("parents", "children")
EVOLUTION_MODES = ("elitist_union", "generational", "cached_elitist")  # evolution.selection
MONITOR_POLICIES = ("off", "warn", "stop")
HEADS = ("dense", "block", "random_basis")  # selfref_ghn.model.heads
GRAPH_EDGES = ("chain", "typed")  # selfref_ghn.model.graph


# The paper's five evosax baselines: short name -> evosax class name. The names live here, with
# the validation, so that the config needs nothing above it; evosax is imported only to check a
# baseline method (selfref_ghn.evolution.baselines runs them).
METHODS: dict[str, str] = {
    "open_es": "Open_ES",
    "cma_es": "CMA_ES",
    "simple_ga": "SimpleGA",
    "gesmr_ga": "GESMR_GA",
    "samr_ga": "SAMR_GA",
}
# Gradient references trained by a library of their own (selfref_ghn.tools.ppo: rejax's PPO);
# their baseline_params are that library's settings, checked when the run is built.
GRADIENT_METHODS = ("ppo",)


def algorithm_class(method: str) -> type:
    """The evosax class of ``method``: a short name of :data:`METHODS` or an evosax name.

    Args:
        method: e.g. ``"open_es"`` or ``"Open_ES"`` or ``"SNES"``.

    Returns:
        The evosax algorithm class.

    Raises:
        ConfigError: for a name that is neither (field ``method``).
    """
    from evosax.algorithms import algorithms

    if method in GRADIENT_METHODS:
        raise ConfigError(
            "method", method, "not an evolution: run it with selfref-ghn compare --methods ppo"
        )
    name = METHODS.get(method, method)
    if name not in algorithms:
        allowed = ["srghn", *GRADIENT_METHODS, *METHODS, *sorted(algorithms)]
        raise ConfigError("method", method, f"one of {allowed}")
    return algorithms[name]


def check_method(method: str, baseline_params: Mapping[str, Any]) -> None:
    """Validate ``Config.method`` and ``Config.baseline_params`` (raises :class:`ConfigError`)."""
    cls = algorithm_class(method)
    if baseline_params:
        fields = _params_fields(cls)
        for k in baseline_params:
            if fields is not None and k not in fields:
                raise ConfigError(
                    "baseline_params", k, f"not a field of {cls.__name__}'s Params: {fields}"
                )


def _params_fields(cls: type) -> list[str] | None:
    params_cls = inspect.getmodule(cls).__dict__.get("Params")
    if params_cls is None or not dataclasses.is_dataclass(params_cls):
        return None
    return [f.name for f in dataclasses.fields(params_cls)]


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines a run. Defaults are the paper's constants (DESIGN §2).

    Example:
        >>> cfg = Config(population_size=8, generations=20)
        >>> cfg.validate().population_size
        8
    """

    # task
    env_id: str = "CartPole-Switch"
    env_kwargs: tuple[tuple[str, Any], ...] = ()
    horizon: int = 500
    episodes: int = 1
    # every member of a generation plays the same episodes (common random numbers): their
    # fitness differences then come from the policies, not from the terrain or the start
    shared_episodes: bool = False
    switch_intervals: tuple[tuple[int, int], ...] = ()
    switch_every: int = 0  # > 0: switched on alternate blocks of this many generations, from it
    # a switch rule applied to env_id (selfref_ghn.envs.switch, docs/tutorials/switch-rules.md)
    # and its options, e.g. {"perm": [2, 0, 1]}; "": the env id's own switch (the -Switch ids)
    switch: str = ""
    switch_options: tuple[tuple[str, Any], ...] = ()
    obs_norm: bool = False
    # policy
    policy_hidden: tuple[int, ...] = (32,)
    # [[features, kernel, stride], ...]: a ConvPolicy (these convolutions on the image
    # observation, then policy_hidden); empty: an MLPPolicy (docs/envs/minatar.md)
    policy_conv: tuple[tuple[int, int, int], ...] = ()
    policy_fan_in_scale: bool = False  # divide each layer's input by sqrt(fan-in) (MLPPolicy)
    policy_output_scale: float = 1.0  # multiply the policy's outputs (MLPPolicy)
    # evolution
    population_size: int = 30
    num_children: int = 2
    child_factor: float = 0.0
    # which members survive a tie in the (mu + lambda) selection: "parents" (the paper's code:
    # a child must beat a parent) or "children" (a child as good as a parent replaces it, so a
    # population whose members all score the same keeps drifting instead of freezing)
    selection_ties: str = "parents"
    # who is evaluated and who competes (docs/design.md "Evolution modes"): "elitist_union" (the
    # paper's: parents re-evaluated beside their children, the best P of the union survive),
    # "generational" (only children are evaluated; the best P children replace the parents) or
    # "cached_elitist" (only children are evaluated; parents keep the fitness they were measured
    # with and compete with the children on it)
    evolution_mode: str = "elitist_union"
    generations: int = 250
    seed: int = 0
    # how every random stream is derived from the seed (selfref_ghn.prng); 1: runs recorded
    # before versions existed (a config.json without this field), whose init and generation-2
    # streams met
    key_version: int = KEY_VERSION
    # > 0: every device computes its members in blocks of this many, in a loop of one shape, and
    # reductions over members run on whole arrays: CartPole-Switch runs are bit for bit the same
    # on any device count n with population_size / n divisible by it (not yet every env, e.g.
    # LunarLander; slower; docs/scaling.md).
    # 0: each device computes all its members at once (fastest); results then depend on the
    # device count through float rounding
    bitwise_block: int = 0
    # SR-GHN architecture
    embed_dim: int = 32
    gnn_rounds: int = 10
    trunk_dim: int = 32
    coeff_dim: int = 32
    num_rates: int = 5
    basis_seed: int = 0
    # deterministic head (selfref_ghn.model.heads; docs/design.md "Heads"): "dense" (the
    # paper's Linear(D -> P_max)), "block" or "random_basis" (sizes bounded by block_size)
    head: str = "dense"
    block_size: int = 64  # values per block (block, random_basis)
    # block, random_basis: expected std of one entry of a learned update is
    # std * block_update_scale (before the clip and the rate), whatever the block or tensor size
    block_update_scale: float = 0.1
    # dense head's self-mutation: "paper" (entries of c @ B have std shrinking as
    # sqrt(coeff_dim / S_max) with the largest tensor; recorded runs) or "per_entry" (the block
    # heads' rule: unit-norm basis columns times block_update_scale, whatever the sizes)
    dense_update: str = "paper"
    # block, random_basis: a child changes only the ceil(block_ratio * blocks) blocks of its
    # parent's tensors with the highest mutation rates (the learned score; ties broken at
    # random); 1: every block
    block_ratio: float = 1.0
    # graphs (selfref_ghn.model.graph; docs/design.md "Graph structure"): node inputs are the
    # learned embedding plus, with graph_features, a linear map of each tensor's shape, fan-in,
    # fan-out, depth and kind; graph_edges "chain" (consecutive tensors, both ways, one message
    # map) or "typed" (forward, backward and same-layer edges, a message map each);
    # graph_aggregation "sum" or "mean" of the incoming messages
    graph_features: bool = False
    graph_edges: str = "chain"
    graph_aggregation: str = "sum"
    # self-mutation
    std_max: float = 2.0
    square_std: bool = False
    # how a node's num_rates sigmoids become its one rate: "max" (the paper's) or "mean"
    rate_reduction: str = "max"
    update_clip: float = 1.0
    noise_std: float = 0.001
    noise_rng: str = "fast"  # "fast" (hash-based, see prng.py) or "threefry" (exact Gaussian)
    param_clip: float = 20.0
    mutation_mode: str = "self"
    fixed_rate: float = 0.5
    external_sigma: float = 0.05
    rate_min: float = 0.0  # bounds on every mutation rate (defaults: the paper's, unbounded)
    rate_max: float = 1.0
    # method: "srghn" (this library's SR-GHN, ablations via mutation_mode) or an evosax baseline
    # evolving the policy directly: a short name (open_es, cma_es, simple_ga, gesmr_ga,
    # samr_ga) or any evosax 0.3 algorithm by its class-registry name (docs/baselines.md)
    method: str = "srghn"
    baseline_sigma: float = 0.1  # initial std: Open_ES/SimpleGA std, CMA_ES/GESMR/SAMR std_init
    baseline_lr: float = 0.05  # Adam learning rate of gradient-based ES (Open_ES and the like)
    baseline_params: tuple[tuple[str, Any], ...] = ()  # overrides of the algorithm's Params
    # host side
    log_every: int = 10
    checkpoint_every: int = 0  # rounded up to a multiple of log_every; 0: only at the end
    keep_checkpoints: int = 3
    # runaway monitor (selfref_ghn.evolution.monitor; docs/reliability.md)
    monitor: str = "off"
    monitor_patience: int = 5
    monitor_rate_margin: float = 0.01
    monitor_diversity_min: float = 1e-3
    monitor_diversity_max: float = 5.0
    monitor_collapse: float = 0.5

    # ----------------------------------------------------------------------------------------
    @property
    def num_members(self) -> int:
        """Members per generation: parents and their children (all evaluated in the default
        ``evolution_mode``; the children only in the others)."""
        return self.population_size * (1 + self.num_children)

    @property
    def switch_windows(self) -> tuple[tuple[int, int], ...]:
        """The run's switched windows: ``switch_intervals``, or with ``switch_every = k`` the
        windows ``[k, 2k), [3k, 4k), ...`` (the last one clipped at ``generations``). Plots,
        recovery and the schedule all read these."""
        if self.switch_intervals:
            return tuple((int(a), int(b)) for a, b in self.switch_intervals)
        return tuple(periodic_windows(self.switch_every, self.generations))

    def replace(self, **changes: Any) -> Config:
        """A copy with some fields changed (unknown keys raise :class:`ConfigError`)."""
        names = {f.name for f in dataclasses.fields(self)}
        for k in changes:
            if k not in names:
                raise ConfigError(
                    k, changes[k], f"unknown key; known keys: {', '.join(sorted(names))}"
                )
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["env_kwargs"] = dict(self.env_kwargs)
        d["baseline_params"] = dict(self.baseline_params)
        d["switch_options"] = dict(self.switch_options)
        d["switch_intervals"] = [list(iv) for iv in self.switch_intervals]
        d["policy_hidden"] = list(self.policy_hidden)
        d["policy_conv"] = [list(c) for c in self.policy_conv]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Config:
        """Build from a mapping such as a loaded ``config.json``; coerces and validates types."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for k, v in d.items():
            if k not in names:
                raise ConfigError(k, v, f"unknown key; known keys: {', '.join(sorted(names))}")
            kwargs[k] = _coerce(k, v, _field_types()[k])
        return cls(**kwargs).validate()

    def with_overrides(self, pairs: Mapping[str, str]) -> Config:
        """Apply ``--set key=value`` strings (values parsed as JSON, else as plain strings)."""
        d = self.to_dict()
        for k, raw in pairs.items():
            if k not in d:
                raise ConfigError(k, raw, f"unknown key; known keys: {', '.join(sorted(d))}")
            d[k] = _parse_value(raw)
        return Config.from_dict(d)

    def validate(self) -> Config:
        """Check every field; return ``self`` or raise :class:`ConfigError`."""
        types = _field_types()
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), types[f.name])
            if types[f.name] is float and not math.isfinite(getattr(self, f.name)):
                raise ConfigError(f.name, getattr(self, f.name), "must be a finite number")
        for name in ("seed", "basis_seed"):
            if not 0 <= getattr(self, name) < 2**32:
                raise ConfigError(name, getattr(self, name), "must lie in [0, 2**32)")
        positive = (
            "horizon", "episodes", "population_size", "generations", "embed_dim",
            "trunk_dim", "coeff_dim", "num_rates", "log_every",
        )  # fmt: skip
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(name, getattr(self, name), "must be a positive integer")
        if self.num_children < 1:
            raise ConfigError("num_children", self.num_children, "must be at least 1")
        if self.gnn_rounds < 0:
            raise ConfigError("gnn_rounds", self.gnn_rounds, "must be >= 0")
        if any(h <= 0 for h in self.policy_hidden):
            raise ConfigError("policy_hidden", self.policy_hidden, "hidden sizes must be positive")
        for layer in self.policy_conv:
            if len(layer) != 3 or min(layer) <= 0:
                raise ConfigError(
                    "policy_conv", list(layer), "each layer is [features, kernel, stride] > 0"
                )
        if not (self.policy_output_scale > 0 and math.isfinite(self.policy_output_scale)):
            raise ConfigError(
                "policy_output_scale", self.policy_output_scale, "must be a positive number"
            )
        if not 0.0 <= self.child_factor <= 1.0:
            raise ConfigError("child_factor", self.child_factor, "must lie in [0, 1]")
        for name in (
            "std_max", "update_clip", "param_clip", "external_sigma", "baseline_sigma",
            "baseline_lr",
        ):  # fmt: skip
            if not getattr(self, name) > 0:
                raise ConfigError(name, getattr(self, name), "must be > 0")
        if self.noise_std < 0:
            raise ConfigError("noise_std", self.noise_std, "must be >= 0")
        if self.bitwise_block < 0 or (
            self.bitwise_block and self.population_size % self.bitwise_block
        ):
            raise ConfigError(
                "bitwise_block",
                self.bitwise_block,
                f"must be 0 (off) or a divisor of population_size ({self.population_size})",
            )
        if self.bitwise_block and self.method != "srghn":
            raise ConfigError(
                "bitwise_block", self.bitwise_block, "applies to method 'srghn' only (0 here)"
            )
        if self.key_version not in KEY_VERSIONS:
            raise ConfigError("key_version", self.key_version, f"one of {KEY_VERSIONS}")
        if self.noise_rng not in ("fast", "threefry"):
            raise ConfigError("noise_rng", self.noise_rng, "one of ('fast', 'threefry')")
        if not 0.0 <= self.fixed_rate <= 1.0:
            raise ConfigError("fixed_rate", self.fixed_rate, "must lie in [0, 1]")
        if self.rate_reduction not in ("max", "mean"):
            raise ConfigError("rate_reduction", self.rate_reduction, "one of ('max', 'mean')")
        if self.selection_ties not in SELECTION_TIES:
            raise ConfigError("selection_ties", self.selection_ties, f"one of {SELECTION_TIES}")
        if self.evolution_mode not in EVOLUTION_MODES:
            raise ConfigError("evolution_mode", self.evolution_mode, f"one of {EVOLUTION_MODES}")
        if self.evolution_mode != EVOLUTION_MODES[0] and self.method != "srghn":
            raise ConfigError(
                "evolution_mode",
                self.evolution_mode,
                "applies to method 'srghn' only: a baseline selects by its own rule "
                "('elitist_union' here)",
            )
        if self.head not in HEADS:
            raise ConfigError("head", self.head, f"one of {HEADS}")
        for name, allowed in (
            ("graph_edges", GRAPH_EDGES),
            ("graph_aggregation", ("sum", "mean")),
        ):
            if getattr(self, name) not in allowed:
                raise ConfigError(name, getattr(self, name), f"one of {allowed}")
        if self.dense_update not in ("paper", "per_entry"):
            raise ConfigError("dense_update", self.dense_update, "one of ('paper', 'per_entry')")
        if self.block_size <= 0:
            raise ConfigError("block_size", self.block_size, "must be a positive integer")
        if not self.block_update_scale > 0:
            raise ConfigError("block_update_scale", self.block_update_scale, "must be > 0")
        if not 0.0 < self.block_ratio <= 1.0:
            raise ConfigError("block_ratio", self.block_ratio, "must lie in (0, 1]")
        if self.block_ratio != 1.0 and self.head == "dense":
            raise ConfigError(
                "block_ratio",
                self.block_ratio,
                "applies to heads 'block' and 'random_basis' (1 here)",
            )
        if self.mutation_mode not in MUTATION_MODES:
            raise ConfigError("mutation_mode", self.mutation_mode, f"one of {MUTATION_MODES}")
        if self.method != "srghn" and self.method not in GRADIENT_METHODS:
            check_method(self.method, dict(self.baseline_params))
        self._validate_reliability()
        prev_end = 0
        for iv in self.switch_intervals:
            if len(iv) != 2:
                raise ConfigError("switch_intervals", iv, "each interval is [start, end)")
            start, end = iv
            if not 0 <= start < end <= self.generations:
                raise ConfigError(
                    "switch_intervals",
                    list(iv),
                    f"need 0 <= start < end <= generations ({self.generations})",
                )
            if start < prev_end:
                raise ConfigError(
                    "switch_intervals", list(iv), "intervals must be sorted and not overlap"
                )
            prev_end = end
        if not 0 <= self.switch_every < self.generations or (
            self.switch_every and self.switch_intervals
        ):
            raise ConfigError(
                "switch_every",
                self.switch_every,
                f"0 (off), or in [1, generations ({self.generations})) without switch_intervals",
            )
        from selfref_ghn.envs import registered  # local: keeps config import-light

        if self.env_id not in registered():
            raise ConfigError("env_id", self.env_id, f"one of {registered()}")
        if self.switch or self.switch_options:
            from selfref_ghn.envs import check_switch

            problem = check_switch(self.env_id, self.env_kwargs, self.switch, self.switch_options)
            if problem:
                raise ConfigError(*problem)
        return self

    def _validate_reliability(self) -> None:
        """Rate bounds, checkpoints and the runaway monitor (docs/reliability.md)."""
        if not 0.0 <= self.rate_min <= 1.0:
            raise ConfigError("rate_min", self.rate_min, "must lie in [0, 1]")
        if not self.rate_min <= self.rate_max <= 1.0:
            raise ConfigError(
                "rate_max", self.rate_max, f"must lie in [rate_min ({self.rate_min}), 1]"
            )
        if self.checkpoint_every < 0:
            raise ConfigError(
                "checkpoint_every", self.checkpoint_every, "must be >= 0 (0: only at the end)"
            )
        if self.checkpoint_every > self.generations:
            raise ConfigError(
                "checkpoint_every",
                self.checkpoint_every,
                f"must not exceed generations ({self.generations})",
            )
        if self.keep_checkpoints < 1:
            raise ConfigError("keep_checkpoints", self.keep_checkpoints, "must be at least 1")
        if self.monitor not in MONITOR_POLICIES:
            raise ConfigError("monitor", self.monitor, f"one of {MONITOR_POLICIES}")
        if self.monitor_patience < 1:
            raise ConfigError("monitor_patience", self.monitor_patience, "must be at least 1")
        if self.monitor != "off" and self.monitor_patience > self.generations:
            raise ConfigError(
                "monitor_patience",
                self.monitor_patience,
                f"must not exceed generations ({self.generations}) when the monitor is on",
            )
        if not 0.0 <= self.monitor_rate_margin < 1.0:
            raise ConfigError(
                "monitor_rate_margin", self.monitor_rate_margin, "must lie in [0, 1)"
            )
        if self.monitor_diversity_min < 0:
            raise ConfigError("monitor_diversity_min", self.monitor_diversity_min, "must be >= 0")
        if not self.monitor_diversity_max > self.monitor_diversity_min:
            raise ConfigError(
                "monitor_diversity_max",
                self.monitor_diversity_max,
                f"must exceed monitor_diversity_min ({self.monitor_diversity_min})",
            )
        if not 0.0 < self.monitor_collapse <= 1.0:
            raise ConfigError("monitor_collapse", self.monitor_collapse, "must lie in (0, 1]")


def periodic_windows(every: int, generations: int) -> list[tuple[int, int]]:
    """The windows ``[k, 2k), [3k, 4k), ...`` of ``0..generations`` (the last one clipped);
    none for ``every <= 0``.

    Example:
        >>> periodic_windows(3, 10)
        [(3, 6), (9, 10)]
    """
    if every <= 0:
        return []
    return [(s, min(s + every, generations)) for s in range(every, generations, 2 * every)]


@struct.dataclass
class Hyperparams:
    """Traced hyperparameters, carried in the state (a sweep can vmap over them)."""

    child_factor: jnp.ndarray
    std_max: jnp.ndarray
    update_clip: jnp.ndarray
    noise_std: jnp.ndarray
    param_clip: jnp.ndarray
    fixed_rate: jnp.ndarray
    external_sigma: jnp.ndarray
    rate_min: jnp.ndarray
    rate_max: jnp.ndarray

    @classmethod
    def from_config(cls, cfg: Config) -> Hyperparams:
        return cls(**{f.name: jnp.float32(getattr(cfg, f.name)) for f in dataclasses.fields(cls)})


# ---------------------------------------------------------------------------------------------
def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(Config)
