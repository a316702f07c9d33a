"""Heads that do not grow with the target network (DESIGN §2b; paper §5, "Discussion").

The paper's deterministic head, Linear(D -> P_max), grows with the largest policy tensor, and
its self-mutation basis is ``coeff_dim x S_max`` wide. :data:`HEADS` names the alternatives:

* ``dense``: the paper's head (the default), in :mod:`selfref_ghn.model.srghn`;
* ``block``: every tensor is cut into blocks of ``block_size`` values (row-major flatten, the
  last block cropped). Each block's values come from its tensor's node state concatenated with
  :func:`block_features` (where the block sits, the tensor's shape and kind) through a small MLP
  whose output layer has width ``block_size`` (:class:`BlockDecoder`);
* ``random_basis``: the same MLP outputs ``coeff_dim`` coefficients per block and a fixed random
  basis (``coeff_dim x block_size``, a constant from ``basis_seed``, never a parameter) maps them
  to values.

With either of the two, self-mutation works per block of the GHN's own tensors too: the
stochastic head sees each block's node state and features and outputs that block's ``log_std``
and rate logits; the update ``clip(c @ B * block_update_scale) * rate`` uses a
``coeff_dim x block_size`` basis ``B`` whose columns have unit norm (:func:`unit_columns`), so
that every entry of an update has the std ``std * block_update_scale`` whatever the block or
tensor size (a cropped last block uses the first columns, each of unit norm too).

:class:`BlockLayout` holds the static bookkeeping: which node each block belongs to, its
features, and how a ``(num_blocks, block_size)`` array of block values becomes a graph's flat
layout.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from selfref_ghn.config import HEADS
from selfref_ghn.model.graph import Graph
from selfref_ghn.types import Array

# name -> whether the head generates tensors block by block (and mutates the GHN per block)
BLOCKWISE: dict[str, bool] = {"dense": False, "block": True, "random_basis": True}
assert tuple(BLOCKWISE) == HEADS

_KINDS = ("kernel", "bias", "embedding")
NUM_BLOCK_FEATURES = 8 + len(_KINDS) + 1


def _kind(name: str) -> int:
    leaf = name.rsplit("/", 1)[-1]
    if leaf.endswith("embed") or leaf == "embedding":
        return _KINDS.index("embedding")
    return _KINDS.index(leaf) if leaf in _KINDS else len(_KINDS)


def block_features(name: str, shape: tuple[int, ...], block_size: int) -> np.ndarray:
    """``(num_blocks, NUM_BLOCK_FEATURES)`` static features of one tensor's blocks.

    Per block ``b`` of ``nb`` (first entry ``start = b * block_size`` of the row-major flatten):
    ``b / max(nb - 1, 1)``; ``start / size``; the start's row and column fractions
    (``(start // cols) / rows``, ``(start % cols) / cols`` with ``cols`` the last dimension);
    ``log1p(size)``, ``log1p(shape[0])``, ``log1p(shape[-1])`` over 10; ``log1p(nb)`` over 10;
    then a one-hot kind (kernel, bias, embedding, other).

    Example:
        >>> block_features("Dense_0/bias", (5,), 2)[:, 0]
        array([0. , 0.5, 1. ], dtype=float32)
    """
    size = math.prod(shape)
    nb = -(-size // block_size)
    cols = shape[-1] if shape else 1
    rows = size // cols
    start = np.arange(nb) * block_size
    f = np.zeros((nb, NUM_BLOCK_FEATURES), np.float32)
    f[:, 0] = np.arange(nb) / max(nb - 1, 1)
    f[:, 1] = start / size
    f[:, 2] = (start // cols) / rows
    f[:, 3] = (start % cols) / cols
    f[:, 4] = np.log1p(size) / 10.0
    f[:, 5] = np.log1p(shape[0] if shape else 1) / 10.0
    f[:, 6] = np.log1p(cols) / 10.0
    f[:, 7] = np.log1p(nb) / 10.0
    f[:, 8 + _kind(name)] = 1.0
    return f


@dataclasses.dataclass(frozen=True, eq=False)
class BlockLayout:
    """A graph's tensors cut into blocks of ``block_size`` values (static, NumPy only).

    Attributes:
        blocks_per_node: ``(N,)`` ``ceil(size / block_size)`` per tensor.
        node_of_block: ``(num_blocks,)`` the node each block belongs to (blocks in node order).
        features: ``(num_blocks, NUM_BLOCK_FEATURES)`` :func:`block_features` of every block.

    Example:
        >>> from selfref_ghn.model.graph import graph_of
        >>> g = graph_of({"Dense_0": {"kernel": np.zeros((2, 3)), "bias": np.zeros(3)}})
        >>> BlockLayout(g, 4).blocks_per_node.tolist()
        [2, 1]
    """

    graph: Graph
    block_size: int

    @functools.cached_property
    def blocks_per_node(self) -> np.ndarray:
        return -(-self.graph.sizes // self.block_size)

    @property
    def num_blocks(self) -> int:
        return int(self.blocks_per_node.sum())

    @functools.cached_property
    def node_of_block(self) -> np.ndarray:
        return np.repeat(np.arange(self.graph.num_nodes, dtype=np.int32), self.blocks_per_node)

    @functools.cached_property
    def features(self) -> np.ndarray:
        g = self.graph
        return np.concatenate(
            [block_features(n, s, self.block_size) for n, s in zip(g.names, g.shapes, strict=True)]
        )

    def inputs(self, states: Array) -> Array:
        """``(num_blocks, D + F)``: each block's node state beside its features."""
        return jnp.concatenate(
            [states[self.node_of_block], jnp.asarray(self.features, states.dtype)], axis=-1
        )

    def assemble(self, values: Array) -> Array:
        """``(num_blocks, block_size)`` block values -> ``(num_params,)`` flat layout.

        Each tensor's blocks are flattened in order and cropped to its size (static slices).
        """
        pieces, first = [], 0
        for nb, size in zip(self.blocks_per_node, self.graph.sizes, strict=True):
            pieces.append(values[first : first + int(nb)].reshape(-1)[: int(size)])
            first += int(nb)
        return jnp.concatenate(pieces)


class BlockDecoder(nn.Module):
    """The block heads' deterministic MLP: ``Dense(hidden), tanh, Dense(out)`` per block.

    ``out`` is ``block_size`` (the ``block`` head: the values) or ``coeff_dim``
    (``random_basis``: coefficients for the fixed basis).
    """

    hidden: int
    out: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = jnp.tanh(nn.Dense(self.hidden, name="hidden")(x))
        return nn.Dense(self.out, name="out")(x)


def orthogonal_basis(seed: int, shape: tuple[int, int], stream: int | None = None) -> Array:
    """An orthogonal random matrix from ``seed`` (``stream`` folded in when given)."""
    key = jax.random.key(seed)
    if stream is not None:
        key = jax.random.fold_in(key, stream)
    return jax.nn.initializers.orthogonal()(key, shape, jnp.float32)


def unit_columns(basis: Array) -> Array:
    """``basis`` with every column scaled to unit norm.

    An orthogonal ``coeff_dim x width`` matrix with orthonormal rows (``coeff_dim <= width``)
    has columns of squared norm ``coeff_dim / width`` on average, so ``c @ B`` shrinks as the
    width grows (the dense head's ``sqrt(coeff_dim / S_max)``). With unit columns, each entry
    of ``c @ B`` has the variance ``sum_i var(c_i) B_ij^2``: that of ``c`` when ``c``'s
    entries share a variance, for any width and any crop of the columns.

    Example:
        >>> b = unit_columns(orthogonal_basis(0, (4, 16)))
        >>> bool(jnp.allclose(jnp.linalg.norm(b, axis=0), 1.0))
        True
    """
    return basis / jnp.linalg.norm(basis, axis=0, keepdims=True)
