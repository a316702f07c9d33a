"""Two processes on this machine form one ``jax.distributed`` run over loopback (gloo CPU
collectives) and give the metrics of a single-process run; only process 0 writes results."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from selfref_ghn.config import Config
from selfref_ghn.distributed import initialize
from selfref_ghn.runner import evolve
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parent.parent
CFG = dict(TINY, population_size=4, switch_intervals=((2, 4),))

WORKER = """
import json, sys
import numpy as np
from selfref_ghn import distributed
pid, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
assert distributed.initialize(f"127.0.0.1:{port}", 2, pid)
import jax
from selfref_ghn.config import Config
from selfref_ghn.runner import evolve
cfg = Config(**CFG)
_, m, _ = evolve(cfg, out, progress=False)
print(json.dumps({"process": jax.process_index(), "devices": len(jax.devices()),
                  "metrics": {k: np.asarray(v).tolist() for k, v in m.items()}}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_cluster_no_initialisation(monkeypatch):
    for name in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "JAX_COORDINATOR_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    assert initialize() is False


@pytest.mark.slow  # three compilations: about 100 s on a shared 2-core CPU
def test_two_processes_match_one(tmp_path):
    port = _free_port()
    code = textwrap.dedent(WORKER).replace("CFG", repr(CFG))
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}  # XLA_FLAGS (opt level 0) from conftest
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(i), str(port), str(tmp_path / f"out{i}")],
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
            assert p.returncode == 0, stderr[-4000:]
            results.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [r["process"] for r in results] == [0, 1]
    assert all(r["devices"] == 2 for r in results)  # one CPU device per process, one mesh
    # only process 0 writes the results folder
    assert (tmp_path / "out0" / "metrics.csv").exists()
    assert (tmp_path / "out0" / "final_state.npz").exists()
    assert not (tmp_path / "out1").exists()

    _, ref, _ = evolve(Config(**CFG), None, progress=False)  # one process, one device
    for r in results:
        got = r["metrics"]
        for k in ("generation", "inverted", "best_fitness", "median_fitness", "env_steps"):
            np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
        for k in ref:
            if k != "wall_time":  # float32 rounding of reductions split over two processes
                np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=1e-6, err_msg=k)
