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
}


def registered() -> list[str]:
    """Names accepted by :func:`make`."""
    return sorted(_REGISTRY)


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
    if env_id not in _REGISTRY:
        raise ValueError(f"unknown environment {env_id!r}; registered: {', '.join(registered())}")
    module_name, factory = _REGISTRY[env_id].split(":")
    module = importlib.import_module(module_name)
    return getattr(module, factory)(**kwargs)


def compiler_options(env: Any) -> dict[str, Any]:
    """XLA options for the programs that step ``env`` on the CPU: pass them to ``jax.jit``.

    An environment may declare a ``cpu_compiler_options`` dict (LunarLander does: see
    docs/envs/lunar_lander.md); it is returned when JAX's default backend is the CPU, and an
    empty dict otherwise or for environments that declare none. Every compiled program of this
    library that steps an environment passes them on; a program of your own can do the same::

        step = jax.jit(jax.vmap(env.step), compiler_options=envs.compiler_options(env))

    Args:
        env: an environment made by :func:`make`.

    Returns:
        A new dict of XLA option names and values.
    """
    import jax

    options = getattr(env, "cpu_compiler_options", None) or {}
    return dict(options) if jax.default_backend() == "cpu" else {}


__all__ = ["compiler_options", "make", "registered"]
