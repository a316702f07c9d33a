"""Self-mutation: how a parent makes a child (DESIGN §2, "Stochastic head"; paper §3.2).

Per self-graph node the stochastic head gives ``log_std`` (coeff_dim) and ``M`` rate logits:

    std  = clip(exp(log_std), 0, std_max)          (optionally squared: the authors' code)
    rate = clip(max(sigmoid(logits)), rate_min, rate_max)   one rate per node (default [0, 1])
           (``rate_reduction="mean"``: the mean of the sigmoids instead of their max)
    c    = std * eps,  eps ~ N(0, I)
    u    = clip(c @ B, -update_clip, update_clip) * rate + N(0, noise_std^2)
    child = clip(parent + u[:leaf size], -param_clip, param_clip)

``B`` (coeff_dim x S_max) is a fixed orthogonal random basis, a constant carried beside the
population and never mutated. Only the columns each leaf needs are computed: leaves are grouped
by size and each group is one matrix product with ``B[:, :size]``.

With the block heads (``Config.head`` ``block`` or ``random_basis``, DESIGN §2b) the same
happens per block of ``block_size`` values of every SR-GHN tensor instead of per tensor: one
``std``, one ``rate`` per block, and ``B`` is ``coeff_dim x block_size`` with unit-norm
columns, scaled by ``block_update_scale`` (:mod:`selfref_ghn.model.heads`): the std of one
entry of ``c @ B`` is ``std * block_update_scale`` whatever the block or tensor size (the dense
head's is ``std * sqrt(coeff_dim / S_max)`` on average, unless ``dense_update="per_entry"``
gives it the same unit-norm columns and scale). With ``block_ratio < 1`` a child
changes only the ``ceil(block_ratio * blocks)`` blocks with the highest rates (the learned
score; ties, e.g. under ``fixed_rate``, broken at random): the others, noise included, stay
the parent's.

Ablations (``Config.mutation_mode``): ``fixed_rate`` (rate = ``fixed_rate``), ``frozen_head``
(the stochastic head's own tensors are never updated), ``external`` (no self-reference:
``u ~ N(0, external_sigma^2)`` on every parameter of the same genotype).

The constant noise (and the external ablation's Gaussian) is drawn by :mod:`selfref_ghn.prng`
(``Config.noise_rng``): a fast hash-based generator by default, threefry on request.
"""

from __future__ import annotations

from collections import defaultdict
from typing import cast

import jax
import jax.numpy as jnp
import numpy as np

from selfref_ghn.config import Hyperparams
from selfref_ghn.model.srghn import SRGHN
from selfref_ghn.prng import normal
from selfref_ghn.types import Array


def mutation_params(ghn: SRGHN, flat: Array, hp: Hyperparams) -> tuple[Array, Array]:
    """The per-node mutation distribution a member carries.

    Args:
        ghn: the static SR-GHN.
        flat: ``(num_params,)`` member parameters.
        hp: traced hyperparameters.

    Returns:
        ``std`` of shape ``(U, coeff_dim)`` and ``rate`` of shape ``(U,)``, ``U`` =
        ``ghn.num_mutation_units`` (self-graph nodes, or self blocks for the block heads).
    """
    log_std, logits = ghn.mutation_outputs(flat)
    std = jnp.clip(jnp.exp(log_std), 0.0, hp.std_max)
    if ghn.config.square_std:
        std = std**2
    if ghn.config.rate_reduction == "mean":
        rate = jnp.mean(jax.nn.sigmoid(logits), axis=-1)
    else:
        rate = jnp.max(jax.nn.sigmoid(logits), axis=-1)
    if ghn.config.mutation_mode == "fixed_rate":
        rate = jnp.full_like(rate, hp.fixed_rate)
    rate = jnp.clip(rate, hp.rate_min, hp.rate_max)  # bounded self-modification
    return std, rate


def _size_groups(ghn: SRGHN) -> list[tuple[int, np.ndarray]]:
    groups: dict[int, list[int]] = defaultdict(list)
    for node, size in enumerate(ghn.self_graph.sizes):
        groups[int(size)].append(node)
    return [(size, np.array(nodes)) for size, nodes in sorted(groups.items())]


def project(ghn: SRGHN, coeffs: Array, rate: Array, basis: Array, update_clip: Array) -> Array:
    """``clip(c @ B, ±update_clip) * rate`` per node, laid out flat in self-graph order.

    Args:
        ghn: the static SR-GHN.
        coeffs: ``(N_self, coeff_dim)`` coefficients ``c``.
        rate: ``(N_self,)`` per-node mutation rates.
        basis: ``(coeff_dim, S_max)`` the fixed basis ``B``.
        update_clip: the update clip.

    Returns:
        ``(num_params,)`` the update without the constant noise.
    """
    if ghn.blockwise:
        return project_blocks(ghn, coeffs, rate, basis, update_clip)
    pieces: list[Array | None] = [None] * ghn.self_graph.num_nodes
    for size, nodes in _size_groups(ghn):
        values = coeffs[nodes] @ basis[:, :size]
        if ghn.unit_updates:  # dense_update="per_entry": unit columns, scaled
            values = values * ghn.config.block_update_scale
        block = jnp.clip(values, -update_clip, update_clip)
        block = block * rate[nodes, None]
        for j, node in enumerate(nodes):
            pieces[int(node)] = block[j]
    return jnp.concatenate(cast(list[Array], pieces))  # every node's piece is set


def project_blocks(
    ghn: SRGHN, coeffs: Array, rate: Array, basis: Array, update_clip: Array
) -> Array:
    """Block heads: ``clip(c @ B * block_update_scale, ±update_clip) * rate`` per self block.

    Args:
        ghn: the static SR-GHN (a block head).
        coeffs: ``(num_blocks, coeff_dim)`` coefficients, one row per self block.
        rate: ``(num_blocks,)`` per-block mutation rates.
        basis: ``(coeff_dim, block_size)`` the fixed basis ``B`` (unit-norm columns).
        update_clip: the update clip.

    Returns:
        ``(num_params,)`` the update without the constant noise.
    """
    scale = ghn.config.block_update_scale
    values = jnp.clip((coeffs @ basis) * scale, -update_clip, update_clip) * rate[:, None]
    return ghn.self_layout.assemble(values)


def _top_blocks(key: Array, ghn: SRGHN, rate: Array) -> Array:
    """``(num_params,)`` mask of the entries in the ``blocks_changed`` highest-rate blocks."""
    score = rate + 1e-6 * jax.random.uniform(key, rate.shape)  # ties at random
    _, top = jax.lax.top_k(score, ghn.blocks_changed)
    keep = jnp.zeros(rate.shape, bool).at[top].set(True)
    layout = ghn.self_layout
    return layout.assemble(jnp.broadcast_to(keep[:, None], (layout.num_blocks, layout.block_size)))


def mutate(
    key: Array,
    ghn: SRGHN,
    parent: Array,
    std: Array,
    rate: Array,
    basis: Array,
    hp: Hyperparams,
) -> Array:
    """One child of ``parent`` (DESIGN §2). ``std, rate`` come from :func:`mutation_params`.

    Returns:
        ``(num_params,)`` the child's parameters.

    Example:
        >>> std, rate = mutation_params(ghn, parent, hp)          # doctest: +SKIP
        >>> child = mutate(key, ghn, parent, std, rate, basis, hp)  # doctest: +SKIP
    """
    k_coef, k_noise = jax.random.split(key)
    cfg = ghn.config
    mode = cfg.mutation_mode
    if mode == "external":
        update = hp.external_sigma * normal(
            k_noise, parent.shape, parent.dtype, cfg.noise_rng, cfg.key_version
        )
    else:
        eps = jax.random.normal(k_coef, std.shape, std.dtype)
        update = project(ghn, std * eps, rate, basis, hp.update_clip)
        noise = normal(k_noise, parent.shape, parent.dtype, cfg.noise_rng, cfg.key_version)
        update = update + hp.noise_std * noise
        if ghn.blockwise and ghn.blocks_changed < ghn.self_layout.num_blocks:
            update = jnp.where(_top_blocks(jax.random.fold_in(k_coef, 1), ghn, rate), update, 0.0)
        if mode == "frozen_head":
            update = jnp.where(jnp.asarray(ghn.leaf_mask("stoch_head")), 0.0, update)
    return jnp.clip(parent + update, -hp.param_clip, hp.param_clip)
