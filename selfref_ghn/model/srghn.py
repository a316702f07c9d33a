"""The Self-Referential Graph HyperNetwork (DESIGN §2; paper §3).

An SR-GHN holds one learned embedding per node of two graphs: the *policy graph* (one node
per policy parameter tensor) and the *self graph* (one node per tensor of the SR-GHN itself,
embedding tables included). A shared GNN backbone (K rounds of summed linear messages and a
GRU update) turns embeddings into node states; then

* the **deterministic head**, Linear(D -> P_max), turns policy-graph states into policy
  weights (each row truncated to its leaf's size and reshaped);
* the **stochastic head**, a ReLU trunk then Linear(D -> coeff_dim) and Linear(D -> M), turns
  self-graph states into per-node ``log_std`` and ``M`` mutation-rate logits.

``Config.head`` picks the deterministic head (DESIGN §2b, :mod:`selfref_ghn.model.heads`):
``dense`` is the one above; ``block`` and ``random_basis`` generate every tensor block by block
(and the stochastic head then works per block of the GHN's own tensors), so that no size of the
SR-GHN depends on the largest policy tensor.

A member's parameters are one flat vector in self-graph order
(:class:`~selfref_ghn.model.graph.Graph`
flat layout): mutation is an add, selection a gather.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from selfref_ghn.config import Config
from selfref_ghn.model.graph import NUM_NODE_FEATURES, Graph, _natural, graph_of
from selfref_ghn.model.heads import (
    BLOCKWISE,
    NUM_BLOCK_FEATURES,
    BlockDecoder,
    BlockLayout,
    orthogonal_basis,
    unit_columns,
)
from selfref_ghn.types import Array, Params

# Forward (data-flow) order of the SR-GHN's own tensors: the self graph's node order.
_SELF_ORDER = {
    name: i
    for i, name in enumerate(
        [
            "policy_embed", "self_embed", "features", "gnn", "rounds", "message", "gru",
            "input", "hidden", "det_head", "stoch_head", "trunk_0", "trunk_1", "log_std",
            "rate_logits", "out", "kernel", "bias",
        ]
    )
}  # fmt: skip


def self_order_key(names: Sequence[str]) -> tuple:
    """Sort key putting the SR-GHN's leaves in data-flow order."""
    return tuple((_SELF_ORDER.get(n, len(_SELF_ORDER)), _natural(n)) for n in names)


class GRUCell(nn.Module):
    """GRU cell with its three gates fused into one input and one hidden matrix product.

    ``r = σ(x W_ir + b_ir + h W_hr + b_hr)``, ``z = σ(x W_iz + b_iz + h W_hz + b_hz)``,
    ``n = tanh(x W_in + b_in + r ⊙ (h W_hn + b_hn))``, ``h' = (1 - z) ⊙ n + z ⊙ h``, with
    ``W_i = [W_ir | W_iz | W_in]`` (``input``) and ``W_h = [W_hr | W_hz | W_hn]`` (``hidden``).
    """

    dim: int

    @nn.compact
    def __call__(self, h: Array, x: Array) -> Array:
        xi = nn.Dense(3 * self.dim, name="input")(x)
        hh = nn.Dense(3 * self.dim, name="hidden")(h)
        xr, xz, xn = jnp.split(xi, 3, axis=-1)
        hr, hz, hn = jnp.split(hh, 3, axis=-1)
        r = jax.nn.sigmoid(xr + hr)
        z = jax.nn.sigmoid(xz + hz)
        n = jnp.tanh(xn + r * hn)
        return (1.0 - z) * n + z * h


class _Round(nn.Module):
    """One message-passing round (scanned ``rounds`` times with shared parameters)."""

    dim: int

    @nn.compact
    def __call__(self, h: Array, adjacency: Array) -> tuple[Array, None]:
        if adjacency.ndim == 2:  # one edge type: one message map
            m = adjacency @ nn.Dense(self.dim, name="message")(h)
        else:  # typed edges (T, N, N): a message map per type, in one matrix product
            t = adjacency.shape[0]
            msgs = nn.Dense(t * self.dim, name="message")(h).reshape(h.shape[0], t, self.dim)
            m = jnp.einsum("trs,std->rd", adjacency, msgs)
        return GRUCell(self.dim, name="gru")(h, m), None


class GNN(nn.Module):
    """Message passing: ``m = A @ Linear(h)``; ``h = GRU(h, m)``, repeated ``rounds`` times.

    ``A[r, s]`` counts the edges ``s -> r``, so ``A @ Linear(h)`` is the sum of the linear
    messages over each node's incoming edges (their mean, with ``A`` row-normalised). Typed
    edges (``A`` of shape ``(T, N, N)``) give each type its own linear map:
    ``m = sum_t A_t @ Linear_t(h)``. The rounds share one set of parameters and run
    in a ``scan`` (one traced round, whatever ``rounds`` is).
    """

    dim: int
    rounds: int

    @nn.compact
    def __call__(self, h: Array, adjacency: Array) -> Array:
        if self.rounds == 0:
            return h
        scan = nn.scan(
            _Round,
            variable_broadcast="params",
            split_rngs={"params": False},
            in_axes=nn.broadcast,
            length=self.rounds,
        )
        h, _ = scan(self.dim, name="rounds")(h, adjacency)
        return h


class StochasticHead(nn.Module):
    """Per node: trunk MLP (ReLU) -> ``log_std`` (coeff_dim) and ``num_rates`` rate logits."""

    trunk_dim: int
    coeff_dim: int
    num_rates: int

    @nn.compact
    def __call__(self, h: Array) -> tuple[Array, Array]:
        x = nn.relu(nn.Dense(self.trunk_dim, name="trunk_0")(h))
        x = nn.relu(nn.Dense(self.trunk_dim, name="trunk_1")(x))
        log_std = nn.Dense(self.coeff_dim, name="log_std")(x)
        logits = nn.Dense(self.num_rates, name="rate_logits")(x)
        return log_std, logits


class SRGHNNet(nn.Module):
    """The network: embeddings, shared GNN backbone, deterministic and stochastic heads.

    ``head`` ``"dense"``: the deterministic head is ``Dense(policy_max)``; ``"block"`` and
    ``"random_basis"``: a :class:`~selfref_ghn.model.heads.BlockDecoder` with output width
    ``block_out`` (``block_size`` or ``coeff_dim``), applied per block.
    """

    num_policy_nodes: int
    num_self_nodes: int
    policy_max: int
    embed_dim: int
    gnn_rounds: int
    trunk_dim: int
    coeff_dim: int
    num_rates: int
    head: str = "dense"
    block_out: int = 0
    num_features: int = 0  # Graph.node_features' width with Config.graph_features, else 0

    def setup(self):
        init = nn.initializers.normal(stddev=1.0)
        self.policy_embed = self.param(
            "policy_embed", init, (self.num_policy_nodes, self.embed_dim)
        )
        self.self_embed = self.param("self_embed", init, (self.num_self_nodes, self.embed_dim))
        if self.num_features:
            self.features = nn.Dense(self.embed_dim, name="features")
        self.gnn = GNN(self.embed_dim, self.gnn_rounds)
        if BLOCKWISE[self.head]:
            self.det_head = BlockDecoder(self.embed_dim, self.block_out)
        else:
            self.det_head = nn.Dense(self.policy_max)
        self.stoch_head = StochasticHead(self.trunk_dim, self.coeff_dim, self.num_rates)

    def states(self, embed: Array, graph: tuple[Array, Array | None]) -> Array:
        """Node states: the GNN over ``graph = (adjacency, features)`` from the embeddings
        (plus a linear map of the structural features, where there are any)."""
        adjacency, features = graph
        h = embed if features is None else embed + self.features(features)
        return self.gnn(h, adjacency)

    def policy_rows(self, policy_graph: tuple) -> Array:
        """``(N_policy, P_max)`` generated policy weights, one row per policy tensor."""
        return self.det_head(self.states(self.policy_embed, policy_graph))

    def mutation_outputs(self, self_graph: tuple) -> tuple[Array, Array]:
        """``(N_self, coeff_dim)`` log-std and ``(N_self, M)`` rate logits."""
        return self.stoch_head(self.states(self.self_embed, self_graph))

    def policy_blocks(self, policy_graph: tuple, layout: BlockLayout) -> Array:
        """``(num_blocks, block_out)`` block heads' output for every policy block."""
        return self.det_head(layout.inputs(self.states(self.policy_embed, policy_graph)))

    def block_mutation_outputs(
        self, self_graph: tuple, layout: BlockLayout
    ) -> tuple[Array, Array]:
        """``(num_blocks, coeff_dim)`` log-std and ``(num_blocks, M)`` logits, per self block."""
        return self.stoch_head(layout.inputs(self.states(self.self_embed, self_graph)))

    def __call__(self, policy_graph: tuple, self_graph: tuple):
        if not BLOCKWISE[self.head]:
            return self.policy_rows(policy_graph), self.mutation_outputs(self_graph)

        def with_features(h: Array) -> Array:  # the widths of the block inputs, for init
            return jnp.concatenate([h, jnp.zeros((h.shape[0], NUM_BLOCK_FEATURES))], -1)

        hp = self.states(self.policy_embed, policy_graph)
        hs = self.states(self.self_embed, self_graph)
        return self.det_head(with_features(hp)), self.stoch_head(with_features(hs))


@dataclasses.dataclass(frozen=True, eq=False)
class SRGHN:
    """Static description of an SR-GHN for a given policy: graphs, network, constants.

    Holds no parameters; a member's parameters are a flat ``(num_params,)`` vector.

    Args:
        policy_params: the policy's parameter pytree (arrays or ``ShapeDtypeStruct``).
        config: the run :class:`~selfref_ghn.config.Config` (architecture fields).

    Example:
        >>> from selfref_ghn.model.policy import MLPPolicy, policy_template
        >>> tmpl = policy_template(MLPPolicy((32,), 2), (4,))
        >>> ghn = SRGHN.create(tmpl, Config())
        >>> flat = ghn.init(jax.random.key(0))
        >>> flat.shape == (ghn.num_params,)
        True
    """

    policy_graph: Graph
    self_graph: Graph
    net: SRGHNNet
    config: Config

    @classmethod
    def create(cls, policy_params: Params, config: Config) -> SRGHN:
        policy_graph = graph_of(policy_params)

        def net_with(n_self: int) -> SRGHNNet:
            return SRGHNNet(
                num_policy_nodes=policy_graph.num_nodes,
                num_self_nodes=n_self,
                policy_max=policy_graph.max_leaf_size,
                embed_dim=config.embed_dim,
                gnn_rounds=config.gnn_rounds,
                trunk_dim=config.trunk_dim,
                coeff_dim=config.coeff_dim,
                num_rates=config.num_rates,
                head=config.head,
                block_out=config.block_size if config.head == "block" else config.coeff_dim,
                num_features=NUM_NODE_FEATURES if config.graph_features else 0,
            )

        def probe(n: int) -> tuple:  # a graph's inputs of the right shapes, for init
            edges = (n, n) if config.graph_edges == "chain" else (3, n, n)
            feats = jnp.zeros((n, NUM_NODE_FEATURES)) if config.graph_features else None
            return jnp.zeros(edges), feats

        def shapes(net: SRGHNNet) -> Params:
            pg = probe(policy_graph.num_nodes)
            return jax.eval_shape(lambda k: net.init(k, pg, probe(n_probe)), jax.random.key(0))[
                "params"
            ]

        # The self graph includes the self-embedding table, whose row count is the number of
        # nodes of the self graph: count the leaves first (the count does not depend on it).
        n_probe = 1
        n_self = len(jax.tree_util.tree_leaves(shapes(net_with(n_probe))))
        n_probe = n_self
        net = net_with(n_self)
        self_graph = graph_of(shapes(net), order_key=self_order_key)
        assert self_graph.num_nodes == n_self
        return cls(policy_graph=policy_graph, self_graph=self_graph, net=net, config=config)

    # ------------------------------------------------------------------------------ sizes
    @property
    def num_params(self) -> int:
        return self.self_graph.num_params

    @property
    def blockwise(self) -> bool:
        """Whether the head works per block (``block``, ``random_basis``)."""
        return BLOCKWISE[self.config.head]

    @functools.cached_property
    def policy_layout(self) -> BlockLayout:
        """The policy's tensors in blocks of ``block_size`` (block heads)."""
        return BlockLayout(self.policy_graph, self.config.block_size)

    @functools.cached_property
    def self_layout(self) -> BlockLayout:
        """The SR-GHN's own tensors in blocks of ``block_size`` (block heads' self-mutation)."""
        return BlockLayout(self.self_graph, self.config.block_size)

    @property
    def num_mutation_units(self) -> int:
        """Rows of the stochastic head's output: self-graph nodes (dense) or self blocks."""
        return self.self_layout.num_blocks if self.blockwise else self.self_graph.num_nodes

    @property
    def blocks_changed(self) -> int:
        """Self blocks a child changes: ``ceil(block_ratio * blocks)`` (block heads)."""
        return math.ceil(self.config.block_ratio * self.self_layout.num_blocks)

    @property
    def basis_shape(self) -> tuple[int, int]:
        """The stochastic head's fixed random basis: ``(coeff_dim, S_max)`` for ``dense``,
        ``(coeff_dim, block_size)`` for the block heads."""
        width = self.config.block_size if self.blockwise else self.self_graph.max_leaf_size
        return (self.config.coeff_dim, width)

    @property
    def basis_floats(self) -> int:
        """Floats of every fixed basis: the stochastic head's, and ``random_basis``'s own."""
        n = math.prod(self.basis_shape)
        if self.config.head == "random_basis":
            n += self.config.coeff_dim * self.config.block_size
        return n

    def make_basis(self) -> Array:
        """The stochastic head's fixed random basis, from ``basis_seed``: orthogonal (rows
        orthonormal) for ``dense``; for the block heads (and ``dense_update="per_entry"``) the
        same with unit-norm columns (:func:`~selfref_ghn.model.heads.unit_columns`)."""
        basis = orthogonal_basis(self.config.basis_seed, self.basis_shape)
        return unit_columns(basis) if self.unit_updates else basis

    @property
    def unit_updates(self) -> bool:
        """Whether every entry's update has std ``std * block_update_scale`` (the block heads,
        and ``dense_update="per_entry"``) rather than the paper's ``std * sqrt(coeff_dim /
        S_max)`` on average (``dense``)."""
        return self.blockwise or self.config.dense_update == "per_entry"

    @functools.cached_property
    def policy_basis(self) -> np.ndarray:
        """``random_basis``: the deterministic head's fixed ``(coeff_dim, block_size)`` basis
        with unit-norm columns; a constant from ``basis_seed`` (a stream apart from the
        stochastic head's basis), never a parameter."""
        shape = (self.config.coeff_dim, self.config.block_size)
        with jax.ensure_compile_time_eval():
            return np.asarray(unit_columns(orthogonal_basis(self.config.basis_seed, shape, 1)))

    # ------------------------------------------------------------------------------ params
    def init_scale(self) -> np.ndarray:
        """``(num_params,)`` standard deviation of each entry at initialisation.

        Embeddings ``N(0, 1)``; kernels LeCun normal ``N(0, 1/fan_in)``; biases zero. One
        normal draw scaled by this vector initialises a member: one random call site to
        compile instead of one per tensor.
        """
        scales = []
        for name, shape in zip(self.self_graph.names, self.self_graph.shapes, strict=True):
            leaf = name.rsplit("/", 1)[-1]
            if leaf.endswith("embed"):
                s = 1.0
            elif leaf == "kernel":
                s = 1.0 / np.sqrt(shape[0])
            else:
                s = 0.0
            scales.append(np.full(int(np.prod(shape)), s, np.float32))
        return np.concatenate(scales)

    def init(self, key: Array) -> Array:
        """A fresh member: ``(num_params,)`` flat parameters, clipped to ``±param_clip``."""
        flat = jax.random.normal(key, (self.num_params,), jnp.float32) * self.init_scale()
        clip = self.config.param_clip
        return jnp.clip(flat, -clip, clip)

    def graph_inputs(self, graph: Graph) -> tuple[Array, Array | None]:
        """``(adjacency, features)`` of the policy or self graph, as the config asks
        (``graph_edges``, ``graph_aggregation``, ``graph_features``): constants."""
        c = self.config
        adjacency = jnp.asarray(graph.adjacencies(c.graph_edges, c.graph_aggregation))
        return adjacency, jnp.asarray(graph.node_features) if c.graph_features else None

    def unravel(self, flat: Array) -> Params:
        """Flat member parameters -> the flax parameter pytree."""
        return self.self_graph.unravel(flat)

    def policy_params(self, flat: Array) -> Params:
        """Deterministic head: the policy parameter pytree this member generates."""
        if self.blockwise:
            values = self._apply(
                flat,
                self.graph_inputs(self.policy_graph),
                self.policy_layout,
                method=SRGHNNet.policy_blocks,
            )
            if self.config.head == "random_basis":
                values = values @ jnp.asarray(self.policy_basis)
            return self.policy_graph.unravel(self.policy_layout.assemble(values))
        rows = self._apply(flat, self.graph_inputs(self.policy_graph), method=SRGHNNet.policy_rows)
        return self.policy_graph.split_rows(rows)

    def mutation_outputs(self, flat: Array) -> tuple[Array, Array]:
        """Stochastic head: ``(U, coeff_dim)`` log-std and ``(U, M)`` rate logits, ``U`` =
        :attr:`num_mutation_units` (one row per self-graph node, or per self block)."""
        if self.blockwise:
            return self._apply(
                flat,
                self.graph_inputs(self.self_graph),
                self.self_layout,
                method=SRGHNNet.block_mutation_outputs,
            )
        return self._apply(
            flat, self.graph_inputs(self.self_graph), method=SRGHNNet.mutation_outputs
        )

    def _apply(self, flat: Array, *args: Any, method: Any) -> Any:
        """``net.apply`` of ``method`` with member ``flat``'s parameters (its one output)."""
        return self.net.apply({"params": self.unravel(flat)}, *args, method=method)

    def leaf_mask(self, prefix: str) -> np.ndarray:
        """``(num_params,)`` mask of the flat entries of tensors under ``prefix``."""
        return self.self_graph.mask(lambda n: n.startswith(prefix))
