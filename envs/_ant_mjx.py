"""A MuJoCo-consistent MJX step for Gymnasium's MuJoCo models (DESIGN §3, Ant-v5).

``mujoco.mjx.step`` (MJX 3.17, the JAX implementation that brax's ``mjx`` pipeline calls)
differs from the MuJoCo 4.0 C engine that Gymnasium runs in two ways that matter for Ant:

1. **Capsule-plane contact frames.** MuJoCo aligns the first tangent of a capsule-floor contact
   with the capsule axis projected onto the plane, whatever the capsule's tilt. MJX falls back
   to a fixed world axis when that projection is shorter than 0.5 (a leg steeper than 60°),
   which is exactly when an Ant foot touches the floor. With pyramidal friction cones the
   frame orientation changes the friction forces, so single substeps differ by up to 0.5 in
   joint velocity.
2. **RK4 on free (and ball) joints.** MuJoCo 4.0 integrates orientations with the
   Runge-Kutta-Munthe-Kaas correction: stage angular velocities ``w_i`` become
   ``k_i = w_i + [theta_i, w_i] / 2 + [theta_i, [theta_i, w_i]] / 12`` with
   ``theta_i = h a_i k_{i-1}``, stage orientations are ``q0 * exp(theta_i)`` and the final one
   ``q0 * exp(h sum_i b_i k_i)``. MJX combines the plain ``w_i``.

This module rebuilds MJX's ``forward`` with the frame fix and an RK4 with the RKMK correction,
from MJX's own building blocks. Everything else (collision, constraint assembly, the Newton
solver, RNE) is MJX's code. Verified against ``mujoco.mj_step`` to ~1e-12 per substep in
float64 on Ant states with contacts.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import mjx
from mujoco.mjx._src import collision_driver, constraint, scan, sensor, smooth, solver
from mujoco.mjx._src import forward as mjx_forward
from mujoco.mjx._src.types import GeomType, IntegratorType

# Butcher tableau of classical RK4 written as one uniform scan over the four stages:
# stage i is evaluated at X0 + h * A[i] * (stage i-1 derivative); A[0] = 0 is X0 itself.
_RK4_A = np.array([0.0, 0.5, 0.5, 1.0])
_RK4_B = np.array([1.0, 2.0, 2.0, 1.0]) / 6.0
_RK4_C = np.array([0.0, 0.5, 0.5, 1.0])


def rotation_dofs(mj_model: mujoco.MjModel) -> np.ndarray:
    """Indices of the angular-velocity dofs of free and ball joints, shape ``(n, 3)``."""
    idx = []
    for j in range(mj_model.njnt):
        adr = int(mj_model.jnt_dofadr[j])
        if mj_model.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE:
            idx.append([adr + 3, adr + 4, adr + 5])
        elif mj_model.jnt_type[j] == mujoco.mjtJoint.mjJNT_BALL:
            idx.append([adr, adr + 1, adr + 2])
    return np.asarray(idx, dtype=np.int32).reshape(-1, 3)


def _fix_capsule_plane_frames(m: mjx.Model, d: mjx.Data) -> mjx.Data:
    """Give plane-capsule contacts MuJoCo's frame: tangent 1 = capsule axis on the plane."""
    c = d._impl.contact
    if c.geom.shape[0] == 0:
        return d
    geom_type = jnp.asarray(m.geom_type)
    g1, g2 = c.geom[:, 0], c.geom[:, 1]
    is_plane_capsule = (geom_type[g1] == GeomType.PLANE) & (geom_type[g2] == GeomType.CAPSULE)
    normal = c.frame[:, 0]
    axis = d.geom_xmat[g2][:, :, 2]
    tangent = axis - normal * jnp.sum(normal * axis, axis=-1, keepdims=True)
    norm = jnp.linalg.norm(tangent, axis=-1, keepdims=True)
    ok = is_plane_capsule[:, None] & (norm > mujoco.mjMINVAL)
    tangent = jnp.where(ok, tangent / jnp.where(ok, norm, 1.0), c.frame[:, 1])
    frame = jnp.stack([normal, tangent, jnp.cross(normal, tangent)], axis=1)
    return d.tree_replace({"_impl.contact": c.replace(frame=frame)})


def forward(m: mjx.Model, d: mjx.Data) -> mjx.Data:
    """``mjx.forward`` with MuJoCo's capsule-plane contact frames (same stage order).

    Like ``mj_forward`` (and unlike MJX's ``kinematics``), ``qpos`` is left as given: a reset
    with a non-unit quaternion observes it as Gymnasium does.
    """
    d = smooth.kinematics(m, d).replace(qpos=d.qpos)
    d = smooth.com_pos(m, d)
    d = smooth.camlight(m, d)
    d = smooth.tendon(m, d)
    d = smooth.crb(m, d)
    d = smooth.tendon_armature(m, d)
    d = smooth.factor_m(m, d)
    d = collision_driver.collision(m, d)
    d = _fix_capsule_plane_frames(m, d)
    d = constraint.make_constraint(m, d)
    d = smooth.transmission(m, d)
    d = sensor.sensor_pos(m, d)
    d = mjx_forward.fwd_velocity(m, d)
    d = sensor.sensor_vel(m, d)
    d = mjx_forward.fwd_actuation(m, d)
    d = mjx_forward.fwd_acceleration(m, d)
    if d._impl.efc_J.size == 0:
        d = d.replace(qacc=d.qacc_smooth)
        return d
    d = solver.solve(m, d)
    d = sensor.sensor_acc(m, d)
    return d


def set_state(m: mjx.Model, qpos: jax.Array, qvel: jax.Array) -> mjx.Data:
    """Fresh data at ``(qpos, qvel)`` with body poses computed (Gymnasium's ``set_state``).

    Gymnasium's ``set_state`` runs ``mj_forward`` on reset data. Of its results only the body
    poses are read before the next ``mj_step`` recomputes everything (``xpos`` for the forward
    reward; ``cfrc_ext`` is not computed by ``mj_forward`` and stays zero), so kinematics alone
    gives the same observations and rewards at a fraction of the compile time.

    Args:
        m: MJX model.
        qpos: ``(nq,)`` positions, kept as given (a non-unit quaternion is not normalized).
        qvel: ``(nv,)`` velocities.

    Returns:
        Data with zero warmstart, controls and forces, and the poses of ``qpos``.
    """
    d = mjx.make_data(m).replace(qpos=qpos, qvel=qvel)
    return smooth.kinematics(m, d).replace(qpos=qpos)


def _integrate(m: mjx.Model, qpos: jax.Array, qvel: jax.Array) -> jax.Array:
    """``qpos (+) h * qvel`` on the configuration manifold (quaternions via exp)."""
    fn = lambda *args: mjx_forward._integrate_pos(*args, dt=m.opt.timestep)
    return scan.flat(m, fn, "jqv", "q", m.jnt_type, qpos, qvel)


def _like(new: mjx.Data, old: mjx.Data) -> mjx.Data:
    """Cast ``new``'s leaves to ``old``'s dtypes (``put_data`` and collision disagree on ints)."""
    return jax.tree.map(lambda x, y: x.astype(y.dtype), new, old)


def _rkmk(theta: jax.Array, w: jax.Array) -> jax.Array:
    """Truncated inverse dexp: ``w + [theta, w]/2 + [theta, [theta, w]]/12``."""
    tw = jnp.cross(theta, w)
    return w + 0.5 * tw + jnp.cross(theta, tw) / 12.0


def rk4_step(m: mjx.Model, d: mjx.Data, rot_dofs: np.ndarray) -> mjx.Data:
    """One MuJoCo 4.0 ``mj_step`` with the RK4 integrator (RKMK on rotation dofs).

    Args:
        m: MJX model whose ``opt.integrator`` is RK4.
        d: MJX data holding ``qpos``, ``qvel``, ``act``, ``ctrl`` and the warmstart.
        rot_dofs: ``(n, 3)`` static indices of the free/ball angular dofs
            (:func:`rotation_dofs`).

    Returns:
        The advanced data. As in MuJoCo, derived quantities (``xpos``, contacts, forces) are
        those of the last RK stage, and ``qacc_warmstart`` is that stage's ``qacc``.
    """
    h = m.opt.timestep
    q0, v0, act0, t0 = d.qpos, d.qvel, d.act, d.time
    rot = jnp.asarray(rot_dofs)

    def stage(carry, abc):
        d, vel, k, acc, act_dot, sums = carry
        a, b, c = abc
        dq = (a * vel).at[rot].set(a * k)
        d = d.replace(
            qpos=_integrate(m, q0, dq),
            qvel=v0 + h * a * acc,
            act=act0 + h * a * act_dot,
            time=t0 + c * h,
        )
        d = _like(forward(m, d), d)
        k = _rkmk(h * a * k, d.qvel[rot])
        s_vel, s_k, s_acc, s_act = sums
        sums = (s_vel + b * d.qvel, s_k + b * k, s_acc + b * d.qacc, s_act + b * d.act_dot)
        return (d, d.qvel, k, d.qacc, d.act_dot, sums), None

    zeros = (jnp.zeros_like(v0), jnp.zeros_like(v0[rot]), jnp.zeros_like(v0), jnp.zeros_like(act0))
    init = (d, v0, jnp.zeros_like(v0[rot]), jnp.zeros_like(v0), jnp.zeros_like(act0), zeros)
    tableau = jnp.asarray(np.stack([_RK4_A, _RK4_B, _RK4_C], axis=1), dtype=v0.dtype)
    (d, _, _, _, _, sums), _ = jax.lax.scan(stage, init, tableau)
    s_vel, s_k, s_acc, s_act = sums
    d = d.replace(qpos=q0, qvel=v0, act=act0, time=t0)
    return mjx_forward._advance(m, d, s_act, s_acc, s_vel.at[rot].set(s_k))


def step(m: mjx.Model, d: mjx.Data, rot_dofs: np.ndarray) -> mjx.Data:
    """MuJoCo-consistent ``mj_step``: this module's ``forward``, then the model's integrator.

    Args:
        m: MJX model.
        d: MJX data.
        rot_dofs: see :func:`rk4_step`.

    Returns:
        The data one timestep later.
    """
    if m.opt.integrator == IntegratorType.RK4:
        return rk4_step(m, d, rot_dofs)
    d = forward(m, d)
    if m.opt.integrator == IntegratorType.EULER:
        return mjx_forward.euler(m, d)
    return mjx_forward.implicit(m, d)


__all__ = ["forward", "rk4_step", "rotation_dofs", "set_state", "step"]
