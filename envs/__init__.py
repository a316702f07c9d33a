"""JAX environments behind the gymnax contract, with switch variants (DESIGN §3).

Every environment here is a stateless ``gymnax`` ``Environment``: ``reset(key, params)`` and
``step(key, state, action, params)`` (gymnax 1.0's six return values), with everything that
varies, including whether the controls are inverted, held in an ``EnvParams`` pytree.

``make(env_id, **kwargs) -> (env, env_params)`` is the single entry point. Environments are
imported lazily, so ``import selfref_ghn.envs`` stays cheap and pulls in brax only when an
Ant variant or another brax id (``HalfCheetah``, ``Hopper``, ``Walker2d``) is asked for.
Besides the ids registered here, every id of gymnax's registry (``gymnax.registered_envs``:
classic control, bsuite, MinAtar, misc) is accepted, and ``make(env_id, switch=RULE)`` puts any
of them behind a switch rule of :mod:`selfref_ghn.envs.switch` (DESIGN §3b); the ``-Switch``
ids keep their own switch.

Example:
    >>> from selfref_ghn import envs
    >>> env, params = envs.make("CartPole-Switch")
    >>> params.inverted
    False
    >>> env, params = envs.make("Pendulum-v1", switch="negate_actions")
    >>> params.replace(inverted=True).inverted
    True
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from typing import Any

# env_id -> "module:factory"; the factory takes keyword arguments and returns (env, params).
_REGISTRY: dict[str, str] = {
    "CartPole-Switch": "selfref_ghn.envs.cartpole:make_cartpole_switch",
    "CartPole-v1": "selfref_ghn.envs.cartpole:make_cartpole",
    "LunarLander-v3": "selfref_ghn.envs.lunar_lander:make_lunar_lander",
    "LunarLander-Switch": "selfref_ghn.envs.lunar_lander:make_lunar_lander_switch",
    "Ant": "selfref_ghn.envs.ant:make_brax_ant",
    "Ant-v5": "selfref_ghn.envs.ant:make_ant_v5",
    "Ant-Switch": "selfref_ghn.envs.ant:make_ant_switch",
    "HalfCheetah": "selfref_ghn.envs.brax_envs:make_halfcheetah",
    "Hopper": "selfref_ghn.envs.brax_envs:make_hopper",
    "Walker2d": "selfref_ghn.envs.brax_envs:make_walker2d",
    "Breakout-MinAtar": "selfref_ghn.envs.minatar:make_breakout",
    "Breakout-MinAtar-Switch": "selfref_ghn.envs.minatar:make_breakout",
    "Asterix-MinAtar": "selfref_ghn.envs.minatar:make_asterix",
    "Asterix-MinAtar-Switch": "selfref_ghn.envs.minatar:make_asterix",
    "Freeway-MinAtar": "selfref_ghn.envs.minatar:make_freeway",
    "Freeway-MinAtar-Switch": "selfref_ghn.envs.minatar:make_freeway",
    "SpaceInvaders-MinAtar": "selfref_ghn.envs.minatar:make_space_invaders",
    "SpaceInvaders-MinAtar-Switch": "selfref_ghn.envs.minatar:make_space_invaders",
}


def gymnax_ids() -> list[str]:
    """The ids of gymnax's own registry that are not registered here (made by gymnax)."""
    import gymnax

    return [e for e in gymnax.registered_envs if e not in _REGISTRY]


def registered() -> list[str]:
    """Names accepted by :func:`make`: the ids registered here and gymnax's."""
    return sorted({*_REGISTRY, *gymnax_ids()})


def factory(env_id: str) -> Callable[..., tuple[Any, Any]]:
    """The function :func:`make` calls for ``env_id`` (its signature lists the options).

    Raises:
        ValueError: for an unknown ``env_id``.
    """
    if env_id in _REGISTRY:
        module_name, name = _REGISTRY[env_id].split(":")
        return getattr(importlib.import_module(module_name), name)
    if env_id in gymnax_ids():
        return functools.partial(_make_gymnax, env_id)
    raise ValueError(f"unknown environment {env_id!r}; registered: {', '.join(registered())}")


def make(
    env_id: str,
    switch: str | Any = "",
    switch_options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> tuple[Any, Any]:
    """Create an environment and its default parameters.

    Args:
        env_id: a registered name (see :func:`registered`).
        switch: a switch rule (a name of :data:`selfref_ghn.envs.switch.RULES` or a rule
            object); ``""``: the environment as registered (a ``-Switch`` id's own switch).
        switch_options: the rule's options, e.g. ``{"perm": [2, 0, 1]}``.
        **kwargs: environment options, e.g. ``continuous=True`` for LunarLander; for a gymnax
            id, fields of its ``EnvParams`` (overrides) and its constructor's options.

    Returns:
        ``(env, env_params)``: the stateless environment and its ``EnvParams`` pytree (with a
        rule, :class:`~selfref_ghn.envs.switch.SwitchParams`, not switched).

    Raises:
        ValueError: an unknown ``env_id`` or rule, or a rule that does not fit the env.

    Example:
        >>> env, params = make("Acrobot-v1", switch="reverse_actions")
        >>> env.name
        'Acrobot-v1[reverse_actions]'
    """
    env, params = factory(env_id)(**kwargs)
    if not switch:
        if switch_options:
            raise ValueError("switch_options without a switch rule")
        return env, params
    from selfref_ghn.envs import switch as switch_rules

    return switch_rules.wrap(env, params, switch, switch_options)


def check_switch(
    env_id: str, env_kwargs: Any, switch: str, options: Any
) -> tuple[str, Any, str] | None:
    """What is wrong with a run configuration's switch rule, before anything compiles.

    Args:
        env_id, env_kwargs: the run's environment (``env_kwargs`` a mapping or pairs).
        switch, options: the rule's name and options (a mapping or pairs).

    Returns:
        ``None``, or ``(field, value, message)`` for a :class:`~selfref_ghn.config.ConfigError`.
        Bad ``env_kwargs`` are left to the environment's own check.
    """
    from selfref_ghn.envs import switch as switch_rules

    options = dict(options)
    if not switch:
        return ("switch_options", options, "options of a switch rule: set 'switch' too")
    try:
        r = switch_rules.rule(switch, options)
    except ValueError as e:
        return ("switch", switch, str(e))
    try:
        env, params = make(env_id, **dict(env_kwargs))
    except (TypeError, ValueError):
        env, params = make(env_id)
    try:
        r.check(env, params)
    except ValueError as e:
        return ("switch", switch, str(e))
    return None


def _make_gymnax(env_id: str, **kwargs: Any) -> tuple[Any, Any]:
    """A gymnax id: keywords naming fields of its params override them, the rest go to its
    constructor."""
    import dataclasses

    import gymnax

    env, _ = gymnax.make(env_id)
    params = env.default_params
    fields = {f.name for f in dataclasses.fields(params)}
    options = {k: v for k, v in kwargs.items() if k not in fields}
    if options:
        env, _ = gymnax.make(env_id, **options)
        params = env.default_params
    return env, params.replace(**{k: v for k, v in kwargs.items() if k in fields})


__all__ = ["check_switch", "factory", "gymnax_ids", "make", "registered"]
