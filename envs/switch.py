"""Switch rules: wrappers that change any gymnax-contract environment while switched (DESIGN §3b).

A rule says what changes while the switch is on; :class:`SwitchEnv` applies it to any
environment with gymnax's contract and keeps the flag in its own ``EnvParams``
(:class:`SwitchParams`) as the boolean ``inverted``, so ``params.replace(inverted=True)`` is
the switched environment and a switch schedule flips it inside the compiled loop (one
program, no recompilation).

Rules (:data:`RULES`; options in brackets):

* ``reverse_actions``: discrete actions ``a -> n - 1 - a``.
* ``negate_actions``: continuous actions ``a -> -a`` (a box symmetric about 0).
* ``permute_actions`` [``perm``]: discrete action ``a`` does what ``perm[a]`` does unswitched.
* ``negate_observations``: ``obs -> -obs`` (a box of observations).
* ``permute_observations`` [``perm``, ``signs``]: along the last axis of the observation,
  ``obs'[..., i] = signs[i] * obs[..., perm[i]]``; e.g. Pendulum-v1's ``[cos, sin, w]`` ->
  ``[sin, cos, -w]`` is ``perm=(1, 0, 2), signs=(1, 1, -1)``.
* ``negate_reward``: ``r -> -r``.
* ``target_speed`` [``target``, m/s]: ``r -> -|v - target|``, ``v = info["x_velocity"]`` the
  forward velocity of the env's forward reward (brax's tasks, Ant-v5: :mod:`.brax_envs`).
* ``run_backwards``: the forward reward term negated, the other terms (costs, healthy reward)
  unchanged: ``r -> r - 2 * info["reward_forward"]``.
* ``set_param`` [``field=value``, ...]: the named fields of the environment's own params take
  the given values (e.g. Pendulum-v1 ``g=15.0``); fields derived from them are not recomputed
  (CartPole-v1's ``polemass_length`` from ``length``: give both).

Example:
    >>> import gymnax
    >>> env, params = wrap(*gymnax.make("Acrobot-v1"), "reverse_actions")
    >>> switched = params.replace(inverted=True)
    >>> env.action_space(switched).n
    3
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces


@struct.dataclass
class SwitchParams:
    """The wrapped environment's params and the switch (a traced bool inside a run)."""

    env_params: Any
    inverted: bool | jax.Array = False

    @property
    def max_steps_in_episode(self) -> Any:
        return self.env_params.max_steps_in_episode


@dataclasses.dataclass(frozen=True)
class Rule:
    """No change; subclasses override the parts they switch. Static options only (hashable)."""

    name: str = dataclasses.field(default="", init=False)

    def check(self, env: Any, params: Any) -> None:
        """Raise ``ValueError`` when the rule does not fit ``env``'s spaces or params."""

    def action(self, action: jax.Array, space: Any) -> jax.Array:
        return action

    def observation(self, obs: jax.Array) -> jax.Array:
        return obs

    def reward(self, reward: jax.Array) -> jax.Array:
        return reward

    def reward_from(self, reward: jax.Array, info: Mapping[str, Any]) -> jax.Array:
        """The switched reward, from the step's reward and ``info`` (default: :meth:`reward`)."""
        return self.reward(reward)

    def env_params(self, params: Any, inverted: bool | jax.Array) -> Any:
        return params

    def observation_space(self, space: Any) -> Any:
        return space


def _discrete(env: Any, params: Any, rule: str) -> int:
    space = env.action_space(params)
    if not isinstance(space, spaces.Discrete):
        raise ValueError(f"{rule} needs discrete actions; {_env_name(env)} has {_describe(space)}")
    return int(space.n)


def _box_obs(env: Any, params: Any, rule: str) -> tuple[int, ...]:
    space = env.observation_space(params)
    if not isinstance(space, spaces.Box):
        raise ValueError(f"{rule} needs box observations; {_env_name(env)} has {_describe(space)}")
    return tuple(space.shape)


def _check_perm(perm: tuple[int, ...], n: int, what: str) -> None:
    if sorted(int(p) for p in perm) != list(range(n)):
        raise ValueError(f"perm {list(perm)} is not a permutation of the {n} {what}")


@dataclasses.dataclass(frozen=True)
class ReverseActions(Rule):
    """Discrete actions reversed: ``a -> n - 1 - a``."""

    name: str = dataclasses.field(default="reverse_actions", init=False)

    def check(self, env: Any, params: Any) -> None:
        _discrete(env, params, self.name)

    def action(self, action: jax.Array, space: Any) -> jax.Array:
        return space.n - 1 - action


@dataclasses.dataclass(frozen=True)
class NegateActions(Rule):
    """Continuous actions negated (the action box must be symmetric about 0)."""

    name: str = dataclasses.field(default="negate_actions", init=False)

    def check(self, env: Any, params: Any) -> None:
        space = env.action_space(params)
        if not isinstance(space, spaces.Box):
            raise ValueError(
                f"{self.name} needs continuous (box) actions; {_env_name(env)} has "
                f"{_describe(space)}: use reverse_actions or permute_actions"
            )
        if not np.allclose(np.asarray(space.low), -np.asarray(space.high)):
            raise ValueError(f"{self.name} needs an action box symmetric about 0")

    def action(self, action: jax.Array, space: Any) -> jax.Array:
        return -action


@dataclasses.dataclass(frozen=True)
class PermuteActions(Rule):
    """Discrete action ``a`` does what ``perm[a]`` does unswitched."""

    perm: tuple[int, ...] = ()
    name: str = dataclasses.field(default="permute_actions", init=False)

    def check(self, env: Any, params: Any) -> None:
        _check_perm(self.perm, _discrete(env, params, self.name), "actions")

    def action(self, action: jax.Array, space: Any) -> jax.Array:
        return jnp.asarray(self.perm, jnp.int32)[action].astype(jnp.asarray(action).dtype)


@dataclasses.dataclass(frozen=True)
class NegateObservations(Rule):
    """Observations negated."""

    name: str = dataclasses.field(default="negate_observations", init=False)

    def check(self, env: Any, params: Any) -> None:
        _box_obs(env, params, self.name)

    def observation(self, obs: jax.Array) -> jax.Array:
        return -obs

    def observation_space(self, space: Any) -> Any:
        return _union(space, -np.asarray(space.high), -np.asarray(space.low))


@dataclasses.dataclass(frozen=True)
class PermuteObservations(Rule):
    """``obs'[..., i] = signs[i] * obs[..., perm[i]]`` (signs default to all +1)."""

    perm: tuple[int, ...] = ()
    signs: tuple[float, ...] = ()
    name: str = dataclasses.field(default="permute_observations", init=False)

    def check(self, env: Any, params: Any) -> None:
        shape = _box_obs(env, params, self.name)
        n = shape[-1] if shape else 1
        _check_perm(self.perm, n, "entries of the observation's last axis")
        if self.signs and (len(self.signs) != n or any(s not in (1, -1) for s in self.signs)):
            raise ValueError(f"signs {list(self.signs)} must be {n} values, each 1 or -1")

    def _map(self, x: Any) -> Any:
        x = jnp.take(jnp.asarray(x), jnp.asarray(self.perm, jnp.int32), axis=-1)
        return x * jnp.asarray(self.signs, x.dtype) if self.signs else x

    def observation(self, obs: jax.Array) -> jax.Array:
        return self._map(obs)

    def observation_space(self, space: Any) -> Any:
        low = np.broadcast_to(np.asarray(space.low), space.shape)
        high = np.broadcast_to(np.asarray(space.high), space.shape)
        a, b = np.asarray(self._map(low)), np.asarray(self._map(high))
        return _union(space, np.minimum(a, b), np.maximum(a, b))


@dataclasses.dataclass(frozen=True)
class NegateReward(Rule):
    """Rewards negated."""

    name: str = dataclasses.field(default="negate_reward", init=False)

    def reward(self, reward: jax.Array) -> jax.Array:
        return -reward


def _info_keys(env: Any) -> frozenset[str]:
    """``env.info_keys`` if declared, else the keys of its step's ``info`` (traced)."""
    if hasattr(env, "info_keys"):
        return frozenset(env.info_keys)
    p = env.default_params

    def step(key: jax.Array) -> Any:
        state = env.reset_env(key, p)[1]
        return env.step_env(key, state, env.action_space(p).sample(key), p)[4]

    return frozenset(jax.eval_shape(step, jax.random.key(0)))


def _forward_info(env: Any, rule: str, keys: tuple[str, ...]) -> None:
    """Raise unless ``env``'s step reports ``keys`` in its ``info``."""
    missing = [k for k in keys if k not in _info_keys(env)]
    if missing:
        raise ValueError(
            f"{rule} needs an environment that reports a forward velocity (info {missing}); "
            f"{_env_name(env)} does not: use Ant, HalfCheetah, Hopper, Walker2d or Ant-v5"
        )


@dataclasses.dataclass(frozen=True)
class TargetSpeed(Rule):
    """Reward ``-|v - target|``, ``v`` the env's forward velocity ``info["x_velocity"]`` (m/s)."""

    target: float | None = None
    name: str = dataclasses.field(default="target_speed", init=False)

    def check(self, env: Any, params: Any) -> None:
        if self.target is None:
            raise ValueError(f"{self.name} needs the option 'target' (a speed in m/s)")
        if not isinstance(self.target, (int, float)) or not np.isfinite(self.target):
            raise ValueError(f"{self.name}: target must be a finite number, got {self.target!r}")
        _forward_info(env, self.name, ("x_velocity",))

    def reward_from(self, reward: jax.Array, info: Mapping[str, Any]) -> jax.Array:
        v = jnp.asarray(info["x_velocity"])
        return -jnp.abs(v - jnp.asarray(self.target, v.dtype)).astype(jnp.asarray(reward).dtype)


@dataclasses.dataclass(frozen=True)
class RunBackwards(Rule):
    """The forward reward term ``info["reward_forward"]`` negated, the other terms unchanged."""

    name: str = dataclasses.field(default="run_backwards", init=False)

    def check(self, env: Any, params: Any) -> None:
        _forward_info(env, self.name, ("x_velocity", "reward_forward"))

    def reward_from(self, reward: jax.Array, info: Mapping[str, Any]) -> jax.Array:
        return reward - 2 * jnp.asarray(info["reward_forward"], jnp.asarray(reward).dtype)


@dataclasses.dataclass(frozen=True)
class SetParam(Rule):
    """Fields of the environment's params set to ``values`` (``((field, value), ...)``)."""

    values: tuple[tuple[str, Any], ...] = ()
    name: str = dataclasses.field(default="set_param", init=False)

    def check(self, env: Any, params: Any) -> None:
        if not self.values:
            raise ValueError("set_param needs at least one field=value option")
        fields = [f.name for f in dataclasses.fields(params)]
        for field, value in self.values:
            if field not in fields:
                raise ValueError(
                    f"set_param: {field!r} is not a field of {_env_name(env)}'s params; "
                    f"they are: {', '.join(fields)}"
                )
            old, new = np.asarray(getattr(params, field)), np.asarray(value)
            if new.dtype.kind not in "biuf" or new.shape not in ((), old.shape):
                raise ValueError(
                    f"set_param: {field}={value!r} must be a number (or {old.shape} numbers)"
                )
        wrapped = SwitchEnv(env, self)

        def episode_step(key: jax.Array, inverted: jax.Array) -> Any:
            p = SwitchParams(params, inverted)
            _, state = wrapped.reset_env(key, p)
            action = env.action_space(params).sample(key)
            return wrapped.step_env(key, state, action, p)

        try:  # traces, compiles nothing: a field used as a static shape fails here
            jax.eval_shape(episode_step, jax.random.key(0), jnp.asarray(True))
        except jax.errors.JAXTypeError as e:
            raise ValueError(
                f"set_param: {_env_name(env)} uses one of {[f for f, _ in self.values]} as a "
                f"static value, which cannot change inside a run ({type(e).__name__})"
            ) from None

    def env_params(self, params: Any, inverted: bool | jax.Array) -> Any:
        changes = {}
        for field, value in self.values:
            old = jnp.asarray(getattr(params, field))
            changes[field] = jnp.where(inverted, jnp.asarray(value, old.dtype), old)
        return params.replace(**changes)


def _union(space: Any, low: Any, high: Any) -> Any:
    """The box holding ``space`` and the box ``[low, high]``."""
    low = np.minimum(np.asarray(space.low), low)
    high = np.maximum(np.asarray(space.high), high)
    return spaces.Box(low, high, space.shape, space.dtype)


def _env_name(env: Any) -> str:
    try:
        return env.name
    except Exception:  # noqa: BLE001 - a name is only for the message
        return type(env).__name__


def _describe(space: Any) -> str:
    if isinstance(space, spaces.Discrete):
        return f"a discrete space of {space.n} values"
    if isinstance(space, spaces.Box):
        return f"a continuous (box) space of shape {space.shape}"
    return f"a {type(space).__name__} space"


def _set_param(**values: Any) -> SetParam:
    return SetParam(values=tuple(sorted((k, _freeze(v)) for k, v in values.items())))


def _fields(cls: type) -> list[Any]:
    return [f for f in dataclasses.fields(cls) if f.init]


def _freeze(v: Any) -> Any:
    return tuple(_freeze(x) for x in v) if isinstance(v, (list, tuple)) else v


# rule name -> constructor taking the rule's options as keywords
RULES: dict[str, Any] = {
    "reverse_actions": ReverseActions,
    "negate_actions": NegateActions,
    "permute_actions": PermuteActions,
    "negate_observations": NegateObservations,
    "permute_observations": PermuteObservations,
    "negate_reward": NegateReward,
    "target_speed": TargetSpeed,
    "run_backwards": RunBackwards,
    "set_param": _set_param,
}


def rule(name: str, options: Mapping[str, Any] | None = None) -> Rule:
    """The rule ``name`` with its options.

    Args:
        name: one of :data:`RULES`.
        options: the rule's options, e.g. ``{"perm": [2, 0, 1]}`` for ``permute_actions``.

    Returns:
        A :class:`Rule` (frozen, hashable).

    Raises:
        ValueError: an unknown rule, or options it does not take.

    Example:
        >>> rule("permute_actions", {"perm": [2, 0, 1]}).perm
        (2, 0, 1)
    """
    if name not in RULES:
        raise ValueError(f"unknown switch rule {name!r}; one of {sorted(RULES)}")
    opts = {k: _freeze(v) for k, v in (options or {}).items()}
    try:
        return RULES[name](**opts)
    except TypeError:
        cls = RULES[name]
        takes = ["field=value"] if cls is _set_param else [f.name for f in _fields(cls)]
        raise ValueError(f"{name} takes options {takes or 'none'}; got {sorted(opts)}") from None


class SwitchEnv(environment.Environment):
    """A gymnax-contract ``env`` changed by ``rule`` while ``params.inverted``.

    Args:
        env: any environment with gymnax's ``reset_env``/``step_env``/spaces.
        rule: a :class:`Rule` (see :func:`rule`).

    Example:
        >>> import gymnax
        >>> base, base_params = gymnax.make("Pendulum-v1")
        >>> env = SwitchEnv(base, rule("negate_actions"))
        >>> params = env.default_params.replace(env_params=base_params)
        >>> obs, state = env.reset(jax.random.key(0), params)
    """

    def __init__(self, env: Any, rule: Rule):
        super().__init__()
        self.env, self.rule = env, rule

    @property
    def default_params(self) -> SwitchParams:
        return SwitchParams(self.env.default_params)

    def _inner(self, params: SwitchParams) -> Any:
        return self.rule.env_params(params.env_params, params.inverted)

    def _on(self, params: SwitchParams, switched: Any, plain: Any) -> Any:
        return jax.tree.map(lambda a, b: jnp.where(params.inverted, a, b), switched, plain)

    def reset_env(self, key: jax.Array, params: SwitchParams) -> tuple[Any, Any]:
        obs, state = self.env.reset_env(key, self._inner(params))
        return self._on(params, self.rule.observation(obs), obs), state

    def step_env(
        self, key: jax.Array, state: Any, action: Any, params: SwitchParams
    ) -> tuple[Any, Any, jax.Array, jax.Array, dict[str, Any]]:
        inner = self._inner(params)
        action = jnp.asarray(action)
        space = self.env.action_space(params.env_params)
        action = self._on(params, self.rule.action(action, space), action)
        obs, state, reward, done, info = self.env.step_env(key, state, action, inner)
        obs = self._on(params, self.rule.observation(obs), obs)
        reward = self._on(params, self.rule.reward_from(reward, info), reward)
        return obs, state, reward, done, info

    def is_truncated(self, state: Any, params: SwitchParams) -> jax.Array:
        return self.env.is_truncated(state, self._inner(params))

    def is_terminated(self, state: Any, params: SwitchParams) -> jax.Array:
        return self.env.is_terminated(state, self._inner(params))

    def action_space(self, params: SwitchParams | None = None) -> Any:
        return self.env.action_space(self._plain(params))

    def observation_space(self, params: SwitchParams | None = None) -> Any:
        return self.rule.observation_space(self.env.observation_space(self._plain(params)))

    def state_space(self, params: SwitchParams | None = None) -> Any:
        return self.env.state_space(self._plain(params))

    def _plain(self, params: SwitchParams | None) -> Any:
        return self.env.default_params if params is None else params.env_params

    @property
    def name(self) -> str:
        return f"{_env_name(self.env)}[{self.rule.name}]"

    @property
    def num_actions(self) -> int:
        return self.env.num_actions


def wrap(
    env: Any, env_params: Any, switch: str | Rule, options: Mapping[str, Any] | None = None
) -> tuple[SwitchEnv, SwitchParams]:
    """``env`` behind the switch rule ``switch``, and its params (not switched).

    Args:
        env, env_params: a gymnax-contract environment and its params.
        switch: a rule name of :data:`RULES` or a :class:`Rule`.
        options: the rule's options when ``switch`` is a name.

    Returns:
        ``(SwitchEnv, SwitchParams)``; ``params.replace(inverted=True)`` is the switched env.

    Raises:
        ValueError: an unknown rule, bad options, or a rule that does not fit ``env``.
    """
    r = switch if isinstance(switch, Rule) else rule(switch, options)
    r.check(env, env_params)
    return SwitchEnv(env, r), SwitchParams(env_params)


def fits(env: Any, env_params: Any, switch: str, options: Mapping[str, Any] | None = None) -> bool:
    """Whether :func:`wrap` accepts ``switch`` for ``env`` (no exception)."""
    try:
        wrap(env, env_params, switch, options)
    except ValueError:
        return False
    return True


__all__ = [
    "RULES",
    "Rule",
    "SwitchEnv",
    "SwitchParams",
    "fits",
    "rule",
    "wrap",
]
