"""The population axis over a device mesh: same seed, same metrics on 1, 2, 4, 8 devices.

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
from selfref_ghn.sharding import make_mesh
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


def test_same_metrics_on_1_2_4_8_devices():
    """Per-member keys make every member's children, policy and episodes the same whichever
    device computes them. Exact equality for what selection sees (fitness, survivors);
    float32 rounding (rtol 1e-5, atol 1e-6) for reductions over members (diversity, the
    checksum of the survivors' parameters, mean rates), whose partial sums are added in a
    different order on more devices, and for the parameters themselves (a few ulp: XLA
    vectorises the per-member mutation differently for a different number of members per
    device)."""
    res = run_with_devices(
        f"""
        import json, jax, numpy as np
        from selfref_ghn.config import Config, ConfigError
        from selfref_ghn.evolution import Evolution
        cfg = Config(**{dict(TINY, population_size=8)!r}, switch_intervals=((2, 4),))
        out = {{"devices": len(jax.devices())}}
        for n in (1, 2, 4, 8):
            evo = Evolution.create(cfg, devices=n)
            chunk = evo.compiled_chunk(cfg.generations)
            s, m = chunk(evo.distribute(evo.init()), cfg.generations)
            m = jax.device_get(m)
            out[n] = {{k: np.asarray(v).tolist() for k, v in m.items()}}
            out[n]["params"] = np.asarray(s.params).tolist()
            out[n]["sharding"] = str(s.params.sharding.spec) if n > 1 else ""
            out[n]["shards"] = len(s.params.addressable_shards)
            out[n]["cache"] = chunk._cache_size()
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
    exact = ("generation", "inverted", "selected", "best_fitness", "median_fitness",
             "survivor_fitness", "live_steps", "nonfinite_fitness")  # fmt: skip
    for n in ("2", "4", "8"):
        got = res[n]
        assert got["shards"] == int(n) and "pop" in got["sharding"]
        assert got["cache"] == 1
        for k in exact:
            assert got[k] == ref[k], (n, k)
        for k in ref:
            if k in exact or k in ("sharding", "shards", "cache"):
                continue
            np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=1e-6, err_msg=f"{n}:{k}")
    assert res["error"] is not None
    assert "population_size" in res["error"] and "4 devices" in res["error"]
    assert "[1, 2, 3, 6]" in res["error"]  # the device counts that would work


def test_per_member_gives_each_device_only_its_block():
    """``per_member`` runs the function once per device on that device's members: a function
    that sees the whole batch (its size, a sum across it) tells the blocks apart."""
    res = run_with_devices(
        """
        import json, jax, jax.numpy as jnp, numpy as np
        from jax.sharding import Mesh
        from selfref_ghn.sharding import AXIS, per_member
        def fn(members, offset):
            size = jnp.full(members.shape, members.shape[0])
            return {"size": size, "block_sum": jnp.full(members.shape, members.sum()) + offset}
        x = jnp.arange(24)
        out = {}
        for n in (1, 4):
            mesh = None if n == 1 else Mesh(np.array(jax.devices()[:n]), (AXIS,))
            r = jax.jit(lambda x: per_member(fn, mesh, (x,), (jnp.int32(100),)))(x)
            out[n] = {k: np.asarray(v).tolist() for k, v in r.items()}
            out[n]["shards"] = len(r["size"].addressable_shards)
        print(json.dumps(out))
        """
    )
    assert res["1"]["size"] == [24] * 24 and res["1"]["block_sum"] == [376] * 24
    assert res["4"]["size"] == [6] * 24 and res["4"]["shards"] == 4
    sums = [sum(range(6 * b, 6 * b + 6)) + 100 for b in range(4)]
    assert res["4"]["block_sum"] == [s for s in sums for _ in range(6)]
