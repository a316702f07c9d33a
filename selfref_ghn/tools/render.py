"""Watching the champion: replay the best member of a run and write its rollout to disk.

The population is selected on episode returns (DESIGN §2, "Evolution loop"); this module lets
you look at the behaviour behind the number. :func:`rollout` replays one member of an
:class:`~selfref_ghn.evolution.generation.EvoState` for one episode, exactly as the evaluation
runs it (same
reset, same per-step keys, same observation normalisation, rewards after termination left out),
and records actions, rewards and, for MuJoCo-based environments (the Ant variants), the
generalized positions. :func:`render_champion` does this for survivor slot 0 of a results
folder's ``final_state.npz`` (or its latest checkpoint, for a run still going or interrupted)
and writes, beside it:

* ``champion.npz``: ``actions``, ``rewards``, ``alive``, ``qpos`` (MuJoCo envs),
  ``episode_return``;
* ``champion.html``: brax's HTML viewer (``brax.io.html.render``) of the trajectory;
* ``champion.gif``: an animation drawn by MuJoCo's offscreen renderer when an OpenGL context
  can be made without a display (``MUJOCO_GL=egl`` or ``osmesa``), otherwise by matplotlib
  (a two-view line drawing of the model's capsules and spheres).

From the command line: ``selfref-ghn render DIR [--member K] [--seed N] [--every N]``.

Example:
    >>> paths = render_champion("results/ant")                       # doctest: +SKIP
    >>> paths["gif"]                                                  # doctest: +SKIP
    PosixPath('results/ant/champion.gif')
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from selfref_ghn.config import ConfigError
from selfref_ghn.types import Array

FORMATS = ("npz", "html", "gif")
GIF_BACKENDS = ("auto", "mujoco", "matplotlib")


@struct.dataclass
class Trajectory:
    """One recorded episode of a member.

    Attributes:
        actions: ``(T, action_dim)`` actions taken.
        rewards: ``(T,)`` rewards, zero after the episode ended.
        alive: ``(T,)`` bool, whether the step was taken before termination or truncation.
        qpos: ``(T + 1, nq)`` generalized positions from the reset on (``(T + 1, 0)`` for
            environments without a MuJoCo model).
    """

    actions: Array
    rewards: Array
    alive: Array
    qpos: Array

    @property
    def episode_return(self) -> Array:
        """Undiscounted return: the member's fitness on this episode."""
        return jnp.sum(self.rewards)

    @property
    def length(self) -> int:
        """Steps taken before the episode ended."""
        return int(np.sum(np.asarray(self.alive)))


def _qpos(env: Any, env_state: Any) -> Array:
    """The env's generalized positions, or an empty vector if it has no MuJoCo model."""
    return env.qpos(env_state) if hasattr(env, "qpos") else jnp.zeros((0,))


def rollout(
    key: Array,
    evo: Any,
    state: Any,
    member: int = 0,
    horizon: int | None = None,
    generation: int | None = None,
) -> Trajectory:
    """Replay one member of a population for one episode and record it.

    The episode is the one :func:`selfref_ghn.evolution.rollout.episode` scores with ``key``: the
    same
    reset and step keys, the same observation statistics (``state.obs_stats`` when
    ``config.obs_norm``), so ``episode_return`` is that member's fitness on it.

    Args:
        key: the episode's PRNG key.
        evo: the run's :class:`~selfref_ghn.evolution.generation.Evolution`.
        state: an :class:`~selfref_ghn.evolution.generation.EvoState` of that run.
        member: index into the population (survivors are ranked: 0 is the best).
        horizon: steps to simulate (default ``config.horizon``).
        generation: the switch schedule is applied at this generation (default the last one
            evaluated, ``state.generation - 1``).

    Returns:
        The :class:`Trajectory`.
    """
    cfg = evo.config
    horizon = cfg.horizon if horizon is None else int(horizon)
    gen = jnp.maximum(state.generation - 1, 0) if generation is None else generation
    env = evo.env
    env_params = evo.schedule.apply(evo.env_params, gen)
    policy_params = evo.ghn.policy_graph.unravel(state.policy[member])
    obs_stats = state.obs_stats if cfg.obs_norm else None

    @jax.jit
    def run(key, env_params, policy_params, obs_stats):
        k_reset, k_step = jax.random.split(key)
        obs, env_state = env.reset_env(k_reset, env_params)

        def body(carry, t):
            obs, env_state, done = carry
            x = obs_stats.normalize(obs) if obs_stats is not None else obs
            action = evo.policy_fn(policy_params, x)
            obs2, env_state2, reward, terminated, _ = env.step_env(
                jax.random.fold_in(k_step, t), env_state, action, env_params
            )
            truncated = env.is_truncated(env_state2, env_params)
            alive = jnp.logical_not(done)
            out = (action, jnp.where(alive, reward, 0.0), alive, _qpos(env, env_state2))
            return (obs2, env_state2, done | terminated | truncated), out

        init = (obs, env_state, jnp.asarray(False))
        _, (actions, rewards, alive, qpos) = jax.lax.scan(body, init, jnp.arange(horizon))
        qpos = jnp.concatenate([_qpos(env, env_state)[None], qpos])
        return Trajectory(actions=actions, rewards=rewards, alive=alive, qpos=qpos)

    return run(key, env_params, policy_params, obs_stats)


def _body_radius(mj_model: Any, qpos: np.ndarray) -> float:
    """Radius of the model (planes left out) around body 1 at ``qpos``: sets the view size."""
    import mujoco

    data = mujoco.MjData(mj_model)
    data.qpos[:] = qpos
    mujoco.mj_kinematics(mj_model, data)
    solid = mj_model.geom_type != int(mujoco.mjtGeom.mjGEOM_PLANE)
    reach = np.linalg.norm(data.geom_xpos[solid] - data.xpos[1], axis=1)
    return float(np.max(reach + mj_model.geom_rbound[solid], initial=0.5))


def _frames_mujoco(mj_model: Any, qpos: np.ndarray, width: int, height: int) -> list:
    """RGB frames from MuJoCo's offscreen renderer, the camera tracking body 1 (the torso)."""
    import mujoco

    data = mujoco.MjData(mj_model)
    camera = mujoco.MjvCamera()
    camera.type = mujoco.mjtCamera.mjCAMERA_TRACKING
    camera.trackbodyid = 1
    camera.distance = 3.0 * _body_radius(mj_model, qpos[0])
    camera.elevation = -20.0
    camera.azimuth = 90.0
    frames = []
    with mujoco.Renderer(mj_model, height=height, width=width) as renderer:
        for q in qpos:
            data.qpos[:] = q
            mujoco.mj_forward(mj_model, data)
            renderer.update_scene(data, camera=camera)
            frames.append(renderer.render().copy())
    return frames


def _frames_matplotlib(mj_model: Any, qpos: np.ndarray, width: int, height: int) -> list:
    """RGB frames drawn with matplotlib: side (x-z) and top (x-y) views following the torso."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mujoco

    data = mujoco.MjData(mj_model)
    capsule, sphere = int(mujoco.mjtGeom.mjGEOM_CAPSULE), int(mujoco.mjtGeom.mjGEOM_SPHERE)
    geoms = [g for g in range(mj_model.ngeom) if mj_model.geom_type[g] in (capsule, sphere)]
    half = 1.5 * _body_radius(mj_model, qpos[0])
    dpi = 100
    fig, (side, top) = plt.subplots(1, 2, figsize=(width / dpi, height / dpi), dpi=dpi)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.08, top=0.86, wspace=0.25)
    trail = []
    frames = []
    for t, q in enumerate(qpos):
        data.qpos[:] = q
        mujoco.mj_kinematics(mj_model, data)
        cx, cy = data.xpos[1, 0], data.xpos[1, 1]
        trail.append((cx, cy))
        for ax, (i, j), title in ((side, (0, 2), "side (x, z)"), (top, (0, 1), "top (x, y)")):
            ax.cla()
            for g in geoms:
                c = data.geom_xpos[g]
                if mj_model.geom_type[g] == capsule:
                    axis = data.geom_xmat[g].reshape(3, 3)[:, 2] * mj_model.geom_size[g, 1]
                    a, b = c - axis, c + axis
                    ax.plot([a[i], b[i]], [a[j], b[j]], lw=3, color="tab:brown",
                            solid_capstyle="round")  # fmt: skip
                else:
                    ax.add_patch(
                        plt.Circle((c[i], c[j]), mj_model.geom_size[g, 0], color="tab:orange")
                    )
            ax.set_xlim(cx - half, cx + half)
            ax.set_title(title, fontsize=8)
            ax.set_aspect("equal")
            ax.tick_params(labelsize=6)
        side.axhline(0.0, color="grey", lw=1)
        side.set_ylim(-0.25 * half, 1.75 * half)
        top.plot(*np.array(trail).T, color="tab:blue", lw=1)
        top.set_ylim(cy - half, cy + half)
        fig.suptitle(f"step {t}", fontsize=8)
        fig.canvas.draw()
        rgba = fig.canvas.buffer_rgba()  # type: ignore[attr-defined]  # the Agg canvas
        frames.append(np.asarray(rgba)[..., :3].copy())
    plt.close(fig)
    return frames


def write_gif(
    mj_model: Any,
    qpos: np.ndarray,
    path: str | Path,
    dt: float,
    every: int = 2,
    width: int = 480,
    height: int = 320,
    backend: str = "auto",
) -> str:
    """Animate a trajectory of generalized positions as a GIF.

    Args:
        mj_model: the MuJoCo model (``env.mj_model``).
        qpos: ``(T, nq)`` positions.
        path: output file.
        dt: simulated seconds between rows of ``qpos`` (the GIF plays in real time).
        every: keep every ``every``-th row.
        width, height: frame size in pixels.
        backend: ``"mujoco"`` (offscreen OpenGL), ``"matplotlib"``, or ``"auto"``: MuJoCo's
            renderer if an OpenGL context can be created, matplotlib otherwise.

    Returns:
        The backend that drew the frames.
    """
    from PIL import Image

    if backend not in GIF_BACKENDS:
        raise ValueError(f"backend must be one of {GIF_BACKENDS}, got {backend!r}")
    qpos = np.asarray(qpos, np.float64)[:: max(int(every), 1)]
    frames = None
    if backend in ("auto", "mujoco"):
        try:
            frames = _frames_mujoco(mj_model, qpos, width, height)
            backend = "mujoco"
        except Exception:  # no OpenGL context (no display, no EGL/OSMesa)
            if backend == "mujoco":
                raise
    if frames is None:
        frames = _frames_matplotlib(mj_model, qpos, width, height)
        backend = "matplotlib"
    images = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    images[0].save(
        buf,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=max(int(round(1000 * dt * max(int(every), 1))), 20),
        loop=0,
    )
    Path(path).write_bytes(buf.getvalue())
    return backend


def load_run_state(evo: Any, run_dir: str | Path, warn: bool = True) -> tuple[Any, str]:
    """A results folder's newest state: ``final_state.npz`` or its latest checkpoint, whichever
    holds the later generation (a run resumed past its first end has a checkpoint newer than
    its ``final_state.npz``; one that did not finish has only checkpoints).

    A damaged state is passed over for the next newest, with one line on stderr: a
    checkpoint whose files differ from their digest or that orbax cannot read, and a
    ``final_state.npz`` that cannot be read or does not match the run's config (shapes,
    dtypes). On a tie the file wins (both hold the same state).

    Args:
        evo: the run's :class:`~selfref_ghn.evolution.generation.Evolution`.
        run_dir: the results folder.
        warn: print that line.

    Returns:
        ``(state, source)``: ``source`` names the file or checkpoint read.

    Raises:
        ConfigError: the folder has no state that can be read (the message names what is
            damaged).
    """
    from selfref_ghn.run.checkpoint import Checkpoints, DamagedCheckpoint, describe_damaged
    from selfref_ghn.run.folder import CHECKPOINT_DIR, load_state

    run_dir = Path(run_dir)
    final, final_error = None, None
    if (run_dir / "final_state.npz").exists():
        try:
            final = load_state(evo, run_dir / "final_state.npz")
        except ConfigError as e:
            final_error = e
    final_gen = int(final.generation) if final is not None else -1
    damaged: list[DamagedCheckpoint] = []
    problems = (
        [] if final_error is None else [f"final_state.npz is unusable: {final_error.allowed}"]
    )

    def note(used: str) -> None:
        if (damaged or final_error) and warn:
            what = problems + ([describe_damaged(damaged)] if damaged else [])
            print(f"selfref-ghn: {'; '.join(what)}; using {used}", file=sys.stderr, flush=True)

    if (run_dir / CHECKPOINT_DIR).is_dir():
        with Checkpoints(run_dir / CHECKPOINT_DIR, read_only=True) as ckpts:
            if any(s > final_gen for s in ckpts.steps()):
                template = jax.eval_shape(evo.init)
                state, step, damaged = ckpts.newest_intact(template, final_gen)
                if step is not None:
                    note(f"checkpoint {step}")
                    return state, f"{CHECKPOINT_DIR}/{step}"
    if final is not None:
        note("final_state.npz")
        return final, "final_state.npz"
    if damaged:
        problems.append(describe_damaged(damaged))
    if problems:
        what = "; ".join(problems)
        raise ConfigError("dir", str(run_dir), f"a run with a readable state ({what})")
    raise ConfigError("dir", str(run_dir), "a run with final_state.npz or a checkpoint")


def render_champion(
    run_dir: str | Path,
    member: int = 0,
    seed: int = 0,
    horizon: int | None = None,
    formats: Sequence[str] = FORMATS,
    every: int = 2,
    gif_backend: str = "auto",
    generation: int | None = None,
) -> dict[str, Any]:
    """Replay a results folder's champion and write its rollout beside the run's files.

    Loads ``config.json`` and the final state (or, for a run that did not finish, its latest
    checkpoint: :func:`load_run_state`), replays survivor ``member`` (0: the best) on one fresh
    episode (key ``seed``) and writes ``champion.npz``, ``champion.html``,
    ``champion.gif`` (HTML and GIF need an environment with a MuJoCo model: the Ant variants;
    for others they are skipped). With ``obs_norm`` the policy sees the final observation
    statistics.

    Args:
        run_dir: a results folder written by :func:`selfref_ghn.run.loop.evolve`.
        member: survivor slot to replay.
        seed: the episode's key is ``jax.random.PRNGKey(seed)``.
        horizon: episode length (default the run's ``horizon``).
        formats: any of ``npz``, ``html``, ``gif``.
        every: GIF frame stride.
        gif_backend: see :func:`write_gif`.
        generation: apply the switch schedule at this generation (default the last one).

    Returns:
        ``{"return", "length", "fitness", "state", "generation", <format>: path, ...}``
        (``fitness``: what the member survived its last generation with; ``state``: the file
        or checkpoint replayed; ``gif_backend``: who drew the GIF).

    Raises:
        ConfigError: no state in the folder, an unknown format, or a member outside the
            population.
    """
    from selfref_ghn.evolution.generation import Evolution
    from selfref_ghn.run.folder import load_run_config

    run_dir = Path(run_dir)
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ConfigError("formats", bad, f"any of {list(FORMATS)}")
    if not (run_dir / "config.json").exists():
        raise ConfigError("dir", str(run_dir), "a results folder (with config.json)")
    evo = Evolution.create(load_run_config(run_dir, "dir"))
    if not 0 <= member < evo.config.population_size:
        raise ConfigError("member", member, f"in [0, {evo.config.population_size})")
    state, source = load_run_state(evo, run_dir)
    traj = jax.device_get(
        rollout(jax.random.PRNGKey(seed), evo, state, member, horizon, generation)
    )
    n = traj.length
    out: dict[str, Any] = {
        "return": float(np.sum(traj.rewards)),
        "length": n,
        "fitness": float(state.fitness[member]),
        "state": source,
        "generation": int(state.generation),
    }
    qpos = np.asarray(traj.qpos)[: n + 1]  # through the step that ended the episode
    if "npz" in formats:
        out["npz"] = run_dir / "champion.npz"
        np.savez_compressed(
            out["npz"],
            actions=traj.actions,
            rewards=traj.rewards,
            alive=traj.alive,
            qpos=qpos,
            episode_return=np.float32(out["return"]),
        )
    visual = hasattr(evo.env, "mj_model")
    if "html" in formats and visual:
        out["html"] = run_dir / "champion.html"
        out["html"].write_text(evo.env.render_html(qpos))
    if "gif" in formats and visual:
        out["gif"] = run_dir / "champion.gif"
        out["gif_backend"] = write_gif(
            evo.env.mj_model, qpos, out["gif"], evo.env.dt, every, backend=gif_backend
        )
    return out


def _headless_gl() -> None:
    """Without a display, ask MuJoCo for EGL if ``libEGL`` is installed.

    ``MUJOCO_GL`` is read once, when ``mujoco`` is first imported, and an unusable value makes
    that import fail, so it is set only before the import and only when the library exists.
    """
    import ctypes.util

    if (
        "mujoco" not in sys.modules
        and not os.environ.get("DISPLAY")
        and "MUJOCO_GL" not in os.environ
        and ctypes.util.find_library("EGL")
    ):
        os.environ["MUJOCO_GL"] = "egl"


def cmd_render(args: argparse.Namespace) -> int:
    """``selfref-ghn render``: write the champion's rollout into the results folder."""
    _headless_gl()
    out = render_champion(
        args.dir,
        member=args.member,
        seed=args.seed,
        horizon=args.horizon,
        formats=args.format,
        every=args.every,
        gif_backend=args.gif_backend,
    )
    shown = {k: str(v) if isinstance(v, Path) else v for k, v in out.items()}
    print(json.dumps(shown, indent=1))
    return 0


def register(subparsers) -> None:
    """Add ``render DIR [--member K] [--seed N] [--horizon T] [--format ...]``."""
    p = subparsers.add_parser("render", help="replay a run's champion: npz, HTML viewer, GIF")
    p.add_argument("dir", type=Path, help="a results folder (final state or a checkpoint)")
    p.add_argument("--member", type=int, default=0, help="survivor slot (0: the best)")
    p.add_argument("--seed", type=int, default=0, help="episode seed")
    p.add_argument("--horizon", type=int, default=None, help="episode length (default: run's)")
    p.add_argument(
        "--format", nargs="+", choices=FORMATS, default=list(FORMATS), help="files to write"
    )
    p.add_argument("--every", type=int, default=2, help="GIF: keep every N-th frame")
    p.add_argument("--gif-backend", choices=GIF_BACKENDS, default="auto")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    p.set_defaults(func=cmd_render)
