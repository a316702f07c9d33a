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

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from selfref_ghn.envs._box2d_loops import fixed_loop, masked_while, tick
from selfref_ghn.envs._lanes import lane_cond, lane_while, stacked_vmap

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
# a body's candidate edges are the two terrain edges under its x range widened by this margin
# (more than the contact skin 2 * POLYGON_RADIUS, so no touching edge is missed)
CANDIDATE_MARGIN = 0.05


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

    hull_verts: jax.Array | np.ndarray  # [6, 2] local (body-origin) coordinates
    hull_normals: jax.Array | np.ndarray  # [6, 2]
    hull_centroid: jax.Array | np.ndarray  # [2]
    leg_verts: jax.Array | np.ndarray  # [4, 2]
    leg_normals: jax.Array | np.ndarray  # [4, 2]
    inv_mass: jax.Array | np.ndarray  # [3]
    inv_inertia: jax.Array | np.ndarray  # [3] about the centre of mass
    local_center: jax.Array | np.ndarray  # [3, 2]
    anchor_a: jax.Array | np.ndarray  # [2, 2] joint anchors on the hull (body-origin coordinates)
    anchor_b: jax.Array | np.ndarray  # [2, 2] joint anchors on each leg
    lower: jax.Array | np.ndarray  # [2] joint limits
    upper: jax.Array | np.ndarray  # [2]
    motor_speed: jax.Array | np.ndarray  # [2]
    reference_angle: jax.Array | np.ndarray  # [2] (pybox2d sets it to angleB - angleA at creation)
    max_motor_torque: float = struct.field(pytree_node=False)
    friction: jax.Array | np.ndarray  # [3, NSEG] mixed friction per body/segment
    dt: float = struct.field(pytree_node=False, default=1.0 / 50.0)
    velocity_iterations: int = struct.field(pytree_node=False, default=180)
    position_iterations: int = struct.field(pytree_node=False, default=60)
    toi_velocity_iterations: int = struct.field(pytree_node=False, default=180)
    # stop the velocity sweeps early once no impulse changes by more than this (N s); 0 stops
    # only at an exact fixed point (the same result as Box2D's full count); None (default)
    # runs the full count without testing (under vmap the test rarely ends the loop, since
    # some lander of the batch keeps changing, and costs a reduction and a select per sweep)
    velocity_tolerance: float | None = struct.field(pytree_node=False, default=None)
    # the same for the TOI sub-step's sweeps (one body against the ground: converges fast)
    toi_velocity_tolerance: float = struct.field(pytree_node=False, default=0.0)


class PhysState(struct.PyTreeNode):
    """The dynamic state Box2D carries from one step to the next."""

    c: jax.Array  # [3, 2] centres of mass
    a: jax.Array  # [3] angles
    v: jax.Array  # [3, 2] linear velocities
    w: jax.Array  # [3] angular velocities
    sleep_time: jax.Array  # [3]
    joint_impulse: jax.Array  # [2, 3] point (x, y) and limit (z) impulses, warm-started
    motor_impulse: jax.Array  # [2]
    limit_state: jax.Array  # [2] int: 0 inactive, 1 at lower, 2 at upper
    seg: jax.Array  # [3, NUM_SLOTS] int terrain edge of each contact slot (-1: none)
    touching: jax.Array  # [3, NUM_SLOTS] bool, contact has manifold points
    ids: jax.Array  # [3, NUM_SLOTS, 2] int contact feature keys
    count: jax.Array  # [3, NUM_SLOTS] int manifold point count
    normal_impulse: jax.Array  # [3, NUM_SLOTS, 2]
    tangent_impulse: jax.Array  # [3, NUM_SLOTS, 2]


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


def cos_sin(angle):
    """``(cos(angle), sin(angle))``, each computed once (:func:`_fence`).

    XLA:CPU would otherwise re-compute a cosine or sine (a long polynomial once compiled) in
    every kernel that reads it.
    """
    return _fence(jnp.cos(angle), jnp.sin(angle))


def _rot(angle, v):
    c, s = cos_sin(angle)
    return jnp.stack([c * v[..., 0] - s * v[..., 1], s * v[..., 0] + c * v[..., 1]], axis=-1)


def _rot_t(angle, v):
    c, s = cos_sin(angle)
    return jnp.stack([c * v[..., 0] + s * v[..., 1], -s * v[..., 0] + c * v[..., 1]], axis=-1)


def _dot(a, b):
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1]


def _take(arr, idx):
    """``arr[idx]`` along axis 0 as a one-hot sum (cheaper than a gather under vmap)."""
    oh = jnp.arange(arr.shape[0]) == idx
    return jnp.sum(jnp.where(oh.reshape((-1,) + (1,) * (arr.ndim - 1)), arr, 0), axis=0)


def _key(index_a, index_b, type_a, type_b):
    return index_a + 256 * index_b + 65536 * type_a + 16777216 * type_b


# Keys and vertex indices are never negative: their fields are read with shifts and masks, and
# a successor index with a compare, rather than with Python's // and % (which jnp writes out
# with sign corrections, some 20 operations each).


def _key_byte(k, i: int):
    """Byte ``i`` of contact feature key ``k`` (``i = 3``: the rest)."""
    return k >> (8 * i) if i == 3 else (k >> (8 * i)) & 255


def _next_index(i, n: int):
    """``(i + 1) % n`` for ``0 <= i < n``."""
    return jnp.where(i + 1 == n, 0, i + 1)


# ---------------------------------------------------------------------------------------------
# Collision: b2CollideEdgeAndPolygon for a lone edge (no ghost vertices), in the edge's frame.
# ---------------------------------------------------------------------------------------------


def _clip(p0, p1, id0, id1, normal, offset, vertex_index_a):
    """b2ClipSegmentToLine; returns (q0, q1, k0, k1, ok) where ok means two points came out."""
    d0 = _dot(normal, p0) - offset
    d1 = _dot(normal, p1) - offset
    interp = d0 / jnp.where(d0 - d1 == 0.0, 1.0, d0 - d1)
    pi = p0 + interp * (p1 - p0)
    index_b0 = _key_byte(id0, 1)
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
    poly_sep = jnp.max(s)
    separated = (edge_sep > radius) | jnp.any(s > radius)
    use_poly = poly_sep > 0.98 * edge_sep + 0.001

    # e_edgeA: incident edge on the polygon, most anti-parallel normal
    i1 = jnp.argmin(_dot(wn, m_normal))
    i2 = _next_index(i1, n)
    a_ie0, a_ie1 = _take(wv, i1), _take(wv, i2)
    a_id0, a_id1 = _key(0, i1, 1, 0), _key(0, i2, 1, 0)
    a_rfi1 = jnp.where(front, 0, 1)
    a_rfi2 = jnp.where(front, 1, 0)
    a_rv1 = jnp.where(front, v1, v2)
    a_rv2 = jnp.where(front, v2, v1)
    a_rn = m_normal
    # e_edgeB: reference face on the polygon, incident = the edge
    b_rfi1 = poly_index
    b_rfi2 = _next_index(poly_index, n)
    b_rv1, b_rv2, b_rn = _take(wv, b_rfi1), _take(wv, b_rfi2), _take(wn, b_rfi1)
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
        return _key(_key_byte(k, 1), _key_byte(k, 0), _key_byte(k, 3), _key_byte(k, 2))

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
    local_normal = jnp.where(use_poly, _take(normals, b_rfi1), a_rn)
    local_point = jnp.where(use_poly, _take(verts, b_rfi1), a_rv1)
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
# The world step.
# ---------------------------------------------------------------------------------------------


def _origins(scene: Scene, c, a):
    return c - _rot(a, scene.local_center)


def _friction(scene: Scene, seg):
    """Mixed friction [3, S] of each body with the segments ``seg`` [3, S]."""
    oh = seg[..., None] == jnp.arange(scene.friction.shape[1])
    return jnp.sum(jnp.where(oh, scene.friction[:, None, :], 0.0), axis=-1)


def _candidates(scene: Scene, c, a, seg_a, seg_b):
    """Terrain edges each body can touch: indices [3, NUM_SLOTS] into the segment arrays.

    Segment 0 is the floor under the terrain and is never a candidate (it lies below the
    terrain everywhere). The other segments are consecutive chunks, each wider than any
    body, so the two edges under the left end of a body's x range hold all its contacts.
    """
    pos = _origins(scene, c, a)
    xh = _rot(a[0], scene.hull_verts)[:, 0] + pos[0, 0]
    xl = jax.vmap(lambda ang, p: _rot(ang, scene.leg_verts)[:, 0] + p[0])(a[1:], pos[1:])
    xmin = jnp.concatenate([jnp.min(xh)[None], jnp.min(xl, axis=1)]) - CANDIDATE_MARGIN
    nseg = seg_a.shape[0]
    first = 1 + jnp.sum((seg_b[None, 1:, 0] < xmin[:, None]).astype(jnp.int32), axis=1)
    first = jnp.clip(first, 1, nseg - NUM_SLOTS)
    return first[:, None] + jnp.arange(NUM_SLOTS, dtype=jnp.int32)[None, :]


def _gather_segments(seg_a, seg_b, idx):
    """End points [..., 2] of the segments ``idx`` (a one-hot sum, cheap under vmap)."""
    oh = (idx[..., None] == jnp.arange(seg_a.shape[0]))[..., None]
    return jnp.sum(jnp.where(oh, seg_a, 0.0), axis=-2), jnp.sum(jnp.where(oh, seg_b, 0.0), axis=-2)


def collide_all(scene: Scene, c, a, pa, pb) -> Manifold:
    """Manifolds of each body with its candidate edges ``pa -> pb`` [3, S, 2] (fields [3, S])."""
    pos = _origins(scene, c, a)
    over_segs = jax.vmap(collide_edge_polygon, in_axes=(0, 0, None, None, None, None, None))
    hull = over_segs(
        pa[0], pb[0], scene.hull_verts, scene.hull_normals, scene.hull_centroid, a[0], pos[0]
    )
    zero = jnp.zeros(2, scene.leg_verts.dtype)
    legs = jax.vmap(
        lambda p, q, ang, o: over_segs(p, q, scene.leg_verts, scene.leg_normals, zero, ang, o)
    )(pa[1:], pb[1:], a[1:], pos[1:])
    return jax.tree.map(lambda h, g: jnp.concatenate([h[None], g]), hull, legs)


def _match_impulses(m: Manifold, seg, st: PhysState):
    """Warm-start impulses of new manifold points from old ones with the same edge and key."""
    same_seg = seg[:, :, None] == st.seg[:, None, :]  # [3, S_new, S_old]
    eq = (
        same_seg[:, :, None, :, None]
        & (m.ids[:, :, :, None, None] == st.ids[:, None, None, :, :])
        & (jnp.arange(2) < st.count[..., None])[:, None, None, :, :]
    )  # [3, S_new, 2, S_old, 2]
    valid = jnp.arange(2) < m.count[..., None]

    def take(old):
        got = jnp.sum(jnp.where(eq, old[:, None, None, :, :], 0.0), axis=(3, 4))
        return jnp.where(valid, got, 0.0)

    return take(st.normal_impulse), take(st.tangent_impulse)


def _slot_events(seg_old, touching_old, seg_new, touching_new):
    """Begin/end contact events [3, S] between two slot sets (begin on new slots)."""
    match = seg_new[:, :, None] == seg_old[:, None, :]  # [3, S_new, S_old]
    was = jnp.any(match & touching_old[:, None, :], axis=2)
    still = jnp.any(match & touching_new[:, :, None], axis=1)
    return touching_new & ~was, touching_old & ~still


def _seg_dist2(x, y, px, py, dx, dy, dd):
    """Squared distance from the point ``(x, y)`` to the segment ``p -> p + d`` (``dd = |d|^2``).

    Works on scalars (``[batch]`` vectors under ``vmap``) and Python floats alike.
    """
    t = jnp.clip(((x - px) * dx + (y - py) * dy) / dd, 0.0, 1.0)
    ex = x - (px + t * dx)
    ey = y - (py + t * dy)
    return ex * ex + ey * ey


def _core_distance_local(px, py, qx, qy, verts, normals):
    """Distance between the segment ``p q`` and a convex polygon, without skins (0 if they
    overlap), in the polygon's own frame.

    ``verts``/``normals`` are the polygon's constant local vertices and edge normals, so every
    polygon edge is a compile-time constant and the whole test is a few dozen elementwise
    operations on the segment's four scalar coordinates (one fused kernel under ``vmap``).
    """
    verts = [(_f(x), _f(y)) for x, y in np.asarray(verts)]
    normals = [(_f(x), _f(y)) for x, y in np.asarray(normals)]
    n = len(verts)
    dx, dy = qx - px, qy - py
    dd = jnp.maximum(dx * dx + dy * dy, 1e-12)
    best = None
    crossing = inside_p = inside_q = None
    for i in range(n):
        (ax, ay), (bx, by) = verts[i], verts[(i + 1) % n]
        ex, ey = bx - ax, by - ay
        ee = max(ex * ex + ey * ey, 1e-12)
        d2 = jnp.minimum(
            _seg_dist2(ax, ay, px, py, dx, dy, dd),  # vertex to the segment
            jnp.minimum(
                _seg_dist2(px, py, ax, ay, ex, ey, ee),  # segment ends to the polygon edge
                _seg_dist2(qx, qy, ax, ay, ex, ey, ee),
            ),
        )
        best = d2 if best is None else jnp.minimum(best, d2)
        o1 = dx * (ay - py) - dy * (ax - px)
        o2 = dx * (by - py) - dy * (bx - px)
        o3 = ex * (py - ay) - ey * (px - ax)
        o4 = ex * (qy - ay) - ey * (qx - ax)
        cross_i = (o1 * o2 < 0.0) & (o3 * o4 < 0.0)
        nx, ny = normals[i]
        in_p = nx * (px - ax) + ny * (py - ay) < 0.0
        in_q = nx * (qx - ax) + ny * (qy - ay) < 0.0
        if crossing is None:
            crossing, inside_p, inside_q = cross_i, in_p, in_q
        else:
            crossing, inside_p, inside_q = crossing | cross_i, inside_p & in_p, inside_q & in_q
    return jnp.where(crossing | inside_p | inside_q, 0.0, jnp.sqrt(best))


def _core_distance(p, q, verts, normals):
    """Distance between the segment ``p q`` [2] and a convex polygon (``verts``/``normals``
    constant arrays in the same frame), without skins; 0 if they overlap."""
    return _core_distance_local(p[0], p[1], q[0], q[1], verts, normals)


def _distances(scene: Scene, c, a, pa, pb):
    """Core distances [3, S] of each body to the edges ``pa -> pb`` [3, S, 2] at ``(c, a)``.

    Each edge is moved into the body's frame (a distance does not change under a rigid
    motion), where the body's polygon is constant. The hull's S edges are one set of [S]
    arrays and the two legs' (same polygon) one set of [2, S] arrays, so the polygon test is
    written out twice, not once per body and edge: elementwise, it gives the same values.
    """

    def local(k, pts):
        lc = np.asarray(scene.local_center, np.float32)[k]
        lcx, lcy = lc[:, 0, None], lc[:, 1, None]
        cs, sn = cos_sin(a[k][:, None])
        ox = c[k, 0, None] - (cs * lcx - sn * lcy)
        oy = c[k, 1, None] - (sn * lcx + cs * lcy)
        x, y = pts[k, :, 0] - ox, pts[k, :, 1] - oy
        return cs * x + sn * y, -sn * x + cs * y

    def polygon(k, verts, normals):
        (px, py), (qx, qy) = local(k, pa), local(k, pb)
        return _core_distance_local(px, py, qx, qy, verts, normals)

    hull = polygon(slice(0, 1), scene.hull_verts, scene.hull_normals)
    legs = polygon(slice(1, NUM_BODIES), scene.leg_verts, scene.leg_normals)
    return jnp.concatenate([hull, legs])


# ---------------------------------------------------------------------------------------------
# Scalar solver core. Inside the iteration loops every quantity is a scalar (a [batch] vector
# under vmap), so XLA fuses one solver sweep into a few elementwise kernels.
# ---------------------------------------------------------------------------------------------


def _f(x) -> float:
    return float(np.asarray(x))


def _fence(*xs):
    """Store values once instead of letting XLA:CPU re-compute them in every consumer.

    XLA:CPU fuses cheap elementwise producers into each of their consumers, which along a
    Gauss-Seidel sweep re-computes the whole sweep for every output (about 10x the work). The
    values (two or more) are stacked into one array, which XLA does not copy into the kernels
    that read its slices: they are computed once, in one kernel (not one kernel each), and read
    back as slices. Exact: no arithmetic is added. The ``lax.optimization_barrier`` around the
    stack does not do this on XLA:CPU, which removes barriers before fusing (a lone value
    through a barrier is still copied into every consumer;
    :func:`selfref_ghn.envs._box2d_loops.fence` explains it).
    """
    stacked = jax.lax.optimization_barrier(jnp.stack(jnp.broadcast_arrays(*xs)))
    return tuple(stacked[i] for i in range(len(xs)))


def _fence_tree(tree):
    """:func:`_fence` for every floating-point array of a pytree (a manifold, a contact cache).

    Their fields are read slice by slice (per body, slot and point), and XLA may re-compute
    the whole collision or cache computation in each slice's kernel. The leaves pass through
    one ``lax.optimization_barrier`` unstacked, and XLA:CPU removes barriers before fusing, so
    on the CPU this does not stop that copying (a value through it is fused into each of its
    consumers as without it). :func:`selfref_ghn.envs._box2d_loops.fence` does stop it, but
    would change the CPU mode's program, whose measurements (docs/envs/lunar_lander.md) are of
    this one.
    """
    leaves, treedef = jax.tree.flatten(tree)
    floats = [i for i, x in enumerate(leaves) if jnp.issubdtype(jnp.result_type(x), jnp.floating)]
    fenced = jax.lax.optimization_barrier([leaves[i] for i in floats])
    for i, x in zip(floats, fenced, strict=True):
        leaves[i] = x
    return jax.tree.unflatten(treedef, leaves)


def _masses(scene: Scene):
    return [_f(x) for x in np.asarray(scene.inv_mass)], [
        _f(x) for x in np.asarray(scene.inv_inertia)
    ]


def _rot_s(angle, x: float, y: float):
    c, s = cos_sin(angle)
    return c * x - s * y, s * x + c * y


def _joint_init(scene: Scene, j: int, a):
    """``InitVelocityConstraints`` of joint ``j``: anchors, K (b2Mat33) and its solve data."""
    im, ii = _masses(scene)
    ma, mb, ia, ib = im[0], im[j + 1], ii[0], ii[j + 1]
    lc = np.asarray(scene.local_center, np.float64)
    la = np.asarray(scene.anchor_a, np.float64)[j] - lc[0]
    lb = np.asarray(scene.anchor_b, np.float64)[j] - lc[j + 1]
    rax, ray = _rot_s(a[0], float(la[0]), float(la[1]))
    rbx, rby = _rot_s(a[j + 1], float(lb[0]), float(lb[1]))
    exx = ma + mb + ray * ray * ia + rby * rby * ib
    eyx = -ray * rax * ia - rby * rbx * ib
    ezx = -ray * ia - rby * ib
    eyy = ma + mb + rax * rax * ia + rbx * rbx * ib
    ezy = rax * ia + rbx * ib
    ezz = ia + ib
    # cross(ey, ez) and det for b2Mat33::Solve33 (ex = (exx, eyx, ezx), ey = (eyx, eyy, ezy))
    cx = eyy * ezz - ezy * ezy
    cy = ezy * ezx - eyx * ezz
    cz = eyx * ezy - eyy * ezx
    det3 = exx * cx + eyx * cy + ezx * cz
    det3 = jnp.where(det3 != 0.0, 1.0 / jnp.where(det3 != 0.0, det3, 1.0), 0.0)
    det2 = exx * eyy - eyx * eyx
    det2 = jnp.where(det2 != 0.0, 1.0 / jnp.where(det2 != 0.0, det2, 1.0), 0.0)
    return (rax, ray, rbx, rby, exx, eyx, ezx, eyy, ezy, ezz, cx, cy, cz, det3, det2)


def _joint_velocity(scene: Scene, j: int, jc, body_a, body_b, imp, mot, lim):
    """``b2RevoluteJoint::SolveVelocityConstraints`` on scalars."""
    im, ii = _masses(scene)
    ma, mb, ia, ib = im[0], im[j + 1], ii[0], ii[j + 1]
    rax, ray, rbx, rby, exx, eyx, ezx, eyy, ezy, ezz, cx, cy, cz, det3, det2 = jc
    vax, vay, wa = body_a
    vbx, vby, wb = body_b
    ix, iy, iz = imp
    # motor
    cdot = wb - wa - _f(scene.motor_speed[j])
    i_m = -(1.0 / (ia + ib)) * cdot
    max_imp = scene.dt * scene.max_motor_torque
    new_mot = jnp.clip(mot + i_m, -max_imp, max_imp)
    i_m = new_mot - mot
    wa = wa - ia * i_m
    wb = wb + ib * i_m
    wa, wb, new_mot = _fence(wa, wb, new_mot)
    # limit / point
    c1x = vbx - wb * rby - vax + wa * ray
    c1y = vby + wb * rbx - vay - wa * rax
    c2 = wb - wa
    c1x, c1y, c2 = _fence(c1x, c1y, c2)
    # -Solve33(K, (c1x, c1y, c2))
    x3 = -det3 * (c1x * cx + c1y * cy + c2 * cz)
    # dot(ex, cross(b, ez)), dot(ex, cross(ey, b))
    bez_x = c1y * ezz - c2 * ezy
    bez_y = c2 * ezx - c1x * ezz
    bez_z = c1x * ezy - c1y * ezx
    y3 = -det3 * (exx * bez_x + eyx * bez_y + ezx * bez_z)
    eyb_x = eyy * c2 - ezy * c1y
    eyb_y = ezy * c1x - eyx * c2
    eyb_z = eyx * c1y - eyy * c1x
    z3 = -det3 * (exx * eyb_x + eyx * eyb_y + ezx * eyb_z)
    newz = iz + z3
    x3, y3, z3, newz = _fence(x3, y3, z3, newz)
    active = lim != 0
    clamp = ((lim == 1) & (newz < 0.0)) | ((lim == 2) & (newz > 0.0))
    rhs_x = -c1x + iz * ezx
    rhs_y = -c1y + iz * ezy
    red_x = det2 * (eyy * rhs_x - eyx * rhs_y)
    red_y = det2 * (exx * rhs_y - eyx * rhs_x)
    pt_x = det2 * (eyy * -c1x - eyx * -c1y)
    pt_y = det2 * (exx * -c1y - eyx * -c1x)
    px = jnp.where(active, jnp.where(clamp, red_x, x3), pt_x)
    py = jnp.where(active, jnp.where(clamp, red_y, y3), pt_y)
    pz = jnp.where(active, jnp.where(clamp, -iz, z3), 0.0)
    px, py, pz = _fence(px, py, pz)
    imp = (ix + px, iy + py, jnp.where(active, jnp.where(clamp, 0.0, newz), iz))
    body_a = (vax - ma * px, vay - ma * py, wa - ia * (rax * py - ray * px + pz))
    body_b = (vbx + mb * px, vby + mb * py, wb + ib * (rbx * py - rby * px + pz))
    return body_a, body_b, imp, new_mot


def _joint_position(scene: Scene, j: int, pa, pb, lim, fence: bool = False):
    """``b2RevoluteJoint::SolvePositionConstraints`` on scalars; returns (pa, pb, ok).

    ``fence``: store the intermediate values once (:func:`_fence`; the accelerator mode, whose
    unrolled iterations XLA:CPU would otherwise fuse into kernels too large to compile)."""
    keep = _fence if fence else (lambda *xs: xs)
    im, ii = _masses(scene)
    ma, mb, ia, ib = im[0], im[j + 1], ii[0], ii[j + 1]
    cax, cay, aa = pa
    cbx, cby, ab = pb
    angle = ab - aa - _f(scene.reference_angle[j])
    c_low = angle - _f(scene.lower[j])
    c_up = angle - _f(scene.upper[j])
    lim_c = jnp.where(
        lim == 1,
        jnp.clip(c_low + ANGULAR_SLOP, -MAX_ANGULAR_CORRECTION, 0.0),
        jnp.clip(c_up - ANGULAR_SLOP, 0.0, MAX_ANGULAR_CORRECTION),
    )
    ang_err = jnp.where(lim == 1, -c_low, jnp.where(lim == 2, c_up, 0.0))
    lim_imp = jnp.where(lim != 0, -(1.0 / (ia + ib)) * lim_c, 0.0)
    aa, ab = keep(aa - ia * lim_imp, ab + ib * lim_imp)
    lc = np.asarray(scene.local_center, np.float64)
    la = np.asarray(scene.anchor_a, np.float64)[j] - lc[0]
    lb = np.asarray(scene.anchor_b, np.float64)[j] - lc[j + 1]
    rax, ray = _rot_s(aa, float(la[0]), float(la[1]))
    rbx, rby = _rot_s(ab, float(lb[0]), float(lb[1]))
    ex = cbx + rbx - cax - rax
    ey = cby + rby - cay - ray
    pos_err = jnp.sqrt(ex * ex + ey * ey)
    k11 = ma + mb + ia * ray * ray + ib * rby * rby
    k12 = -ia * rax * ray - ib * rbx * rby
    k22 = ma + mb + ia * rax * rax + ib * rbx * rbx
    det = k11 * k22 - k12 * k12
    det = jnp.where(det != 0.0, 1.0 / jnp.where(det != 0.0, det, 1.0), 0.0)
    px, py = keep(-det * (k22 * ex - k12 * ey), -det * (k11 * ey - k12 * ex))
    pa = keep(cax - ma * px, cay - ma * py, aa - ia * (rax * py - ray * px))
    pb = keep(cbx + mb * px, cby + mb * py, ab + ib * (rbx * py - rby * px))
    ok = (pos_err <= LINEAR_SLOP) & (ang_err <= ANGULAR_SLOP)
    return pa, pb, ok


def _contact_cache(scene: Scene, c, a, sel_m, mask, friction):
    """``InitializeVelocityConstraints`` for the selected slots, as arrays [3, S, ...].

    Points that take no part get zero masses, so their impulses stay zero.
    """
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
    k11 = kn[..., 0]
    k22 = kn[..., 1]
    k12 = scene.inv_mass[:, None] + scene.inv_inertia[:, None] * rnb[..., 0] * rnb[..., 1]
    cond_ok = k11 * k11 < MAX_CONDITION_NUMBER * (k11 * k22 - k12 * k12)
    two = mask[..., 1]
    mask = mask.at[..., 1].set(two & cond_ok)
    nm = jnp.where(mask & (kn > 0.0), 1.0 / kn, 0.0)
    tm = jnp.where(mask & (kt > 0.0), 1.0 / kt, 0.0)
    det = k11 * k22 - k12 * k12
    det = jnp.where(det != 0.0, 1.0 / jnp.where(det != 0.0, det, 1.0), 0.0)
    return {
        "n": normal,
        "rb": rb,
        "rn": rnb,
        "rt": rtb,
        "nm": nm,
        "tm": tm,
        "k": jnp.stack([k11, k12, k22], -1),
        "ki": jnp.stack([det * k22, -det * k12, -det * k12, det * k11], -1),
        "block": two & cond_ok,
        "fr": friction,
        "mask": mask,
    }


def _contact_velocity(mb: float, ib: float, cs, vel, ni, ti):
    """Friction then normal impulses of one contact slot of one body (scalars)."""
    vx, vy, w = vel
    nx, ny = cs["n"]
    tx, ty = ny, -nx
    ni, ti = list(ni), list(ti)
    for p in range(2):
        rx, ry = cs["rb"][p]
        vt = (vx - w * ry) * tx + (vy + w * rx) * ty
        maxf = cs["fr"] * ni[p]
        new = jnp.clip(ti[p] - cs["tm"][p] * vt, -maxf, maxf)
        lam = new - ti[p]
        ti[p] = new
        vx = vx + mb * lam * tx
        vy = vy + mb * lam * ty
        w = w + ib * lam * cs["rt"][p]
        vx, vy, w, ti[p] = _fence(vx, vy, w, ti[p])
    (r0x, r0y), (r1x, r1y) = cs["rb"]
    a0, a1 = ni
    vn1 = (vx - w * r0y) * nx + (vy + w * r0x) * ny
    vn2 = (vx - w * r1y) * nx + (vy + w * r1x) * ny
    vn1, vn2 = _fence(vn1, vn2)
    single = jnp.maximum(a0 - cs["nm"][0] * vn1, 0.0)
    k11, k12, k22 = cs["k"]
    ki11, ki12, ki21, ki22 = cs["ki"]
    bx = vn1 - (k11 * a0 + k12 * a1)
    by = vn2 - (k12 * a0 + k22 * a1)
    x1x = -(ki11 * bx + ki12 * by)
    x1y = -(ki21 * bx + ki22 * by)
    case1 = (x1x >= 0.0) & (x1y >= 0.0)
    x2x = -cs["nm"][0] * bx
    case2 = (x2x >= 0.0) & (k12 * x2x + by >= 0.0)
    x3y = -cs["nm"][1] * by
    case3 = (x3y >= 0.0) & (k12 * x3y + bx >= 0.0)
    case4 = (bx >= 0.0) & (by >= 0.0)
    xx = jnp.where(case1, x1x, jnp.where(case2, x2x, jnp.where(case3 | case4, 0.0, a0)))
    xy = jnp.where(
        case1, x1y, jnp.where(case2, 0.0, jnp.where(case3, x3y, jnp.where(case4, 0.0, a1)))
    )
    block = cs["block"]
    new0 = jnp.where(block, xx, single)
    new1 = jnp.where(block, xy, a1)
    new0, new1 = _fence(new0, new1)
    d0 = new0 - a0
    d1 = new1 - a1
    vx = vx + mb * (d0 + d1) * nx
    vy = vy + mb * (d0 + d1) * ny
    w = w + ib * (d0 * cs["rn"][0] + d1 * cs["rn"][1])
    return (vx, vy, w), (new0, new1), tuple(ti)


def _body_constants(scene: Scene):
    """Inverse mass, inverse inertia and local centre (x, y) of the three bodies as [3]
    arrays, to ``vmap`` over the bodies."""
    return (
        jnp.asarray(scene.inv_mass),
        jnp.asarray(scene.inv_inertia),
        jnp.asarray(scene.local_center[:, 0]),
        jnp.asarray(scene.local_center[:, 1]),
    )


def _contact_position(consts, pc, body, baumgarte, min_sep, active=True):
    """Position correction of one contact slot of a body (points in order), scalars.

    ``consts``: the body's :func:`_body_constants`."""
    mb, ib, lcx, lcy = consts
    cx, cy, a = body
    for p in range(2):
        ca, sa = cos_sin(a)
        ox = cx - (ca * lcx - sa * lcy)
        oy = cy - (sa * lcx + ca * lcy)
        lnx, lny = pc["ln"]
        lpx, lpy = pc["lp"]
        qx, qy = pc["pts"][p]
        # e_faceA: plane on the edge, clip point on the polygon
        clip_ax = ca * qx - sa * qy + ox
        clip_ay = sa * qx + ca * qy + oy
        sep_a = (clip_ax - lpx) * lnx + (clip_ay - lpy) * lny
        # e_faceB: plane on the polygon, clip point on the edge
        nbx = ca * lnx - sa * lny
        nby = sa * lnx + ca * lny
        plx = ca * lpx - sa * lpy + ox
        ply = sa * lpx + ca * lpy + oy
        sep_b = (qx - plx) * nbx + (qy - ply) * nby
        fb = pc["face_b"]
        nx = jnp.where(fb, -nbx, lnx)
        ny = jnp.where(fb, -nby, lny)
        px = jnp.where(fb, qx, clip_ax)
        py = jnp.where(fb, qy, clip_ay)
        sep = jnp.where(fb, sep_b, sep_a) - 2.0 * POLYGON_RADIUS
        m = pc["mask"][p] & active
        min_sep = jnp.minimum(min_sep, jnp.where(m, sep, 0.0))
        corr = jnp.clip(baumgarte * (sep + LINEAR_SLOP), -MAX_LINEAR_CORRECTION, 0.0)
        rx = px - cx
        ry = py - cy
        rn = rx * ny - ry * nx
        k = mb + ib * rn * rn
        imp = jnp.where(m, -corr / k, 0.0)
        cx = cx + mb * imp * nx
        cy = cy + mb * imp * ny
        a = a + ib * imp * rn
        cx, cy, a = _fence(cx, cy, a)
    return (cx, cy, a), min_sep


def _slot_data(cc, s):
    """[3]-vector views of the velocity-constraint data of slot ``s``."""
    return {
        "n": (cc["n"][:, s, 0], cc["n"][:, s, 1]),
        "rb": tuple((cc["rb"][:, s, p, 0], cc["rb"][:, s, p, 1]) for p in range(2)),
        "rn": (cc["rn"][:, s, 0], cc["rn"][:, s, 1]),
        "rt": (cc["rt"][:, s, 0], cc["rt"][:, s, 1]),
        "nm": (cc["nm"][:, s, 0], cc["nm"][:, s, 1]),
        "tm": (cc["tm"][:, s, 0], cc["tm"][:, s, 1]),
        "k": tuple(cc["k"][:, s, i] for i in range(3)),
        "ki": tuple(cc["ki"][:, s, i] for i in range(4)),
        "block": cc["block"][:, s],
        "fr": cc["fr"][:, s],
    }


def _pos_data(sel_m: Manifold, mask, s):
    """[3]-vector views of the position-constraint data of slot ``s``."""
    return {
        "ln": (sel_m.local_normal[:, s, 0], sel_m.local_normal[:, s, 1]),
        "lp": (sel_m.local_point[:, s, 0], sel_m.local_point[:, s, 1]),
        "pts": tuple((sel_m.points[:, s, p, 0], sel_m.points[:, s, p, 1]) for p in range(2)),
        "face_b": sel_m.face_b[:, s],
        "mask": (mask[:, s, 0], mask[:, s, 1]),
    }


_ONE = [np.arange(NUM_BODIES) == k for k in range(NUM_BODIES)]


def _get(bodies, k):
    return tuple(x[k] for x in bodies)


def _put(bodies, k, values):
    return tuple(jnp.where(_ONE[k], v, x) for x, v in zip(bodies, values, strict=True))


def _velocity_loop(
    scene, iterations, v, w, cc, ni, ti, joints, contacts=True, tol=0.0, solver="cpu"
):
    """Sequential-impulse sweeps: joints (legs[1]'s, then legs[0]'s), then contact slots.

    Every quantity inside the sweep is a scalar per scene (a [batch] vector under ``vmap``),
    so that XLA emits a few elementwise kernels per sweep instead of small [3]-array ops.
    """
    im, ii = _masses(scene)
    nb = tuple(tuple((ni[k, s, 0], ni[k, s, 1]) for s in range(NUM_SLOTS)) for k in range(3))
    tb = tuple(tuple((ti[k, s, 0], ti[k, s, 1]) for s in range(NUM_SLOTS)) for k in range(3))
    slots = [_slot_data(cc, s) for s in range(NUM_SLOTS)]
    slots = [[jax.tree.map(lambda x, k=k: x[k], sd) for sd in slots] for k in range(3)]
    jcache, jimp, jmot, jlim = joints

    def sweep(carry):
        bodies, jimp, jmot, nb, tb = carry
        bodies, jimp, jmot = list(bodies), list(jimp), list(jmot)
        nb, tb = [list(x) for x in nb], [list(x) for x in tb]
        for j in (1, 0):
            bodies[0], bodies[j + 1], jimp[j], jmot[j] = _joint_velocity(
                scene, j, jcache[j], bodies[0], bodies[j + 1], jimp[j], jmot[j], jlim[j]
            )
        for s in range(NUM_SLOTS if contacts else 0):
            for k in range(3):
                bodies[k], nb[k][s], tb[k][s] = _contact_velocity(
                    im[k], ii[k], slots[k][s], bodies[k], nb[k][s], tb[k][s]
                )
        nb = tuple(tuple(x) for x in nb)
        tb = tuple(tuple(x) for x in tb)
        return tuple(bodies), tuple(jimp), tuple(jmot), nb, tb

    bodies = tuple((v[k, 0], v[k, 1], w[k]) for k in range(3))
    carry = (bodies, tuple(jimp), tuple(jmot), nb, tb)
    bodies, jimp, jmot, nb, tb = _sweeps(
        sweep, carry, iterations, tol, lambda c: c[1:], solver, "velocity"
    )
    v = jnp.stack([jnp.stack(b[:2]) for b in bodies])
    w = jnp.stack([b[2] for b in bodies])
    ni = jnp.stack([jnp.stack([jnp.stack(x) for x in nk]) for nk in nb])
    ti = jnp.stack([jnp.stack([jnp.stack(x) for x in tk]) for tk in tb])
    return v, w, jimp, jmot, ni, ti


def _sweeps(sweep, carry, iterations, tol, impulses, solver="cpu", name="velocity"):
    """``sweep`` applied ``iterations`` times to ``carry``; with a ``tol``, stopped early once no
    impulse (the leaves of ``impulses(carry)``) changes by more than ``tol`` (in the
    accelerator mode: the later sweeps are masked, :mod:`selfref_ghn.envs._box2d_loops`).

    Impulses, not velocities, are compared: the sweep is at a fixed point once no impulse
    changes.
    """
    if tol is None:
        if solver == "accelerator":
            return fixed_loop(name, sweep, carry, iterations)

        def trip(_, c):
            tick(name)
            return sweep(c)

        return jax.lax.fori_loop(0, iterations, trip, carry)

    def cond(loop):
        i, converged, _ = loop
        return (i < iterations) & ~converged

    def body(loop):
        tick(name)
        i, _, carry = loop
        new = sweep(carry)
        change = [
            jnp.max(jnp.abs(x - y))
            for x, y in zip(
                jax.tree.leaves(impulses(new)), jax.tree.leaves(impulses(carry)), strict=True
            )
        ]
        return i + 1, jnp.max(jnp.stack(change)) <= tol, new

    init = (jnp.array(0, jnp.int32), jnp.array(False), carry)
    if solver == "accelerator":
        return masked_while(name, cond, body, init, iterations)[2]
    return jax.lax.while_loop(cond, body, init)[2]


def _contact_sweep(consts, slot_data, vel, imp):
    """One velocity sweep of a body's contact slots, in order (scalars)."""
    mb, ib = consts[0], consts[1]
    out = []
    for cs, (ni, ti) in zip(slot_data, imp, strict=True):
        vel, ni, ti = _contact_velocity(mb, ib, cs, vel, ni, ti)
        out.append((ni, ti))
    return vel, tuple(out)


def _integrate_positions(c, a, v, w, h):
    """Box2D's position integration with its translation and rotation clamps."""
    h = jnp.broadcast_to(h, w.shape)
    tr = h[:, None] * v
    tr2 = _dot(tr, tr)
    v = v * jnp.where(tr2 > MAX_TRANSLATION**2, MAX_TRANSLATION / jnp.sqrt(tr2), 1.0)[:, None]
    rot = h * w
    w = w * jnp.where(rot * rot > MAX_ROTATION**2, MAX_ROTATION / jnp.abs(rot), 1.0)
    return c + h[:, None] * v, a + h * w, v, w


def world_step(
    scene: Scene,
    st: PhysState,
    seg_a: jax.Array,
    seg_b: jax.Array,
    force: jax.Array,
    torque: jax.Array,
    gravity: jax.Array,
    contacts: bool = True,
    toi: bool = True,
    solver: str = "cpu",
) -> tuple[PhysState, dict[str, jax.Array]]:
    """One ``b2World::Step(dt, velocity_iterations, position_iterations)`` of the scene.

    Args:
        scene: static scene description.
        st: physics state after the previous step (impulses already applied to velocities).
        seg_a, seg_b: [NSEG, 2] terrain segment end points.
        force: [2] force on the hull's centre of mass for this step (cleared afterwards).
        torque: scalar torque on the hull.
        gravity: scalar vertical gravity.
        contacts: collide with the terrain (static; off only for the first step after reset,
            when the lander is far above the ground).
        toi: run the reduced continuous-collision (time of impact) pass.
        solver: ``"cpu"`` (data-dependent loops, costly branches only on the lanes that need
            them) or ``"accelerator"`` (fixed trip counts, masked; same results per lane),
            see :mod:`selfref_ghn.envs._box2d_loops`.

    Returns:
        ``(state, events)``; events hold ``begin`` and ``end`` [3, NSEG] contact events (and
        ``toi_begin``/``toi_end`` from the TOI pass), and ``asleep``: the island fell asleep.
    """
    h = scene.dt
    c, a = st.c, st.a
    g = jnp.stack([jnp.zeros_like(gravity), gravity])
    v = st.v + h * (g[None, :] + jnp.zeros((3, 2)).at[0].set(scene.inv_mass[0] * force))
    w = st.w + h * jnp.zeros(3).at[0].set(scene.inv_inertia[0] * torque)

    if contacts:
        seg = _candidates(scene, c, a, seg_a, seg_b)
        m = _fence_tree(collide_all(scene, c, a, *_gather_segments(seg_a, seg_b, seg)))
        ni, ti = _match_impulses(m, seg, st)
        touching = m.count > 0
        sel_m = m
        mask = jnp.arange(2) < m.count[..., None]
        cc = _fence_tree(_contact_cache(scene, c, a, sel_m, mask, _friction(scene, seg)))
        mask = cc["mask"]
        ni = ni * mask
        ti = ti * mask
        # contact warm start
        t = jnp.stack([cc["n"][..., 1], -cc["n"][..., 0]], -1)
        p = ni[..., None] * cc["n"][:, :, None, :] + ti[..., None] * t[:, :, None, :]
        v = v + scene.inv_mass[:, None] * jnp.sum(p, axis=(1, 2))
        w = w + scene.inv_inertia * jnp.sum(_cross(cc["rb"], p), axis=(1, 2))
    else:
        m = None
        touching = st.touching
        zero = jnp.zeros((3, NUM_SLOTS, 2), c.dtype)
        mask = zero > 0
        cc = {
            "n": jnp.zeros((3, NUM_SLOTS, 2)),
            "rb": jnp.zeros((3, NUM_SLOTS, 2, 2)),
            "rn": zero,
            "rt": zero,
            "nm": zero,
            "tm": zero,
            "k": jnp.zeros((3, NUM_SLOTS, 3)),
            "ki": jnp.zeros((3, NUM_SLOTS, 4)),
            "block": zero[..., 0] > 0,
            "fr": zero[..., 0],
            "mask": mask,
        }
        ni = ti = zero

    # joints: init and warm start (island order: legs[1]'s joint, then legs[0]'s)
    jimp, jmot, jlim = st.joint_impulse, st.motor_impulse, st.limit_state
    jcache, new_lim, new_imp = [], [], []
    for j in range(2):
        jcache.append(_joint_init(scene, j, a))
        angle = a[j + 1] - a[0] - scene.reference_angle[j]
        state_j = jnp.where(
            angle <= scene.lower[j], 1, jnp.where(angle >= scene.upper[j], 2, 0)
        ).astype(jlim.dtype)
        keep_z = (state_j != 0) & (state_j == jlim[j])
        new_lim.append(state_j)
        new_imp.append((jimp[j, 0], jimp[j, 1], jnp.where(keep_z, jimp[j, 2], 0.0)))
    bodies = (v[:, 0], v[:, 1], w)
    im, ii = _masses(scene)
    for j in (1, 0):
        rax, ray, rbx, rby = jcache[j][:4]
        px, py, pz = new_imp[j]
        mj = jmot[j]
        va, vb = _get(bodies, 0), _get(bodies, j + 1)
        va = (
            va[0] - im[0] * px,
            va[1] - im[0] * py,
            va[2] - ii[0] * (rax * py - ray * px + mj + pz),
        )
        vb = (
            vb[0] + im[j + 1] * px,
            vb[1] + im[j + 1] * py,
            vb[2] + ii[j + 1] * (rbx * py - rby * px + mj + pz),
        )
        bodies = _put(_put(bodies, 0, va), j + 1, vb)
    v, w = jnp.stack(bodies[:2], axis=-1), bodies[2]

    def sweeps(op, with_contacts):
        return _velocity_loop(
            scene,
            scene.velocity_iterations,
            op["v"],
            op["w"],
            op["cc"],
            op["ni"],
            op["ti"],
            joints=op["joints"],
            contacts=with_contacts,
            tol=scene.velocity_tolerance,
            solver=solver,
        )

    op = {
        "v": v,
        "w": w,
        "cc": cc,
        "ni": ni,
        "ti": ti,
        "joints": (jcache, tuple(new_imp), (jmot[0], jmot[1]), new_lim),
    }
    if contacts and solver == "accelerator":
        # the contact sweeps are exact no-ops for slots without points (zero masses)
        v, w, jimp_t, jmot_t, ni, ti = sweeps(op, with_contacts=True)
    elif contacts:
        # contact-free scenes skip the contact sweeps (exact no-ops for them); under vmap the
        # contact sweeps run only on the scenes that have a contact point
        v, w, jimp_t, jmot_t, ni, ti = lane_cond(
            jnp.any(mask),
            functools.partial(sweeps, with_contacts=True),
            functools.partial(sweeps, with_contacts=False),
            op,
        )
    else:
        v, w, jimp_t, jmot_t, ni, ti = sweeps(op, with_contacts=False)
    jimp = jnp.stack([jnp.stack(x) for x in jimp_t])
    jmot = jnp.stack(jmot_t)
    jlim = jnp.stack(new_lim)

    c, a, v, w = _integrate_positions(c, a, v, w, h)

    pcs = [_pos_data(sel_m, mask, s) for s in range(NUM_SLOTS)] if contacts else None

    def pos_cond(carry):
        return (carry[1] < scene.position_iterations) & ~carry[2]

    def pos_body(carry):
        tick("position")
        bp, i, _, pcs, jlim = carry
        min_sep = [jnp.zeros((), bp[0][0].dtype)] * NUM_BODIES
        if pcs is not None:
            # contacts first (each body against the static ground, independent of the others:
            # one copy of the code vmapped over the bodies), then the joints
            stacked = tuple(jnp.stack([b[f] for b in bp]) for f in range(3))
            stacked, sep = stacked_vmap(_contact_positions)(_body_constants(scene), pcs, stacked)
            bp = [tuple(x[k] for x in stacked) for k in range(NUM_BODIES)]
            min_sep = [sep[k] for k in range(NUM_BODIES)]
        bp = list(bp)
        ok_all = jnp.array(True)
        for j in (1, 0):
            bp[0], bp[j + 1], ok = _joint_position(
                scene, j, bp[0], bp[j + 1], jlim[j], fence=solver == "accelerator"
            )
            ok_all = ok_all & ok
        min_sep = jnp.where(ok_all, jnp.min(jnp.stack(min_sep)), -1.0)
        return tuple(bp), i + 1, min_sep >= -3.0 * LINEAR_SLOP, pcs, jlim

    bp0 = tuple((c[k, 0], c[k, 1], a[k]) for k in range(NUM_BODIES))
    # under vmap the iterations go on only for the scenes not yet solved (lane_while)
    # (the reset's step, without contacts, converges in a few iterations on every lane)
    init = (bp0, jnp.array(0, jnp.int32), jnp.array(False), pcs, jlim)
    if solver == "accelerator":
        bp, _, solved, _, _ = masked_while(
            "position", pos_cond, pos_body, init, scene.position_iterations
        )
    else:
        loop = lane_while if contacts else jax.lax.while_loop
        bp, _, solved, _, _ = loop(pos_cond, pos_body, init)
    c = jnp.stack([jnp.stack(b[:2]) for b in bp])
    a = jnp.stack([b[2] for b in bp])

    slow = (w * w <= ANGULAR_SLEEP_TOLERANCE**2) & (_dot(v, v) <= LINEAR_SLEEP_TOLERANCE**2)
    sleep_time = jnp.where(slow, st.sleep_time + h, 0.0)
    asleep = (jnp.min(sleep_time) >= TIME_TO_SLEEP) & solved

    no_events = jnp.zeros((3, NUM_SLOTS), bool)
    if contacts:
        ni_full, ti_full = ni * mask, ti * mask
        begin, end = _slot_events(st.seg, st.touching, seg, touching)
        events = {"begin": begin, "end": end}
        ids, count = m.ids, m.count
    else:
        events = {"begin": no_events, "end": no_events}
        ni_full, ti_full, ids, count = st.normal_impulse, st.tangent_impulse, st.ids, st.count
        seg = st.seg
    new = st.replace(
        c=c,
        a=a,
        v=v,
        w=w,
        sleep_time=sleep_time,
        joint_impulse=jimp,
        motor_impulse=jmot,
        limit_state=jlim,
        seg=seg,
        touching=touching,
        ids=ids,
        count=count,
        normal_impulse=ni_full,
        tangent_impulse=ti_full,
    )
    events["asleep"] = asleep
    events["toi_begin"] = events["toi_end"] = no_events
    if contacts and toi:
        new, events = _solve_toi(scene, st, new, events, seg_a, seg_b, solver)
    return new, events


TOI_BISECTIONS = 14


def _contact_positions(consts, pos_data, body, baumgarte=BAUMGARTE, active=True):
    """One position iteration of a body's contact slots (in order); returns the body and its
    minimum separation."""
    min_sep = jnp.zeros((), body[0].dtype)
    for pc in pos_data:
        body, min_sep = _contact_position(consts, pc, body, baumgarte, min_sep, active)
    return body, min_sep


def _toi_position(consts, pos_data, body, done, solver="cpu"):
    """TOI position correction of one body against its contacts (``b2Island::SolveTOI``):
    until its separation is within tolerance or for ``TOI_POSITION_ITERATIONS``."""

    def cond(carry):
        return (carry[1] < TOI_POSITION_ITERATIONS) & ~carry[2]

    def body_fn(carry):
        tick("toi_position")
        bp, i, done = carry
        bp, min_sep = _contact_positions(consts, pos_data, bp, TOI_BAUMGARTE, ~done)
        return bp, i + 1, done | (min_sep >= -1.5 * LINEAR_SLOP)

    init = (body, jnp.array(0, jnp.int32), done)
    if solver == "accelerator":
        return masked_while("toi_position", cond, body_fn, init, TOI_POSITION_ITERATIONS)[0]
    return jax.lax.while_loop(cond, body_fn, init)[0]


def _toi_velocity(consts, slot_data, vel, iterations, tol, solver="cpu"):
    """TOI velocity sweeps of one body's contacts, without warm starting: ``iterations``
    sweeps, or (``tol`` not ``None``) until no impulse changes by more than ``tol``.

    Stopping a body when its own impulses stop changing equals sweeping it along with the
    others: at an exact fixed point a sweep returns its input."""
    zero = jnp.zeros((), vel[0].dtype)
    imp = tuple(((zero, zero), (zero, zero)) for _ in slot_data)

    def sweep(carry):
        return _contact_sweep(consts, slot_data, *carry)

    vel, _ = _sweeps(sweep, (vel, imp), iterations, tol, lambda c: c[1], solver, "toi_velocity")
    return vel


def _solve_toi(scene, old, new, events, seg_a, seg_b, solver="cpu"):
    """Reduced ``b2World::SolveTOI``: at most one time-of-impact sub-step per body.

    A body/segment pair whose core distance is above Box2D's TOI target at the start of the
    step and below it at the end gets its time of impact by bisection along the body's sweep
    (linear in centre and angle, as ``b2Sweep``). The body is moved there, its contacts are
    updated (begin/end events), and Box2D's TOI island solve runs for the body alone: TOI
    position correction, a velocity solve without warm starting, and integration over the
    rest of the step. In the accelerator mode every scene runs it, masked (a body without an
    event keeps its state).
    """
    target = max(LINEAR_SLOP, 2.0 * POLYGON_RADIUS - 3.0 * LINEAR_SLOP)
    tol = 0.25 * LINEAR_SLOP
    goal = target + 0.5 * tol
    c0, a0, c1, a1 = old.c, old.a, new.c, new.a
    seg = _candidates(scene, c1, a1, seg_a, seg_b)
    seg_p, seg_q = _gather_segments(seg_a, seg_b, seg)
    # both ends of the step in one (vmapped) distance computation
    d0, d1 = jax.vmap(lambda c, a: _distances(scene, c, a, seg_p, seg_q))(
        jnp.stack([c0, c1]), jnp.stack([a0, a1])
    )
    d_end = jnp.where(d0 > target + tol, d1, jnp.inf)
    first = jnp.argmin(d_end, axis=1)
    event = jnp.min(d_end, axis=1) < goal
    pick = jax.nn.one_hot(first, NUM_SLOTS, dtype=c0.dtype)
    pa = jnp.sum(pick[..., None] * seg_p, axis=1)
    pb = jnp.sum(pick[..., None] * seg_q, axis=1)

    def hit(op):
        new, event, pick, pa, pb, seg, seg_p, seg_q = (
            op[k] for k in ("new", "event", "pick", "pa", "pb", "seg", "seg_p", "seg_q")
        )
        c0, a0, c1, a1 = op["c0"], op["a0"], new.c, new.a

        def dist_at(alpha):
            c = c0 + alpha[:, None] * (c1 - c0)
            a = a0 + alpha * (a1 - a0)
            return _distances(scene, c, a, pa[:, None], pb[:, None])[:, 0]

        def bisect(loop):
            tick("bisection")
            i, lo, hi = loop
            mid = 0.5 * (lo + hi)
            above = dist_at(mid) > goal
            return i + 1, jnp.where(above, mid, lo), jnp.where(above, hi, mid)

        # A while loop (not a fori_loop) so that, under vmap, a batch in which no body has an
        # event skips the bisection; bodies without an event keep alpha = 1 below either way.
        bisect_cond = lambda loop: (loop[0] < TOI_BISECTIONS) & jnp.any(event)
        init = (jnp.array(0, jnp.int32), jnp.zeros(3), jnp.ones(3))
        if solver == "accelerator":
            _, alpha, _ = masked_while("bisection", bisect_cond, bisect, init, TOI_BISECTIONS)
        else:
            _, alpha, _ = jax.lax.while_loop(bisect_cond, bisect, init)
        alpha = jnp.where(event, alpha, 1.0)
        c_t = c0 + alpha[:, None] * (c1 - c0)
        a_t = a0 + alpha * (a1 - a0)

        # contact update at the TOI pose
        m = _fence_tree(collide_all(scene, c_t, a_t, seg_p, seg_q))
        event = event & (jnp.sum(jnp.where(pick > 0, m.count, 0), axis=1) > 0)
        ev = event[:, None]
        ni_full, ti_full = _match_impulses(m, seg, new)
        seg = jnp.where(ev, seg, new.seg)
        touching = jnp.where(ev, m.count > 0, new.touching)
        begin, end = _slot_events(new.seg, new.touching, seg, touching)

        # TOI island: the body and its touching contacts with the ground. Bodies are solved
        # independently (no joints in a TOI island, the ground is static), so the island solve
        # is written for one body and vmapped over the three: one copy of its code, not three.
        sel_m = m
        mask = (jnp.arange(2) < m.count[..., None]) & ev[..., None]
        consts = _body_constants(scene)
        pos_data = [_pos_data(sel_m, mask, s) for s in range(NUM_SLOTS)]
        body_pos = (c_t[:, 0], c_t[:, 1], a_t)
        bp = stacked_vmap(functools.partial(_toi_position, solver=solver))(
            consts, pos_data, body_pos, ~event
        )
        c_p = jnp.stack([bp[0], bp[1]], -1)
        a_p = bp[2]

        cc = _fence_tree(_contact_cache(scene, c_p, a_p, sel_m, mask, _friction(scene, seg)))
        slot_data = [_slot_data(cc, s) for s in range(NUM_SLOTS)]
        vel = (new.v[:, 0], new.v[:, 1], new.w)
        iters, tol = scene.toi_velocity_iterations, scene.toi_velocity_tolerance
        vel = stacked_vmap(lambda *x: _toi_velocity(*x, iters, tol, solver))(
            consts, slot_data, vel
        )
        v = jnp.stack([vel[0], vel[1]], -1)
        w = vel[2]
        h = (1.0 - alpha) * scene.dt
        c_f, a_f, v, w = _integrate_positions(c_p, a_p, v, w, h)

        new = new.replace(
            c=jnp.where(ev, c_f, new.c),
            a=jnp.where(event, a_f, new.a),
            v=jnp.where(ev, v, new.v),
            w=jnp.where(event, w, new.w),
            seg=seg,
            touching=touching,
            ids=jnp.where(ev[..., None], m.ids, new.ids),
            count=jnp.where(ev, m.count, new.count),
            normal_impulse=jnp.where(ev[..., None], ni_full, new.normal_impulse),
            tangent_impulse=jnp.where(ev[..., None], ti_full, new.tangent_impulse),
        )
        return new, begin, end, event

    def miss(op):
        none = jnp.zeros((NUM_BODIES, NUM_SLOTS), bool)
        return op["new"], none, none, op["event"]

    # Scenes without a time-of-impact event skip the bisection, the contact update and the TOI
    # island solve; under vmap these run only on the scenes that have an event.
    op = {
        "new": new,
        "event": event,
        "pick": pick,
        "pa": pa,
        "pb": pb,
        "seg": seg,
        "seg_p": seg_p,
        "seg_q": seg_q,
        "c0": c0,
        "a0": a0,
    }
    if solver == "accelerator":
        new, begin, end, event = hit(op)
    else:
        new, begin, end, event = lane_cond(jnp.any(event), hit, miss, op)
    events = {**events, "toi_begin": begin, "toi_end": end, "toi": event}
    return new, events
