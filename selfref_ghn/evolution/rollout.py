"""Episodes of at most ``horizon`` steps (DESIGN §2, "Evolution loop"; §4).

Fitness is the undiscounted episode return with rewards after termination (or truncation)
masked; an evaluation averages ``episodes`` independent episodes. Environments follow the gymnax
contract; the rollout calls ``reset_env``/``step_env`` directly (no auto-reset, whose reset
work would be wasted under the mask).

An episode is a ``lax.while_loop`` that stops once it has ended. Under ``vmap`` (members,
episodes) the loop runs while any episode of the batch is still going, so a population whose
episodes all end early (every lander crashed, every pole fallen) stops early; the results are
those of the fixed-horizon ``lax.scan`` with the mask (``exact_horizon=True``), bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from selfref_ghn import prng
from selfref_ghn.evolution.normalize import RunningStats
from selfref_ghn.types import Array, Params

PolicyFn = Callable[[Params, Array], Array]  # (policy params, observation) -> action


@struct.dataclass
class Evaluation:
    """What one member's evaluation returns."""

    fitness: Array  # () mean return over episodes
    live_steps: Array  # () int32, steps before termination, summed over episodes
    obs_sum: Array  # (obs_dim,) sums over live steps, for observation normalisation
    obs_sq_sum: Array
    obs_count: Array


def episode(
    key: Array,
    env: Any,
    env_params: Any,
    policy_fn: PolicyFn,
    policy_params: Params,
    horizon: int,
    obs_stats: RunningStats | None = None,
    exact_horizon: bool = False,
) -> tuple[Array, Array, Array, Array, Array]:
    """One episode of at most ``horizon`` steps.

    Args:
        key: PRNG key for the reset and the steps.
        env, env_params: a gymnax-contract environment and its parameters.
        policy_fn: ``(params, obs) -> action``.
        policy_params: the policy's parameters.
        horizon: number of steps simulated (static).
        obs_stats: normalise observations with these statistics, if given.
        exact_horizon: always simulate ``horizon`` steps (``lax.scan``) instead of stopping
            once the episode has ended; same results, for reference and timing.

    Returns:
        ``(return, live_steps, obs_sum, obs_sq_sum, obs_count)``.
    """
    k_reset, k_step = jax.random.split(key)
    obs, state = env.reset_env(k_reset, env_params)
    obs_flat = jnp.ravel(obs).astype(jnp.float32)
    zeros = jnp.zeros_like(obs_flat)

    def body(carry, t):
        obs, state, ret, done, live, s, ss = carry
        x = obs_stats.normalize(obs) if obs_stats is not None else obs
        action = policy_fn(policy_params, x)
        obs2, state2, reward, terminated, _ = env.step_env(
            jax.random.fold_in(k_step, t), state, action, env_params
        )
        truncated = env.is_truncated(state2, env_params)
        alive = jnp.logical_not(done)
        ret = ret + jnp.where(alive, reward, 0.0)
        o = jnp.ravel(obs).astype(jnp.float32)
        s = s + jnp.where(alive, o, 0.0)
        ss = ss + jnp.where(alive, o * o, 0.0)
        live = live + alive.astype(jnp.int32)
        done = done | terminated | truncated
        return (obs2, state2, ret, done, live, s, ss), None

    init = (obs, state, jnp.float32(0.0), jnp.asarray(False), jnp.int32(0), zeros, zeros)
    if exact_horizon:
        (_, _, ret, _, live, s, ss), _ = jax.lax.scan(body, init, jnp.arange(horizon))
    else:
        # stop once the episode has ended: every later step would be masked out anyway
        def cond(loop):
            t, carry = loop
            return (t < horizon) & jnp.logical_not(carry[3])

        def step(loop):
            t, carry = loop
            return t + 1, body(carry, t)[0]

        _, (_, _, ret, _, live, s, ss) = jax.lax.while_loop(cond, step, (jnp.int32(0), init))
    return ret, live, s, ss, live.astype(jnp.float32)


def member_key(eval_key: Array, member: int | Array, shared: bool = False) -> Array:
    """Member ``member``'s evaluation key: ``prng.member(eval_key, member)``, or ``eval_key``
    itself when every member plays the same episodes (``shared``)."""
    return eval_key if shared else prng.member(eval_key, member)


def evaluate(
    key: Array,
    env: Any,
    env_params: Any,
    policy_fn: PolicyFn,
    policy_params: Params,
    horizon: int,
    episodes: int,
    obs_stats: RunningStats | None = None,
    exact_horizon: bool = False,
) -> Evaluation:
    """Mean return of ``episodes`` independent episodes (vmapped), with their statistics."""
    keys = jax.random.split(key, episodes)
    ret, live, s, ss, n = jax.vmap(
        lambda k: episode(
            k, env, env_params, policy_fn, policy_params, horizon, obs_stats, exact_horizon
        )
    )(keys)
    return Evaluation(
        fitness=jnp.mean(ret),
        live_steps=jnp.sum(live),
        obs_sum=s.sum(0),
        obs_sq_sum=ss.sum(0),
        obs_count=n.sum(),
    )


def evaluate_flat(
    eval_key: Array,
    members: Array,
    flats: Array,
    env: Any,
    env_params: Any,
    policy_fn: PolicyFn,
    unravel: Callable[[Array], Params],
    config: Any,
    obs_stats: RunningStats | None = None,
) -> Evaluation:
    """:func:`evaluate` of every member's flat policy (vmapped): member ``members[i]`` plays
    its own episodes (:func:`member_key`) with ``unravel(flats[i])``, ``config.episodes`` of
    ``config.horizon`` steps."""

    def one(m: Array, flat: Array) -> Evaluation:
        return evaluate(
            member_key(eval_key, m, config.shared_episodes),
            env,
            env_params,
            policy_fn,
            unravel(flat),
            config.horizon,
            config.episodes,
            obs_stats,
        )

    return jax.vmap(one)(members, flats)
