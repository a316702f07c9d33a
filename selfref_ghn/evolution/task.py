"""The task of a run: environment, its parameters, the policy and the switch schedule.

:class:`~selfref_ghn.evolution.generation.Evolution` (SR-GHN) and
:class:`~selfref_ghn.evolution.baselines.BaselineEvolution` (evosax) resolve the same arguments
the same
way, so that a comparison runs every method on exactly the same task.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import flax.linen as nn

from selfref_ghn import envs as envs_registry
from selfref_ghn.config import Config, ConfigError
from selfref_ghn.evolution.schedule import SwitchSchedule
from selfref_ghn.model.policy import MLPPolicy, action_fn_for
from selfref_ghn.types import Array, Params


@dataclasses.dataclass(frozen=True)
class Task:
    """Static pieces shared by every method of a run.

    Attributes:
        env, env_params: a gymnax-contract environment and its parameters.
        policy: the flax module whose parameters are evolved (or generated).
        policy_fn: ``(params, obs) -> action``: the module followed by the action mapping.
        obs_shape: the observation's shape.
        schedule: the switch schedule from ``config.switch_intervals``.
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
        env, env_params: a gymnax-contract environment; default ``envs.make(config.env_id)``.
        policy: any flax module mapping an observation to outputs; default an
            :class:`MLPPolicy` with ``config.policy_hidden``.
        action_fn: outputs -> action; default chosen from the action space (argmax, or tanh
            rescaled to the box).

    Raises:
        ConfigError: a switch schedule for an environment that cannot be switched.
    """
    if env is None:
        env, default_params = _make_env(config.env_id, dict(config.env_kwargs))
        env_params = default_params if env_params is None else env_params
    elif env_params is None:
        env_params = env.default_params
    if config.switch_intervals and not hasattr(env_params, "inverted"):
        raise ConfigError(
            "switch_intervals",
            [list(iv) for iv in config.switch_intervals],
            "this environment's params have no 'inverted' field to switch",
        )
    num_outputs, default_action_fn = action_fn_for(env.action_space(env_params))
    act = action_fn or default_action_fn
    policy = policy or MLPPolicy(
        hidden=config.policy_hidden,
        num_outputs=num_outputs,
        fan_in_scale=config.policy_fan_in_scale,
        output_scale=config.policy_output_scale,
    )

    def policy_fn(params: Params, obs: Array) -> Array:
        return act(policy.apply({"params": params}, obs))

    return Task(
        env=env,
        env_params=env_params,
        policy=policy,
        policy_fn=policy_fn,
        obs_shape=tuple(env.observation_space(env_params).shape),
        schedule=SwitchSchedule.from_intervals(config.switch_intervals),
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
