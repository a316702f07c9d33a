"""LunarLander-Switch against Gymnasium's Box2D ``LunarLander-v3`` (DESIGN §3).

Gymnasium's episode start is reproduced exactly: its terrain heights and initial push are
re-drawn from a generator seeded like ``env.reset(seed=...)`` (and checked against the Box2D
terrain it built), and its per-step engine dispersion is replaced by the values the JAX env
draws from its key. Observations are compared with ``rtol=1e-3`` and an absolute floor of
``1e-4`` (float32 Box2D against float32 XLA, different summation orders).

Default run: shapes, mass properties, the reset (the first world step, with its large joint
corrections), free flight step for step (with the contact-free physics step the env's reset
uses), action decoding and inversion. The full environment step compiles for over a minute on
CPU, so everything that needs it is marked ``slow``.
"""

from __future__ import annotations

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnasium.envs.box2d import lunar_lander as gll
from selfref_ghn.envs import _box2d as b2
from selfref_ghn.envs import lunar_lander as ll

RTOL, ATOL = 1e-3, 1e-4


class _Dispersion:
    """Stands in for Gymnasium's ``np_random`` during steps: returns queued dispersions."""

    def __init__(self):
        self.queue: list[float] = []

    def uniform(self, low, high):
        return self.queue.pop(0)


def _dispersion(key):
    return [float(x) for x in np.asarray(jax.random.uniform(key, (2,), jnp.float32, -1.0, 1.0))]


def _gym_start(seed: int, continuous: bool = False):
    """Gymnasium env reset with ``seed``, plus its terrain heights and initial force."""
    env = gym.make("LunarLander-v3", continuous=continuous)
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    heights = rng.uniform(0, ll.H / 2, size=ll.CHUNKS + 1)
    force = np.array([rng.uniform(-1000, 1000), rng.uniform(-1000, 1000)])
    # the re-drawn terrain is the one Gymnasium built
    built = np.array([f.shape.vertices[0] for f in env.unwrapped.moon.fixtures[1:]])
    seg_a, _ = ll.terrain_segments(heights)
    np.testing.assert_allclose(np.asarray(seg_a)[1:], built, atol=1e-6)
    fake = _Dispersion()
    env.unwrapped.np_random = fake
    return env, obs, heights, force, fake


# the accelerator mode's unrolled loops compile for minutes on CPU: its tests are slow
SOLVERS = ["cpu", pytest.param("accelerator", marks=pytest.mark.slow)]


@pytest.fixture(scope="module", params=SOLVERS)
def env_discrete(request):
    env, params = ll.make_lunar_lander(solver=request.param)
    return env, params, jax.jit(env.reset_from)


def test_shapes_and_mass_match_box2d():
    genv = gym.make("LunarLander-v3")
    genv.reset(seed=0)
    u = genv.unwrapped
    hull = np.array(u.lander.fixtures[0].shape.vertices)
    np.testing.assert_allclose(ll.SCENE.hull_verts, hull, atol=1e-6)
    np.testing.assert_allclose(
        ll.SCENE.leg_verts, np.array(u.legs[0].fixtures[0].shape.vertices), atol=1e-6
    )
    assert 1.0 / ll.SCENE.inv_mass[0] == pytest.approx(u.lander.mass, rel=1e-6)
    assert 1.0 / ll.SCENE.inv_mass[1] == pytest.approx(u.legs[0].mass, rel=1e-6)
    lc = np.asarray(ll.SCENE.local_center[0])
    np.testing.assert_allclose(lc, np.array(u.lander.localCenter), atol=1e-6)
    # pybox2d reports the inertia about the body origin
    i_origin = 1.0 / ll.SCENE.inv_inertia[0] + u.lander.mass * float(lc @ lc)
    assert i_origin == pytest.approx(u.lander.inertia, rel=1e-5)
    assert 1.0 / ll.SCENE.inv_inertia[1] == pytest.approx(u.legs[0].inertia, rel=1e-5)
    for leg, ref in zip(u.legs, np.asarray(ll.SCENE.reference_angle), strict=True):
        assert leg.joint.angle == pytest.approx(leg.angle - u.lander.angle - ref, abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_reset_matches_gymnasium(env_discrete, seed):
    env, params, reset_from = env_discrete
    _, obs_g, heights, force, _ = _gym_start(seed)
    obs_j, state = reset_from(jax.random.key(seed), params, heights, force)
    np.testing.assert_allclose(np.asarray(obs_j), obs_g, rtol=RTOL, atol=ATOL)
    assert np.asarray(obs_j).dtype == np.float32 and np.asarray(obs_j).shape == (8,)
    assert int(state.time) == 0


def test_free_flight_matches_gymnasium_step_for_step(env_discrete):
    """Engines on a fixed schedule, no ground nearby: every observation agrees."""
    env, params, reset_from = env_discrete
    genv, _, heights, force, fake = _gym_start(3)
    _, state = reset_from(jax.random.key(0), params, heights, force)
    step = jax.jit(lambda k, s, a: env._physics_step(k, s, a, params, jnp.zeros(2), False))
    schedule = [2, 2, 1, 0, 3, 3, 2, 0, 1, 2] * 3
    for t, a in enumerate(schedule):
        key = jax.random.key(100 + t)
        fake.queue = _dispersion(key)
        obs_g, *_ = genv.step(a)
        obs_j, state, *_ = step(key, state, a)
        assert obs_g[1] > 0.5  # still far above the terrain: no contact possible
        np.testing.assert_allclose(np.asarray(obs_j), obs_g, rtol=RTOL, atol=ATOL, err_msg=f"{t}")


@pytest.mark.parametrize("continuous", [False, True])
def test_inversion_swaps_side_engines(continuous):
    env, params = ll.make_lunar_lander(continuous=continuous)
    inv = params.replace(inverted=True)
    if continuous:
        acts = [jnp.array([0.3, 0.8]), jnp.array([-1.0, -0.7]), jnp.array([0.9, 0.2])]
        swap = lambda a: a * jnp.array([1.0, -1.0])
    else:
        acts = [jnp.array(k) for k in range(4)]
        swap = lambda a: jnp.array([0, 3, 2, 1])[a]
    for a in acts:
        plain = env._engines(a, params)
        flipped = env._engines(swap(a), inv)
        for x, y in zip(plain, flipped, strict=True):
            assert float(x) == float(y)


def test_dead_zones_match_gymnasium():
    env, params = ll.make_lunar_lander(continuous=True)
    cases = {
        (-0.5, 0.0): (0.0, 0.0),
        (0.0, 0.49): (0.0, 0.0),  # main needs > 0; lateral needs |x| > 0.5
        (1e-3, 0.5): (0.5005, 0.0),
        (0.5, 0.75): (0.75, 0.75),
        (1.5, -0.6): (1.0, 0.6),
        (0.01, -2.0): (0.505, 1.0),
    }
    for (main, lat), (m_ref, s_ref) in cases.items():
        m, s, d = env._engines(jnp.array([main, lat]), params)
        assert float(m) == pytest.approx(m_ref) and float(s) == pytest.approx(s_ref)
        assert float(d) == (np.sign(lat) if s_ref > 0 else float(d))
    denv, dparams = ll.make_lunar_lander()
    for a, ref in {0: (0, 0), 1: (0, 1), 2: (1, 0), 3: (0, 1)}.items():
        m, s, _ = denv._engines(jnp.array(a), dparams)
        assert (float(m), float(s)) == ref


def test_heuristic_port_matches_gymnasium():
    rng = np.random.default_rng(0)
    genv = gym.make("LunarLander-v3")
    cenv = gym.make("LunarLander-v3", continuous=True)
    for _ in range(200):
        s = rng.normal(size=8).astype(np.float32) * 0.5
        s[6:] = rng.integers(0, 2, size=2)
        assert int(ll.heuristic_action(jnp.asarray(s))) == gll.heuristic(genv, s)
        np.testing.assert_allclose(
            np.asarray(ll.heuristic_action(jnp.asarray(s), True)),
            gll.heuristic(cenv, s),
            rtol=1e-5,
            atol=1e-5,
        )


def test_heuristic_sees_the_swapped_task_in_a_mirror():
    """Gymnasium's heuristic is mirror-equivariant: on the mirrored observation it fires the
    other side engine (discrete) or negates the lateral command (continuous)."""
    rng = np.random.default_rng(1)
    for _ in range(200):
        s = jnp.asarray(rng.normal(size=8).astype(np.float32) * 0.5)
        s = s.at[6:].set(rng.integers(0, 2, size=2).astype(np.float32))
        m = ll.mirror_observation(s)
        np.testing.assert_array_equal(np.asarray(ll.mirror_observation(m)), np.asarray(s))
        assert int(ll.heuristic_action(m)) == [0, 3, 2, 1][int(ll.heuristic_action(s))]
        c, cm = ll.heuristic_action(s, True), ll.heuristic_action(m, True)
        np.testing.assert_allclose(np.asarray(cm), np.asarray(c) * np.array([1.0, -1.0]))


def test_free_fall_is_mirror_symmetric(env_discrete):
    """A mirrored start (terrain reversed, push negated sideways) falls as the mirror image."""
    env, params, reset_from = env_discrete
    heights = np.random.default_rng(4).uniform(0, ll.H / 2, size=ll.CHUNKS + 1)
    mirrored = np.asarray(_mirror_heights(jnp.asarray(heights)))
    seg_a, seg_b = ll.terrain_segments(heights)
    mseg_a, mseg_b = ll.terrain_segments(mirrored)
    np.testing.assert_allclose(
        np.asarray(mseg_b)[1:, 1], np.asarray(seg_a)[1:, 1][::-1], atol=1e-6
    )
    force = np.array([613.0, -271.0])
    o, s = reset_from(jax.random.key(0), params, heights, force)
    om, sm = reset_from(jax.random.key(0), params, mirrored, force * np.array([-1.0, 1.0]))
    step = jax.jit(lambda k, s: env._physics_step(k, s, 0, params, jnp.zeros(2), False))
    for t in range(40):
        np.testing.assert_allclose(
            np.asarray(ll.mirror_observation(om)),
            np.asarray(o),
            rtol=RTOL,
            atol=ATOL,
            err_msg=f"{t}",
        )
        o, s, *_ = step(jax.random.key(t), s)
        om, sm, *_ = step(jax.random.key(t), sm)
    assert float(o[1]) < 1.0  # it has fallen


def test_spaces_and_factories():
    from selfref_ghn import envs

    env, params = envs.make("LunarLander-Switch", continuous=True, inverted=True)
    assert params.inverted and env.continuous and env.num_actions == 2
    assert params.max_steps_in_episode == 1000 and params.gravity == -10.0
    env2, params2 = envs.make("LunarLander-v3")
    assert env2.num_actions == 4 and not params2.inverted
    assert env2.observation_space(params2).shape == (8,)
    assert env.action_space(params).shape == (2,)


def test_core_distance():
    sq = b2.box_vertices(1.0, 1.0)
    n = b2.polygon_normals(sq)
    d = b2._core_distance(jnp.array([-3.0, 2.0]), jnp.array([3.0, 2.0]), sq, n)
    assert float(d) == pytest.approx(1.0)
    d = b2._core_distance(jnp.array([-3.0, 0.5]), jnp.array([3.0, 0.5]), sq, n)
    assert float(d) == 0.0


# --------------------------------------------------------------------------------------------
# Full environment step (slow: the step compiles for over a minute on CPU).
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["cpu", "accelerator"])
def stepper(request):
    env, params = ll.make_lunar_lander(solver=request.param)
    return env, params, jax.jit(env.reset_from), jax.jit(env.step_env)


def _run_pair(stepper, seed, policy, max_steps=1000):
    """Step both envs with the same actions and dispersions; yield per-step results."""
    env, params, reset_from, step = stepper
    genv, _, heights, force, fake = _gym_start(seed)
    _, state = reset_from(jax.random.key(seed), params, heights, force)
    obs_g = None
    for t in range(max_steps):
        a = policy(t, obs_g)
        key = jax.random.key(1000 * seed + t)
        fake.queue = _dispersion(key)
        obs_g, r_g, term_g, trunc_g, _ = genv.step(a)
        obs_j, state, r_j, term_j, info = step(key, state, a, params)
        yield t, obs_g, float(r_g), bool(term_g), np.asarray(obs_j), float(r_j), bool(term_j), info
        if term_g or term_j:
            return


@pytest.mark.slow
@pytest.mark.parametrize("seed,schedule", [(0, "noop"), (3, "engines"), (5, "engines")])
def test_step_matches_gymnasium_until_first_contact(stepper, seed, schedule):
    """Observations, rewards and fuel costs agree step for step through first contact."""
    rng = np.random.default_rng(seed)
    acts = rng.integers(0, 4, size=1000) if schedule == "engines" else np.zeros(1000, int)
    contact = False
    for t, og, rg, tg, oj, rj, _, info in _run_pair(stepper, seed, lambda t, o: int(acts[t])):
        np.testing.assert_allclose(oj, og, rtol=RTOL, atol=ATOL, err_msg=f"step {t}")
        assert rj == pytest.approx(rg, abs=1e-3), t
        m_ref = 1.0 if acts[t] == 2 else 0.0
        s_ref = 1.0 if acts[t] in (1, 3) else 0.0
        assert float(info["m_power"]) == m_ref and float(info["s_power"]) == s_ref
        if og[6] or og[7] or tg:
            contact = True
            break
    assert contact, "the episode never reached the ground"


@pytest.mark.slow
def test_crash_terminates_on_the_same_step(stepper):
    last = None
    for last in _run_pair(stepper, 0, lambda t, o: 0):
        assert last[3] == last[6], last[0]
    _, _, rg, tg, _, rj, tj, _ = last
    assert tg and tj and rg == rj == -100.0


@pytest.mark.slow
def test_leaving_the_screen_terminates_on_the_same_step(stepper):
    genv = gym.make("LunarLander-v3")

    def policy(t, obs):  # Gymnasium's heuristic, steering for a pad at x = +1.3 (off screen)
        if obs is None:
            return 0
        shifted = np.array(obs, copy=True)
        shifted[0] -= 1.3
        return gll.heuristic(genv, shifted)

    last = None
    for last in _run_pair(stepper, 2, policy):
        assert last[3] == last[6], last[0]
    _, og, _, tg, oj, rj, tj, _ = last
    assert tg and tj and abs(og[0]) >= 1.0 and abs(oj[0]) >= 1.0 and rj == -100.0


@pytest.mark.slow
def test_jit_vmap_batch_of_64():
    env, params = ll.make_lunar_lander()
    keys = jax.random.split(jax.random.key(0), 64)
    obs, state = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))(keys, params)
    assert obs.shape == (64, 8)
    step = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))
    acts = jnp.arange(64) % 4
    for i in range(3):
        obs, state, r, term, trunc, _ = step(
            jax.random.split(jax.random.key(i), 64), state, acts, params
        )
    assert obs.shape == (64, 8) and r.shape == (64,) and bool(jnp.all(jnp.isfinite(obs)))
    # a differently-inverted params batch element-wise: same compiled step, no recompile
    obs2, *_ = step(keys, state, acts, params.replace(inverted=True))
    assert obs2.shape == (64, 8)


def _heuristic_stats_gym(seeds):
    genv = gym.make("LunarLander-v3")
    out = []
    for s in seeds:
        o, _ = genv.reset(seed=int(s))
        total, r = 0.0, 0.0
        while True:
            o, r, term, trunc, _ = genv.step(gll.heuristic(genv, o))
            total += r
            if term or trunc:
                break
        out.append((total, term and r == 100))
    return np.array(out, float)


def _mirror_heights(heights):
    """Gymnasium's raw chunk heights of the mirrored terrain (the last one feeds the first
    chunk's smoothing and stays)."""
    return jnp.concatenate([heights[: ll.CHUNKS][::-1], heights[ll.CHUNKS :]])


def _heuristic_stats_jax(n, seed=123, inverted=False, mirrored=False, aim=0.0, solver="cpu"):
    """Return and landing of Gymnasium's heuristic (steering for a pad at ``x = aim``) over
    ``n`` episodes. ``mirrored``: every episode starts as the mirror image of the plain one
    (terrain reversed, sideways push negated) and the heuristic sees the mirrored
    observation, so the run is the plain run seen in a mirror if the physics is symmetric."""
    env, params = ll.make_lunar_lander(inverted=inverted, solver=solver)
    shift = jnp.zeros(8).at[0].set(aim)
    see = (lambda o: ll.mirror_observation(o) - shift) if mirrored else (lambda o: o - shift)

    def episode(key):
        k_steps, k_reset = jax.random.split(key)
        k_terrain, k_force, _, k_step = jax.random.split(k_reset, 4)
        heights = jax.random.uniform(k_terrain, (ll.CHUNKS + 1,), jnp.float32, 0.0, ll.H / 2)
        force = jax.random.uniform(k_force, (2,), jnp.float32, -1000.0, 1000.0)
        if mirrored:
            heights, force = _mirror_heights(heights), force * jnp.array([-1.0, 1.0])
        obs, st = env.reset_from(k_step, params, heights, force)

        def body(carry, k):
            obs, st, done, total, landed = carry
            o2, st2, r, term, _ = env.step_env(k, st, ll.heuristic_action(see(obs)), params)
            total = total + jnp.where(done, 0.0, r)
            landed = landed | (~done & term & st2.asleep)
            done = done | term | (st2.time >= params.max_steps_in_episode)
            return (o2, st2, done, total, landed), None

        init = (obs, st, jnp.array(False), jnp.array(0.0), jnp.array(False))
        (_, _, _, total, landed), _ = jax.lax.scan(body, init, jax.random.split(k_steps, 1000))
        return total, landed

    total, landed = jax.jit(jax.vmap(episode))(jax.random.split(jax.random.key(seed), n))
    return np.stack([np.asarray(total, float), np.asarray(landed, float)], 1)


@pytest.mark.slow
@pytest.mark.parametrize("n,solver", [(10, "cpu"), (100, "cpu"), (100, "accelerator")])
def test_heuristic_statistics_match(n, solver):
    g = _heuristic_stats_gym(range(n))
    j = _heuristic_stats_jax(n, solver=solver)
    print(
        f"heuristic n={n} ({solver}): gym return {g[:, 0].mean():.1f} "
        f"landed {g[:, 1].mean():.2f}; "
        f"jax return {j[:, 0].mean():.1f} landed {j[:, 1].mean():.2f}"
    )
    tol = 0.10 if n >= 100 else 0.25  # 10 episodes: a looser check on a noisy mean
    assert abs(j[:, 0].mean() - g[:, 0].mean()) <= tol * abs(g[:, 0].mean())
    assert abs(j[:, 1].mean() - g[:, 1].mean()) <= (0.10 if n >= 100 else 0.3)


@pytest.mark.slow
def test_swapped_engines_are_the_task_in_a_mirror():
    """The physics is mirror symmetric, engines and contacts included: a heuristic steering
    for x = 0.2 flies as well (100 episodes, same tolerances as against Gymnasium) as its
    mirror image does with the side engines swapped, from mirrored starts. (The engines'
    dispersion noise is not mirrored, so the check is on the statistics, not step by step.)
    The unmirrored heuristic on swapped engines crashes."""
    plain = _heuristic_stats_jax(100, aim=0.2)
    mirror = _heuristic_stats_jax(100, aim=0.2, inverted=True, mirrored=True)
    fooled = _heuristic_stats_jax(100, inverted=True)
    print(
        f"heuristic for x=0.2: original {plain[:, 0].mean():.1f} landed {plain[:, 1].mean():.2f}; "
        f"its mirror image on swapped engines {mirror[:, 0].mean():.1f} landed "
        f"{mirror[:, 1].mean():.2f}; per-episode correlation "
        f"{np.corrcoef(plain[:, 0], mirror[:, 0])[0, 1]:.2f}; unmirrored heuristic on swapped "
        f"engines {fooled[:, 0].mean():.1f} landed {fooled[:, 1].mean():.2f}"
    )
    assert abs(mirror[:, 0].mean() - plain[:, 0].mean()) <= 0.10 * abs(plain[:, 0].mean())
    assert abs(mirror[:, 1].mean() - plain[:, 1].mean()) <= 0.10
    assert fooled[:, 0].mean() < 0.0 and fooled[:, 1].mean() < 0.1


def test_candidate_edges_hold_every_contact():
    """Colliding each body with its two candidate edges misses no touching terrain edge."""
    heights = np.random.default_rng(0).uniform(0, ll.H / 2, size=ll.CHUNKS + 1)
    seg_a, seg_b = ll.terrain_segments(heights)
    scene = ll.SCENE
    n = 256
    rng = np.random.default_rng(1)
    x = rng.uniform(0.5, ll.W - 0.5, n).astype(np.float32)
    x_chunks = np.asarray(seg_a)[1:, 0]
    ground = np.interp(x, np.append(x_chunks, ll.W), np.append(np.asarray(seg_a)[1:, 1], 0))
    y = (ground + rng.uniform(-0.2, 0.6, n)).astype(np.float32)
    ang = rng.uniform(-0.6, 0.6, (n, 3)).astype(np.float32)
    offsets = np.array([[0.0, 0.0], [-0.6, -0.5], [0.6, -0.5]], np.float32)
    c = jnp.asarray(np.stack([x, y], -1)[:, None, :] + offsets)

    def one(c, a):
        cand = b2._candidates(scene, c, a, seg_a, seg_b)
        every = jnp.broadcast_to(jnp.arange(1, ll.NUM_SEGMENTS), (3, ll.NUM_SEGMENTS - 1))
        full = b2.collide_all(scene, c, a, *b2._gather_segments(seg_a, seg_b, every))
        return cand, full.count

    cand, count = jax.jit(jax.vmap(one))(c, jnp.asarray(ang))
    cand, count = np.asarray(cand), np.asarray(count)
    touching = count > 0
    assert touching.sum() > 50  # the poses do reach the ground
    for i, k, e in zip(*np.nonzero(touching), strict=True):
        assert e + 1 in cand[i, k], (i, k, e + 1, cand[i, k])
