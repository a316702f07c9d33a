"""Ant environments behind the gymnax contract: brax ``ant``, Ant-v5 and Ant-Switch (DESIGN §3).

Three factories, all returning ``(env, params)``:

- :func:`make_brax_ant` wraps brax's ``ant`` (any of its four physics backends) as a gymnax
  ``Environment``. Reward, observation and termination are brax's.
- :func:`make_ant_v5` is Gymnasium's ``Ant-v5``: Gymnasium's own ``ant.xml`` (read from the
  installed ``gymnasium`` package), its reward terms, reset noise, health check and
  observation, simulated with MJX. By default MJX is driven through a MuJoCo-consistent step
  (:mod:`selfref_ghn.envs._ant_mjx`) that matches the MuJoCo 4.0 engine Gymnasium uses;
  ``physics="brax"`` uses brax's MJX pipeline (``brax.mjx.pipeline.step``) unchanged instead.
  The observation leaves out ``cfrc_ext`` by default (27 numbers, Gymnasium's
  ``include_cfrc_ext_in_observation=False``); the contact cost is computed from MJX's
  ``cfrc_ext`` as Gymnasium computes it.
- :func:`make_ant_switch` is the same Ant-v5 whose actions are negated while
  ``params.inverted`` is true; a switch schedule sets that field inside the compiled loop.

Static choices (backend, model file, observation layout) are constructor arguments and make
up the environment's identity (equal configurations compare and hash equal, so they share
compiled code); everything that may vary (reward weights, ranges, ``inverted``) lives in the
``EnvParams`` pytree. ``reset_from(qpos, qvel, params)`` starts an episode from an explicit
state, e.g. the state of a Gymnasium environment. What the Ants share (``EnvParams``, the
gymnax plumbing, the switch, the HTML viewer) is in :mod:`selfref_ghn.envs._ant_base`, its public
names importable from here.

Example:
    >>> env, params = make_ant_v5()
    >>> obs, state = env.reset(jax.random.key(0), params)
    >>> obs.shape
    (27,)
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from flax import struct
from gymnax.environments import environment
from jax.typing import ArrayLike
from mujoco import mjx
from selfref_ghn.envs import _ant_mjx

# relative: the API docs load this folder as ``envs``, where ``selfref_ghn.envs`` is unknown
from ._ant_base import EnvParams, _Ant, _negate_if, _split, body_poses, html_viewer
from .brax_envs import BRAX_BACKENDS, DEFAULT_BACKEND, BraxEnv, BraxState

# Default brax backend: see docs/envs/ant.md for the measurements behind this choice.
DEFAULT_BRAX_BACKEND = DEFAULT_BACKEND["ant"]
BraxAntState = BraxState
PHYSICS = ("mujoco", "brax")


@struct.dataclass
class AntV5Params(EnvParams):
    """Gymnasium Ant-v5's reward, termination and reset arguments (same names and defaults)."""

    forward_reward_weight: float | jax.Array = 1.0
    ctrl_cost_weight: float | jax.Array = 0.5
    contact_cost_weight: float | jax.Array = 5e-4
    healthy_reward: float | jax.Array = 1.0
    terminate_when_unhealthy: bool | jax.Array = True
    healthy_z_range: tuple[float, float] = (0.2, 1.0)
    contact_force_range: tuple[float, float] = (-1.0, 1.0)
    reset_noise_scale: float | jax.Array = 0.1


@struct.dataclass
class AntV5State(environment.EnvState):
    """Step count and the full MJX ``Data`` (``xpos`` is kept for the forward reward)."""

    data: Any


class BraxAnt(BraxEnv):
    """brax's ``ant`` as a gymnax environment, with invertible controls.

    The generic brax adapter (:class:`~selfref_ghn.envs.brax_envs.BraxEnv`) on task ``ant``.

    Args:
        backend: brax physics backend, one of ``spring``, ``positional``, ``generalized``,
            ``mjx``.
        **brax_kwargs: passed to ``brax.envs.get_environment("ant", ...)`` (e.g.
            ``ctrl_cost_weight``); they are static and part of the environment's identity.

    Example:
        >>> env = BraxAnt("generalized")
        >>> obs, state = env.reset(jax.random.key(0), env.default_params)
    """

    def __init__(self, backend: str = DEFAULT_BRAX_BACKEND, **brax_kwargs: Any):
        super().__init__("ant", backend, **brax_kwargs)


def gymnasium_ant_xml() -> str:
    """Path of ``ant.xml`` inside the installed Gymnasium package (Ant-v5's model)."""
    import gymnasium

    return os.path.join(os.path.dirname(gymnasium.__file__), "envs", "mujoco", "assets", "ant.xml")


class AntV5(_Ant):
    """Gymnasium's Ant-v5 on MJX, with invertible controls (Ant-Switch).

    Args:
        xml_file: MuJoCo model; ``None`` is Gymnasium's installed ``ant.xml``.
        frame_skip: physics steps per environment step (Gymnasium: 5).
        main_body: body (id or name) whose x-y displacement gives the forward reward.
        exclude_current_positions_from_observation: drop torso x, y from the observation.
        include_cfrc_ext_in_observation: append the clipped ``cfrc_ext`` of bodies 1.. (78
            numbers), as Gymnasium's default does. Off by default here (27-dim observation).
        physics: ``"mujoco"`` (MJX driven to match MuJoCo 4.0, see :mod:`._ant_mjx`) or
            ``"brax"`` (brax's MJX pipeline, ``mjx.step`` unchanged).
        solver_iterations: override ``<option iterations>`` (Gymnasium's model: 100).
        ls_iterations: override ``<option ls_iterations>`` (Gymnasium's model: 50).

    Example:
        >>> env = AntV5()
        >>> obs, state = env.reset(jax.random.key(0), env.default_params)
        >>> obs, state, reward, terminated, truncated, info = env.step(
        ...     jax.random.key(1), state, jnp.zeros(8), env.default_params)
    """

    def __init__(
        self,
        xml_file: str | None = None,
        frame_skip: int = 5,
        main_body: int | str = 1,
        exclude_current_positions_from_observation: bool = True,
        include_cfrc_ext_in_observation: bool = False,
        physics: str = "mujoco",
        solver_iterations: int | None = None,
        ls_iterations: int | None = None,
    ):
        super().__init__()
        if physics not in PHYSICS:
            raise ValueError(f"physics must be one of {PHYSICS}, got {physics!r}")
        xml_file = gymnasium_ant_xml() if xml_file is None else xml_file
        self._config = (
            xml_file,
            frame_skip,
            main_body,
            exclude_current_positions_from_observation,
            include_cfrc_ext_in_observation,
            physics,
            solver_iterations,
            ls_iterations,
        )
        mj_model = mujoco.MjModel.from_xml_path(xml_file)
        if solver_iterations is not None:
            mj_model.opt.iterations = solver_iterations
        if ls_iterations is not None:
            mj_model.opt.ls_iterations = ls_iterations
        self.mj_model = mj_model
        self.physics = physics
        self.frame_skip = frame_skip
        self.exclude_current_positions = exclude_current_positions_from_observation
        self.include_cfrc_ext = include_cfrc_ext_in_observation
        if isinstance(main_body, str):
            main_body = mujoco.mj_name2id(mj_model, mujoco.mjtObj.mjOBJ_BODY, main_body)
        self.main_body = int(main_body)
        self._rot_dofs = _ant_mjx.rotation_dofs(mj_model)
        self._init_qpos = np.array(mj_model.qpos0)
        self._init_qvel = np.zeros(mj_model.nv)
        if physics == "brax":
            from brax.io import mjcf

            self._model = mjcf.load_model(mj_model)
        else:
            self._model = mjx.put_model(mj_model)

    @property
    def default_params(self) -> AntV5Params:
        return AntV5Params()

    @property
    def name(self) -> str:
        return "Ant-v5"

    @property
    def dt(self) -> float:
        """Seconds of simulated time per environment step (Gymnasium: 0.05)."""
        return float(self.mj_model.opt.timestep) * self.frame_skip

    @property
    def obs_size(self) -> int:
        n = self.mj_model.nq + self.mj_model.nv - 2 * self.exclude_current_positions
        return n + 6 * (self.mj_model.nbody - 1) * self.include_cfrc_ext

    def qpos(self, state: AntV5State) -> jax.Array:
        return state.data.qpos

    def _init_data(self, qpos: jax.Array, qvel: jax.Array) -> Any:
        """Fresh data at ``(qpos, qvel)`` (Gymnasium's ``set_state``, see ``_ant_mjx``)."""
        if self.physics == "brax":
            from brax.mjx import pipeline

            return pipeline.init(self._model, qpos, qvel).replace(qpos=qpos)
        return _ant_mjx.set_state(self._model, qpos, qvel)

    def _physics_step(self, d: Any, ctrl: jax.Array) -> Any:
        """``frame_skip`` substeps at constant ``ctrl``, then ``mj_rnePostConstraint``."""
        if self.physics == "brax":
            from brax.mjx import pipeline

            substep = lambda d, _: (pipeline.step(self._model, d, ctrl), None)
        else:
            rot = self._rot_dofs
            substep = lambda d, _: (_ant_mjx.step(self._model, d.replace(ctrl=ctrl), rot), None)
        d, _ = jax.lax.scan(substep, d, None, length=self.frame_skip)
        return mjx.rne_postconstraint(self._model, d)

    def _obs(self, d: Any, params: AntV5Params) -> jax.Array:
        """Gymnasium's ``_get_obs``: qpos (minus x, y), qvel, optionally clipped cfrc_ext."""
        qpos = d.qpos[2:] if self.exclude_current_positions else d.qpos
        parts = [qpos, d.qvel]
        if self.include_cfrc_ext:
            lo, hi = params.contact_force_range
            parts.append(jnp.clip(d.cfrc_ext[1:], lo, hi).ravel())
        return jnp.concatenate(parts)

    def _is_healthy(self, d: Any, params: AntV5Params) -> jax.Array:
        """Finite state and torso height within ``healthy_z_range`` (closed interval)."""
        lo, hi = params.healthy_z_range
        finite = jnp.isfinite(d.qpos).all() & jnp.isfinite(d.qvel).all()
        return finite & (d.qpos[2] >= lo) & (d.qpos[2] <= hi)

    def step_env(
        self, key: jax.Array, state: AntV5State, action: jax.Array, params: AntV5Params
    ) -> tuple[jax.Array, AntV5State, jax.Array, jax.Array, dict[str, Any]]:
        d0 = state.data
        action = _negate_if(params.inverted, jnp.asarray(action, d0.qpos.dtype))
        d = self._physics_step(d0, action)
        xy_velocity = (d.xpos[self.main_body, :2] - d0.xpos[self.main_body, :2]) / self.dt
        healthy = self._is_healthy(d, params)
        forward_reward = params.forward_reward_weight * xy_velocity[0]
        healthy_reward = healthy * params.healthy_reward
        ctrl_cost = params.ctrl_cost_weight * jnp.sum(jnp.square(action))
        lo, hi = params.contact_force_range
        contact_cost = params.contact_cost_weight * jnp.sum(
            jnp.square(jnp.clip(d.cfrc_ext, lo, hi))
        )
        reward = forward_reward + healthy_reward - ctrl_cost - contact_cost
        terminated = jnp.logical_and(~healthy, params.terminate_when_unhealthy)
        info = {
            "x_position": d.qpos[0],
            "y_position": d.qpos[1],
            "distance_from_origin": jnp.linalg.norm(d.qpos[:2]),
            "x_velocity": xy_velocity[0],
            "y_velocity": xy_velocity[1],
            "reward_forward": forward_reward,
            "reward_ctrl": -ctrl_cost,
            "reward_contact": -contact_cost,
            "reward_survive": healthy_reward,
        }
        state = AntV5State(time=state.time + 1, data=d)
        return self._obs(d, params), state, reward, terminated, info

    def reset_env(self, key: jax.Array, params: AntV5Params) -> tuple[jax.Array, AntV5State]:
        """Gymnasium's ``reset_model``: uniform noise on qpos, normal noise on qvel."""
        k_pos, k_vel = jax.random.split(key)
        s = params.reset_noise_scale
        nq, nv = self.mj_model.nq, self.mj_model.nv
        qpos = self._init_qpos + jax.random.uniform(k_pos, (nq,), minval=-s, maxval=s)
        qvel = self._init_qvel + s * jax.random.normal(k_vel, (nv,))
        return self.reset_from(qpos, qvel, params)

    def reset_from(
        self, qpos: ArrayLike, qvel: ArrayLike, params: AntV5Params | None = None
    ) -> tuple[jax.Array, AntV5State]:
        """Start an episode from explicit ``qpos``/``qvel`` (Gymnasium's ``set_state``).

        Args:
            qpos: ``(15,)`` positions (torso xyz, quaternion, 8 joint angles).
            qvel: ``(14,)`` velocities.
            params: environment parameters (``None``: defaults).

        Returns:
            ``(obs, state)`` as :meth:`reset` returns them.
        """
        params = self.default_params if params is None else params
        dtype = jax.dtypes.canonicalize_dtype(jnp.float64)  # float32 unless x64 is on
        d = self._init_data(jnp.asarray(qpos, dtype), jnp.asarray(qvel, dtype))
        return self._obs(d, params), AntV5State(time=0, data=d)

    def is_terminated(self, state: AntV5State, params: AntV5Params) -> jax.Array:
        return jnp.logical_and(
            ~self._is_healthy(state.data, params), params.terminate_when_unhealthy
        )


def make_brax_ant(
    backend: str = DEFAULT_BRAX_BACKEND, **param_overrides: Any
) -> tuple[BraxAnt, EnvParams]:
    """brax's ``ant`` behind the gymnax contract.

    Args:
        backend: ``spring``, ``positional``, ``generalized`` or ``mjx`` (default, see
            ``docs/envs/ant.md``).
        **param_overrides: fields of :class:`EnvParams` (``max_steps_in_episode``,
            ``inverted``); any other keyword goes to brax's ``Ant`` constructor.

    Returns:
        ``(env, params)``.

    Example:
        >>> env, params = make_brax_ant("generalized")
    """
    params, brax_kwargs = _split(param_overrides, EnvParams)
    env = BraxAnt(backend, **brax_kwargs)
    return env, env.default_params.replace(**params)


def make_ant_v5(**overrides: Any) -> tuple[AntV5, AntV5Params]:
    """Gymnasium's Ant-v5 on MJX.

    Args:
        **overrides: fields of :class:`AntV5Params` (Gymnasium's reward/termination/reset
            arguments, ``max_steps_in_episode``, ``inverted``); any other keyword goes to the
            :class:`AntV5` constructor (``physics``, ``include_cfrc_ext_in_observation``, ...).

    Returns:
        ``(env, params)``.

    Example:
        >>> env, params = make_ant_v5(ctrl_cost_weight=0.1)
    """
    params, static = _split(overrides, AntV5Params)
    env = AntV5(**static)
    return env, env.default_params.replace(**params)


def make_ant_switch(**overrides: Any) -> tuple[AntV5, AntV5Params]:
    """Ant-Switch: Ant-v5 whose actions are negated while ``params.inverted`` is true.

    The environment is the same object as :func:`make_ant_v5`'s (so both share compiled
    code); only the switch schedule, through ``params.inverted``, makes it Ant-Switch.

    Args:
        **overrides: as for :func:`make_ant_v5`.

    Returns:
        ``(env, params)`` with ``inverted=False`` unless overridden.
    """
    return make_ant_v5(**overrides)


__all__ = [
    "BRAX_BACKENDS",
    "DEFAULT_BRAX_BACKEND",
    "AntV5",
    "AntV5Params",
    "AntV5State",
    "BraxAnt",
    "BraxAntState",
    "EnvParams",
    "body_poses",
    "html_viewer",
    "gymnasium_ant_xml",
    "make_ant_switch",
    "make_ant_v5",
    "make_brax_ant",
]
