"""Watching the champion (selfref_ghn.tools.render): the replay is the evaluated episode, and the
files it writes hold the trajectory (GIF frames, brax's HTML viewer payload)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import zlib

import jax
import mujoco
import numpy as np
import pytest
from PIL import Image
from selfref_ghn.envs import ant

from selfref_ghn import prng
from selfref_ghn.config import Config
from selfref_ghn.evolution.generation import Evolution
from selfref_ghn.run.folder import load_state
from selfref_ghn.run.loop import evolve
from selfref_ghn.tools import cli, render
from tests.conftest import TINY


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory):
    """A finished tiny CartPole run (3 generations), written to a results folder."""
    out = tmp_path_factory.mktemp("run")
    cfg = Config(**{**TINY, "env_id": "CartPole-v1", "generations": 3, "horizon": 40})
    evolve(cfg, out, progress=False)
    return cfg, out


def test_rollout_replays_the_champions_scored_episode(cartpole_run):
    """With the last generation's evaluation key, the replay reproduces the fitness the
    champion survived with (child_factor 0, no observation normalisation)."""
    cfg, out = cartpole_run
    evo = Evolution.create(cfg)
    state = load_state(evo, out / "final_state.npz")
    last = cfg.generations - 1
    origin = int(np.load(out / "lineage.npy")[last, 0])  # member index it was evaluated as
    eval_key = prng.generation_stream(state.key, last, "evaluate", cfg.key_version)
    key = jax.random.split(prng.member(eval_key, origin))
    traj = render.rollout(key[0], evo, state, member=0)
    np.testing.assert_allclose(float(traj.episode_return), float(state.fitness[0]), rtol=1e-6)
    assert traj.actions.shape == (cfg.horizon,)
    alive = np.asarray(traj.alive)
    assert traj.length == int(alive.sum()) and not alive[traj.length :].any()
    assert np.all(np.asarray(traj.rewards)[~alive] == 0)
    assert traj.qpos.shape == (cfg.horizon + 1, 0)  # CartPole has no MuJoCo model


def test_render_command_writes_the_trajectory(cartpole_run, capsys):
    _, out = cartpole_run
    assert cli.main(["render", str(out), "--member", "1", "--seed", "3"]) == 0
    shown = json.loads(capsys.readouterr().out)
    data = np.load(out / "champion.npz")
    assert float(data["rewards"].sum()) == pytest.approx(shown["return"])
    assert int(data["alive"].sum()) == shown["length"]
    assert "gif" not in shown and not (out / "champion.gif").exists()  # no model to draw
    assert cli.main(["render", str(out), "--member", "99"]) == 2
    assert "'member' = 99" in capsys.readouterr().err
    assert cli.main(["render", str(out / "missing")]) == 2


def test_render_falls_back_to_the_latest_checkpoint(cartpole_run, tmp_path):
    """A run without final_state.npz (still going, or interrupted) renders its checkpoint."""
    cfg, out = cartpole_run
    final = render.render_champion(out, seed=5, formats=("npz",))
    partial = tmp_path / "partial"
    shutil.copytree(out, partial)
    (partial / "final_state.npz").unlink()
    from_ckpt = render.render_champion(partial, seed=5, formats=("npz",))
    assert final["state"] == "final_state.npz"
    assert from_ckpt["state"] == f"checkpoints/{cfg.generations}"
    assert from_ckpt["generation"] == final["generation"] == cfg.generations
    assert from_ckpt["return"] == final["return"] and from_ckpt["length"] == final["length"]


def _walking_qpos(model: mujoco.MjModel, frames: int) -> np.ndarray:
    """A made-up trajectory: the torso slides along x while the hips swing."""
    q = np.tile(model.qpos0, (frames, 1))
    q[:, 0] = np.linspace(0.0, 1.5, frames)
    q[:, 7::2] = 0.5 * np.sin(np.linspace(0, np.pi, frames))[:, None]
    return q


@pytest.fixture(scope="module")
def ant_model():
    return mujoco.MjModel.from_xml_path(ant.gymnasium_ant_xml())


@pytest.mark.parametrize("backend", ["matplotlib", "auto"])
def test_gif_has_one_frame_per_kept_step(ant_model, tmp_path, backend):
    qpos = _walking_qpos(ant_model, 9)
    path = tmp_path / "a.gif"
    used = render.write_gif(ant_model, qpos, path, dt=0.05, every=2, width=160, height=120,
                            backend=backend)  # fmt: skip
    assert used in ("mujoco", "matplotlib") and (backend == "auto" or used == backend)
    with Image.open(path) as gif:
        assert gif.n_frames == 5  # rows 0, 2, 4, 6, 8
        first = np.asarray(gif.convert("RGB"))
        gif.seek(4)
        last = np.asarray(gif.convert("RGB"))
    assert first.shape == (120, 160, 3)
    assert np.abs(first.astype(int) - last.astype(int)).sum() > 0  # the legs moved


def test_html_viewer_carries_the_body_poses(ant_model):
    """Decode the page's payload: one pose per frame, equal to MuJoCo's kinematics."""
    qpos = _walking_qpos(ant_model, 4)
    page = ant.html_viewer(ant_model, qpos, dt=0.05)
    payload = re.search(r'var system = "([A-Za-z0-9+/=]+)"', page).group(1)
    system = json.loads(zlib.decompress(base64.b64decode(payload)))
    xpos, _ = ant.body_poses(ant_model, qpos)
    poses = system["states"]["x"]
    assert len(poses) == 4
    np.testing.assert_allclose(np.array(poses[3]["pos"]), xpos[3, 1:], atol=1e-6)
    assert system["opt"]["timestep"] == pytest.approx(0.05)
