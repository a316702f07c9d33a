"""The persistent compilation cache: where it lives, that a fresh process loads what an earlier
one compiled (JAX's cache hit and miss events, and the entries in the folder), and that ``off``
writes nothing."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import jax
import pytest

from selfref_ghn.run import compile_cache as cc

# Counts JAX's persistent-cache events in a fresh process around CODE, printed as JSON.
_COUNTING = """
import json, sys
import jax.monitoring
events = {"hits": 0, "misses": 0}
def listen(event, **kwargs):
    if event == "/jax/compilation_cache/cache_hits":
        events["hits"] += 1
    elif event == "/jax/compilation_cache/cache_misses":
        events["misses"] += 1
jax.monitoring.register_event_listener(listen)
CODE
print("EVENTS " + json.dumps(events))
"""

_TINY_JIT = """
from selfref_ghn.run.compile_cache import enable_compile_cache
import jax, jax.numpy as jnp
print("FOLDER", enable_compile_cache())
assert float(jax.jit(lambda x: jnp.sin(x) * 2.0)(jnp.float32(0.5))) > 0
"""


def _fresh_process(
    code: str, env: dict[str, str], timeout: int = 120, stderr: list[str] | None = None
) -> dict[str, int]:
    proc = subprocess.run(
        [sys.executable, "-c", _COUNTING.replace("CODE", code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    if stderr is not None:
        stderr.append(proc.stderr)
    line = [s for s in proc.stdout.splitlines() if s.startswith("EVENTS ")][-1]
    return json.loads(line.removeprefix("EVENTS "))


def _entries(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def _env(tmp_path: Path, cache: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_COMPILATION_CACHE_DIR",)}
    env.update(HOME=str(tmp_path / "home"), XDG_CACHE_HOME=str(tmp_path / "xdg"))
    env.pop(cc.ENV_VAR, None)
    if cache is not None:
        env[cc.ENV_VAR] = cache
    return env


def test_resolve_order(monkeypatch, tmp_path, request):
    import jax

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(cc.ENV_VAR, raising=False)
    # a command run earlier in this process may have set JAX's folder, which comes first
    before = jax.config.values["jax_compilation_cache_dir"]
    jax.config.update("jax_compilation_cache_dir", None)
    request.addfinalizer(lambda: jax.config.update("jax_compilation_cache_dir", before))
    assert cc.default_dir() == tmp_path / "xdg" / "selfref_ghn" / "jax"
    assert cc.resolve() == tmp_path / "xdg" / "selfref_ghn" / "jax"
    monkeypatch.setenv(cc.ENV_VAR, str(tmp_path / "env"))
    assert cc.resolve() == tmp_path / "env"  # the variable beats the default
    assert cc.resolve(tmp_path / "flag") == tmp_path / "flag"  # the flag beats the variable
    for off in ("off", "OFF", "0", "false", "none", ""):
        assert cc.resolve(off) is None, off
        monkeypatch.setenv(cc.ENV_VAR, off)
        assert cc.resolve() is None, off
    assert cc.resolve(tmp_path / "flag") == tmp_path / "flag"  # a folder beats an env off


def test_default_follows_xdg_rules(monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # not absolute: ignored, as XDG says
    assert cc.default_dir() == Path.home() / ".cache" / "selfref_ghn" / "jax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cc.default_dir() == Path.home() / ".cache" / "selfref_ghn" / "jax"


def test_a_folder_given_to_jax_is_kept(monkeypatch, tmp_path):
    monkeypatch.delenv(cc.ENV_VAR, raising=False)
    before = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "jax-own"))
    try:
        assert cc.resolve() == tmp_path / "jax-own"
    finally:
        jax.config.update("jax_compilation_cache_dir", before)


def test_unusable_folder_warns_and_compiles_without(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    before = jax.config.jax_compilation_cache_dir
    with pytest.warns(UserWarning, match="cannot use .*a-file"):
        assert cc.enable_compile_cache(blocker / "cache") is None
    assert jax.config.jax_compilation_cache_dir == before
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cc.enable_compile_cache("off") is None  # off: silent, nothing changed
    assert jax.config.jax_compilation_cache_dir == before


def test_fresh_process_loads_a_small_program_compiled_by_an_earlier_one(tmp_path):
    """JAX's default thresholds would not cache a program that compiles in milliseconds."""
    env = _env(tmp_path, None)  # the default folder, under XDG_CACHE_HOME
    folder = tmp_path / "xdg" / "selfref_ghn" / "jax"
    first = _fresh_process(_TINY_JIT, env)
    written = _entries(folder)
    assert first["misses"] >= 1 and first["hits"] == 0
    assert len(written) >= first["misses"]
    second = _fresh_process(_TINY_JIT, env)
    assert second["hits"] >= 1 and second["misses"] == 0
    assert _entries(folder) == written
    assert not (tmp_path / "home").exists()
    for name in written:  # damaged entries: JAX warns, naming the program, and compiles again
        (folder / name).write_bytes(b"damaged")
    err: list[str] = []
    third = _fresh_process(_TINY_JIT, env, stderr=err)
    assert third["hits"] == 0 and third["misses"] >= 1
    assert "Error reading persistent compilation cache entry for 'jit__lambda'" in err[0]
    assert "Traceback" not in err[0]


def test_off_writes_nothing(tmp_path):
    first = _fresh_process(_TINY_JIT, _env(tmp_path, "off"))
    assert first == {"hits": 0, "misses": 0}
    assert not (tmp_path / "xdg" / "selfref_ghn").exists() and not (tmp_path / "home").exists()


_CLI = """
from selfref_ghn.tools.cli import main
assert main(sys.argv[1:]) == 0
"""

_TINY_RUN = [
    "run", "quick", "--quiet", "--generations", "2", "--set", "population_size=4",
    "--set", "horizon=20", "--set", "log_every=2", "--set", "switch_intervals=[[1,2]]",
    "--set", "gnn_rounds=1", "--set", "policy_hidden=[4]", "--set", "embed_dim=8",
    "--set", "trunk_dim=8", "--set", "coeff_dim=4",
]  # fmt: skip


def _cli_process(args: list[str], env: dict[str, str]) -> dict[str, int]:
    code = _CLI.replace("sys.argv[1:]", repr(args))
    return _fresh_process(code, env, timeout=600)


@pytest.mark.slow
def test_second_run_in_a_fresh_process_compiles_nothing(tmp_path):
    """``selfref-ghn run``: the first run fills the folder; a run of another seed (the seed is
    an input of the compiled programs, not part of them) loads every program it needs from
    it and writes nothing; ``--compile-cache off`` neither reads nor writes."""
    folder = tmp_path / "cache"
    env = _env(tmp_path, str(folder))
    first = _cli_process([*_TINY_RUN, "--out", str(tmp_path / "r0")], env)
    written = _entries(folder)
    assert first["misses"] >= 1 and len(written) >= first["misses"]
    second = _cli_process([*_TINY_RUN, "--seed", "1", "--out", str(tmp_path / "r1")], env)
    assert second["misses"] == 0 and second["hits"] >= first["misses"]
    assert _entries(folder) == written
    for run in ("r0", "r1"):  # both ran to the end and recorded a compile time
        assert json.loads((tmp_path / run / "summary.json").read_text())["compile_time_s"] >= 0
    off = _cli_process(
        [*_TINY_RUN, "--compile-cache", "off", "--out", str(tmp_path / "r2")],
        _env(tmp_path, str(tmp_path / "unused")),
    )
    assert off == {"hits": 0, "misses": 0}
    assert not (tmp_path / "unused").exists()
    assert not (tmp_path / "xdg" / "selfref_ghn").exists()  # (matplotlib keeps its own there)
    assert _entries(folder) == written
