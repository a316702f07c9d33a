"""The population axis over a device mesh (DESIGN §4: "The population axis is sharded over a
device mesh (``jax.sharding.Mesh`` + ``NamedSharding``)").

A run on ``N`` devices builds a one-axis :class:`jax.sharding.Mesh` (axis :data:`AXIS`) over the
first ``N`` devices of ``jax.devices()`` (every process's devices in a multi-host run, see
:mod:`selfref_ghn.run.distributed`). The leading (population) axis of ``EvoState.params``,
``EvoState.policy`` and ``EvoState.fitness``, and of the children, policies and fitness inside
the generation step, is split over that axis; everything else (keys, hyperparameters, the basis,
observation statistics, the monitor, the metrics) is replicated. GSPMD partitions the step from
these annotations: the (mu + lambda) selection (``lax.top_k`` over the ``P(1+C)`` fitness values
and the gathers of the survivors) needs no hand-written collective.

The episodes are the exception (:func:`per_member`; with ``Config.bitwise_block`` self-mutation
and the deterministic head too): each device plays its own block of members under
``jax.shard_map``. An environment may gather or sort across the whole batch of episodes
it is stepped on (LunarLander's solver packs the episodes that are in contact into dense
chunks), and GSPMD would partition such a step with collectives between devices on every
physics iteration; episodes are independent per member, so no device needs another's.

Random keys are derived per member (generation, member index: :mod:`selfref_ghn.prng`), so a
member's random draws are the same whichever device computes them. Its arithmetic is not: XLA
compiles the step once per device count, and the per-device batch (``P(1+C)/N`` members), the
partitioned program around it and the partial sums of reductions over members change how
floats are rounded (for example ``c @ B`` in self-mutation is one matrix product over the
device's whole batch, and XLA:CPU fuses ``a * b + c`` into one FMA in some fusions and not in
others). Runs on different device counts agree to float32 rounding at first and drift apart
as selection amplifies it (measured in docs/scaling.md). ``Config.bitwise_block = k`` trades
speed for bitwise identity: every device computes its members in blocks of ``k`` in a loop
whose shape does not depend on the device count (:func:`per_member` with ``block``), and
reductions over the members run on whole, gathered arrays (:func:`whole`). On CartPole-Switch
the same seed then gives the same metrics and parameters, bit for bit, on any device count
that divides ``P / k`` (``tests/test_sharding.py``, 100 generations on 1, 2, 4 and 8 CPU
devices). It is not a guarantee for every environment: on LunarLander-Switch the returns still
differ in the 5th-6th digit from generation 0 (the step compiled into another program still
rounds differently), and it is not yet checked across GPUs.

No padding: both the ``P`` parents and the ``P(1+C)`` members must divide evenly over the
devices (``P`` divisible by ``N`` suffices, since ``P(1+C)`` is then too); otherwise
:func:`make_mesh` raises :class:`~selfref_ghn.config.ConfigError` before anything compiles,
naming the device counts that would work. Padding would add members whose episodes cost as much
as real ones, and would change what selection sees.

With one device no mesh is built (``make_mesh`` returns ``None``) and the step is compiled with
no sharding annotation at all, exactly as before sharding existed.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from selfref_ghn.config import Config, ConfigError
from selfref_ghn.types import Array

AXIS = "pop"
# EvoState fields whose leading axis is the population.
POPULATION_FIELDS = ("params", "policy", "fitness")


def divisors_up_to(n: int, limit: int) -> list[int]:
    """Device counts ``<= limit`` that divide ``n``."""
    return [d for d in range(1, limit + 1) if n % d == 0]


def make_mesh(config: Config, devices: int | None = None, mesh: Mesh | None = None) -> Mesh | None:
    """The device mesh a run's population is split over, checked against the population.

    Args:
        config: the run configuration (``population_size`` and ``num_children``).
        devices: how many devices to use, the first ``devices`` of ``jax.devices()``; ``None``:
            all of them.
        mesh: a prebuilt one-axis mesh (axis name :data:`AXIS`), used instead of ``devices``.

    Returns:
        The mesh, or ``None`` for a single device (no sharding annotations at all).

    Raises:
        ConfigError: ``devices`` out of range, or a population that does not split evenly.

    Example:
        >>> mesh = make_mesh(Config(population_size=8), devices=1)
        >>> mesh is None
        True
    """
    available = jax.devices()
    if mesh is not None:
        if mesh.axis_names != (AXIS,):
            raise ConfigError("mesh", mesh.axis_names, f"a one-axis mesh named ({AXIS!r},)")
        n = mesh.size
    else:
        n = len(available) if devices is None else devices
        if not 1 <= n <= len(available):
            raise ConfigError(
                "devices", devices, f"between 1 and the {len(available)} devices available"
            )
    P, M = config.population_size, config.num_members
    if P % n or M % n:
        raise ConfigError(
            "population_size",
            P,
            f"the population (P={P} parents, P(1+C)={M} members) must split evenly over "
            f"{n} devices: use a population divisible by {n}, or one of the device counts "
            f"{divisors_up_to(P, len(available))} (--devices / devices=)",
        )
    block = config.bitwise_block
    if block and (P // n) % block:
        raise ConfigError(
            "bitwise_block",
            block,
            f"each of the {n} devices computes its {P // n} parents in blocks of {block}: "
            f"use a block that divides {P // n}, or a device count n with P/n divisible by "
            f"{block}",
        )
    if n == 1:
        return None
    if mesh is None:
        mesh = Mesh(np.array(available[:n]), (AXIS,))
    return mesh


def population_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis split over the mesh, other axes whole."""
    return NamedSharding(mesh, PartitionSpec(AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of the mesh."""
    return NamedSharding(mesh, PartitionSpec())


def constrain(x: Array, mesh: Mesh | None) -> Array:
    """Inside a traced function: ask GSPMD to split ``x``'s leading axis over ``mesh``.

    Args:
        x: an array whose leading axis is the population (or the members).
        mesh: the run's mesh; ``None`` returns ``x`` untouched.

    Returns:
        ``x``, annotated.
    """
    if mesh is None:
        return x
    return jax.lax.with_sharding_constraint(x, population_sharding(mesh))


def whole(tree: Any, mesh: Mesh | None) -> Any:
    """Inside a traced function: every array of ``tree`` gathered whole onto every device.

    A reduction over the members of a gathered array runs in the one-device program's order
    (no partial sums per device).

    Args:
        tree: a pytree of arrays.
        mesh: the run's mesh; ``None`` returns ``tree`` untouched.

    Returns:
        ``tree``, annotated as replicated.
    """
    if mesh is None:
        return tree
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, replicated(mesh)), tree)


def in_blocks(fn: Any, block: int, num_members: int) -> Any:
    """``fn`` over consecutive blocks of ``block`` members, one block per loop iteration.

    The loop's trip count is hidden from XLA (an optimisation barrier), so the loop is never
    unrolled nor removed: its body, ``fn`` on ``block`` members, is the same program whatever
    the number of blocks, and every member is computed by the same arithmetic whatever the
    batch it is part of.

    Args:
        fn: as for :func:`per_member`.
        block: members per block; must divide the number of members ``fn`` is given.
        num_members: how many of ``fn``'s leading arguments are per-member arrays.

    Returns:
        A function with ``fn``'s signature and results.
    """

    def blocked(*args: Any) -> Any:
        members, shared = args[:num_members], args[num_members:]
        n = members[0].shape[0]
        if n % block:
            raise ValueError(f"{n} members do not split into blocks of {block}")

        def one(*m: Any) -> Any:
            return fn(*m, *shared)

        spec = [jax.ShapeDtypeStruct((block,) + x.shape[1:], x.dtype) for x in members]
        outs = jax.tree.map(
            lambda s: jnp.zeros((n,) + s.shape[1:], s.dtype), jax.eval_shape(one, *spec)
        )

        def body(i: Array, outs: Any) -> Any:
            got = one(*(jax.lax.dynamic_slice_in_dim(x, i * block, block) for x in members))
            return jax.tree.map(
                lambda o, v: jax.lax.dynamic_update_slice_in_dim(o, v, i * block, 0), outs, got
            )

        trips = jax.lax.optimization_barrier(jnp.int32(n // block))
        return jax.lax.fori_loop(0, trips, body, outs)

    return blocked


def per_member(fn: Any, mesh: Mesh | None, members: tuple, shared: tuple, block: int = 0) -> Any:
    """``fn(*members, *shared)`` with each device computing only its own block of members.

    Args:
        fn: a function of per-member arrays (leading axis: the members) and shared pytrees,
            returning a pytree whose every leaf has the members as its leading axis; it must
            treat members independently (it sees one device's block).
        mesh: the run's mesh; ``None`` calls ``fn`` directly.
        members: arrays split over the mesh along their leading axis.
        shared: pytrees every device receives whole (keys, environment parameters, statistics).
        block: ``0``: ``fn`` sees a device's members at once; ``k > 0``: blocks of ``k`` in a
            loop (:func:`in_blocks`), so the program each member goes through has the same shapes
            however many members a device holds (bit-identical on CartPole-Switch; not yet on
            LunarLander-Switch, docs/scaling.md).

    Returns:
        ``fn``'s result, split over the mesh along the leading axis.

    Example:
        >>> per_member(lambda x, c: x * c, None, (jnp.arange(4.0),), (2.0,), block=2)
        Array([0., 2., 4., 6.], dtype=float32)
    """
    if block:
        fn = in_blocks(fn, block, len(members))
    if mesh is None:
        return fn(*members, *shared)
    split, whole_spec = PartitionSpec(AXIS), PartitionSpec()
    mapped = jax.shard_map(
        fn,
        mesh=mesh,
        in_specs=(split,) * len(members) + (whole_spec,) * len(shared),
        out_specs=split,
        # environments' loops carry values that do not vary over the mesh next to values that
        # do; the check would reject such (correct) per-device code
        check_vma=False,
    )
    return mapped(*members, *shared)


def state_shardings(state: Any, mesh: Mesh) -> Any:
    """Shardings for every leaf of an ``EvoState`` (or its ``jax.eval_shape``).

    Args:
        state: the state structure.
        mesh: the run's mesh.

    Returns:
        A pytree of the state's structure: :data:`POPULATION_FIELDS` split, the rest replicated.
    """
    rep, pop = replicated(mesh), population_sharding(mesh)
    shard = jax.tree.map(lambda _: rep, state)
    return shard.replace(**{f: pop for f in POPULATION_FIELDS})


def distribute(state: Any, mesh: Mesh | None) -> Any:
    """Place a host-computed state on the mesh as global arrays.

    Works in a multi-host run too: every process holds the same full state (computed from the
    same seed) and contributes the slices its own devices hold.

    Args:
        state: an ``EvoState`` (any placement).
        mesh: the run's mesh; ``None`` returns ``state`` untouched.

    Returns:
        The state with every leaf a global array with its :func:`state_shardings` sharding.
    """
    if mesh is None:
        return state
    host = jax.device_get(gather(state))
    shardings = state_shardings(state, mesh)

    def put(x, sharding):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

    return jax.tree.map(put, host, shardings)


def gather(tree: Any) -> Any:
    """Host copies (numpy) of a pytree's arrays, sharded or not, in single- or multi-host runs.

    In a multi-host run every process must call this (it is a collective for arrays that are
    split across processes).

    Args:
        tree: a pytree of arrays.

    Returns:
        The same pytree of numpy arrays, each whole.
    """
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    def whole(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated:
            return np.asarray(jax.device_get(x))
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(whole, tree)
