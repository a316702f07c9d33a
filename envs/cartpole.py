"""CartPole-Switch: gymnax's CartPole-v1 whose controls can be inverted (DESIGN §3).

With ``params.inverted`` true, action 0 pushes the cart right and action 1 pushes it left;
everything else is gymnax's ``CartPole-v1`` (itself a port of Gymnasium's). The switch
schedule of a run sets ``inverted`` inside the compiled loop.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments.classic_control import cartpole as _gx


@struct.dataclass
class EnvParams(_gx.EnvParams):
    """gymnax CartPole parameters plus the ``inverted`` control switch."""

    inverted: bool | jax.Array = False


EnvState: TypeAlias = _gx.EnvState


class CartPoleSwitch(_gx.CartPole):
    """CartPole-v1 with invertible controls.

    Example:
        >>> env = CartPoleSwitch()
        >>> obs, state = env.reset(jax.random.key(0), env.default_params)
    """

    @property
    def default_params(self) -> EnvParams:
        return EnvParams()

    def step_env(
        self, key: jax.Array, state: EnvState, action: Any, params: EnvParams
    ) -> tuple[jax.Array, EnvState, jax.Array, jax.Array, dict[str, Any]]:
        action = jnp.asarray(action)
        action = jnp.where(params.inverted, 1 - action, action)
        return super().step_env(key, state, action, params)

    @property
    def name(self) -> str:
        return "CartPole-Switch"


def make_cartpole_switch(**kwargs: Any) -> tuple[CartPoleSwitch, EnvParams]:
    """``CartPole-Switch``: keyword arguments override fields of :class:`EnvParams`."""
    env = CartPoleSwitch()
    return env, env.default_params.replace(**kwargs)


def make_cartpole(**kwargs: Any) -> tuple[CartPoleSwitch, EnvParams]:
    """``CartPole-v1``: the same environment, never inverted unless a schedule says so."""
    return make_cartpole_switch(**kwargs)
