"""LunarLander's auto-resetting step in the accelerator mode (DESIGN §3).

Part of the LunarLander-Switch port (:mod:`selfref_ghn.envs.lunar_lander`). In the CPU mode
``step`` runs the reset's world step only on the landers whose episode ended (a ``while_loop``
over chunks of them, :mod:`selfref_ghn.envs._lanes`). In the accelerator mode
(:mod:`selfref_ghn.envs._box2d_loops`) there are no data-dependent loops: every lander's
reset is computed, in the same batched world step as its step (a batch of two per lander),
so that the reset adds no loop trips, and selected where the episode ended.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

# the contact slots of a physics state (the reset's world step runs without contacts)
_SLOTS = ("seg", "touching", "ids", "count", "normal_impulse", "tangent_impulse")


def where(pred: jax.Array, new: Any, old: Any) -> Any:
    """``new`` where ``pred`` else ``old``, leaf by leaf (both computed: a select)."""
    return jax.tree.map(lambda n, o: jnp.where(pred, n, o), new, old)


def step_and_reset(env, key_step, key_reset, state, action, params):
    """gymnax's auto-resetting ``step`` of ``env`` (a ``LunarLander``) in the accelerator mode.

    The step's world step and the reset's run as one, ``vmap``-ed over the pair. The reset's
    runs with contacts: the lander starts far above the terrain, so it has none and the contact
    sweeps are exact no-ops; its contact slots are then set back to the start's, so the reset
    state is the one ``reset_env`` returns. Same keys as the CPU mode's ``step``.
    """
    start, k_phys, force = env._reset_start(key_reset)
    live = ~env.is_terminated(state, params)
    pair = jax.tree.map(lambda x, y: jnp.stack([x, y]), (state, action), (start, env._noop()))
    keys = jnp.stack([key_step, k_phys])
    extra = jnp.stack([jnp.zeros(2, jnp.float32), force])
    obs2, st2, shaping2, m2, s2 = jax.vmap(
        lambda k, sa, f: env._physics_step(k, sa[0], sa[1], params, f)
    )(keys, pair, extra)
    first, (obs_r, st_r, shaping_r) = (
        jax.tree.map(lambda x, i=i: x[i], (obs2, st2, shaping2)) for i in (0, 1)
    )
    phys_r = st_r.phys.replace(**{f: getattr(start.phys, f) for f in _SLOTS})
    st_r = st_r.replace(phys=phys_r, prev_shaping=shaping_r)
    live_out = env._finish(state, params, *first, m2[0], s2[0])
    obs_st, state_st, reward, terminated, info = where(live, live_out, env._ended(state))
    truncated = env.is_truncated(state_st, params)
    done = jnp.logical_or(terminated, truncated)
    obs, new_state = where(done, (obs_r, st_r), (obs_st, state_st))
    info = {**info, "terminated": terminated, "truncated": truncated, "final_observation": obs_st}
    return obs, new_state, reward, terminated, truncated, info


__all__ = ["step_and_reset", "where"]
