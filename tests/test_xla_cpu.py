"""The XLA:CPU options: flag merging, the late-call guards, and their effects on a loop and on
a YNNPACK-fused reduction."""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import pytest

from selfref_ghn.run import xla_cpu

OPT = xla_cpu.OPTION


def test_option_is_added_or_merged_into_existing_flags():
    assert xla_cpu.with_small_loop_option("", 5) == f"--xla_backend_extra_options={OPT}=5"
    assert (
        xla_cpu.with_small_loop_option("--xla_backend_optimization_level=0", 5)
        == f"--xla_backend_optimization_level=0 --xla_backend_extra_options={OPT}=5"
    )
    merged = xla_cpu.with_small_loop_option("--a=1 --xla_backend_extra_options=k=v --b=2", 7)
    assert merged == f"--a=1 --xla_backend_extra_options=k=v,{OPT}=7 --b=2"


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10"])
def test_bad_threshold_is_refused(bad):
    with pytest.raises(ValueError, match="max_bytes"):
        xla_cpu.fuse_small_cpu_loops(bad)


def test_existing_setting_is_left_alone(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", f"--xla_backend_extra_options={OPT}=0")
    assert not xla_cpu.fuse_small_cpu_loops()
    assert os.environ["XLA_FLAGS"] == f"--xla_backend_extra_options={OPT}=0"


def test_too_late_call_warns_and_changes_nothing(monkeypatch):
    jnp.zeros(()).block_until_ready()  # the backend exists now
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
    with pytest.warns(UserWarning, match="before the first JAX computation"):
        assert not xla_cpu.fuse_small_cpu_loops()
    assert os.environ["XLA_FLAGS"] == "--xla_backend_optimization_level=0"


_PROGRAM = """
import json, sys
from selfref_ghn.run import xla_cpu
set_ = sys.argv[1] == "1" and xla_cpu.fuse_small_cpu_loops()
import jax, jax.numpy as jnp
def body(i, x):
    y = jnp.sin(x) * 0.5 + jnp.cos(x[::-1])
    return jnp.concatenate([y[1:], y[:1]]) + i
f = jax.jit(lambda x: jax.lax.fori_loop(0, 50, body, x)).lower(jnp.ones(4096)).compile()
out = f(jnp.linspace(0.0, 1.0, 4096))
print(json.dumps({"set": bool(set_), "small_calls": f.as_text().count("xla_cpu_small_call"),
                  "out": [float(v) for v in out[:: 512]]}))
"""


def _run(flag: str, program: str = _PROGRAM) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    res = subprocess.run(
        [sys.executable, "-c", program, flag],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_option_compiles_the_loop_as_one_call_with_the_same_result():
    plain, fused = _run("0"), _run("1")
    assert not plain["set"] and fused["set"]
    assert plain["small_calls"] == 0
    assert fused["small_calls"] >= 1
    assert fused["out"] == pytest.approx(plain["out"], rel=1e-5)


def test_cli_sets_the_options_only_when_asked(monkeypatch):
    from selfref_ghn.tools import cli

    calls = []
    monkeypatch.setattr(cli, "fuse_small_cpu_loops", lambda: calls.append("loops") or True)
    monkeypatch.setattr(cli, "skip_ynn_fusions", lambda: calls.append("ynn") or True)
    # an unknown config key ends the command with status 2 before anything compiles
    assert cli.main(["run", "quick", "--set", "no_such_field=1"]) == 2
    assert calls == []
    assert cli.main(["run", "quick", "--fast-cpu-loops", "--set", "no_such_field=1"]) == 2
    assert calls == ["loops", "ynn"]
    # assess replays a run's episodes: it takes the run's options too (a missing folder is a
    # user error, after the options are set and before anything compiles)
    calls.clear()
    assert cli.main(["assess", "/no/such/run", "--fast-cpu-loops"]) == 2
    assert calls == ["loops", "ynn"]


def test_ynn_option_is_added_once(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=1")
    monkeypatch.setattr(xla_cpu, "_backends_initialized", lambda: False)
    assert xla_cpu.skip_ynn_fusions()
    assert os.environ["XLA_FLAGS"] == (
        f"--xla_backend_optimization_level=1 --{xla_cpu.YNN_OPTION}="
    )
    assert not xla_cpu.skip_ynn_fusions()  # already named: left as it is
    assert os.environ["XLA_FLAGS"].count(xla_cpu.YNN_OPTION) == 1


def test_too_late_ynn_call_warns_and_changes_nothing(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "")
    jnp.zeros(())  # backends exist from here on
    with pytest.warns(UserWarning, match="before the first JAX computation"):
        assert not xla_cpu.skip_ynn_fusions()
    assert os.environ["XLA_FLAGS"] == ""


_REDUCE_PROGRAM = """
import json, sys
from selfref_ghn.run import xla_cpu
set_ = sys.argv[1] == "1" and xla_cpu.skip_ynn_fusions()
import jax, jax.numpy as jnp
f = jax.jit(lambda x: jnp.sum(jnp.sin(x), axis=1)).lower(jnp.ones((512, 4, 3))).compile()
out = f(jnp.linspace(0.0, 1.0, 6144).reshape(512, 4, 3)).ravel()
print(json.dumps({"set": bool(set_), "ynn": f.as_text().count("__ynn_fusion"),
                  "out": [float(v) for v in out[:: 64]]}))
"""


def test_skipping_ynn_fusions_removes_them_with_the_same_result():
    plain, skipped = _run("0", _REDUCE_PROGRAM), _run("1", _REDUCE_PROGRAM)
    assert not plain["set"] and skipped["set"]
    assert plain["ynn"] >= 1  # this jaxlib fuses the reduction into YNNPACK by default
    assert skipped["ynn"] == 0
    assert skipped["out"] == pytest.approx(plain["out"], rel=1e-6)


def test_importing_the_library_leaves_time_to_set_the_option():
    code = (
        "import selfref_ghn, selfref_ghn.tools.cli, selfref_ghn.envs\n"
        "from selfref_ghn.run import xla_cpu\n"
        "print(xla_cpu._backends_initialized())"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "False"


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_cpu_device_count_is_refused(bad):
    with pytest.raises(ValueError, match="CPU devices"):
        xla_cpu.use_cpu_devices(bad)


def test_too_late_cpu_devices_warns_and_changes_nothing():
    import jax

    before = len(jax.devices())
    with pytest.warns(UserWarning, match="before the first JAX computation"):
        assert not xla_cpu.use_cpu_devices(2)
    assert len(jax.devices()) == before


_DEVICES_PROGRAM = """
import json, sys
from selfref_ghn.run import xla_cpu
n = int(sys.argv[1])
set_ = xla_cpu.use_cpu_devices(n if n else None)
import jax
print(json.dumps({"set": set_, "devices": len(jax.devices()),
                  "default": xla_cpu.default_cpu_devices()}))
"""


@pytest.mark.parametrize("n", [0, 3])
def test_cpu_devices_are_presented(n):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    res = subprocess.run(
        [sys.executable, "-c", _DEVICES_PROGRAM, str(n)],
        env={**env, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["set"]
    assert out["devices"] == (n or out["default"])


def test_cli_sets_cpu_devices_only_when_asked(monkeypatch, capsys):
    from selfref_ghn.tools import cli

    calls = []
    monkeypatch.setattr(cli, "use_cpu_devices", lambda n=None: calls.append(n) or True)
    bad = ["--set", "no_such_field=1"]  # ends with status 2 before anything compiles
    assert cli.main(["run", "quick", *bad]) == 2
    assert calls == []
    assert cli.main(["run", "quick", "--cpu-devices", "2", *bad]) == 2
    assert cli.main(["run", "quick", "--cpu-devices", "0", *bad]) == 2
    assert calls == [2, None]  # 0: one per core
    for wrong in ("-1", "two"):
        with pytest.raises(SystemExit) as e:
            cli.main(["run", "quick", "--cpu-devices", wrong])
        assert e.value.code == 2
    assert "--cpu-devices" in capsys.readouterr().err
