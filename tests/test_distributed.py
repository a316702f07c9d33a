"""Two processes on this machine form one ``jax.distributed`` run over loopback (gloo CPU
collectives) and give the metrics of a single-process run; only process 0 writes the host-side
files; a two-process run killed after a checkpoint resumes on two processes to the metrics of
one run straight through, and refuses to resume on another process count."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from selfref_ghn.config import Config, ConfigError
from selfref_ghn.run import distributed
from selfref_ghn.run.distributed import initialize
from selfref_ghn.run.loop import evolve
from selfref_ghn.tools import cli
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parent.parent
# checkpoints at generations 4 and 8; a run killed at 6 resumes from 4 (a switched interval)
CFG = dict(
    TINY,
    population_size=4,
    generations=8,
    log_every=2,
    checkpoint_every=4,
    switch_intervals=((3, 6),),
    bitwise_block=1,  # the same bits on one process and on two
)
KILL_AT = 6

# argv: process id, port, results folder, resume (0/1), generation to SIGKILL itself at (-1:
# never). A run calls evolve; a resume goes through the command line (`run --resume DIR
# --coordinator ...`), whose evolve call is recorded. Process 1 may write under the folder only
# into checkpoints/ (its own shards).
WORKER = """
import builtins, io, json, os, signal, sys
import numpy as np
from selfref_ghn.run import distributed
pid, port, out = int(sys.argv[1]), sys.argv[2], os.path.abspath(sys.argv[3])
resume, kill_at = sys.argv[4] == "1", int(sys.argv[5])
if pid != 0:
    real_open, shards = builtins.open, os.path.join(out, "checkpoints")
    def _guard(f):
        def guarded(*args, **kwargs):
            opened = f is real_open
            mode = (args[1:2] or [kwargs.get("mode", "r")])[0] if opened else "w"
            for a in args[: 1 if opened else 2]:
                p = os.path.abspath(os.fspath(a)) if isinstance(a, (str, os.PathLike)) else ""
                if any(c in mode for c in "wax+") and p.startswith(out) and (
                    not p.startswith(shards)
                ):
                    raise PermissionError(f"process {pid} wrote {p}")
            return f(*args, **kwargs)
        return guarded
    builtins.open = io.open = _guard(builtins.open)
    os.replace, os.truncate = _guard(os.replace), _guard(os.truncate)
from selfref_ghn.tools import cli
from selfref_ghn.run import loop as runner
if resume:
    evolve, got = runner.evolve, []
    runner.evolve = lambda *a, **k: got.append(evolve(*a, **k)) or got[-1]
    flags = ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id"]
    assert cli.main(["run", "--resume", out, "--quiet", *flags, str(pid)]) == 0
    _, m, _ = got[0]
else:
    assert distributed.initialize(f"127.0.0.1:{port}", 2, pid)
    from selfref_ghn.config import Config
    def kill(state, rows):
        if int(state.generation) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    _, m, _ = runner.evolve(Config(**CFG), out, progress=False, callback=kill)
import jax
print(json.dumps({"process": jax.process_index(), "devices": len(jax.devices()),
                  "metrics": {k: np.asarray(v).tolist() for k, v in m.items()}}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(out: Path, cache: Path, resume: bool = False, kill_at: int = -1) -> list:
    """Run the worker as processes 0 and 1 into ``out``: their return codes, results, stderr.

    Runs given the same ``cache`` folder share jax's persistent compilation cache: a run after
    the first loads its compiled programs instead of compiling them again.
    """
    port = _free_port()
    code = textwrap.dedent(WORKER).replace("CFG", repr(CFG))
    env = {
        **os.environ,  # XLA_FLAGS (opt level 0) from conftest
        "JAX_PLATFORMS": "cpu",
        "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }
    args = [str(port), str(out), str(int(resume)), str(kill_at)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(i), *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    results = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=240)
            lines = [line for line in stdout.splitlines() if line.startswith("{")]
            results.append((p.returncode, json.loads(lines[-1]) if lines else None, stderr))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return results


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("xla_cache")


@pytest.fixture(scope="module")
def straight(tmp_path_factory, cache):
    """A two-process run straight through: its folder and each process's result."""
    out = tmp_path_factory.mktemp("straight") / "run"
    results = _two_processes(out, cache)
    for rc, _, stderr in results:
        assert rc == 0, stderr[-4000:]
    return out, [r for _, r, _ in results]


def _csv(path: Path) -> list[list[str]]:
    """metrics.csv without its wall_time column."""
    lines = [line.split(",") for line in path.read_text().splitlines()]
    col = lines[0].index("wall_time")
    return [row[:col] + row[col + 1 :] for row in lines]


def test_no_cluster_no_initialisation(monkeypatch):
    for name in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "JAX_COORDINATOR_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    assert initialize() is False


def test_resume_refuses_another_process_count(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    stored = {**Config(**CFG).to_dict(), "_run": {"processes": 2}}
    (run / "config.json").write_text(json.dumps(stored, default=str))
    assert cli.main(["run", "--resume", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("selfref-ghn: error: ") and len(err.splitlines()) == 1
    assert "ran on 2 process(es)" in err and "this run has 1" in err
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]  # nothing written

    # and the other way: a single-process run (or one from before the count was recorded)
    assert distributed.recorded_processes({"_run": {"devices": []}}) == 1
    distributed.check_processes(run, 1)
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    with pytest.raises(ConfigError, match="ran on 1 process.*this run has 2"):
        distributed.check_processes(run, 1)


def test_fork_refused_in_a_multi_process_run(tmp_path, capsys, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text(json.dumps(Config(**CFG).to_dict(), default=str))
    monkeypatch.setattr(distributed, "initialize", lambda *args: True)  # joined a run
    new = tmp_path / "new"
    assert cli.main(["run", "--fork", str(src), "--out", str(new), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("selfref-ghn: error: invalid config field '--fork'")
    assert "a fork is made by one process" in err and not new.exists()


@pytest.mark.slow  # two compilations at once, then one: about 100 s on a shared 2-core CPU
def test_two_processes_match_one(straight):
    out, results = straight
    assert [r["process"] for r in results] == [0, 1]
    assert all(r["devices"] == 2 for r in results)  # one CPU device per process, one mesh
    assert json.loads((out / "config.json").read_text())["_run"]["processes"] == 2
    for name in ("metrics.csv", "lineage.npy", "final_state.npz", "summary.json"):
        assert (out / name).exists(), name  # process 0's; process 1 may not write them
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["4", "8"]

    _, ref, _ = evolve(Config(**CFG), None, progress=False)  # one process, one device
    for r in results:
        got = r["metrics"]
        for k in ref:
            if k != "wall_time":  # bit for bit (bitwise_block)
                np.testing.assert_array_equal(got[k], ref[k], err_msg=k)


@pytest.mark.slow  # two more two-process runs: about 80 s on a shared 2-core CPU
def test_two_processes_killed_resume_as_one_run(straight, cache, tmp_path):
    full, full_results = straight
    out = tmp_path / "run"
    killed = _two_processes(out, cache, kill_at=KILL_AT)
    # each kills itself at KILL_AT; one that jax's coordination service aborts first (its peer
    # gone) ends by a signal too, SIGABRT: either way no process ran past the kill
    assert all(rc in (-signal.SIGKILL, -signal.SIGABRT) for rc, _, _ in killed), [
        (rc, err[-2000:]) for rc, _, err in killed
    ]
    assert -signal.SIGKILL in [rc for rc, _, _ in killed]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["4"]
    assert len(_csv(out / "metrics.csv")) == 1 + KILL_AT  # rows past the checkpoint, to cut

    resumed = _two_processes(out, cache, resume=True)
    for rc, _, stderr in resumed:
        assert rc == 0, stderr[-4000:]
    assert json.loads((out / "config.json").read_text())["_run"]["resumed_from"] == 4
    # every generation once, exactly as in the run straight through, on both processes
    assert _csv(out / "metrics.csv") == _csv(full / "metrics.csv")
    want = full_results[0]["metrics"]
    for _, r, _ in resumed:
        for k in want:
            if k != "wall_time":
                np.testing.assert_array_equal(r["metrics"][k], want[k], err_msg=k)
    np.testing.assert_array_equal(np.load(out / "lineage.npy"), np.load(full / "lineage.npy"))
    a, b = np.load(out / "final_state.npz"), np.load(full / "final_state.npz")
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.slow  # one more two-process resume: about 20 s
def test_two_processes_resume_past_a_damaged_checkpoint(straight, cache, tmp_path):
    """The newest checkpoint of a finished two-process run is damaged: both processes fall back
    to the one before, process 0 alone moves the damaged one aside and says so, and both
    replay and save the lost generations again (a process that still listed the moved step
    would skip its save while the other waits in it)."""
    full, full_results = straight
    out = tmp_path / "run"
    shutil.copytree(full, out)
    ckpts = sorted(int(p.name) for p in (out / "checkpoints").iterdir())
    newest = out / "checkpoints" / str(ckpts[-1])
    data = max((f for f in newest.rglob("*") if f.is_file()), key=lambda f: f.stat().st_size)
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))

    resumed = _two_processes(out, cache, resume=True)
    for rc, _, stderr in resumed:
        assert rc == 0, stderr[-4000:]
    said = [err.count("is damaged") for _, _, err in resumed]
    assert said[0] == 1 and said[1] == 0, said
    assert json.loads((out / "config.json").read_text())["_run"]["resumed_from"] == ckpts[-2]
    assert (out / "damaged_checkpoints" / str(ckpts[-1])).is_dir()
    assert sorted(int(p.name) for p in (out / "checkpoints").iterdir()) == ckpts
    assert _csv(out / "metrics.csv") == _csv(full / "metrics.csv")
    a, b = np.load(out / "final_state.npz"), np.load(full / "final_state.npz")
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
