"""What every Ant shares: its parameters, the gymnax plumbing, the switch and the HTML viewer.

Part of the Ant environments (DESIGN §3, :mod:`selfref_ghn.envs.ant`): :class:`EnvParams`
(episode length and ``inverted``, the fields of every Ant's parameters), the base class of brax's
``ant`` and Ant-v5 (identity from the static configuration, action and observation spaces,
rendering), Ant-Switch's action negation, the split of a factory's keyword arguments into
parameters and constructor arguments, and brax's HTML viewer of a trajectory posed by MuJoCo's
forward kinematics (:func:`body_poses`, :func:`html_viewer`). The environments themselves and
their factories live in ``ant``, which re-exports the public names.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces


@struct.dataclass
class EnvParams(environment.EnvParams):
    """Parameters shared by every Ant: episode length and the control switch."""

    max_steps_in_episode: int = 1000
    inverted: bool | jax.Array = False


@struct.dataclass
class _Pose:
    """The one field of a brax ``State`` that brax's HTML viewer reads: link poses."""

    x: Any


def body_poses(mj_model: mujoco.MjModel, qpos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World positions and quaternions of every body along a trajectory (MuJoCo, on the host).

    Args:
        mj_model: the MuJoCo model.
        qpos: ``(T, nq)`` generalized positions.

    Returns:
        ``(xpos, xquat)``: ``(T, nbody, 3)`` and ``(T, nbody, 4)``, body 0 being the world.
    """
    data = mujoco.MjData(mj_model)
    xpos, xquat = [], []
    for q in np.asarray(qpos, np.float64):
        data.qpos[:] = q
        mujoco.mj_kinematics(mj_model, data)
        xpos.append(data.xpos.copy())
        xquat.append(data.xquat.copy())
    return np.stack(xpos), np.stack(xquat)


def html_viewer(
    mj_model: mujoco.MjModel, qpos: np.ndarray, dt: float, height: int | str = 480
) -> str:
    """brax's HTML viewer (``brax.io.html.render``) of a trajectory of generalized positions.

    Body poses come from MuJoCo's forward kinematics at each row of ``qpos``; the page plays
    one frame every ``dt`` seconds. brax's page loads its viewer scripts (three.js and brax's
    ``viewer.js``) from public CDNs: it needs a network connection to display, not to write.

    Args:
        mj_model: the MuJoCo model (``env.mj_model``).
        qpos: ``(T, nq)`` positions, one row per frame.
        dt: seconds between frames (``env.dt``).
        height: viewer height (pixels, or a CSS length).

    Returns:
        The HTML page as a string.
    """
    from brax import base
    from brax.io import html, mjcf

    xpos, xquat = body_poses(mj_model, qpos)
    sys = mjcf.load_model(mj_model).tree_replace({"opt.timestep": dt})
    states = [
        _Pose(base.Transform(pos=jnp.asarray(p[1:]), rot=jnp.asarray(q[1:])))
        for p, q in zip(xpos, xquat, strict=True)
    ]
    return html.render(sys, states, height=height, colab=False)


def _negate_if(inverted: bool | jax.Array, action: jax.Array) -> jax.Array:
    """Ant-Switch: the action, negated while ``inverted``."""
    return jnp.where(inverted, -action, action)


def _split(overrides: dict[str, Any], params_cls: type) -> tuple[dict, dict]:
    """Split keyword arguments into ``EnvParams`` fields and constructor arguments."""
    fields = {f.name for f in dataclasses.fields(params_cls)}
    params = {k: v for k, v in overrides.items() if k in fields}
    static = {k: v for k, v in overrides.items() if k not in fields}
    return params, static


class _Ant(environment.Environment):
    """Shared plumbing: value identity from the static config, spaces."""

    _config: tuple

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._config == other._config

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._config))

    def action_space(self, params: EnvParams | None = None) -> spaces.Box:
        """Eight hinge torques in ``[-1, 1]``."""
        return spaces.Box(-1.0, 1.0, (8,), jnp.float32)

    def observation_space(self, params: EnvParams | None = None) -> spaces.Box:
        """Unbounded box of :attr:`obs_size` floats."""
        return spaces.Box(-jnp.inf, jnp.inf, (self.obs_size,), jnp.float32)

    @property
    def num_actions(self) -> int:
        return 8

    def qpos(self, state: Any) -> jax.Array:
        """The state's generalized positions ``(nq,)``: what a renderer needs to pose the ant."""
        raise NotImplementedError

    def render_html(self, qpos: np.ndarray, height: int | str = 480) -> str:
        """brax's HTML viewer of a trajectory of this ant (see :func:`html_viewer`)."""
        return html_viewer(self.mj_model, qpos, self.dt, height)

    @property
    def obs_size(self) -> int:
        raise NotImplementedError
