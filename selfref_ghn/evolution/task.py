"""The task of a run: environment, its parameters, the policy and the switch schedule.

:class:`~selfref_ghn.evolution.generation.Evolution` (SR-GHN) and
:class:`~selfref_ghn.evolution.baselines.BaselineEvolution` (evosax) resolve the same arguments
the same
way, so that a comparison runs every method on exactly the same task.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable
from typing import Any, cast

import flax.linen as nn

from selfref_ghn import envs as envs_registry
from selfref_ghn.config import Config, ConfigError
from selfref_ghn.envs import switch as switch_rules
from selfref_ghn.evolution.schedule import SwitchSchedule
from selfref_ghn.model.graph import graph_of
from selfref_ghn.model.policy import (
    ConvPolicy,
    MLPPolicy,
    action_fn_for,
    conv_output_shape,
    policy_template,
)
from selfref_ghn.types import Array, Params


@dataclasses.dataclass(frozen=True)
class Task:
    """Static pieces shared by every method of a run.

    Attributes:
        env, env_params: a gymnax-contract environment and its parameters.
        policy: the flax module whose parameters are evolved (or generated).
        policy_fn: ``(params, obs) -> action``: the module followed by the action mapping
            (the default MLP on image observations gets them flattened).
        obs_shape: the shape of the policy's input: the observation's, flattened for the
            default MLP on image observations (a :class:`ConvPolicy` gets the image).
        schedule: the switch schedule from ``config.switch_intervals`` (or
            ``config.switch_every``).
    """

    env: Any
    env_params: Any
    policy: nn.Module
    policy_fn: Callable[[Params, Array], Array]
    obs_shape: tuple[int, ...]
    schedule: SwitchSchedule


def make_task(
    config: Config,
    env: Any = None,
    env_params: Any = None,
    policy: nn.Module | None = None,
    action_fn: Callable[[Array], Array] | None = None,
) -> Task:
    """Resolve a run's environment and policy from ``config`` and the caller's overrides.

    Args:
        config: a validated run configuration.
        env, env_params: a gymnax-contract environment; default ``envs.make(config.env_id)``
            with ``config.env_kwargs``, behind the rule ``config.switch`` when it is set
            (given ``env_params`` are then the unwrapped env's).
        policy: any flax module mapping an observation to outputs; default a
            :class:`ConvPolicy` with ``config.policy_conv`` and ``config.policy_hidden`` when
            ``policy_conv`` is set, else an :class:`MLPPolicy` with ``config.policy_hidden``.
        action_fn: outputs -> action; default chosen from the action space (argmax, or tanh
            rescaled to the box).

    Raises:
        ConfigError: a switch rule that does not fit the environment (field ``switch``); a
            switch schedule for an environment that cannot be switched;
            ``policy_conv`` for observations that are not ``(H, W, C)`` images or too small
            for its layers; ``obs_norm`` for image observations; ``policy`` for a policy whose
            parameters have no forward order (:mod:`selfref_ghn.model.graph`).
    """
    if env is None:
        env, default_params = _make_env(config.env_id, dict(config.env_kwargs))
        env_params = default_params if env_params is None else env_params
        if config.switch:
            env, env_params = _wrap(config, env, env_params)
    elif env_params is None:
        env_params = env.default_params
    intervals = config.switch_windows
    if intervals and not hasattr(env_params, "inverted"):
        field = "switch_intervals" if config.switch_intervals else "switch_every"
        raise ConfigError(
            field,
            getattr(config, field) if config.switch_every else [list(iv) for iv in intervals],
            "this environment's params have no 'inverted' field to switch: set a switch rule "
            f"(field 'switch', one of {sorted(switch_rules.RULES)})",
        )
    num_outputs, default_action_fn = action_fn_for(env.action_space(env_params))
    act = action_fn or default_action_fn
    env_obs_shape = tuple(env.observation_space(env_params).shape)
    _check_observations(config, env_obs_shape)
    flatten = policy is None and not config.policy_conv and len(env_obs_shape) > 1
    scales: dict[str, Any] = dict(
        fan_in_scale=config.policy_fan_in_scale, output_scale=config.policy_output_scale
    )
    if policy is None and config.policy_conv:
        policy = ConvPolicy(config.policy_conv, config.policy_hidden, num_outputs, **scales)
    elif policy is None:
        policy = MLPPolicy(hidden=config.policy_hidden, num_outputs=num_outputs, **scales)
    obs_shape = (math.prod(env_obs_shape),) if flatten else env_obs_shape
    graph_of(policy_template(policy, obs_shape), strict=True)  # orderable, or a ConfigError

    def policy_fn(params: Params, obs: Array) -> Array:
        out = policy.apply({"params": params}, obs.reshape(-1) if flatten else obs)
        return act(cast(Array, out))  # one output: no mutable collections

    return Task(
        env=env,
        env_params=env_params,
        policy=policy,
        policy_fn=policy_fn,
        obs_shape=obs_shape,
        schedule=SwitchSchedule.from_intervals(intervals),
    )


def _wrap(config: Config, env: Any, env_params: Any) -> tuple[Any, Any]:
    """``env`` behind ``config.switch``; a rule that does not fit is a :class:`ConfigError`."""
    try:
        return switch_rules.wrap(env, env_params, config.switch, dict(config.switch_options))
    except ValueError as e:
        raise ConfigError("switch", config.switch, str(e)) from None


def _check_observations(config: Config, obs_shape: tuple[int, ...]) -> None:
    """``policy_conv`` needs ``(H, W, C)`` images large enough for its layers; ``obs_norm``
    needs flat observations (:class:`ConfigError` naming the field)."""
    if config.policy_conv:
        conv = [list(c) for c in config.policy_conv]
        if len(obs_shape) != 3:
            raise ConfigError(
                "policy_conv",
                conv,
                f"needs (H, W, C) image observations; {config.env_id} gives shape {obs_shape}",
            )
        if min(conv_output_shape(obs_shape, config.policy_conv)[:2]) < 1:
            raise ConfigError(
                "policy_conv", conv, f"its layers do not fit {config.env_id}'s {obs_shape} images"
            )
    if config.obs_norm and len(obs_shape) > 1:
        raise ConfigError(
            "obs_norm",
            True,
            f"normalises flat observations only; {config.env_id} gives {obs_shape} images "
            "(MinAtar's are 0/1 already): set obs_norm=false",
        )


def env_keywords(env_id: str) -> tuple[list[str], bool]:
    """The keywords ``config.env_kwargs`` may hold for ``env_id``: the factory's own options,
    the fields of its ``EnvParams`` (which the factories take as overrides) and the options
    of the environment's constructor (to which some factories pass the rest).

    Returns:
        ``(names, more)``: ``more`` is true when the constructor takes any keyword (brax's Ant
        passes them on to brax), so that names outside the list may be accepted too.

    Example:
        >>> names, more = env_keywords("LunarLander-v3")
        >>> "continuous" in names, more
        (True, False)
    """
    env, params = envs_registry.make(env_id)
    names: set[str] = set()
    more = False
    for fn in (envs_registry.factory(env_id), type(env)):
        for p in inspect.signature(fn).parameters.values():
            if p.kind == p.VAR_KEYWORD:
                more = more or fn is type(env)
            elif p.kind != p.VAR_POSITIONAL and p.name != "self":
                names.add(p.name)
    if dataclasses.is_dataclass(params):
        names.update(f.name for f in dataclasses.fields(params))
    return sorted(names), more


def _make_env(env_id: str, kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """``envs.make`` with ``config.env_kwargs``; a keyword the environment does not take is a
    :class:`ConfigError` naming it and the keywords it accepts."""
    if not kwargs:
        return envs_registry.make(env_id)
    accepted, more = env_keywords(env_id)
    unknown = sorted(k for k in kwargs if k not in accepted)
    if unknown and not more:
        raise ConfigError(
            "env_kwargs",
            {k: kwargs[k] for k in unknown},
            f"unknown keyword for {env_id}; it accepts: {', '.join(accepted)}",
        )
    try:
        return envs_registry.make(env_id, **kwargs)
    except TypeError as e:
        raise ConfigError(
            "env_kwargs", kwargs, f"refused by {env_id} ({e}); it accepts: {', '.join(accepted)}"
        ) from None
