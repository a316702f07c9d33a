"""LunarLander's scene: Gymnasium's constants, the lander's bodies and joints, the terrain.

Part of the LunarLander-Switch port (DESIGN §3, :mod:`selfref_ghn.envs.lunar_lander`): what the
world is made of, before anything moves. Gymnasium's ``lunar_lander.py`` constants, the fixed
:data:`SCENE` (hull polygon, two legs on limited motorised revolute joints, masses, inertias,
mixed frictions, solver settings) for :mod:`selfref_ghn.envs._box2d`, the 11-chunk random
terrain with its flat helipad (:func:`terrain_segments`), and the bodies' pose at reset. The
engines, rewards, terminations and the gymnax ``Environment`` live in ``lunar_lander``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from selfref_ghn.envs import _box2d as b2

# Gymnasium's lunar_lander.py constants.
FPS = 50
SCALE = 30.0
MAIN_ENGINE_POWER = 13.0
SIDE_ENGINE_POWER = 0.6
INITIAL_RANDOM = 1000.0
LANDER_POLY = [(-14, +17), (-17, 0), (-17, -10), (+17, -10), (+17, 0), (+14, +17)]
LEG_AWAY = 20
LEG_DOWN = 18
LEG_W, LEG_H = 2, 8
LEG_SPRING_TORQUE = 40
SIDE_ENGINE_HEIGHT = 14
SIDE_ENGINE_AWAY = 12
MAIN_ENGINE_Y_LOCATION = 4
VIEWPORT_W = 600
VIEWPORT_H = 400
W = VIEWPORT_W / SCALE
H = VIEWPORT_H / SCALE
CHUNKS = 11
HELIPAD_Y = H / 4
NUM_SEGMENTS = CHUNKS  # the flat floor edge (0, 0)-(W, 0) plus CHUNKS - 1 terrain edges


def _make_scene() -> b2.Scene:
    hull = b2.polygon_hull(np.array(LANDER_POLY, np.float64) / SCALE)
    leg = b2.box_vertices(LEG_W / SCALE, LEG_H / SCALE)
    hull_mass, hull_center, hull_inertia = b2.polygon_mass(hull, 5.0)
    leg_mass, leg_center, leg_inertia = b2.polygon_mass(leg, 1.0)
    f32 = lambda x: np.asarray(x, np.float32)
    # friction mixing b2MixFriction = sqrt(fa * fb): hull 0.1, legs 0.2 (default);
    # the floor edge has the default 0.2, the terrain edges 0.1.
    body_f = np.array([0.1, 0.2, 0.2], np.float32)
    seg_f = np.array([0.2] + [0.1] * (NUM_SEGMENTS - 1), np.float32)
    friction = np.sqrt(body_f[:, None] * seg_f[None, :]).astype(np.float32)
    return b2.Scene(
        hull_verts=f32(hull),
        hull_normals=f32(b2.polygon_normals(hull)),
        hull_centroid=f32(hull_center),
        leg_verts=f32(leg),
        leg_normals=f32(b2.polygon_normals(leg)),
        inv_mass=f32([1.0 / hull_mass, 1.0 / leg_mass, 1.0 / leg_mass]),
        inv_inertia=f32([1.0 / hull_inertia, 1.0 / leg_inertia, 1.0 / leg_inertia]),
        local_center=f32([hull_center, leg_center, leg_center]),
        anchor_a=f32(np.zeros((2, 2))),
        anchor_b=f32(
            [[-LEG_AWAY / SCALE, LEG_DOWN / SCALE], [LEG_AWAY / SCALE, LEG_DOWN / SCALE]]
        ),
        lower=f32([0.9 - 0.5, -0.9]),
        upper=f32([0.9, -0.9 + 0.5]),
        motor_speed=f32([-0.3, 0.3]),
        # pybox2d's revoluteJointDef sets referenceAngle = bodyB.angle - bodyA.angle
        reference_angle=f32([-0.05, 0.05]),
        max_motor_torque=float(LEG_SPRING_TORQUE),
        friction=f32(friction),
        dt=1.0 / FPS,
        velocity_iterations=6 * 30,
        position_iterations=2 * 30,
    )


SCENE = _make_scene()


def terrain_segments(heights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Gymnasium's terrain from its ``CHUNKS + 1`` random chunk heights.

    Args:
        heights: [12] raw heights (``np_random.uniform(0, H / 2, 12)`` in Gymnasium); the
            helipad chunks are overwritten with ``H / 4`` as Gymnasium does.

    Returns:
        ``(seg_a, seg_b)``, each [11, 2]: the floor edge then the 10 terrain edges.
    """
    heights = jnp.asarray(heights, jnp.float32)
    heights = heights.at[CHUNKS // 2 - 2 : CHUNKS // 2 + 3].set(HELIPAD_Y)
    smooth = 0.33 * (jnp.roll(heights, 1)[:CHUNKS] + heights[:CHUNKS] + heights[1 : CHUNKS + 1])
    chunk_x = jnp.asarray([W / (CHUNKS - 1) * i for i in range(CHUNKS)], jnp.float32)
    pts = jnp.stack([chunk_x, smooth], axis=-1)
    seg_a = jnp.concatenate([jnp.zeros((1, 2)), pts[:-1]])
    seg_b = jnp.concatenate([jnp.array([[W, 0.0]]), pts[1:]])
    return seg_a.astype(jnp.float32), seg_b.astype(jnp.float32)


def _initial_phys() -> b2.PhysState:
    x0, y0 = VIEWPORT_W / SCALE / 2, VIEWPORT_H / SCALE
    lc = np.asarray(SCENE.local_center)
    c = np.array([[x0, y0], [x0 + LEG_AWAY / SCALE, y0], [x0 - LEG_AWAY / SCALE, y0]], np.float32)
    c = c + lc  # angle-0 hull: centre = origin + local centre; legs' centres are origins
    z = lambda *s: jnp.zeros(s, jnp.float32)
    return b2.PhysState(
        c=jnp.asarray(c),
        a=jnp.asarray([0.0, -0.05, 0.05], jnp.float32),
        v=z(3, 2),
        w=z(3),
        sleep_time=z(3),
        joint_impulse=z(2, 3),
        motor_impulse=z(2),
        limit_state=jnp.zeros(2, jnp.int32),
        seg=jnp.full((3, b2.NUM_SLOTS), -1, jnp.int32),
        touching=jnp.zeros((3, b2.NUM_SLOTS), bool),
        ids=jnp.zeros((3, b2.NUM_SLOTS, 2), jnp.int32),
        count=jnp.zeros((3, b2.NUM_SLOTS), jnp.int32),
        normal_impulse=z(3, b2.NUM_SLOTS, 2),
        tangent_impulse=z(3, b2.NUM_SLOTS, 2),
    )
