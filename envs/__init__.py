"""JAX environments behind the gymnax contract, with switch variants (DESIGN §3).

Every environment here is a stateless ``gymnax`` ``Environment``: ``reset(key, params)`` and
``step(key, state, action, params)`` (gymnax 1.0's six return values), with everything that
varies, including whether the controls are inverted, held in an ``EnvParams`` pytree.

``make(env_id, **kwargs) -> (env, env_params)`` is the single entry point. Environments are
imported lazily, so ``import selfref_ghn.envs`` stays cheap and pulls in brax only when an
Ant variant is asked for.

Example:
    >>> from selfref_ghn import envs
    >>> env, params = envs.make("CartPole-Switch")
    >>> params.inverted
    False
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
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
    "Breakout-MinAtar": "selfref_ghn.envs.minatar:make_breakout",
    "Breakout-MinAtar-Switch": "selfref_ghn.envs.minatar:make_breakout",
    "Asterix-MinAtar": "selfref_ghn.envs.minatar:make_asterix",
    "Asterix-MinAtar-Switch": "selfref_ghn.envs.minatar:make_asterix",
    "Freeway-MinAtar": "selfref_ghn.envs.minatar:make_freeway",
    "Freeway-MinAtar-Switch": "selfref_ghn.envs.minatar:make_freeway",
    "SpaceInvaders-MinAtar": "selfref_ghn.envs.minatar:make_space_invaders",
    "SpaceInvaders-MinAtar-Switch": "selfref_ghn.envs.minatar:make_space_invaders",
}


def registered() -> list[str]:
    """Names accepted by :func:`make`."""
    return sorted(_REGISTRY)


def factory(env_id: str) -> Callable[..., tuple[Any, Any]]:
    """The function :func:`make` calls for ``env_id`` (its signature lists the options).

    Raises:
        ValueError: for an unknown ``env_id``.
    """
    if env_id not in _REGISTRY:
        raise ValueError(f"unknown environment {env_id!r}; registered: {', '.join(registered())}")
    module_name, name = _REGISTRY[env_id].split(":")
    return getattr(importlib.import_module(module_name), name)


def make(env_id: str, **kwargs: Any) -> tuple[Any, Any]:
    """Create an environment and its default parameters.

    Args:
        env_id: a registered name (see :func:`registered`).
        **kwargs: environment options, e.g. ``continuous=True`` for LunarLander.

    Returns:
        ``(env, env_params)``: the stateless environment and its ``EnvParams`` pytree.

    Raises:
        ValueError: for an unknown ``env_id``.
    """
    return factory(env_id)(**kwargs)


__all__ = ["factory", "make", "registered"]
