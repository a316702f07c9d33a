"""MinAtar games (gymnax's ports) whose controls can be mirrored (DESIGN §3, §3b).

Four of gymnax's MinAtar games, registered as ``Breakout-MinAtar``, ``Asterix-MinAtar``,
``Freeway-MinAtar`` and ``SpaceInvaders-MinAtar``, each with a ``-Switch`` variant. They are
gymnax's environments unchanged (minimal action sets, ``10 x 10 x C`` binary image
observations, no sticky actions) plus an ``inverted`` field in ``EnvParams``.

Switch rule: with ``params.inverted`` true every direction is replaced by its opposite
(left <-> right, up <-> down); no-op and fire are unchanged. It is a permutation of the
discrete actions, the analogue of CartPole-Switch's inversion, computed from the game's action
set (Breakout ``[n, l, r]`` -> ``[n, r, l]``; Asterix ``[n, l, u, r, d]`` -> ``[n, r, d, l, u]``;
Freeway ``[n, u, d]`` -> ``[n, d, u]``; SpaceInvaders ``[n, l, r, f]`` -> ``[n, r, l, f]``).
The switch schedule of a run sets ``inverted`` inside the compiled loop. docs/envs/minatar.md
says how the ports were checked against the original MinAtar package.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments.minatar import asterix, breakout, freeway, space_invaders

# MinAtar's full action set is ['n', 'l', 'u', 'r', 'd', 'f']: each direction's opposite
_OPPOSITE = {0: 0, 1: 3, 2: 4, 3: 1, 4: 2, 5: 5}


def mirror_permutation(action_set: Any) -> np.ndarray:
    """The switch's permutation of a game's actions: ``perm[a]`` is what ``a`` does inverted.

    Args:
        action_set: the game's actions as indices of MinAtar's full action set.

    Returns:
        ``(n,)`` int32 permutation of ``range(n)``.

    Example:
        >>> mirror_permutation([0, 1, 3]).tolist()  # Breakout: n, l, r
        [0, 2, 1]
    """
    full = [int(a) for a in np.asarray(action_set)]
    return np.array([full.index(_OPPOSITE[a]) for a in full], dtype=np.int32)


class _Mirrored:
    """Mixin for a gymnax MinAtar game: actions mirrored while ``params.inverted``."""

    _params_cls: type
    _switch_name: str
    action_set: Any  # the game's

    @property
    def default_params(self) -> Any:
        return self._params_cls()

    def step_env(
        self, key: jax.Array, state: Any, action: Any, params: Any
    ) -> tuple[jax.Array, Any, jax.Array, jax.Array, dict[str, Any]]:
        action = jnp.asarray(action, jnp.int32)
        perm = jnp.asarray(mirror_permutation(self.action_set))
        action = jnp.where(params.inverted, perm[action], action)
        return super().step_env(key, state, action, params)  # type: ignore[misc]  # the game's

    @property
    def name(self) -> str:
        return self._switch_name


@struct.dataclass
class BreakoutParams(breakout.EnvParams):
    """gymnax Breakout-MinAtar parameters plus the ``inverted`` control switch."""

    inverted: bool | jax.Array = False


@struct.dataclass
class AsterixParams(asterix.EnvParams):
    """gymnax Asterix-MinAtar parameters plus the ``inverted`` control switch."""

    inverted: bool | jax.Array = False


@struct.dataclass
class FreewayParams(freeway.EnvParams):
    """gymnax Freeway-MinAtar parameters plus the ``inverted`` control switch."""

    inverted: bool | jax.Array = False


@struct.dataclass
class SpaceInvadersParams(space_invaders.EnvParams):
    """gymnax SpaceInvaders-MinAtar parameters plus the ``inverted`` control switch."""

    inverted: bool | jax.Array = False


class BreakoutSwitch(_Mirrored, breakout.MinBreakout):
    """Breakout-MinAtar with mirrored controls while ``params.inverted``.

    Example:
        >>> env = BreakoutSwitch()
        >>> obs, state = env.reset(jax.random.key(0), env.default_params)
        >>> obs.shape
        (10, 10, 4)
    """

    _params_cls = BreakoutParams
    _switch_name = "Breakout-MinAtar-Switch"


class AsterixSwitch(_Mirrored, asterix.MinAsterix):
    """Asterix-MinAtar with mirrored controls while ``params.inverted``."""

    _params_cls = AsterixParams
    _switch_name = "Asterix-MinAtar-Switch"


class FreewaySwitch(_Mirrored, freeway.MinFreeway):
    """Freeway-MinAtar with mirrored controls while ``params.inverted``."""

    _params_cls = FreewayParams
    _switch_name = "Freeway-MinAtar-Switch"


class SpaceInvadersSwitch(_Mirrored, space_invaders.MinSpaceInvaders):
    """SpaceInvaders-MinAtar with mirrored controls while ``params.inverted``."""

    _params_cls = SpaceInvadersParams
    _switch_name = "SpaceInvaders-MinAtar-Switch"


def _make(cls: type, use_minimal_action_set: bool, kwargs: dict[str, Any]) -> tuple[Any, Any]:
    env = cls(use_minimal_action_set=use_minimal_action_set)
    return env, env.default_params.replace(**kwargs)


def make_breakout(use_minimal_action_set: bool = True, **kwargs: Any) -> tuple[Any, Any]:
    """``Breakout-MinAtar`` (and ``-Switch``): keyword arguments override :class:`EnvParams`
    fields (``max_steps_in_episode``, ``inverted``)."""
    return _make(BreakoutSwitch, use_minimal_action_set, kwargs)


def make_asterix(use_minimal_action_set: bool = True, **kwargs: Any) -> tuple[Any, Any]:
    """``Asterix-MinAtar`` (and ``-Switch``): keyword arguments override params fields."""
    return _make(AsterixSwitch, use_minimal_action_set, kwargs)


def make_freeway(use_minimal_action_set: bool = True, **kwargs: Any) -> tuple[Any, Any]:
    """``Freeway-MinAtar`` (and ``-Switch``): keyword arguments override params fields."""
    return _make(FreewaySwitch, use_minimal_action_set, kwargs)


def make_space_invaders(use_minimal_action_set: bool = True, **kwargs: Any) -> tuple[Any, Any]:
    """``SpaceInvaders-MinAtar`` (and ``-Switch``): keyword arguments override params fields."""
    return _make(SpaceInvadersSwitch, use_minimal_action_set, kwargs)
