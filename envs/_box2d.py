"""A fixed-size Box2D 2.3 rigid-body solver for the LunarLander scene (DESIGN §3).

This is not a general physics engine: it solves exactly one scene, a polygon hull with two
box legs attached by limited, motorised revolute joints, falling onto a static terrain of edge
segments. It follows Box2D 2.3's ``b2World::Step`` step by step so that the pure-JAX
LunarLander reproduces Gymnasium's Box2D one:

1. *Collide*: edge-vs-polygon manifolds (``b2CollideEdgeAndPolygon``, the separating-axis
   "EP collider" without ghost vertices) for every body/segment pair, matched by contact
   feature key to the previous step's manifold to warm-start their impulses; begin/end events.
2. *Solve* (one island): integrate velocities (gravity, forces), warm start, then
   ``velocity_iterations`` sweeps of sequential impulses (joints first: motor, limit or point
   constraint; then contacts: friction, then the 2-point block normal solver), integrate
   positions (with Box2D's translation/rotation clamps), then up to ``position_iterations``
   non-linear Gauss-Seidel position sweeps (contacts, then joints) with Box2D's early exit.
3. *Sleep*: per-body timers; the island sleeps when all have been slow for ``b2_timeToSleep``
   and the position solve converged.
4. *TOI*: a reduced version of ``b2World::SolveTOI``: a body that ends the step more than a
   skin's depth inside a segment it was clear of at the start is moved back to the time of
   impact (bisection along its sweep), its contact is created there (a begin event), and a
   TOI sub-step (position, velocity, integration of the remaining time) is solved for that
   body alone, as Box2D does (joints are not part of TOI islands). One event per body and
   step, instead of Box2D's loop over successive events.

Everything is written for one scene and vectorised over the three bodies where Box2D's
Gauss-Seidel order does not couple them (contacts on different bodies only meet through the
joints), so the solver ``vmap``s over thousands of scenes. Body 0 is the hull, body 1 the
left-hand leg (Gymnasium's ``legs[0]``), body 2 ``legs[1]``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

# Box2D 2.3 b2Settings.h
LINEAR_SLOP = 0.005
ANGULAR_SLOP = 2.0 / 180.0 * math.pi
POLYGON_RADIUS = 2.0 * LINEAR_SLOP
MAX_LINEAR_CORRECTION = 0.2
MAX_ANGULAR_CORRECTION = 8.0 / 180.0 * math.pi
MAX_TRANSLATION = 2.0
MAX_ROTATION = 0.5 * math.pi
BAUMGARTE = 0.2
TOI_BAUMGARTE = 0.75
TIME_TO_SLEEP = 0.5
LINEAR_SLEEP_TOLERANCE = 0.01
ANGULAR_SLEEP_TOLERANCE = 2.0 / 180.0 * math.pi
MAX_CONDITION_NUMBER = 1000.0
TOI_POSITION_ITERATIONS = 20

NUM_BODIES = 3
NUM_SLOTS = 2  # contacts solved per body (a body spans at most two terrain chunks)


# ---------------------------------------------------------------------------------------------
# Shapes and mass (numpy, at import time): b2PolygonShape::Set / SetAsBox / ComputeMass.
# ---------------------------------------------------------------------------------------------


def polygon_hull(points: np.ndarray) -> np.ndarray:
    """Box2D 2.3's gift-wrapping convex hull (vertex order as ``b2PolygonShape::Set``)."""
    ps = np.asarray(points, np.float64)
    n = len(ps)
    i0 = 0
    for i in range(1, n):
        if ps[i, 0] > ps[i0, 0] or (ps[i, 0] == ps[i0, 0] and ps[i, 1] < ps[i0, 1]):
            i0 = i
    hull, ih = [], i0
    while True:
        hull.append(ih)
        ie = 0
        for j in range(1, n):
            if ie == ih:
                ie = j
                continue
            r = ps[ie] - ps[hull[-1]]
            v = ps[j] - ps[hull[-1]]
            c = r[0] * v[1] - r[1] * v[0]
            if c < 0.0 or (c == 0.0 and v @ v > r @ r):
                ie = j
        ih = ie
        if ie == i0:
            break
    return ps[hull]


def box_vertices(hx: float, hy: float) -> np.ndarray:
    """``b2PolygonShape::SetAsBox`` vertices."""
    return np.array([[-hx, -hy], [hx, -hy], [hx, hy], [-hx, hy]], np.float64)


def polygon_normals(vertices: np.ndarray) -> np.ndarray:
    """Outward unit normals of a counter-clockwise polygon's edges."""
    edges = np.roll(vertices, -1, axis=0) - vertices
    normals = np.stack([edges[:, 1], -edges[:, 0]], axis=1)
    return normals / np.linalg.norm(normals, axis=1, keepdims=True)


def polygon_mass(vertices: np.ndarray, density: float) -> tuple[float, np.ndarray, float]:
    """``b2PolygonShape::ComputeMass``: mass, centroid and inertia about the centroid."""
    s = vertices[0]
    area, center, inertia = 0.0, np.zeros(2), 0.0
    n = len(vertices)
    for i in range(n):
        e1 = vertices[i] - s
        e2 = vertices[(i + 1) % n] - s
        d = e1[0] * e2[1] - e1[1] * e2[0]
        tri = 0.5 * d
        area += tri
        center += tri / 3.0 * (e1 + e2)
        intx2 = e1[0] ** 2 + e2[0] * e1[0] + e2[0] ** 2
        inty2 = e1[1] ** 2 + e2[1] * e1[1] + e2[1] ** 2
        inertia += (0.25 / 3.0 * d) * (intx2 + inty2)
    mass = density * area
    center_rel = center / area
    centroid = center_rel + s
    i_origin = density * inertia + mass * (centroid @ centroid - center_rel @ center_rel)
    i_center = i_origin - mass * (centroid @ centroid)
    return mass, centroid, i_center


def polygon_centroid(vertices: np.ndarray) -> np.ndarray:
    """Area centroid of a polygon (``ComputeCentroid``)."""
    return polygon_mass(vertices, 1.0)[1]


@struct.dataclass
class Scene:
    """Static description of the scene (constants, shared by all environments)."""

    hull_verts: jax.Array  # [6, 2] local (body-origin) coordinates
    hull_normals: jax.Array  # [6, 2]
    hull_centroid: jax.Array  # [2]
    leg_verts: jax.Array  # [4, 2]
    leg_normals: jax.Array  # [4, 2]
    inv_mass: jax.Array  # [3]
    inv_inertia: jax.Array  # [3] about the centre of mass
    local_center: jax.Array  # [3, 2]
    anchor_a: jax.Array  # [2, 2] joint anchors on the hull (body-origin coordinates)
    anchor_b: jax.Array  # [2, 2] joint anchors on each leg
    lower: jax.Array  # [2] joint limits
    upper: jax.Array  # [2]
    motor_speed: jax.Array  # [2]
    reference_angle: jax.Array  # [2] (pybox2d sets it to angleB - angleA at creation)
    max_motor_torque: float = struct.field(pytree_node=False)
    friction: jax.Array = None  # [3, NSEG] mixed friction per body/segment
    dt: float = struct.field(pytree_node=False, default=1.0 / 50.0)
    velocity_iterations: int = struct.field(pytree_node=False, default=180)
    position_iterations: int = struct.field(pytree_node=False, default=60)


@struct.dataclass
class PhysState:
    """The dynamic state Box2D carries from one step to the next."""

    c: jax.Array  # [3, 2] centres of mass
    a: jax.Array  # [3] angles
    v: jax.Array  # [3, 2] linear velocities
    w: jax.Array  # [3] angular velocities
    sleep_time: jax.Array  # [3]
    joint_impulse: jax.Array  # [2, 3] point (x, y) and limit (z) impulses, warm-started
    motor_impulse: jax.Array  # [2]
    limit_state: jax.Array  # [2] int: 0 inactive, 1 at lower, 2 at upper
    touching: jax.Array  # [3, NSEG] bool, contact has manifold points
    ids: jax.Array  # [3, NSEG, 2] int contact feature keys
    count: jax.Array  # [3, NSEG] int manifold point count
    normal_impulse: jax.Array  # [3, NSEG, 2]
    tangent_impulse: jax.Array  # [3, NSEG, 2]


@struct.dataclass
class Manifold:
    """A ``b2Manifold`` between the static segment (A) and a body (B), with solver data."""

    face_b: jax.Array  # bool: reference face on the polygon (e_faceB) instead of the edge
    local_normal: jax.Array  # [2]
    local_point: jax.Array  # [2]
    points: jax.Array  # [2, 2] manifold point local coordinates (polygon or world frame)
    ids: jax.Array  # [2] int
    count: jax.Array  # int 0..2


def _cross(a, b):
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _cross_sv(s, v):
    """b2Cross(float, vec)."""
    return jnp.stack([-s * v[..., 1], s * v[..., 0]], axis=-1)


def _rot(angle, v):
    c, s = jnp.cos(angle), jnp.sin(angle)
    return jnp.stack([c * v[..., 0] - s * v[..., 1], s * v[..., 0] + c * v[..., 1]], axis=-1)


def _rot_t(angle, v):
    c, s = jnp.cos(angle), jnp.sin(angle)
    return jnp.stack([c * v[..., 0] + s * v[..., 1], -s * v[..., 0] + c * v[..., 1]], axis=-1)


def _dot(a, b):
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1]


def _key(index_a, index_b, type_a, type_b):
    return index_a + 256 * index_b + 65536 * type_a + 16777216 * type_b


# ---------------------------------------------------------------------------------------------
# Collision: b2CollideEdgeAndPolygon for a lone edge (no ghost vertices), in the edge's frame.
# ---------------------------------------------------------------------------------------------


def _clip(p0, p1, id0, id1, normal, offset, vertex_index_a):
    """b2ClipSegmentToLine; returns (q0, q1, k0, k1, ok) where ok means two points came out."""
    d0 = _dot(normal, p0) - offset
    d1 = _dot(normal, p1) - offset
    interp = d0 / jnp.where(d0 - d1 == 0.0, 1.0, d0 - d1)
    pi = p0 + interp * (p1 - p0)
    index_b0 = (id0 // 256) % 256
    ki = _key(vertex_index_a, index_b0, 0, 1)
    keep0, keep1 = d0 <= 0.0, d1 <= 0.0
    crossing = d0 * d1 < 0.0
    ok = (keep0 & keep1) | ((keep0 | keep1) & crossing)
    # out order: kept points in input order, then the intersection
    q0 = jnp.where(keep0, p0, p1)
    k0 = jnp.where(keep0, id0, id1)
    q1 = jnp.where(keep0 & keep1, p1, pi)
    k1 = jnp.where(keep0 & keep1, id1, ki)
    return q0, q1, k0, k1, ok


def collide_edge_polygon(v1, v2, verts, normals, centroid, angle, pos):
    """Box2D 2.3 ``b2EPCollider::Collide`` for a lone edge ``v1 -> v2`` (world frame).

    Args:
        v1, v2: [2] edge end points (the static body's frame is the world frame).
        verts, normals: [n, 2] the polygon in its body's frame (body origin coordinates).
        centroid: [2] polygon centroid in the body frame.
        angle, pos: the polygon body's transform (origin position).

    Returns:
        The :class:`Manifold` (``count`` 0 when the shapes are not touching).
    """
    radius = 2.0 * POLYGON_RADIUS
    n = verts.shape[0]
    wv = _rot(angle, verts) + pos
    wn = _rot(angle, normals)
    cb = _rot(angle, centroid) + pos
    edge = v2 - v1
    edge = edge / jnp.sqrt(_dot(edge, edge))
    normal1 = jnp.stack([edge[1], -edge[0]])
    front = _dot(normal1, cb - v1) >= 0.0
    m_normal = jnp.where(front, normal1, -normal1)

    # edge axis
    edge_sep = jnp.min(_dot(wv - v1, m_normal))
    # polygon axes
    pn = -wn
    s = jnp.minimum(_dot(pn, wv - v1), _dot(pn, wv - v2))
    poly_index = jnp.argmax(s)
    poly_sep = s[poly_index]
    separated = (edge_sep > radius) | jnp.any(s > radius)
    use_poly = poly_sep > 0.98 * edge_sep + 0.001

    # e_edgeA: incident edge on the polygon, most anti-parallel normal
    i1 = jnp.argmin(_dot(wn, m_normal))
    i2 = (i1 + 1) % n
    a_ie0, a_ie1 = wv[i1], wv[i2]
    a_id0, a_id1 = _key(0, i1, 1, 0), _key(0, i2, 1, 0)
    a_rfi1 = jnp.where(front, 0, 1)
    a_rfi2 = jnp.where(front, 1, 0)
    a_rv1 = jnp.where(front, v1, v2)
    a_rv2 = jnp.where(front, v2, v1)
    a_rn = m_normal
    # e_edgeB: reference face on the polygon, incident = the edge
    b_rfi1 = poly_index
    b_rfi2 = (poly_index + 1) % n
    b_rv1, b_rv2, b_rn = wv[b_rfi1], wv[b_rfi2], wn[b_rfi1]
    b_id = _key(0, poly_index, 0, 1)

    ie0 = jnp.where(use_poly, v1, a_ie0)
    ie1 = jnp.where(use_poly, v2, a_ie1)
    id0 = jnp.where(use_poly, b_id, a_id0)
    id1 = jnp.where(use_poly, b_id, a_id1)
    rfi1 = jnp.where(use_poly, b_rfi1, a_rfi1)
    rfi2 = jnp.where(use_poly, b_rfi2, a_rfi2)
    rv1 = jnp.where(use_poly, b_rv1, a_rv1)
    rv2 = jnp.where(use_poly, b_rv2, a_rv2)
    rn = jnp.where(use_poly, b_rn, a_rn)

    side1 = jnp.stack([rn[1], -rn[0]])
    q0, q1, k0, k1, ok1 = _clip(ie0, ie1, id0, id1, side1, _dot(side1, rv1), rfi1)
    q0, q1, k0, k1, ok2 = _clip(q0, q1, k0, k1, -side1, _dot(-side1, rv2), rfi2)

    sep0 = _dot(rn, q0 - rv1)
    sep1 = _dot(rn, q1 - rv1)
    valid0 = sep0 <= radius
    valid1 = sep1 <= radius
    contact = ~separated & ok1 & ok2

    def swap_key(k):
        ia, ib, ta, tb = k % 256, (k // 256) % 256, (k // 65536) % 256, k // 16777216
        return _key(ib, ia, tb, ta)

    # e_faceA stores points in the polygon frame; e_faceB in the edge (world) frame.
    lq0 = jnp.where(use_poly, q0, _rot_t(angle, q0 - pos))
    lq1 = jnp.where(use_poly, q1, _rot_t(angle, q1 - pos))
    k0 = jnp.where(use_poly, swap_key(k0), k0)
    k1 = jnp.where(use_poly, swap_key(k1), k1)
    # compact: the first valid point goes first
    p_first = jnp.where(valid0, lq0, lq1)
    k_first = jnp.where(valid0, k0, k1)
    points = jnp.stack([p_first, lq1])
    ids = jnp.stack([k_first, k1])
    count = jnp.where(contact, valid0.astype(jnp.int32) + valid1.astype(jnp.int32), 0)
    local_normal = jnp.where(use_poly, normals[b_rfi1], a_rn)
    local_point = jnp.where(use_poly, verts[b_rfi1], a_rv1)
    return Manifold(
        face_b=use_poly,
        local_normal=local_normal,
        local_point=local_point,
        points=points,
        ids=ids,
        count=count,
    )


def world_manifold(m: Manifold, angle, pos):
    """``b2WorldManifold::Initialize``: world normal (A to B) and mid-surface points [2, 2]."""
    ra = rb = POLYGON_RADIUS
    # e_faceA: normal and plane on the (static) edge, clip points on the polygon
    na = m.local_normal
    plane_a = m.local_point
    clip_a = _rot(angle, m.points) + pos
    ca = clip_a + (ra - _dot(clip_a - plane_a, na))[:, None] * na
    cb = clip_a - rb * na
    pts_a = 0.5 * (ca + cb)
    # e_faceB: normal and plane on the polygon, clip points on the edge
    nb = _rot(angle, m.local_normal)
    plane_b = _rot(angle, m.local_point) + pos
    clip_b = m.points
    cb2 = clip_b + (rb - _dot(clip_b - plane_b, nb))[:, None] * nb
    ca2 = clip_b - ra * nb
    pts_b = 0.5 * (ca2 + cb2)
    normal = jnp.where(m.face_b, -nb, na)
    points = jnp.where(m.face_b, pts_b, pts_a)
    return normal, points


def _psm(face_b, local_normal, local_point, point_local, angle, pos):
    """``b2PositionSolverManifold::Initialize`` for one point: (normal, point, separation)."""
    radius = 2.0 * POLYGON_RADIUS
    clip_a = _rot(angle, point_local) + pos
    sep_a = _dot(clip_a - local_point, local_normal) - radius
    nb = _rot(angle, local_normal)
    plane_b = _rot(angle, local_point) + pos
    sep_b = _dot(point_local - plane_b, nb) - radius
    normal = jnp.where(face_b, -nb, local_normal)
    point = jnp.where(face_b, point_local, clip_a)
    sep = jnp.where(face_b, sep_b, sep_a)
    return normal, point, sep


# ---------------------------------------------------------------------------------------------
# Joints: b2RevoluteJoint with motor and limit (body A = hull, body B = a leg).
# ---------------------------------------------------------------------------------------------


@struct.dataclass
class _JointCache:
    """Per-step joint solver data (``InitVelocityConstraints``)."""

    ra: jax.Array  # [2, 2]
    rb: jax.Array  # [2, 2]
    k: jax.Array  # [2, 3, 3] effective mass matrix (b2Mat33, row-major here)
    motor_mass: jax.Array  # [2]


def _solve33(k, b):
    ex, ey, ez = k[:, 0], k[:, 1], k[:, 2]
    det = jnp.dot(ex, jnp.cross(ey, ez))
    det = jnp.where(det != 0.0, 1.0 / jnp.where(det != 0.0, det, 1.0), 0.0)
    return det * jnp.stack(
        [
            jnp.dot(b, jnp.cross(ey, ez)),
            jnp.dot(ex, jnp.cross(b, ez)),
            jnp.dot(ex, jnp.cross(ey, b)),
        ]
    )


def _solve22(a11, a12, a21, a22, b):
    det = a11 * a22 - a12 * a21
    det = jnp.where(det != 0.0, 1.0 / jnp.where(det != 0.0, det, 1.0), 0.0)
    return det * jnp.stack([a22 * b[0] - a12 * b[1], a11 * b[1] - a21 * b[0]])


def _joint_init(scene: Scene, c, a, j):
    """Anchors and mass matrix of joint ``j`` at the current pose."""
    ma, mb = scene.inv_mass[0], scene.inv_mass[j + 1]
    ia, ib = scene.inv_inertia[0], scene.inv_inertia[j + 1]
    ra = _rot(a[0], scene.anchor_a[j] - scene.local_center[0])
    rb = _rot(a[j + 1], scene.anchor_b[j] - scene.local_center[j + 1])
    exx = ma + mb + ra[1] * ra[1] * ia + rb[1] * rb[1] * ib
    eyx = -ra[1] * ra[0] * ia - rb[1] * rb[0] * ib
    ezx = -ra[1] * ia - rb[1] * ib
    eyy = ma + mb + ra[0] * ra[0] * ia + rb[0] * rb[0] * ib
    ezy = ra[0] * ia + rb[0] * ib
    ezz = ia + ib
    k = jnp.array([[exx, eyx, ezx], [eyx, eyy, ezy], [ezx, ezy, ezz]])
    return ra, rb, k, 1.0 / (ia + ib)


def _joint_velocity(scene: Scene, v, w, cache, j, impulse, motor_impulse, limit_state):
    """``b2RevoluteJoint::SolveVelocityConstraints`` for joint ``j``."""
    b = j + 1
    ma, mb = scene.inv_mass[0], scene.inv_mass[b]
    ia, ib = scene.inv_inertia[0], scene.inv_inertia[b]
    ra, rb, k, motor_mass = cache.ra[j], cache.rb[j], cache.k[j], cache.motor_mass[j]
    va, wa, vb, wb = v[0], w[0], v[b], w[b]
    # motor
    cdot = wb - wa - scene.motor_speed[j]
    imp = -motor_mass * cdot
    max_imp = scene.dt * scene.max_motor_torque
    new_motor = jnp.clip(motor_impulse + imp, -max_imp, max_imp)
    imp = new_motor - motor_impulse
    wa = wa - ia * imp
    wb = wb + ib * imp
    # limit (3x3) or point (2x2)
    cdot1 = vb + _cross_sv(wb, rb) - va - _cross_sv(wa, ra)
    cdot2 = wb - wa
    imp3 = -_solve33(k, jnp.concatenate([cdot1, cdot2[None]]))
    newz = impulse[2] + imp3[2]
    clamp = ((limit_state == 1) & (newz < 0.0)) | ((limit_state == 2) & (newz > 0.0))
    rhs = -cdot1 + impulse[2] * k[0:2, 2]
    reduced = _solve22(k[0, 0], k[0, 1], k[1, 0], k[1, 1], rhs)
    lim_applied = jnp.where(clamp, jnp.concatenate([reduced, -impulse[2:3]]), imp3)
    lim_total = jnp.where(
        clamp,
        jnp.concatenate([impulse[:2] + reduced, jnp.zeros(1, impulse.dtype)]),
        impulse + imp3,
    )
    pt = _solve22(k[0, 0], k[0, 1], k[1, 0], k[1, 1], -cdot1)
    pt_applied = jnp.concatenate([pt, jnp.zeros(1, pt.dtype)])
    active = limit_state != 0
    applied = jnp.where(active, lim_applied, pt_applied)
    impulse = jnp.where(active, lim_total, impulse + pt_applied)
    p = applied[:2]
    va = va - ma * p
    wa = wa - ia * (_cross(ra, p) + applied[2])
    vb = vb + mb * p
    wb = wb + ib * (_cross(rb, p) + applied[2])
    v = v.at[0].set(va).at[b].set(vb)
    w = w.at[0].set(wa).at[b].set(wb)
    return v, w, impulse, new_motor


def _joint_position(scene: Scene, c, a, j, limit_state):
    """``b2RevoluteJoint::SolvePositionConstraints`` for joint ``j``; returns (c, a, ok)."""
    b = j + 1
    ma, mb = scene.inv_mass[0], scene.inv_mass[b]
    ia, ib = scene.inv_inertia[0], scene.inv_inertia[b]
    ca, aa, cb, ab = c[0], a[0], c[b], a[b]
    motor_mass = 1.0 / (ia + ib)
    angle = ab - aa - scene.reference_angle[j]
    c_low = angle - scene.lower[j]
    c_up = angle - scene.upper[j]
    lim_c = jnp.where(
        limit_state == 1,
        jnp.clip(c_low + ANGULAR_SLOP, -MAX_ANGULAR_CORRECTION, 0.0),
        jnp.clip(c_up - ANGULAR_SLOP, 0.0, MAX_ANGULAR_CORRECTION),
    )
    ang_err = jnp.where(limit_state == 1, -c_low, jnp.where(limit_state == 2, c_up, 0.0))
    lim_imp = jnp.where(limit_state != 0, -motor_mass * lim_c, 0.0)
    aa = aa - ia * lim_imp
    ab = ab + ib * lim_imp
    ra = _rot(aa, scene.anchor_a[j] - scene.local_center[0])
    rb = _rot(ab, scene.anchor_b[j] - scene.local_center[b])
    err = cb + rb - ca - ra
    pos_err = jnp.sqrt(_dot(err, err))
    k11 = ma + mb + ia * ra[1] * ra[1] + ib * rb[1] * rb[1]
    k12 = -ia * ra[0] * ra[1] - ib * rb[0] * rb[1]
    k22 = ma + mb + ia * ra[0] * ra[0] + ib * rb[0] * rb[0]
    imp = -_solve22(k11, k12, k12, k22, err)
    ca = ca - ma * imp
    aa = aa - ia * _cross(ra, imp)
    cb = cb + mb * imp
    ab = ab + ib * _cross(rb, imp)
    c = c.at[0].set(ca).at[b].set(cb)
    a = a.at[0].set(aa).at[b].set(ab)
    ok = (pos_err <= LINEAR_SLOP) & (ang_err <= ANGULAR_SLOP)
    return c, a, ok


# ---------------------------------------------------------------------------------------------
# Contacts (body A is always the static ground, so only body B moves).
# ---------------------------------------------------------------------------------------------


@struct.dataclass
class _ContactCache:
    """``b2ContactVelocityConstraint`` data for the selected contact slots [3, NUM_SLOTS]."""

    normal: jax.Array  # [3, S, 2]
    rb: jax.Array  # [3, S, 2, 2]
    normal_mass: jax.Array  # [3, S, 2]
    tangent_mass: jax.Array  # [3, S, 2]
    k: jax.Array  # [3, S, 3] block matrix entries k11, k12, k22
    k_inv: jax.Array  # [3, S, 2, 2]
    mask: jax.Array  # [3, S, 2] point takes part
    block: jax.Array  # [3, S] two-point block solve
    friction: jax.Array  # [3, S]


def _contact_velocity_slot(scene, v, w, cc, ni, ti, s):
    """Friction then normal impulses for slot ``s`` of all three bodies at once."""
    mb = scene.inv_mass[:, None]
    ib = scene.inv_inertia
    n = cc.normal[:, s]
    t = jnp.stack([n[:, 1], -n[:, 0]], axis=-1)
    rb = cc.rb[:, s]
    mask = cc.mask[:, s]
    ni_s, ti_s = ni[:, s], ti[:, s]
    new_ti = []
    for j in range(2):
        dv = v + _cross_sv(w, rb[:, j])
        vt = _dot(dv, t)
        lam = cc.tangent_mass[:, s, j] * (-vt)
        maxf = cc.friction[:, s] * ni_s[:, j]
        new = jnp.clip(ti_s[:, j] + lam, -maxf, maxf)
        lam = jnp.where(mask[:, j], new - ti_s[:, j], 0.0)
        p = lam[:, None] * t
        v = v + mb * p
        w = w + ib * _cross(rb[:, j], p)
        new_ti.append(jnp.where(mask[:, j], new, ti_s[:, j]))
    ti = ti.at[:, s].set(jnp.stack(new_ti, axis=-1))

    a0, a1 = ni_s[:, 0], ni_s[:, 1]
    vn1 = _dot(v + _cross_sv(w, rb[:, 0]), n)
    vn2 = _dot(v + _cross_sv(w, rb[:, 1]), n)
    # single point (point 0 only; used when the block solver is off)
    single_new = jnp.maximum(a0 - cc.normal_mass[:, s, 0] * vn1, 0.0)
    # block solver (Box2D's case enumeration of the 2x2 LCP)
    k11, k12, k22 = cc.k[:, s, 0], cc.k[:, s, 1], cc.k[:, s, 2]
    kk = cc.k_inv[:, s]
    bx = vn1 - (k11 * a0 + k12 * a1)
    by = vn2 - (k12 * a0 + k22 * a1)
    x1x = -(kk[:, 0, 0] * bx + kk[:, 0, 1] * by)
    x1y = -(kk[:, 1, 0] * bx + kk[:, 1, 1] * by)
    case1 = (x1x >= 0.0) & (x1y >= 0.0)
    x2x = -cc.normal_mass[:, s, 0] * bx
    case2 = (x2x >= 0.0) & (k12 * x2x + by >= 0.0)
    x3y = -cc.normal_mass[:, s, 1] * by
    case3 = (x3y >= 0.0) & (k12 * x3y + bx >= 0.0)
    case4 = (bx >= 0.0) & (by >= 0.0)
    zero = jnp.zeros_like(a0)
    xx = jnp.where(case1, x1x, jnp.where(case2, x2x, jnp.where(case3 | case4, zero, a0)))
    xy = jnp.where(
        case1, x1y, jnp.where(case2, zero, jnp.where(case3, x3y, jnp.where(case4, zero, a1)))
    )
    block = cc.block[:, s]
    new0 = jnp.where(block, xx, jnp.where(mask[:, 0], single_new, a0))
    new1 = jnp.where(block, xy, a1)
    p0 = (new0 - a0)[:, None] * n
    p1 = (new1 - a1)[:, None] * n
    v = v + mb * (p0 + p1)
    w = w + ib * (_cross(rb[:, 0], p0) + _cross(rb[:, 1], p1))
    ni = ni.at[:, s].set(jnp.stack([new0, new1], axis=-1))
    return v, w, ni, ti


def _contact_position_slot(scene, c, a, sel_m, mask, s, min_sep, baumgarte, solve_mask):
    """``SolvePositionConstraints`` for slot ``s`` of all bodies (points in order)."""
    mb = scene.inv_mass
    ib = scene.inv_inertia
    for j in range(2):
        pos = c - _rot(a, scene.local_center)
        normal, point, sep = jax.vmap(_psm)(
            sel_m.face_b[:, s],
            sel_m.local_normal[:, s],
            sel_m.local_point[:, s],
            sel_m.points[:, s, j],
            a,
            pos,
        )
        m = mask[:, s, j]
        min_sep = jnp.minimum(min_sep, jnp.where(m, sep, 0.0))
        corr = jnp.clip(baumgarte * (sep + LINEAR_SLOP), -MAX_LINEAR_CORRECTION, 0.0)
        rb = point - c
        rnb = _cross(rb, normal)
        k = mb * solve_mask + ib * solve_mask * rnb * rnb
        imp = jnp.where(m & (k > 0.0), -corr / jnp.where(k > 0.0, k, 1.0), 0.0)
        p = imp[:, None] * normal
        c = c + (mb * solve_mask)[:, None] * p
        a = a + ib * solve_mask * _cross(rb, p)
    return c, a, min_sep


# ---------------------------------------------------------------------------------------------
# The world step.
# ---------------------------------------------------------------------------------------------


def _origins(scene: Scene, c, a):
    return c - _rot(a, scene.local_center)


def _pick(onehot, x):
    """Select along the segment axis: onehot [3, S, N], x [3, N, ...] -> [3, S, ...]."""
    oh = onehot.reshape(onehot.shape + (1,) * (x.ndim - 2))
    xx = x[:, None]
    if x.dtype == jnp.bool_:
        return jnp.any(oh & xx, axis=2)
    return jnp.sum(jnp.where(oh, xx, jnp.zeros((), x.dtype)), axis=2)


def collide_all(scene: Scene, c, a, seg_a, seg_b) -> Manifold:
    """Manifolds of every body/segment pair at the pose ``(c, a)``: fields [3, NSEG, ...]."""
    pos = _origins(scene, c, a)
    over_segs = jax.vmap(collide_edge_polygon, in_axes=(0, 0, None, None, None, None, None))
    hull = over_segs(
        seg_a, seg_b, scene.hull_verts, scene.hull_normals, scene.hull_centroid, a[0], pos[0]
    )
    zero = jnp.zeros(2, scene.leg_verts.dtype)
    legs = jax.vmap(
        lambda ang, p: over_segs(seg_a, seg_b, scene.leg_verts, scene.leg_normals, zero, ang, p)
    )(a[1:], pos[1:])
    return jax.tree.map(lambda h, g: jnp.concatenate([h[None], g]), hull, legs)


def _match_impulses(m: Manifold, st: PhysState):
    """Warm-start impulses of new manifold points from old points with the same feature key."""
    eq = (m.ids[..., :, None] == st.ids[..., None, :]) & (
        jnp.arange(2) < st.count[..., None, None]
    )
    valid = jnp.arange(2) < m.count[..., None]

    def take(old):
        o = old[..., None, :]
        got = jnp.where(eq[..., 0], o[..., 0], jnp.where(eq[..., 1], o[..., 1], 0.0))
        return jnp.where(valid, got, 0.0)

    return take(st.normal_impulse), take(st.tangent_impulse)


def _contact_cache(scene: Scene, c, a, v, w, sel_m, active, friction):
    """``InitializeVelocityConstraints`` for the selected slots."""
    pos = _origins(scene, c, a)
    normal, wpts = jax.vmap(jax.vmap(world_manifold, in_axes=(0, None, None)))(sel_m, a, pos)
    rb = wpts - c[:, None, None, :]
    mb = scene.inv_mass[:, None, None]
    ib = scene.inv_inertia[:, None, None]
    n = normal[:, :, None, :]
    t = jnp.stack([n[..., 1], -n[..., 0]], axis=-1)
    rnb = _cross(rb, n)
    rtb = _cross(rb, t)
    kn = mb + ib * rnb * rnb
    kt = mb + ib * rtb * rtb
    nm = jnp.where(kn > 0.0, 1.0 / kn, 0.0)
    tm = jnp.where(kt > 0.0, 1.0 / kt, 0.0)
    mb2, ib2 = scene.inv_mass[:, None], scene.inv_inertia[:, None]
    k11 = mb2 + ib2 * rnb[..., 0] * rnb[..., 0]
    k22 = mb2 + ib2 * rnb[..., 1] * rnb[..., 1]
    k12 = mb2 + ib2 * rnb[..., 0] * rnb[..., 1]
    cond_ok = k11 * k11 < MAX_CONDITION_NUMBER * (k11 * k22 - k12 * k12)
    two = (sel_m.count == 2) & active
    mask = (jnp.arange(2) < sel_m.count[..., None]) & active[..., None]
    mask = mask.at[..., 1].set(mask[..., 1] & ~(two & ~cond_ok))
    det = k11 * k22 - k12 * k12
    det = jnp.where(det != 0.0, 1.0 / jnp.where(det != 0.0, det, 1.0), 0.0)
    k_inv = jnp.stack(
        [jnp.stack([det * k22, -det * k12], -1), jnp.stack([-det * k12, det * k11], -1)], -2
    )
    return _ContactCache(
        normal=normal,
        rb=rb,
        normal_mass=nm,
        tangent_mass=tm,
        k=jnp.stack([k11, k12, k22], -1),
        k_inv=k_inv,
        mask=mask,
        block=two & cond_ok,
        friction=friction,
    )


def _integrate_positions(c, a, v, w, h):
    """Box2D's position integration with its translation and rotation clamps."""
    h = jnp.broadcast_to(h, w.shape)
    tr = h[:, None] * v
    tr2 = _dot(tr, tr)
    v = v * jnp.where(tr2 > MAX_TRANSLATION**2, MAX_TRANSLATION / jnp.sqrt(tr2), 1.0)[:, None]
    rot = h * w
    w = w * jnp.where(rot * rot > MAX_ROTATION**2, MAX_ROTATION / jnp.abs(rot), 1.0)
    return c + h[:, None] * v, a + h * w, v, w


def _select(touching):
    """One-hot [3, S, N] of the first NUM_SLOTS touching segments of each body."""
    rank = jnp.cumsum(touching.astype(jnp.int32), axis=1) - 1
    return touching[:, None, :] & (rank[:, None, :] == jnp.arange(NUM_SLOTS)[None, :, None])


def world_step(
    scene: Scene,
    st: PhysState,
    seg_a: jax.Array,
    seg_b: jax.Array,
    force: jax.Array,
    torque: jax.Array,
    gravity: jax.Array,
    toi: bool = True,
) -> tuple[PhysState, dict[str, jax.Array]]:
    """One ``b2World::Step(dt, velocity_iterations, position_iterations)`` of the scene.

    Args:
        scene: static scene description.
        st: physics state after the previous step (impulses already applied to velocities).
        seg_a, seg_b: [NSEG, 2] terrain segment end points.
        force: [2] force on the hull's centre of mass for this step (cleared afterwards).
        torque: scalar torque on the hull.
        gravity: scalar vertical gravity.
        toi: run the reduced continuous-collision (time of impact) pass.

    Returns:
        ``(state, events)``; events hold ``begin`` and ``end`` [3, NSEG] contact events, and
        ``asleep`` (the island fell asleep this step).
    """
    h = scene.dt
    nseg = seg_a.shape[0]
    # 1. Collide
    m = collide_all(scene, st.c, st.a, seg_a, seg_b)
    ni_full, ti_full = _match_impulses(m, st)
    touching = m.count > 0
    begin = touching & ~st.touching
    end = ~touching & st.touching

    # 2. Solve: integrate velocities
    g = jnp.stack([jnp.zeros_like(gravity), gravity])
    v = st.v + h * (g[None, :] + jnp.zeros((3, 2)).at[0].set(scene.inv_mass[0] * force))
    w = st.w + h * jnp.zeros(3).at[0].set(scene.inv_inertia[0] * torque)
    c, a = st.c, st.a

    onehot = _select(touching)
    active = jnp.any(onehot, axis=2)
    sel_m = jax.tree.map(lambda x: _pick(onehot, x), m)
    friction = _pick(onehot, jnp.broadcast_to(scene.friction, (3, nseg)))
    cc = _contact_cache(scene, c, a, v, w, sel_m, active, friction)
    ni = _pick(onehot, ni_full) * cc.mask
    ti = _pick(onehot, ti_full) * cc.mask
    # contact warm start
    t = jnp.stack([cc.normal[..., 1], -cc.normal[..., 0]], -1)
    p = ni[..., None] * cc.normal[:, :, None, :] + ti[..., None] * t[:, :, None, :]
    v = v + scene.inv_mass[:, None] * jnp.sum(p, axis=(1, 2))
    w = w + scene.inv_inertia * jnp.sum(_cross(cc.rb, p), axis=(1, 2))
    # joints: init and warm start (island order: legs[1]'s joint, then legs[0]'s)
    jimp, jmot, jlim = st.joint_impulse, st.motor_impulse, st.limit_state
    ras, rbs, ks, mms = [], [], [], []
    for j in range(2):
        ra, rb, k, mm = _joint_init(scene, c, a, j)
        ras.append(ra)
        rbs.append(rb)
        ks.append(k)
        mms.append(mm)
        angle = a[j + 1] - a[0] - scene.reference_angle[j]
        new_state = jnp.where(
            angle <= scene.lower[j], 1, jnp.where(angle >= scene.upper[j], 2, 0)
        ).astype(jlim.dtype)
        keep_z = (new_state != 0) & (new_state == jlim[j])
        jimp = jimp.at[j, 2].set(jnp.where(keep_z, jimp[j, 2], 0.0))
        jlim = jlim.at[j].set(new_state)
    cache = _JointCache(
        ra=jnp.stack(ras), rb=jnp.stack(rbs), k=jnp.stack(ks), motor_mass=jnp.stack(mms)
    )
    for j in (1, 0):
        b = j + 1
        pj = jimp[j, :2]
        ang = _cross(cache.ra[j], pj) + jmot[j] + jimp[j, 2]
        angb = _cross(cache.rb[j], pj) + jmot[j] + jimp[j, 2]
        v = v.at[0].add(-scene.inv_mass[0] * pj).at[b].add(scene.inv_mass[b] * pj)
        w = w.at[0].add(-scene.inv_inertia[0] * ang).at[b].add(scene.inv_inertia[b] * angb)

    def vel_iter(_, carry):
        v, w, jimp, jmot, ni, ti = carry
        for j in (1, 0):
            v, w, imp_j, mot_j = _joint_velocity(scene, v, w, cache, j, jimp[j], jmot[j], jlim[j])
            jimp = jimp.at[j].set(imp_j)
            jmot = jmot.at[j].set(mot_j)
        for s in range(NUM_SLOTS):
            v, w, ni, ti = _contact_velocity_slot(scene, v, w, cc, ni, ti, s)
        return v, w, jimp, jmot, ni, ti

    v, w, jimp, jmot, ni, ti = jax.lax.fori_loop(
        0, scene.velocity_iterations, vel_iter, (v, w, jimp, jmot, ni, ti)
    )
    # store impulses
    sel_any = jnp.any(onehot, axis=1)[..., None]
    ni_full = jnp.where(
        sel_any, jnp.sum(jnp.where(onehot[..., None], ni[:, :, None], 0.0), 1), ni_full
    )
    ti_full = jnp.where(
        sel_any, jnp.sum(jnp.where(onehot[..., None], ti[:, :, None], 0.0), 1), ti_full
    )

    c, a, v, w = _integrate_positions(c, a, v, w, h)

    ones = jnp.ones(3)

    def pos_cond(carry):
        _, _, i, done = carry
        return (i < scene.position_iterations) & ~done

    def pos_body(carry):
        c, a, i, _ = carry
        min_sep = jnp.zeros(3)
        for s in range(NUM_SLOTS):
            c, a, min_sep = _contact_position_slot(
                scene, c, a, sel_m, cc.mask, s, min_sep, BAUMGARTE, ones
            )
        c, a, ok1 = _joint_position(scene, c, a, 1, jlim[1])
        c, a, ok0 = _joint_position(scene, c, a, 0, jlim[0])
        return c, a, i + 1, (jnp.min(min_sep) >= -3.0 * LINEAR_SLOP) & ok1 & ok0

    c, a, _, solved = jax.lax.while_loop(pos_cond, pos_body, (c, a, 0, jnp.array(False)))

    slow = (w * w <= ANGULAR_SLEEP_TOLERANCE**2) & (_dot(v, v) <= LINEAR_SLEEP_TOLERANCE**2)
    sleep_time = jnp.where(slow, st.sleep_time + h, 0.0)
    asleep = (jnp.min(sleep_time) >= TIME_TO_SLEEP) & solved

    new = st.replace(
        c=c,
        a=a,
        v=v,
        w=w,
        sleep_time=sleep_time,
        joint_impulse=jimp,
        motor_impulse=jmot,
        limit_state=jlim,
        touching=touching,
        ids=m.ids,
        count=m.count,
        normal_impulse=ni_full,
        tangent_impulse=ti_full,
    )
    events = {"begin": begin, "end": end, "asleep": asleep}
    if toi:
        new, events = _solve_toi(scene, st, new, events, seg_a, seg_b)
    return new, events


def _point_segment_distance(x, p, q):
    """Distance from points ``x`` [..., 2] to the segment ``p q``."""
    d = q - p
    t = jnp.clip(_dot(x - p, d) / jnp.maximum(_dot(d, d), 1e-12), 0.0, 1.0)
    e = x - (p + t[..., None] * d)
    return jnp.sqrt(_dot(e, e))


def _core_distance(p, q, wv, wn):
    """Distance between a segment and a convex polygon without their skins (0 if overlapping)."""
    wv2 = jnp.roll(wv, -1, axis=0)
    d_v = jnp.min(_point_segment_distance(wv, p, q))
    d_e = jnp.minimum(
        jnp.min(_point_segment_distance(p[None], wv, wv2)),
        jnp.min(_point_segment_distance(q[None], wv, wv2)),
    )
    o1 = _cross(q - p, wv - p)
    o2 = _cross(q - p, wv2 - p)
    o3 = _cross(wv2 - wv, p - wv)
    o4 = _cross(wv2 - wv, q - wv)
    crossing = jnp.any((o1 * o2 < 0.0) & (o3 * o4 < 0.0))
    inside = jnp.all(_dot(wn, p - wv) < 0.0) | jnp.all(_dot(wn, q - wv) < 0.0)
    return jnp.where(crossing | inside, 0.0, jnp.minimum(d_v, d_e))


def _distances(scene: Scene, c, a, seg_a, seg_b):
    """Core distances [3, NSEG] of every body/segment pair at pose ``(c, a)``."""
    pos = _origins(scene, c, a)

    def body(verts, normals, ang, p):
        wv = _rot(ang, verts) + p
        wn = _rot(ang, normals)
        return jax.vmap(_core_distance, in_axes=(0, 0, None, None))(seg_a, seg_b, wv, wn)

    hull = body(scene.hull_verts, scene.hull_normals, a[0], pos[0])
    legs = jax.vmap(body, in_axes=(None, None, 0, 0))(
        scene.leg_verts, scene.leg_normals, a[1:], pos[1:]
    )
    return jnp.concatenate([hull[None], legs])


TOI_BISECTIONS = 14


def _solve_toi(scene, old, new, events, seg_a, seg_b):
    """Reduced ``b2World::SolveTOI``: at most one time-of-impact sub-step per body.

    A body/segment pair whose core distance is above Box2D's TOI target at the start of the
    step and below it at the end gets the time of impact by bisection along the body's sweep
    (linear in centre and angle, as ``b2Sweep``). The body is moved there, its contacts are
    updated (begin/end events), and Box2D's TOI island solve runs for the body alone: TOI
    position correction, a velocity solve without warm starting, and integration over the
    rest of the step.
    """
    target = max(LINEAR_SLOP, 2.0 * POLYGON_RADIUS - 3.0 * LINEAR_SLOP)
    tol = 0.25 * LINEAR_SLOP
    c0, a0, c1, a1 = old.c, old.a, new.c, new.a
    cand = _distances(scene, c0, a0, seg_a, seg_b) > target + tol
    big = jnp.asarray(1e9, c0.dtype)

    def dist_at(alpha):
        c = c0 + alpha[:, None] * (c1 - c0)
        a = a0 + alpha * (a1 - a0)
        return jnp.where(cand, _distances(scene, c, a, seg_a, seg_b), big)

    goal = target + 0.5 * tol
    d_end = dist_at(jnp.ones(3))
    event = jnp.min(d_end, axis=1) < goal

    def bisect(_, lohi):
        lo, hi = lohi
        mid = 0.5 * (lo + hi)
        above = jnp.min(dist_at(mid), axis=1) > goal
        return jnp.where(above, mid, lo), jnp.where(above, hi, mid)

    alpha, _ = jax.lax.fori_loop(0, TOI_BISECTIONS, bisect, (jnp.zeros(3), jnp.ones(3)))
    alpha = jnp.where(event, alpha, 1.0)
    c_t = c0 + alpha[:, None] * (c1 - c0)
    a_t = a0 + alpha * (a1 - a0)
    first = jnp.argmin(dist_at(alpha), axis=1)

    # contact update at the TOI pose
    m = collide_all(scene, c_t, a_t, seg_a, seg_b)
    event = event & (jnp.take_along_axis(m.count, first[:, None], axis=1)[:, 0] > 0)
    ev = event[:, None]
    ni_full, ti_full = _match_impulses(m, new)
    touching = jnp.where(ev, m.count > 0, new.touching)
    begin = touching & ~new.touching
    end = ~touching & new.touching

    # TOI island: the body and its touching contacts with the ground
    onehot = _select(m.count > 0) & ev[:, :, None]
    active = jnp.any(onehot, axis=2)
    sel_m = jax.tree.map(lambda x: _pick(onehot, x), m)
    solve_mask = event.astype(c0.dtype)

    def pos_cond(carry):
        _, _, i, done = carry
        return (i < TOI_POSITION_ITERATIONS) & ~jnp.all(done)

    def pos_body(carry):
        c, a, i, done = carry
        mask_b = solve_mask * ~done
        min_sep = jnp.zeros(3)
        mask = (jnp.arange(2) < sel_m.count[..., None]) & active[..., None]
        for s in range(NUM_SLOTS):
            c, a, min_sep = _contact_position_slot(
                scene, c, a, sel_m, mask, s, min_sep, TOI_BAUMGARTE, mask_b
            )
        return c, a, i + 1, done | (min_sep >= -1.5 * LINEAR_SLOP)

    c_p, a_p, _, _ = jax.lax.while_loop(pos_cond, pos_body, (c_t, a_t, 0, ~event))

    nseg = seg_a.shape[0]
    friction = _pick(onehot, jnp.broadcast_to(scene.friction, (3, nseg)))
    cc = _contact_cache(scene, c_p, a_p, new.v, new.w, sel_m, active, friction)
    zeros = jnp.zeros((3, NUM_SLOTS, 2), c0.dtype)

    def vel_iter(_, carry):
        v, w, ni, ti = carry
        for s in range(NUM_SLOTS):
            v, w, ni, ti = _contact_velocity_slot(scene, v, w, cc, ni, ti, s)
        return v, w, ni, ti

    v, w, _, _ = jax.lax.fori_loop(
        0, scene.velocity_iterations, vel_iter, (new.v, new.w, zeros, zeros)
    )
    h = (1.0 - alpha) * scene.dt
    c_f, a_f, v, w = _integrate_positions(c_p, a_p, v, w, h)
    c_f = jnp.where(ev, c_f, new.c)
    a_f = jnp.where(event, a_f, new.a)
    v = jnp.where(ev, v, new.v)
    w = jnp.where(event, w, new.w)

    new = new.replace(
        c=c_f,
        a=a_f,
        v=v,
        w=w,
        touching=touching,
        ids=jnp.where(ev[..., None], m.ids, new.ids),
        count=jnp.where(ev, m.count, new.count),
        normal_impulse=jnp.where(ev[..., None], ni_full, new.normal_impulse),
        tangent_impulse=jnp.where(ev[..., None], ti_full, new.tangent_impulse),
    )
    events = {
        **events,
        "toi_begin": begin,
        "toi_end": end,
        "toi": event,
    }
    return new, events
