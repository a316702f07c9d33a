"""Computational graphs of parameter pytrees (DESIGN §2, "Graphs").

A network's parameter pytree becomes a graph: one node per parameter tensor (leaf), in
forward (data-flow) order, with edges linking consecutive nodes in both directions. Graphs are
built once, in Python, from shapes alone; everything they hold is a static NumPy array, so the
code that consumes them has static shapes.

**The forward-order rule** (the default ``order_key``, for any flax module's ``params``):

* the leaves of one module: ``kernel`` (or ``embedding``) first, then ``scale``, then
  ``bias``: the order in which a layer applies them;
* sibling modules (or submodules) of one parent: by name, as a layer kind and an index,
  ``Dense_2`` before ``Dense_10`` (natural number sort); names of one kind with any prefix
  (``layers_0``, ``layers_1``, ...) order by their index alone;
* sibling modules of different kinds, as flax names them by default (``Conv_0``, ``Conv_1``,
  ``Dense_0``, ...): embeddings, then convolutions, then dense layers (``Embed`` < ``Conv`` <
  ``Dense``), the order of the usual image network (a conv stack, then a dense head).

A policy the rule cannot order raises :class:`~selfref_ghn.config.ConfigError` (field
``policy``; ``graph_of(..., strict=True)``, which every run's policy goes through) naming the
names it cannot order: siblings of different kinds outside that list
(``encoder`` and ``decoder``; ``LayerNorm_0`` and ``Dense_0``), a leaf beside a module
(``log_std`` beside ``Dense_0``), or a module's leaves outside the list (``kernel``, ``bias``
and ``gamma``). Without ``strict`` (a bare pytree, e.g. evosax-style ``{"w", "b"}`` through
ask/tell), such names fall back to alphabetical order. Name such layers in forward order
(``layers_0``, ``layers_1``, ...) or pass :func:`graph_of` an ``order_key`` of your own (the
SR-GHN's self graph has its own).

The same ordering defines the *flat layout* of the network's parameters: leaf after leaf in
node order, each raveled. ``Graph.ravel``/``Graph.unravel`` move between a pytree and that
flat vector, and ``Graph.node_of_param``/``Graph.pos_in_leaf`` say, for every entry of the flat
vector, which node it belongs to and where it sits inside its leaf.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from selfref_ghn.config import ConfigError
from selfref_ghn.types import Array, Params

NUM_NODE_FEATURES = 9  # Graph.node_features: size, fan-in, fan-out, depth, 5 kinds
_LEAF_RANK = {"kernel": 0, "embedding": 0, "scale": 1, "bias": 2}
# kinds of layers, in the order an image network applies them, when flax names them by kind
_KIND_RANK = {"Embed": 0, "Conv": 1, "Dense": 2}


def _key_name(entry: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def path_name(path: Sequence[Any]) -> str:
    """``('Dense_0', 'kernel')``-style key path as ``'Dense_0/kernel'``."""
    return "/".join(_key_name(p) for p in path)


def _natural(part: str) -> tuple:
    """Split trailing integers so that ``Dense_10`` sorts after ``Dense_2``."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", part))


def _kind(name: str) -> str:
    """``'Dense_10'`` -> ``'Dense'``; ``'layers3'`` -> ``'layers'``; no index: the whole name."""
    return re.sub(r"_?\d+$", "", name)


def forward_order_key(names: Sequence[str]) -> tuple:
    """Default forward order (the module docstring's rule): modules by kind rank and natural
    order, then kernel before bias in a module."""
    *modules, leaf = names
    ranked = tuple((_KIND_RANK.get(_kind(m), len(_KIND_RANK)), _natural(m)) for m in modules)
    return (ranked, _LEAF_RANK.get(leaf, 1), leaf)


def check_forward_order(paths: Sequence[Sequence[str]]) -> None:
    """Raise :class:`ConfigError` (field ``policy``) where the forward-order rule cannot order
    a pytree's leaves, given as key paths (see the module docstring)."""
    children: dict[tuple[str, ...], dict[str, bool]] = {}
    for path in paths:
        for depth, name in enumerate(path):
            is_leaf = depth == len(path) - 1
            children.setdefault(tuple(path[:depth]), {})[name] = is_leaf
    for parent, kids in children.items():
        if len(kids) < 2:
            continue
        where = f"under {'/'.join(parent)!r}" if parent else "at the top"
        leaves = sorted(k for k, leaf in kids.items() if leaf)
        modules = sorted(k for k, leaf in kids.items() if not leaf)
        if leaves and modules:
            problem = f"leaves {leaves} beside modules {modules}"
        elif leaves and any(k not in _LEAF_RANK for k in leaves):
            problem = f"leaves {leaves}: only {sorted(_LEAF_RANK)} have a rule"
        else:
            kinds = {_kind(m) for m in modules}
            unindexed = [m for m in modules if _kind(m) == m]
            if (len(kinds) == 1 and not unindexed) or kinds <= set(_KIND_RANK):
                continue
            problem = f"modules {modules} of kinds with no order"
        raise ConfigError(
            "policy",
            problem,
            f"the forward order of the parameter tree ({where}) is unknown: name sibling "
            "layers with one prefix and an index (layers_0, layers_1, ...), keep to Conv_i "
            "then Dense_i with kernel/bias leaves, or pass graph_of an order_key",
        )


@dataclasses.dataclass(frozen=True, eq=False)
class Graph:
    """The static graph of one parameter pytree.

    Attributes:
        names: leaf names (``'Dense_0/kernel'``) in node order.
        shapes: leaf shapes in node order.
        sizes: ``(N,)`` leaf sizes.
        offsets: ``(N,)`` start of each leaf in the flat layout.
        senders, receivers: ``(2(N-1),)`` edge endpoints (consecutive nodes, both ways).
        adjacency: ``(N, N)`` with ``adjacency[r, s]`` the number of edges ``s -> r``.
        node_of_param: ``(num_params,)`` node index of each flat entry.
        pos_in_leaf: ``(num_params,)`` position of each flat entry inside its leaf.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    treedef: Any
    leaf_perm: tuple[int, ...]  # node i holds treedef leaf leaf_perm[i]
    dtypes: tuple[Any, ...]

    @property
    def num_nodes(self) -> int:
        return len(self.names)

    @property
    def sizes(self) -> np.ndarray:
        return np.array([math.prod(s) for s in self.shapes], dtype=np.int32)

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int32)

    @property
    def num_params(self) -> int:
        return int(self.sizes.sum())

    @property
    def max_leaf_size(self) -> int:
        return int(self.sizes.max())

    @property
    def senders(self) -> np.ndarray:
        n = self.num_nodes
        fwd = np.arange(n - 1, dtype=np.int32)
        return np.concatenate([fwd, fwd + 1])

    @property
    def receivers(self) -> np.ndarray:
        n = self.num_nodes
        fwd = np.arange(n - 1, dtype=np.int32)
        return np.concatenate([fwd + 1, fwd])

    @property
    def adjacency(self) -> np.ndarray:
        a = np.zeros((self.num_nodes, self.num_nodes), dtype=np.float32)
        np.add.at(a, (self.receivers, self.senders), 1.0)
        return a

    @property
    def node_of_param(self) -> np.ndarray:
        return np.repeat(np.arange(self.num_nodes, dtype=np.int32), self.sizes)

    @property
    def pos_in_leaf(self) -> np.ndarray:
        return np.concatenate([np.arange(s, dtype=np.int32) for s in self.sizes])

    def adjacencies(self, edges: str = "chain", aggregation: str = "sum") -> np.ndarray:
        """The graph's edges for message passing (``Config.graph_edges``,
        ``Config.graph_aggregation``).

        ``"chain"``: :attr:`adjacency`, ``(N, N)``. ``"typed"``: ``(3, N, N)``, one matrix per
        edge type: forward (node ``s`` to ``s + 1``), backward (``s + 1`` to ``s``) and same
        layer (between the tensors of one module, both ways, e.g. a kernel and its bias).
        ``"mean"`` weighs each of a node's incoming edges (of every type) by one over their
        number, so a message is their mean instead of their sum.
        """
        if edges == "chain":
            a = self.adjacency[None]
        else:
            n = self.num_nodes
            a = np.zeros((3, n, n), np.float32)
            fwd = np.arange(n - 1)
            a[0, fwd + 1, fwd] = 1.0
            a[1, fwd, fwd + 1] = 1.0
            layer = [name.rpartition("/")[0] for name in self.names]
            for r in range(n):
                for s_ in range(n):
                    a[2, r, s_] = float(r != s_ and layer[r] == layer[s_])
        if aggregation == "mean":
            a = a / np.maximum(a.sum(axis=(0, 2)), 1.0)[None, :, None]
        return a[0] if edges == "chain" else a

    @property
    def node_features(self) -> np.ndarray:
        """``(N, NUM_NODE_FEATURES)`` structural features of each tensor (``Config.
        graph_features``): ``log1p`` of its size, fan-in and fan-out (a kernel ``(..., in,
        out)``: ``prod(...) * in`` and ``out``; a vector: 1 and its size), its depth (node index
        over ``N - 1``), and its kind, one-hot: kernel, bias, convolution kernel (rank 4),
        embedding, other."""
        rows = []
        n = self.num_nodes
        for i, (name, shape) in enumerate(zip(self.names, self.shapes, strict=True)):
            leaf = name.rpartition("/")[2]
            size = math.prod(shape)
            fan_in, fan_out = (math.prod(shape[:-1]), shape[-1]) if len(shape) > 1 else (1, size)
            kind = (
                3 if "embed" in leaf else 2 if len(shape) == 4 else 0 if leaf == "kernel"
                else 1 if leaf == "bias" else 4
            )  # fmt: skip
            onehot = [0.0] * 5
            onehot[kind] = 1.0
            depth = i / max(n - 1, 1)
            rows.append(
                [math.log1p(size), math.log1p(fan_in), math.log1p(fan_out), depth, *onehot]
            )
        return np.asarray(rows, np.float32)

    def mask(self, predicate: Callable[[str], bool]) -> np.ndarray:
        """``(num_params,)`` boolean mask of the flat entries whose leaf name satisfies it."""
        per_node = np.array([predicate(n) for n in self.names], dtype=bool)
        return per_node[self.node_of_param]

    def ravel(self, params: Params) -> Array:
        """Pytree -> ``(num_params,)`` flat vector in node order."""
        leaves = jax.tree_util.tree_leaves(params)
        return jnp.concatenate([jnp.ravel(leaves[i]) for i in self.leaf_perm])

    def unravel(self, flat: Array) -> Params:
        """``(num_params,)`` flat vector -> pytree (static slices, no gathers).

        Raises:
            ValueError: ``flat`` is not of shape ``(num_params,)`` (checked at trace time:
                shapes are static), e.g. another network's flat vector.
        """
        if tuple(jnp.shape(flat)) != (self.num_params,):
            raise ValueError(
                f"unravel expects a flat vector of shape ({self.num_params},) for this graph "
                f"({self.num_nodes} leaves: {', '.join(self.names[:3])}"
                f"{', ...' if self.num_nodes > 3 else ''}), got shape {tuple(jnp.shape(flat))}"
            )
        leaves: list[Any] = [None] * self.num_nodes
        for node, (start, size, shape) in enumerate(
            zip(self.offsets, self.sizes, self.shapes, strict=True)
        ):
            leaves[self.leaf_perm[node]] = flat[int(start) : int(start) + int(size)].reshape(shape)
        return jax.tree_util.tree_unflatten(self.treedef, leaves)

    def split_rows(self, rows: Array) -> Params:
        """``(N, >=max_leaf_size)`` per-node rows -> pytree, each row truncated to its leaf."""
        leaves: list[Any] = [None] * self.num_nodes
        for node, (size, shape) in enumerate(zip(self.sizes, self.shapes, strict=True)):
            leaves[self.leaf_perm[node]] = rows[node, : int(size)].reshape(shape)
        return jax.tree_util.tree_unflatten(self.treedef, leaves)


def graph_of(
    params: Params,
    order_key: Callable[[Sequence[str]], Any] = forward_order_key,
    strict: bool = False,
) -> Graph:
    """Build the graph of a parameter pytree from its shapes.

    Args:
        params: a pytree of arrays or ``jax.ShapeDtypeStruct`` (e.g. flax ``params``).
        order_key: maps a leaf's key path (a list of names) to a sort key giving forward order.
            The default is the forward-order rule of the module docstring: ``Dense_2`` before
            ``Dense_10``, ``Conv_*`` before ``Dense_*``, a module's kernel before its bias.
        strict: refuse a pytree the default rule cannot order (names outside it would
            otherwise sort alphabetically).

    Returns:
        The static :class:`Graph`.

    Raises:
        ConfigError: ``strict`` with the default ``order_key``, a pytree the rule cannot order
            (field ``policy``).

    Example:
        >>> import jax.numpy as jnp
        >>> g = graph_of({"Dense_0": {"kernel": jnp.zeros((4, 8)), "bias": jnp.zeros(8)}})
        >>> g.names
        ('Dense_0/kernel', 'Dense_0/bias')
    """
    with_path, treedef = jax.tree_util.tree_flatten_with_path(params)
    if not with_path:
        raise ValueError("cannot build a graph of an empty parameter pytree")
    names = [[_key_name(p) for p in path] for path, _ in with_path]
    if strict and order_key is forward_order_key:
        check_forward_order(names)
    perm = sorted(range(len(with_path)), key=lambda i: order_key(names[i]))
    return Graph(
        names=tuple("/".join(names[i]) for i in perm),
        shapes=tuple(tuple(int(d) for d in with_path[i][1].shape) for i in perm),
        treedef=treedef,
        leaf_perm=tuple(perm),
        dtypes=tuple(with_path[i][1].dtype for i in perm),
    )
