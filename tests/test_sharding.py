"""The population axis over a device mesh on 1, 2, 4, 8 devices: what a run's device count
changes, and what it does not.

* Random draws: every member's keys, and so its draws, are the same on any device count.
* Arithmetic (default, ``bitwise_block=0``): the same up to float32 rounding at the first
  generation; selection then amplifies rounding, so later generations may differ.
* ``bitwise_block=k``: the same metrics and parameters, bit for bit, for 100 generations.

These tests need 8 (simulated CPU) devices, so they run in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (this process has already initialised
jax with one device); the subprocess keeps conftest's ``--xla_backend_optimization_level=0``.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from selfref_ghn.config import Config, ConfigError
from selfref_ghn.evolution.sharding import make_mesh
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parent.parent
XLA_FLAGS = "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"


def run_with_devices(code: str, timeout: float = 300) -> dict:
    """Run ``code`` in a fresh interpreter with 8 CPU devices; it prints one JSON line last."""
    env = {**os.environ, "XLA_FLAGS": XLA_FLAGS, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_single_device_builds_no_mesh():
    assert make_mesh(Config(**TINY)) is None  # this process has one device
    with pytest.raises(ConfigError, match="devices"):
        make_mesh(Config(**TINY), devices=2)


def test_same_draws_on_1_2_4_8_devices():
    """Every child's mutation key and every member's episode key give the same draws whichever
    device makes them: ``mutate`` and ``evaluate_flat`` are replaced by functions that return
    draws from the keys the generation step hands them."""
    res = run_with_devices(
        f"""
        import json, jax, numpy as np
        from selfref_ghn.evolution import generation as evolution
        from selfref_ghn.config import Config
        from selfref_ghn.evolution.rollout import member_key

        def draws_of_mutate(key, ghn, parent, *rest):
            return jax.random.uniform(key, parent.shape)

        def draws_of_episodes(eval_key, members, flats, env, env_params, *rest):
            return jax.vmap(lambda m: jax.random.uniform(member_key(eval_key, m), (3,)))(members)

        evolution.mutate = draws_of_mutate
        evolution.evaluate_flat = draws_of_episodes
        cfg = Config(**{dict(TINY, population_size=8)!r})
        out = {{}}
        for n in (1, 2, 4, 8):
            evo = evolution.Evolution.create(cfg, devices=n)
            state = evo.distribute(evo.init()).replace(generation=jax.numpy.int32(3))
            kids, episodes = jax.jit(
                lambda s: (evo.mutate_population(s)[0], evo.evaluate_members(s, s.policy))
            )(state)
            out[n] = {{"kids": np.asarray(kids).tolist(), "shards": len(kids.addressable_shards),
                       "episodes": np.asarray(episodes).tolist()}}
        print(json.dumps(out))
        """
    )
    kids, episodes = np.asarray(res["1"]["kids"]), np.asarray(res["1"]["episodes"])
    assert kids.shape[0] == 16 and episodes.shape == (8, 3)
    assert len(np.unique(kids[:, 0])) == 16 and len(np.unique(episodes[:, 0])) == 8
    for n in ("2", "4", "8"):
        assert res[n]["shards"] == int(n)
        np.testing.assert_array_equal(res[n]["kids"], kids, err_msg=n)
        np.testing.assert_array_equal(res[n]["episodes"], episodes, err_msg=n)


@pytest.mark.slow  # 15-25 s on a 2-core CPU: `make test-all`
def test_first_generation_agrees_to_rounding_on_1_2_4_8_devices():
    """Default mode (``bitwise_block=0``): one generation from the same state gives children
    and policies equal to float32 rounding (a few ulp), not bit for bit: each device multiplies
    its own batch of coefficients by the basis and XLA rounds a batch of another size, in
    another program, differently. The chunk compiles once; a population that does not split
    evenly is refused before compiling."""
    res = run_with_devices(
        f"""
        import json, jax, jax.numpy as jnp, numpy as np
        from selfref_ghn.config import Config, ConfigError
        from selfref_ghn.evolution.generation import Evolution
        cfg = Config(**{dict(TINY, population_size=8)!r}, switch_intervals=((2, 4),))
        out = {{"devices": len(jax.devices())}}
        for n in (1, 2, 4, 8):
            evo = Evolution.create(cfg, devices=n)
            state = evo.distribute(evo.init())
            def first(s):
                kids = evo.mutate_population(s)[0]
                return kids, evo.policies(kids)
            kids, policies = jax.jit(first)(state)
            chunk = evo.compiled_chunk(2)
            s, _ = chunk(state, 2)
            s, _ = chunk(s, 2)
            out[n] = {{"kids": np.asarray(kids).tolist(), "cache": chunk._cache_size(),
                       "policies": np.asarray(policies).tolist(),
                       "sharding": str(s.params.sharding.spec) if n > 1 else "",
                       "shards": len(s.params.addressable_shards)}}
        try:
            Evolution.create(cfg.replace(population_size=6), devices=4)
            out["error"] = None
        except ConfigError as e:
            out["error"] = str(e)
        print(json.dumps(out))
        """
    )
    assert res["devices"] == 8
    ref = res["1"]
    for n in ("2", "4", "8"):
        got = res[n]
        assert got["shards"] == int(n) and "pop" in got["sharding"]
        assert got["cache"] == 1
        for k in ("kids", "policies"):
            np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=1e-6, err_msg=f"{n}:{k}")
    assert res["error"] is not None
    assert "population_size" in res["error"] and "4 devices" in res["error"]
    assert "[1, 2, 3, 6]" in res["error"]  # the device counts that would work


@pytest.mark.slow  # 15-25 s on a 2-core CPU: `make test-all`
def test_bitwise_block_same_bits_on_1_2_4_8_devices():
    """``bitwise_block=1``: 100 generations give the same metrics, parameters, policies and
    fitness, bit for bit, on 1, 2, 4 and 8 devices (8 devices hold one parent each: a loop of
    one block); with ``bitwise_block=0`` the same runs part ways (docs/scaling.md). A block
    that does not divide a device's parents is refused."""
    res = run_with_devices(
        f"""
        import json, jax, numpy as np
        from selfref_ghn.config import Config, ConfigError
        from selfref_ghn.evolution.generation import Evolution
        G = 100
        cfg = Config(**{dict(TINY, population_size=8, generations=100)!r},
                     switch_intervals=((25, 50),), bitwise_block=1, selection_ties="children")
        out = {{}}
        for n in (1, 2, 4, 8):
            evo = Evolution.create(cfg, devices=n)
            chunk = evo.compiled_chunk(G)
            s, m = chunk(evo.distribute(evo.init()), G)
            out[n] = {{k: np.asarray(v).tolist() for k, v in jax.device_get(m).items()}}
            for k in ("params", "policy", "fitness"):
                out[n]["state_" + k] = np.asarray(getattr(s, k)).tolist()
            out[n]["shards"] = len(s.params.addressable_shards)
        try:
            Evolution.create(cfg.replace(bitwise_block=2), devices=8)
            out["error"] = None
        except ConfigError as e:
            out["error"] = str(e)
        print(json.dumps(out))
        """,
        timeout=600,
    )
    ref = res["1"]
    # children win ties, so the population moves on every generation
    assert ref["generation"] == list(range(100)) and len(set(ref["checksum"])) > 90
    for n in ("2", "4", "8"):
        assert res[n].pop("shards") == int(n)
        assert res[n].keys() == ref.keys() - {"shards"}
        for k in res[n]:
            assert res[n][k] == ref[k], (n, k)  # exact: floats compared bit for bit
    assert res["error"] is not None and "bitwise_block" in res["error"]
    assert "8 devices" in res["error"]


def test_bitwise_block_validation():
    Config(**TINY, bitwise_block=2).validate()
    for bad in (-1, 3):  # TINY has 4 parents
        with pytest.raises(ConfigError, match="bitwise_block"):
            Config(**TINY, bitwise_block=bad).validate()
    with pytest.raises(ConfigError, match="bitwise_block"):
        Config(**TINY, bitwise_block=1, method="open_es").validate()
    assert make_mesh(Config(**TINY, bitwise_block=4)) is None


def test_per_member_gives_each_device_only_its_block():
    """``per_member`` runs the function once per device on that device's members, or on
    blocks of ``block`` members: a function that sees the whole batch (its size, a sum across
    it) tells the blocks apart."""
    res = run_with_devices(
        """
        import json, jax, jax.numpy as jnp, numpy as np
        from jax.sharding import Mesh
        from selfref_ghn.evolution.sharding import AXIS, per_member
        def fn(members, offset):
            size = jnp.full(members.shape, members.shape[0])
            return {"size": size, "block_sum": jnp.full(members.shape, members.sum()) + offset}
        x = jnp.arange(24)
        out = {}
        for n, block in ((1, 0), (4, 0), (1, 2), (4, 2)):
            mesh = None if n == 1 else Mesh(np.array(jax.devices()[:n]), (AXIS,))
            r = jax.jit(lambda x: per_member(fn, mesh, (x,), (jnp.int32(100),), block))(x)
            key = f"{n}" if block == 0 else f"{n}/{block}"
            out[key] = {k: np.asarray(v).tolist() for k, v in r.items()}
            out[key]["shards"] = len(r["size"].addressable_shards)
        print(json.dumps(out))
        """
    )
    pairs = [sum(range(2 * b, 2 * b + 2)) + 100 for b in range(12)]
    for key in ("1/2", "4/2"):  # blocks of 2, in a loop, on one device or on each of four
        assert res[key]["size"] == [2] * 24
        assert res[key]["block_sum"] == [s for s in pairs for _ in range(2)]
    assert res["4/2"]["shards"] == 4
    assert res["1"]["size"] == [24] * 24 and res["1"]["block_sum"] == [376] * 24
    assert res["4"]["size"] == [6] * 24 and res["4"]["shards"] == 4
    sums = [sum(range(6 * b, 6 * b + 6)) + 100 for b in range(4)]
    assert res["4"]["block_sum"] == [s for s in sums for _ in range(6)]
