"""LunarLander's controller helpers: Gymnasium's heuristic pilot and the mirror symmetry.

Part of the LunarLander-Switch port (DESIGN §3, :mod:`selfref_ghn.envs.lunar_lander`): pure
functions of the 8-dimensional observation, outside the environment (and the decoding of an
action into engine powers, and the wind). :func:`heuristic_action`
is Gymnasium's ``heuristic(env, s)`` controller (the reference pilot of the tests);
:func:`mirror_observation` is the observation seen in a mirror at the helipad's centre, under
which the swapped side engines of ``inverted`` become the original ones.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp


def wind(idx: jax.Array, power: float | jax.Array) -> jax.Array:
    """Gymnasium's wind (or turbulence) magnitude at phase index ``idx``."""
    idx = idx.astype(jnp.float32)
    return jnp.tanh(jnp.sin(0.02 * idx) + jnp.sin(math.pi * 0.01 * idx)) * power


def engines(action: Any, inverted: Any, continuous: bool):
    """Main and side engine powers and the side direction of an action (Gymnasium's dead
    zones; ``inverted`` swaps the side engines)."""
    if continuous:
        act = jnp.clip(jnp.asarray(action, jnp.float32), -1.0, 1.0)
        lateral = jnp.where(inverted, -act[1], act[1])
        m_power = jnp.where(act[0] > 0.0, (jnp.clip(act[0], 0.0, 1.0) + 1.0) * 0.5, 0.0)
        side_on = jnp.abs(lateral) > 0.5
        s_power = jnp.where(side_on, jnp.clip(jnp.abs(lateral), 0.5, 1.0), 0.0)
        direction = jnp.sign(lateral)
    else:
        act = jnp.asarray(action, jnp.int32)
        act = jnp.where(inverted, jnp.where(act == 1, 3, jnp.where(act == 3, 1, act)), act)
        m_power = jnp.where(act == 2, 1.0, 0.0)
        s_power = jnp.where((act == 1) | (act == 3), 1.0, 0.0)
        direction = (act - 2).astype(jnp.float32)
    return m_power.astype(jnp.float32), s_power.astype(jnp.float32), direction


def mirror_observation(obs: jax.Array) -> jax.Array:
    """The observation of the lander seen in a mirror at ``x = 0`` (the helipad's centre).

    Horizontal position and velocity, angle and angular velocity change sign, and the two leg
    contacts trade places; height and vertical velocity stay as they are. The scene is mirror
    symmetric: the hull, the legs and their joints, the engines, and the terrain's
    distribution. With the side engines swapped (``inverted``), the best controller is
    therefore the old one looking at the mirror image, ``policy(mirror_observation(obs))``.

    Args:
        obs: [..., 8] observations.

    Returns:
        The mirrored observations, same shape.

    Example:
        >>> o = jnp.array([0.1, 1.0, 0.2, -0.3, 0.05, -0.01, 1.0, 0.0])
        >>> [round(v, 3) for v in mirror_observation(o).tolist()]
        [-0.1, 1.0, -0.2, -0.3, -0.05, 0.01, 0.0, 1.0]
    """
    obs = jnp.asarray(obs)
    sign = jnp.array([-1.0, 1.0, -1.0, 1.0, -1.0, -1.0, 1.0, 1.0], obs.dtype)
    return (obs * sign)[..., jnp.array([0, 1, 2, 3, 4, 5, 7, 6])]


def heuristic_action(obs: jax.Array, continuous: bool = False) -> jax.Array:
    """Gymnasium's ``heuristic(env, s)`` lander controller, in JAX.

    Args:
        obs: [8] observation.
        continuous: return a continuous ``[main, lateral]`` action instead of a discrete one.

    Returns:
        An int32 action in ``{0, 1, 2, 3}`` or a float32 [2] action in [-1, 1].
    """
    s = obs
    angle_targ = jnp.clip(s[0] * 0.5 + s[2] * 1.0, -0.4, 0.4)
    hover_targ = 0.55 * jnp.abs(s[0])
    angle_todo = (angle_targ - s[4]) * 0.5 - s[5] * 1.0
    hover_todo = (hover_targ - s[1]) * 0.5 - s[3] * 0.5
    legs = (s[6] != 0) | (s[7] != 0)
    angle_todo = jnp.where(legs, 0.0, angle_todo)
    hover_todo = jnp.where(legs, -s[3] * 0.5, hover_todo)
    if continuous:
        return jnp.clip(jnp.stack([hover_todo * 20 - 1, -angle_todo * 20]), -1.0, 1.0)
    return jnp.where(
        (hover_todo > jnp.abs(angle_todo)) & (hover_todo > 0.05),
        2,
        jnp.where(angle_todo < -0.05, 3, jnp.where(angle_todo > 0.05, 1, 0)),
    ).astype(jnp.int32)
