"""brax's Ant, HalfCheetah, Hopper and Walker2d behind the gymnax contract (DESIGN §3).

:class:`BraxEnv` is a thin adapter: ``reset``/``step`` call brax's own ``Env.reset`` and
``Env.step``, so observation, reward, termination and physics are brax's, for any of brax's
four backends. Two things are added around brax's step: the action is negated while
``params.inverted`` (the Ant-Switch switch, DESIGN §3), and the step's ``info`` is brax's
``metrics`` plus ``reward_forward``, the forward term of the task's reward under one name
(brax calls it ``reward_run`` for HalfCheetah). ``info["x_velocity"]`` is brax's own forward
velocity, the one its forward reward is computed from: the torso's x displacement over the
step divided by ``dt``. With those two keys the reward switch rules of
:mod:`selfref_ghn.envs.switch` (``target_speed``, ``run_backwards``) apply.

Static choices (task, backend, brax's constructor arguments) make up the environment's
identity: equal configurations compare and hash equal and share compiled code. Episode length
and ``inverted`` live in :class:`EnvParams`.

Example:
    >>> env, params = make_brax("halfcheetah", backend="spring")
    >>> obs, state = env.reset(jax.random.key(0), params)
    >>> obs.shape
    (17,)
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces

# relative: the API docs load this folder as ``envs``, where ``selfref_ghn.envs`` is unknown
from ._ant_base import EnvParams, _negate_if, _split, html_viewer

BRAX_BACKENDS = ("spring", "positional", "generalized", "mjx")

# brax task -> (the id registered in selfref_ghn.envs, the metric holding its forward term)
TASKS: dict[str, tuple[str, str]] = {
    "ant": ("Ant", "reward_forward"),
    "halfcheetah": ("HalfCheetah", "reward_run"),
    "hopper": ("Hopper", "reward_forward"),
    "walker2d": ("Walker2d", "reward_forward"),
}

# Default backend per task: see docs/envs/brax.md for the measurements behind each choice.
DEFAULT_BACKEND: dict[str, str] = {
    "ant": "mjx",
    "halfcheetah": "spring",
    "hopper": "generalized",
    "walker2d": "generalized",
}


@struct.dataclass
class BraxState(environment.EnvState):
    """Step count and brax's own ``State`` (pipeline state, obs, reward, done, metrics)."""

    brax_state: Any


class BraxEnv(environment.Environment):
    """A brax task as a gymnax environment, with invertible controls.

    Args:
        task: one of :data:`TASKS` (brax's name, e.g. ``"halfcheetah"``).
        backend: brax physics backend, one of ``spring``, ``positional``, ``generalized``,
            ``mjx``; ``None``: :data:`DEFAULT_BACKEND`.
        **brax_kwargs: passed to ``brax.envs.get_environment(task, ...)`` (e.g.
            ``ctrl_cost_weight``); they are static and part of the environment's identity.

    Example:
        >>> env = BraxEnv("hopper", "spring")
        >>> env.name, env.action_space().shape
        ('Hopper', (3,))
    """

    def __init__(self, task: str, backend: str | None = None, **brax_kwargs: Any):
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"brax task must be one of {sorted(TASKS)}, got {task!r}")
        backend = DEFAULT_BACKEND[task] if backend is None else backend
        if backend not in BRAX_BACKENDS:
            raise ValueError(f"backend must be one of {BRAX_BACKENDS}, got {backend!r}")
        from brax import envs as brax_envs

        self.task, self.backend = task, backend
        self._config = (task, backend, tuple(sorted(brax_kwargs.items())))
        self._brax = brax_envs.get_environment(task, backend=backend, **brax_kwargs)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._config == other._config

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._config))

    # what the switch rules read from a step's ``info`` (the rest is brax's ``metrics``)
    info_keys = ("x_velocity", "reward_forward")

    @property
    def default_params(self) -> EnvParams:
        return EnvParams()

    @property
    def name(self) -> str:
        return TASKS[self.task][0]

    @functools.cached_property
    def obs_size(self) -> int:
        """Length of brax's observation (from a traced reset: brax's own property steps one)."""
        return int(jax.eval_shape(self._brax.reset, jax.random.key(0)).obs.shape[-1])

    @property
    def num_actions(self) -> int:
        return int(self._brax.action_size)

    @property
    def dt(self) -> float:
        """Seconds of simulated time per environment step."""
        return float(self._brax.dt)

    @property
    def mj_model(self) -> mujoco.MjModel:
        """The MuJoCo model brax loaded the task from (for rendering)."""
        return self._brax.sys.mj_model

    def action_space(self, params: EnvParams | None = None) -> spaces.Box:
        """``num_actions`` torques in ``[-1, 1]``."""
        return spaces.Box(-1.0, 1.0, (self.num_actions,), jnp.float32)

    def observation_space(self, params: EnvParams | None = None) -> spaces.Box:
        """Unbounded box of :attr:`obs_size` floats."""
        return spaces.Box(-jnp.inf, jnp.inf, (self.obs_size,), jnp.float32)

    def qpos(self, state: BraxState) -> jax.Array:
        """The state's generalized positions ``(nq,)``: what a renderer needs."""
        return state.brax_state.pipeline_state.q

    def render_html(self, qpos: np.ndarray, height: int | str = 480) -> str:
        """brax's HTML viewer of a trajectory of positions (see ``_ant_base.html_viewer``)."""
        return html_viewer(self.mj_model, qpos, self.dt, height)

    def step_env(
        self, key: jax.Array, state: BraxState, action: jax.Array, params: EnvParams
    ) -> tuple[jax.Array, BraxState, jax.Array, jax.Array, dict[str, Any]]:
        action = _negate_if(params.inverted, jnp.asarray(action, jnp.float32))
        # brax's tasks update ``metrics`` in place: hand them a copy.
        prev = state.brax_state.replace(metrics=dict(state.brax_state.metrics))
        bs = self._brax.step(prev, action)
        info = dict(bs.metrics)
        info["reward_forward"] = bs.metrics[TASKS[self.task][1]]
        return (
            bs.obs,
            BraxState(time=state.time + 1, brax_state=bs),
            bs.reward,
            bs.done > 0.5,
            info,
        )

    def reset_env(self, key: jax.Array, params: EnvParams) -> tuple[jax.Array, BraxState]:
        bs = self._brax.reset(key)
        return bs.obs, BraxState(time=0, brax_state=bs)

    def reset_from(
        self, qpos: jax.Array, qvel: jax.Array, params: EnvParams | None = None
    ) -> tuple[jax.Array, BraxState]:
        """Start an episode from explicit generalized positions and velocities.

        Args:
            qpos: ``(nq,)`` positions.
            qvel: ``(nv,)`` velocities.
            params: unused; accepted for symmetry with :meth:`reset`.

        Returns:
            ``(obs, state)`` as :meth:`reset` returns them.
        """
        bs = self._brax.reset(jax.random.key(0))
        ps = self._brax.pipeline_init(jnp.asarray(qpos), jnp.asarray(qvel))
        bs = bs.replace(pipeline_state=ps, obs=self._brax._get_obs(ps))
        return bs.obs, BraxState(time=0, brax_state=bs)

    def is_terminated(self, state: BraxState, params: EnvParams) -> jax.Array:
        return state.brax_state.done > 0.5


def make_brax(
    task: str, backend: str | None = None, **param_overrides: Any
) -> tuple[BraxEnv, EnvParams]:
    """A brax task behind the gymnax contract.

    Args:
        task: one of :data:`TASKS`.
        backend: ``spring``, ``positional``, ``generalized`` or ``mjx``; ``None``: the task's
            :data:`DEFAULT_BACKEND`.
        **param_overrides: fields of :class:`EnvParams` (``max_steps_in_episode``,
            ``inverted``); any other keyword goes to brax's task constructor.

    Returns:
        ``(env, params)``.

    Example:
        >>> env, params = make_brax("halfcheetah", max_steps_in_episode=500)
    """
    params, brax_kwargs = _split(param_overrides, EnvParams)
    env = BraxEnv(task, backend, **brax_kwargs)
    return env, env.default_params.replace(**params)


def make_halfcheetah(backend: str | None = None, **overrides: Any) -> tuple[BraxEnv, EnvParams]:
    """brax's ``halfcheetah`` (id ``HalfCheetah``): see :func:`make_brax`."""
    return make_brax("halfcheetah", backend, **overrides)


def make_hopper(backend: str | None = None, **overrides: Any) -> tuple[BraxEnv, EnvParams]:
    """brax's ``hopper`` (id ``Hopper``): see :func:`make_brax`."""
    return make_brax("hopper", backend, **overrides)


def make_walker2d(backend: str | None = None, **overrides: Any) -> tuple[BraxEnv, EnvParams]:
    """brax's ``walker2d`` (id ``Walker2d``): see :func:`make_brax`."""
    return make_brax("walker2d", backend, **overrides)


__all__ = [
    "BRAX_BACKENDS",
    "DEFAULT_BACKEND",
    "TASKS",
    "BraxEnv",
    "BraxState",
    "EnvParams",
    "make_brax",
    "make_halfcheetah",
    "make_hopper",
    "make_walker2d",
]
