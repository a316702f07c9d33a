"""A synthetic environment of any observation and action size, for the head-size benchmark.

Workload (f) (:mod:`selfref_ghn.tools.bench.heads`) needs policies of given sizes (e.g. 17
inputs and 6 outputs) where no registered environment has those spaces, or where the one that
has them costs too much to step on a CPU (Ant's physics: about 1.6 s per step of a batch of
192 members on two cores). This environment follows the gymnax contract the rollout uses
(``reset_env``, ``step_env``, ``is_truncated``, ``observation_space``, ``action_space``,
``default_params``) with cheap dynamics: the observation decays towards the action, tiled to
the observation's size (a discrete action as its one-hot vector), plus a little noise; the
reward is minus the mean square of the observation; an episode never ends before the horizon.

The rollout bound and the SR-GHN generation of a case step the same environment, so the
difference between them, the hypernetwork part, does not depend on the dynamics.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from selfref_ghn.types import Array


@dataclasses.dataclass(frozen=True)
class Box:
    """A box action or observation space: ``shape``, ``low``, ``high``."""

    shape: tuple[int, ...]
    low: float = -1.0
    high: float = 1.0


@dataclasses.dataclass(frozen=True)
class Discrete:
    """``n`` discrete actions."""

    n: int
    shape: tuple[int, ...] = ()


@struct.dataclass
class EnvParams:
    """Decay of the observation per step and the noise's standard deviation."""

    decay: float = 0.9
    noise: float = 0.01


@struct.dataclass
class EnvState:
    obs: Array
    time: Array


@dataclasses.dataclass(frozen=True)
class SyntheticEnv:
    """Cheap gymnax-contract dynamics with the given spaces.

    Args:
        obs_shape: the observation's shape.
        num_actions: discrete actions, or the size of the continuous action.
        discrete: a ``Discrete(num_actions)`` action space, else ``Box((num_actions,))``.

    Example:
        >>> env = SyntheticEnv((17,), 6, discrete=False)
        >>> obs, state = env.reset_env(jax.random.key(0), env.default_params)
        >>> obs.shape
        (17,)
    """

    obs_shape: tuple[int, ...]
    num_actions: int
    discrete: bool = False

    @property
    def name(self) -> str:
        kind = "discrete" if self.discrete else "box"
        shape = "x".join(map(str, self.obs_shape))
        return f"synthetic({shape} -> {self.num_actions} {kind})"

    @property
    def default_params(self) -> EnvParams:
        return EnvParams()

    def observation_space(self, params: EnvParams) -> Box:
        return Box(self.obs_shape, -np.inf, np.inf)

    def action_space(self, params: EnvParams) -> Box | Discrete:
        return Discrete(self.num_actions) if self.discrete else Box((self.num_actions,))

    def reset_env(self, key: Array, params: EnvParams) -> tuple[Array, EnvState]:
        obs = 0.1 * jax.random.normal(key, self.obs_shape)
        return obs, EnvState(obs=obs, time=jnp.int32(0))

    def step_env(
        self, key: Array, state: EnvState, action: Array, params: EnvParams
    ) -> tuple[Array, EnvState, Array, Array, dict[str, Any]]:
        if self.discrete:
            a = jax.nn.one_hot(action, self.num_actions)
        else:
            a = jnp.ravel(jnp.asarray(action, jnp.float32))
        size = math.prod(self.obs_shape)
        drive = jnp.resize(a, (size,)).reshape(self.obs_shape)
        noise = params.noise * jax.random.normal(key, self.obs_shape)
        obs = params.decay * state.obs + (1.0 - params.decay) * drive + noise
        reward = -jnp.mean(obs * obs)
        new = EnvState(obs=obs, time=state.time + 1)
        return obs, new, reward, jnp.asarray(False), {}

    def is_truncated(self, state: EnvState, params: EnvParams) -> Array:
        return jnp.asarray(False)


def make(
    obs_shape: tuple[int, ...], num_actions: int, discrete: bool = False
) -> tuple[SyntheticEnv, EnvParams]:
    """``(env, params)`` of a :class:`SyntheticEnv` with these spaces."""
    env = SyntheticEnv(tuple(int(x) for x in obs_shape), int(num_actions), bool(discrete))
    return env, env.default_params
