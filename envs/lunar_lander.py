"""LunarLander-Switch: a pure-JAX port of Gymnasium's Box2D ``LunarLander-v3`` (DESIGN §3).

The scene (hull polygon, two legs on limited motorised revolute joints, an 11-chunk random
terrain with a flat helipad), the engines (impulses at Gymnasium's application points with its
dispersion noise), the reward shaping, fuel costs and terminations (hull contact, ``|x| >= 1``,
the lander falling asleep) are Gymnasium's, constant for constant. The physics is a fixed-size
re-implementation of Box2D 2.3's step for exactly this scene (see :mod:`selfref_ghn.envs._box2d`)
so the environment jits in seconds and vmaps to thousands of landers. The constants, the scene
and the terrain are built in :mod:`selfref_ghn.envs._lunar_scene`, Gymnasium's heuristic pilot
and the mirror image of an observation live in :mod:`selfref_ghn.envs._lunar_control`; both
modules' public names are importable from here.

``params.inverted`` swaps the left and right side engines (discrete actions 1 and 3; for
continuous actions the lateral command is negated). A switch schedule sets it inside the
compiled loop. ``continuous`` changes the action space, so it is a constructor argument.

Example:
    >>> env, params = make_lunar_lander()
    >>> obs, state = env.reset(jax.random.key(0), params)
    >>> obs, state, reward, terminated, truncated, info = env.step(
    ...     jax.random.key(1), state, 2, params)
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces
from selfref_ghn.envs import _box2d as b2
from selfref_ghn.envs._box2d_loops import resolve_solver
from selfref_ghn.envs._lanes import lane_cond
from selfref_ghn.envs._lunar_accel import step_and_reset, where

# relative: the API docs load this folder as ``envs``, where ``selfref_ghn.envs`` is unknown
from ._lunar_control import engines, heuristic_action, mirror_observation, wind
from ._lunar_scene import (
    CHUNKS,
    FPS,
    HELIPAD_Y,
    INITIAL_RANDOM,
    LANDER_POLY,
    LEG_AWAY,
    LEG_DOWN,
    LEG_H,
    LEG_SPRING_TORQUE,
    LEG_W,
    MAIN_ENGINE_POWER,
    MAIN_ENGINE_Y_LOCATION,
    NUM_SEGMENTS,
    SCALE,
    SCENE,
    SIDE_ENGINE_AWAY,
    SIDE_ENGINE_HEIGHT,
    SIDE_ENGINE_POWER,
    VIEWPORT_H,
    VIEWPORT_W,
    H,
    W,
    _initial_phys,
    terrain_segments,
)

_OBS_HIGH = np.array([2.5, 2.5, 10.0, 10.0, 2 * math.pi, 10.0, 1.0, 1.0], np.float32)
_OBS_LOW = np.array([-2.5, -2.5, -10.0, -10.0, -2 * math.pi, -10.0, -0.0, -0.0], np.float32)


@struct.dataclass
class EnvParams(environment.EnvParams):
    """LunarLander-v3 parameters (Gymnasium's constructor arguments) plus ``inverted``."""

    max_steps_in_episode: int = 1000
    gravity: float | jax.Array = -10.0
    enable_wind: bool | jax.Array = False
    wind_power: float | jax.Array = 15.0
    turbulence_power: float | jax.Array = 1.5
    inverted: bool | jax.Array = False


@struct.dataclass
class EnvState(environment.EnvState):
    """Lander state: Box2D bodies and solver caches, terrain, contact flags, shaping."""

    phys: b2.PhysState
    seg_a: jax.Array  # [NUM_SEGMENTS, 2] terrain edge start points
    seg_b: jax.Array  # [NUM_SEGMENTS, 2] terrain edge end points
    leg_contact: jax.Array  # [2] bool, Gymnasium's legs[i].ground_contact
    game_over: jax.Array  # bool, the hull touched the ground
    asleep: jax.Array  # bool, the Box2D island fell asleep
    prev_shaping: jax.Array
    wind_idx: jax.Array
    torque_idx: jax.Array


class LunarLander(environment.Environment[EnvState, EnvParams]):
    """Gymnasium ``LunarLander-v3`` in JAX, with invertible side engines.

    Args:
        continuous: ``Box(-1, 1, (2,))`` actions (main throttle, lateral) instead of
            ``Discrete(4)`` (noop, left engine, main engine, right engine).
        toi: emulate Box2D's continuous collision (time of impact) pass; on by default.
        solver: ``"cpu"`` (loops that stop early, costly branches only on the landers that
            need them), ``"accelerator"`` (fixed trip counts, masks, the auto-reset's world
            step batched with the step's) or ``"auto"``: ``"cpu"`` on the CPU backend, else
            ``"accelerator"`` (:mod:`selfref_ghn.envs._box2d_loops`).

    Example:
        >>> env = LunarLander(continuous=True)
        >>> obs, state = env.reset(jax.random.key(0), env.default_params)
    """

    def __init__(self, continuous: bool = False, toi: bool = True, solver: str = "auto"):
        super().__init__()
        self.continuous = continuous
        self.toi = toi
        self.solver = resolve_solver(solver)

    def __hash__(self) -> int:
        return hash((type(self), self.continuous, self.toi, self.solver))

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is type(self)
            and other.continuous == self.continuous
            and other.toi == self.toi
            and other.solver == self.solver
        )

    @property
    def default_params(self) -> EnvParams:
        return EnvParams()

    def _engines(self, action: Any, params: EnvParams):
        """Engine powers and side direction from an action (dead zones, inversion)."""
        return engines(action, params.inverted, self.continuous)

    def _physics_step(
        self,
        key,
        state: EnvState,
        action,
        params: EnvParams,
        extra_force,
        contacts=True,
    ):
        """Gymnasium's ``step`` body: wind, engine impulses, world step, observation."""
        phys = state.phys
        wind_on = jnp.asarray(params.enable_wind) & ~(state.leg_contact[0] | state.leg_contact[1])
        wind_mag = wind(state.wind_idx, params.wind_power)
        torque_mag = wind(state.torque_idx, params.turbulence_power)
        force = extra_force + jnp.where(wind_on, jnp.stack([wind_mag, 0.0]), 0.0)
        torque = jnp.where(wind_on, torque_mag, 0.0)
        wind_idx = state.wind_idx + wind_on.astype(state.wind_idx.dtype)
        torque_idx = state.torque_idx + wind_on.astype(state.torque_idx.dtype)

        m_power, s_power, direction = self._engines(action, params)
        angle = phys.a[0]
        pos = phys.c[0] - b2._rot(angle, SCENE.local_center[0])
        cos, sin = b2.cos_sin(angle)
        tip = jnp.stack([sin, cos])
        side = jnp.stack([-tip[1], tip[0]])
        disp = jax.random.uniform(key, (2,), jnp.float32, -1.0, 1.0) / SCALE
        # main engine
        along = MAIN_ENGINE_Y_LOCATION / SCALE + 2 * disp[0]
        o_main = jnp.stack(
            [tip[0] * along + side[0] * disp[1], -tip[1] * along - side[1] * disp[1]]
        )
        p_main = pos + o_main
        i_main = -o_main * MAIN_ENGINE_POWER * m_power
        # side engines
        lat = 3 * disp[1] + direction * SIDE_ENGINE_AWAY / SCALE
        o_side = jnp.stack([tip[0] * disp[0] + side[0] * lat, -tip[1] * disp[0] - side[1] * lat])
        p_side = (
            pos + o_side + jnp.stack([-tip[0] * 17 / SCALE, tip[1] * SIDE_ENGINE_HEIGHT / SCALE])
        )
        i_side = -o_side * SIDE_ENGINE_POWER * s_power
        v0, w0 = phys.v[0], phys.w[0]
        for fire, imp, point in ((m_power > 0, i_main, p_main), (s_power > 0, i_side, p_side)):
            v_new = v0 + SCENE.inv_mass[0] * imp
            w_new = w0 + SCENE.inv_inertia[0] * b2._cross(point - phys.c[0], imp)
            v0 = jnp.where(fire, v_new, v0)
            w0 = jnp.where(fire, w_new, w0)
        phys = phys.replace(v=phys.v.at[0].set(v0), w=phys.w.at[0].set(w0))

        phys, ev = b2.world_step(
            SCENE,
            phys,
            state.seg_a,
            state.seg_b,
            force,
            torque,
            jnp.asarray(params.gravity, jnp.float32),
            contacts=contacts,
            toi=self.toi,
            solver=self.solver,
        )
        begin, end = ev["begin"], ev["end"]
        leg_contact = (state.leg_contact & ~jnp.any(end[1:], axis=1)) | jnp.any(begin[1:], axis=1)
        game_over = state.game_over | jnp.any(begin[0])
        if self.toi:  # contacts updated during the TOI pass fire their own events
            begin, end = ev["toi_begin"], ev["toi_end"]
            leg_contact = (leg_contact & ~jnp.any(end[1:], axis=1)) | jnp.any(begin[1:], axis=1)
            game_over = game_over | jnp.any(begin[0])
        new_state = state.replace(
            phys=phys,
            leg_contact=leg_contact,
            game_over=game_over,
            asleep=ev["asleep"],
            wind_idx=wind_idx,
            torque_idx=torque_idx,
        )
        obs = self.get_obs(new_state)
        shaping = (
            -100 * jnp.sqrt(obs[0] ** 2 + obs[1] ** 2)
            - 100 * jnp.sqrt(obs[2] ** 2 + obs[3] ** 2)
            - 100 * jnp.abs(obs[4])
            + 10 * obs[6]
            + 10 * obs[7]
        )
        return obs, new_state, shaping, m_power, s_power

    def step_env(
        self, key: jax.Array, state: EnvState, action: Any, params: EnvParams
    ) -> tuple[jax.Array, EnvState, jax.Array, jax.Array, dict[str, Any]]:
        """One Gymnasium ``step``: returns (obs, state, reward, terminated, info).

        An episode that has already ended (crash, off the screen, at rest) stays as it is: the
        step returns its observation and state (time + 1), reward 0 and ``terminated``; under
        ``vmap`` it takes no part in the physics, which runs only on the lanes still in flight.
        """
        return self._step(key, state, action, params, compact=True)

    def _step(self, key, state: EnvState, action, params: EnvParams, compact: bool):
        """``step_env``; ``compact`` runs the physics under ``vmap`` only on the live lanes
        (``lane_cond``), otherwise on every lane with the ended ones selected back (cheaper
        when almost every lane is live, as under auto-reset). Same results either way."""
        live, op = ~self.is_terminated(state, params), (key, state, action, params)
        if self.solver == "accelerator":  # a select, whether batched or not
            return where(live, self._live_step(*op), self._ended(state))
        # compact: under vmap the physics runs only on the lanes still in flight (lane_cond);
        # otherwise lax.cond, a select under vmap
        cond = lane_cond if compact else jax.lax.cond
        return cond(live, lambda op: self._live_step(*op), lambda op: self._ended(op[1]), op)

    def _ended(self, state: EnvState):
        """The step of an episode that has ended: nothing moves, reward 0, terminated."""
        zero = jnp.zeros((), jnp.float32)
        return (
            self.get_obs(state),
            state.replace(time=state.time + 1),
            zero,
            jnp.array(True),
            {"m_power": zero, "s_power": zero, "discount": zero},
        )

    def _live_step(self, key, state: EnvState, action, params: EnvParams):
        out = self._physics_step(key, state, action, params, jnp.zeros(2, jnp.float32))
        return self._finish(state, params, *out)

    def _finish(self, state, params, obs, new_state, shaping, m_power, s_power):
        """Reward, termination and info of a physics step from ``state``."""
        reward = shaping - state.prev_shaping - m_power * 0.30 - s_power * 0.03
        crashed = new_state.game_over | (jnp.abs(obs[0]) >= 1.0)
        reward = jnp.where(crashed, -100.0, reward)
        reward = jnp.where(new_state.asleep, 100.0, reward)
        terminated = crashed | new_state.asleep
        new_state = new_state.replace(prev_shaping=shaping, time=state.time + 1)
        info = {
            "m_power": m_power,
            "s_power": s_power,
            "discount": jnp.where(terminated, 0.0, 1.0).astype(jnp.float32),
        }
        m_power = jnp.asarray(m_power, jnp.float32)
        s_power = jnp.asarray(s_power, jnp.float32)
        info["m_power"], info["s_power"] = m_power, s_power
        return obs, new_state, reward.astype(jnp.float32), terminated, info

    @functools.partial(jax.jit, static_argnames=("self",))
    def step(
        self,
        key: jax.Array,
        state: EnvState,
        action: Any,
        params: EnvParams | None = None,
    ) -> tuple[jax.Array, EnvState, jax.Array, jax.Array, jax.Array, dict[str, Any]]:
        """gymnax's auto-resetting ``step``, with the reset computed only where an episode ended.

        Same keys and same results as ``gymnax.environments.environment.Environment.step``;
        under ``vmap`` the reset (a joint-only world step) runs only on the lanes whose episode
        ended, instead of on every lane and discarded by a ``select``.
        """
        if params is None:
            params = self.default_params
        key_step, key_reset = jax.random.split(key)
        if self.solver == "accelerator":
            return step_and_reset(self, key_step, key_reset, state, action, params)
        # under auto-reset almost every lane is live: no compaction of the live lanes
        obs_st, state_st, reward, terminated, info = self._step(
            key_step, state, action, params, compact=False
        )
        truncated = self.is_truncated(state_st, params)
        done = jnp.logical_or(terminated, truncated)
        obs, state = lane_cond(
            done,
            lambda op: self.reset_env(op[0], op[1]),
            lambda op: (op[2], op[3]),
            (key_reset, params, obs_st, state_st),
        )
        info = {
            **info,
            "terminated": terminated,
            "truncated": truncated,
            "final_observation": obs_st,
        }
        return obs, state, reward, terminated, truncated, info

    def _noop(self):
        return jnp.zeros(2, jnp.float32) if self.continuous else jnp.array(0, jnp.int32)

    def _reset_start(self, key: jax.Array):
        """The state before a reset's world step, the step's key and the initial push."""
        k_terrain, k_force, k_wind, k_step = jax.random.split(key, 4)
        heights = jax.random.uniform(k_terrain, (CHUNKS + 1,), jnp.float32, 0.0, H / 2)
        force = jax.random.uniform(k_force, (2,), jnp.float32, -INITIAL_RANDOM, INITIAL_RANDOM)
        wind = jax.random.randint(k_wind, (2,), -9999, 9999, jnp.int32)
        return _start_state(heights, wind), k_step, force

    def reset_env(self, key: jax.Array, params: EnvParams) -> tuple[jax.Array, EnvState]:
        """Random terrain, random initial push, random wind phase, then Gymnasium's first step."""
        state, k_step, force = self._reset_start(key)
        obs, state, shaping, _, _ = self._physics_step(
            k_step, state, self._noop(), params, force, contacts=False
        )
        return obs, state.replace(prev_shaping=shaping)

    def reset_from(
        self,
        key: jax.Array,
        params: EnvParams,
        heights: jax.Array,
        initial_force: jax.Array,
        wind_idx: jax.Array | None = None,
    ) -> tuple[jax.Array, EnvState]:
        """Reset from an explicit terrain and initial push (to replay a Gymnasium episode).

        Args:
            key: PRNG key for the first step's engine dispersion.
            params: environment parameters.
            heights: [12] raw chunk heights (Gymnasium's ``np_random.uniform(0, H/2, 12)``).
            initial_force: [2] the initial random force on the hull's centre.
            wind_idx: [2] int wind and torque phase indices (used when wind is enabled).

        Returns:
            ``(obs, state)`` after Gymnasium's reset (which ends with one no-op step).
        """
        if wind_idx is None:
            wind_idx = jnp.zeros(2, jnp.int32)
        state = _start_state(heights, wind_idx)
        obs, state, shaping, _, _ = self._physics_step(
            key,
            state,
            self._noop(),
            params,
            jnp.asarray(initial_force, jnp.float32),
            contacts=False,
        )
        return obs, state.replace(prev_shaping=shaping)

    def get_obs(self, state: EnvState, params: EnvParams | None = None, key=None) -> jax.Array:
        """Gymnasium's 8-dimensional observation."""
        phys = state.phys
        pos = phys.c[0] - b2._rot(phys.a[0], SCENE.local_center[0])
        vel = phys.v[0]
        return jnp.stack(
            [
                (pos[0] - VIEWPORT_W / SCALE / 2) / (VIEWPORT_W / SCALE / 2),
                (pos[1] - (HELIPAD_Y + LEG_DOWN / SCALE)) / (VIEWPORT_H / SCALE / 2),
                vel[0] * (VIEWPORT_W / SCALE / 2) / FPS,
                vel[1] * (VIEWPORT_H / SCALE / 2) / FPS,
                phys.a[0],
                20.0 * phys.w[0] / FPS,
                state.leg_contact[0].astype(jnp.float32),
                state.leg_contact[1].astype(jnp.float32),
            ]
        ).astype(jnp.float32)

    def is_terminated(self, state: EnvState, params: EnvParams) -> jax.Array:
        """Crash (hull contact), out of the screen, or asleep."""
        obs = self.get_obs(state)
        return state.game_over | (jnp.abs(obs[0]) >= 1.0) | state.asleep

    @property
    def name(self) -> str:
        return "LunarLanderContinuous-Switch" if self.continuous else "LunarLander-Switch"

    @property
    def num_actions(self) -> int:
        return 2 if self.continuous else 4

    def action_space(self, params: EnvParams | None = None) -> spaces.Space:
        """``Box(-1, 1, (2,))`` when continuous, else ``Discrete(4)``."""
        if self.continuous:
            return spaces.Box(-1.0, 1.0, (2,), jnp.float32)
        return spaces.Discrete(4)

    def observation_space(self, params: EnvParams | None = None) -> spaces.Box:
        """Gymnasium v3's observation bounds."""
        return spaces.Box(jnp.asarray(_OBS_LOW), jnp.asarray(_OBS_HIGH), (8,), jnp.float32)


def _start_state(heights: jax.Array, wind_idx: jax.Array) -> EnvState:
    """The state before a reset's world step: terrain, bodies at rest, wind phase."""
    seg_a, seg_b = terrain_segments(heights)
    wind_idx = jnp.asarray(wind_idx, jnp.int32)
    return EnvState(
        time=0,
        phys=_initial_phys(),
        seg_a=seg_a,
        seg_b=seg_b,
        leg_contact=jnp.zeros(2, bool),
        game_over=jnp.array(False),
        asleep=jnp.array(False),
        prev_shaping=jnp.array(0.0, jnp.float32),
        wind_idx=wind_idx[0],
        torque_idx=wind_idx[1],
    )


def make_lunar_lander(
    continuous: bool = False, toi: bool = True, solver: str = "auto", **param_overrides: Any
) -> tuple[LunarLander, EnvParams]:
    """``LunarLander-v3``: keyword arguments override fields of :class:`EnvParams`.

    Args:
        continuous: continuous actions (``Box(-1, 1, (2,))``).
        toi: emulate Box2D's time-of-impact pass.
        solver: ``"auto"``, ``"cpu"`` or ``"accelerator"`` (see :class:`LunarLander`).
        **param_overrides: e.g. ``gravity=-8.0``, ``enable_wind=True``, ``inverted=True``.

    Returns:
        ``(env, params)``.
    """
    env = LunarLander(continuous=continuous, toi=toi, solver=solver)
    return env, env.default_params.replace(**param_overrides)


def make_lunar_lander_switch(
    continuous: bool = False, toi: bool = True, solver: str = "auto", **param_overrides: Any
) -> tuple[LunarLander, EnvParams]:
    """``LunarLander-Switch``: the same environment; a schedule flips ``params.inverted``.

    Args:
        continuous: continuous actions.
        toi: emulate Box2D's time-of-impact pass.
        solver: ``"auto"``, ``"cpu"`` or ``"accelerator"`` (see :class:`LunarLander`).
        **param_overrides: fields of :class:`EnvParams`.

    Returns:
        ``(env, params)``.
    """
    return make_lunar_lander(continuous=continuous, toi=toi, solver=solver, **param_overrides)


__all__ = [
    "CHUNKS",
    "FPS",
    "H",
    "HELIPAD_Y",
    "INITIAL_RANDOM",
    "LANDER_POLY",
    "LEG_AWAY",
    "LEG_DOWN",
    "LEG_H",
    "LEG_SPRING_TORQUE",
    "LEG_W",
    "MAIN_ENGINE_POWER",
    "MAIN_ENGINE_Y_LOCATION",
    "NUM_SEGMENTS",
    "SCALE",
    "SCENE",
    "SIDE_ENGINE_AWAY",
    "SIDE_ENGINE_HEIGHT",
    "SIDE_ENGINE_POWER",
    "VIEWPORT_H",
    "VIEWPORT_W",
    "W",
    "EnvParams",
    "EnvState",
    "LunarLander",
    "heuristic_action",
    "make_lunar_lander",
    "make_lunar_lander_switch",
    "mirror_observation",
    "terrain_segments",
]
