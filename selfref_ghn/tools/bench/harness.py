"""Benchmark harness: one case's three methods, built and timed side by side.

The three methods of a case (the package docstring says what each is and why): SR-GHN's
generation, the rollout bound, and evosax ``Open_ES`` on the same policy network, timed in the
same process, interleaved. For each: compile time, steady generations/s, simulated
environment steps/s, peak host memory and, where the device reports it, device memory. A case
may measure only some methods (``Case.methods``) and run on a synthetic environment
(``Case.env_spec``, :mod:`~selfref_ghn.tools.bench.synthetic`).
:func:`build_methods` builds the three,
:func:`measure_case` times them (and runs the phase profile where the case asks for it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from selfref_ghn.tools.bench import synthetic
from selfref_ghn.tools.bench.cases import Case
from selfref_ghn.tools.bench.measure import (
    device_memory_mb,
    median,
    reset_peak,
    rss_peak_mb,
    timed_compile,
)
from selfref_ghn.tools.bench.profile import profile_phases

METHODS = ("sr_ghn", "rollout_bound", "open_es")
METHOD_LABELS = {"sr_ghn": "SR-GHN", "rollout_bound": "rollout bound", "open_es": "Open_ES"}
_STOP = 2**30  # ``stop_at`` for timed chunks: never reached, no generation is skipped


def evolution_of(case: Case) -> Any:
    """The case's :class:`~selfref_ghn.evolution.generation.Evolution`: its config on its
    registered environment, or on the synthetic one of ``case.env_spec``."""
    from selfref_ghn.evolution.generation import Evolution

    if case.env_spec is None:
        return Evolution.create(case.config)
    env, env_params = synthetic.make(*case.env_spec)
    return Evolution.create(case.config, env=env, env_params=env_params)


def build_methods(case: Case) -> tuple[dict[str, tuple[Callable, Any, Callable | None]], Any]:
    """The three methods of one case as ``name -> (jitted fn, initial carry)``.

    Each jitted function maps ``carry -> (carry, per-generation outputs)`` and runs
    ``case.chunk`` generations in one ``lax.scan``; the carry is donated.

    Args:
        case: the case to build.

    Returns:
        ``(methods, evo)``: ``methods`` maps each of :data:`METHODS` (or of ``case.methods``)
        to ``(jitted fn, initial carry, call)`` where ``call(compiled, carry)`` runs it
        (``None``: ``compiled(carry)``); ``evo`` is the case's
        :class:`~selfref_ghn.evolution.generation.Evolution`.
    """
    import jax
    import jax.numpy as jnp
    from evosax.algorithms import Open_ES

    from selfref_ghn.evolution.rollout import evaluate

    cfg = case.config
    evo = evolution_of(case)
    n = cfg.num_members
    key = jax.random.PRNGKey(cfg.seed)
    # its own buffers (the state is donated); one compiled program, not many eager ones
    state = jax.jit(evo.init)(jax.random.PRNGKey(cfg.seed))
    obs_stats = state.obs_stats if cfg.obs_norm else None
    obs = jnp.zeros(evo.obs_shape)

    def eval_all(
        eval_key: jax.Array, g: jax.Array, member_params: Any, exact_horizon: bool = False
    ) -> jax.Array:
        env_params = evo.schedule.apply(evo.env_params, g)

        def one(m: jax.Array, p: Any) -> jax.Array:
            ev = evaluate(
                jax.random.fold_in(eval_key, m),
                evo.env,
                env_params,
                evo.policy_fn,
                p,
                cfg.horizon,
                cfg.episodes,
                obs_stats,
                exact_horizon=exact_horizon,
            )
            return ev.fitness

        return jax.vmap(one)(jnp.arange(n), member_params)

    # --- SR-GHN: the real run path.
    sr_chunk = evo.compiled_chunk(case.chunk)

    def sr_call(compiled: Callable, carry: Any) -> tuple[Any, Any]:
        return compiled(carry, _STOP)

    # --- rollout bound: distinct fixed parameters per member, passed in (not constants).
    member_keys = jax.random.split(jax.random.fold_in(key, 7), n)
    member_params = jax.jit(jax.vmap(lambda k: evo.policy.init(k, obs)["params"]))(member_keys)

    def bound_chunk(carry: tuple[jax.Array, Any]) -> tuple[Any, jax.Array]:
        g0, params = carry

        def body(g: jax.Array, _: None) -> tuple[jax.Array, jax.Array]:
            eval_key = jax.random.fold_in(jax.random.fold_in(key, g), 1)
            # every step of the horizon: these random policies' episodes end early, an
            # evolved population's do not
            return g + 1, jnp.mean(eval_all(eval_key, g, params, exact_horizon=True))

        g, fit = jax.lax.scan(body, g0, None, length=case.chunk)
        return (g, params), fit

    methods: dict[str, tuple[Callable, Any, Callable | None]] = {
        "sr_ghn": (sr_chunk, state, sr_call),
        "rollout_bound": (
            jax.jit(bound_chunk, donate_argnums=0),
            (jnp.int32(0), member_params),
            None,
        ),
    }
    if case.methods and "open_es" not in case.methods:
        return methods, evo

    # --- evosax Open_ES on the same policy network, population n (even when C is even).
    template = evo.policy.init(jax.random.PRNGKey(0), obs)["params"]
    pop = n if n % 2 == 0 else n + 1
    es = Open_ES(population_size=pop, solution=template)
    es_params = es.default_params
    es_state = es.init(jax.random.fold_in(key, 8), template, es_params)

    def es_chunk(carry: tuple[Any, jax.Array]) -> tuple[Any, jax.Array]:
        def body(c: tuple[Any, jax.Array], _: None) -> tuple[Any, jax.Array]:
            st, g = c
            gkey = jax.random.fold_in(key, g)
            k_ask, k_eval, k_tell = jax.random.split(gkey, 3)
            population, st = es.ask(k_ask, st, es_params)
            used = jax.tree.map(lambda x: x[:n], population)
            fit = eval_all(k_eval, g, used)
            fit = jnp.concatenate([fit, fit[: pop - n]])
            st, _ = es.tell(k_tell, population, -fit, st, es_params)  # evosax minimises
            return (st, g + 1), jnp.mean(fit)

        return jax.lax.scan(body, carry, None, length=case.chunk)

    methods["open_es"] = (jax.jit(es_chunk, donate_argnums=0), (es_state, jnp.int32(0)), None)
    return methods, evo


def measure_case(case: Case, progress: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Measure one case in this process: the three methods interleaved, then the profile.

    Args:
        case: the case.
        progress: called with one-line progress messages.

    Returns:
        A JSON-ready dict: per-method figures, ratios, the phase profile if asked for.
    """
    import jax
    import jax.numpy as jnp

    cfg = case.config
    jax.block_until_ready(jax.jit(lambda x: x + 1)(jnp.ones(4)))  # backend start-up, untimed
    baseline_mb = rss_peak_mb()
    built, evo = build_methods(case)
    names = case.methods or METHODS
    steps_per_gen = cfg.num_members * cfg.episodes * cfg.horizon
    out: dict[str, Any] = {
        **case.to_json(),
        "env_id": cfg.env_id if case.env_spec is None else evo.env.name,
        "head": cfg.head,
        "population_size": cfg.population_size,
        "num_children": cfg.num_children,
        "members": cfg.num_members,
        "episodes": cfg.episodes,
        "horizon": cfg.horizon,
        "policy_hidden": list(cfg.policy_hidden),
        "ghn_num_params": evo.ghn.num_params,
        "policy_num_params": evo.ghn.policy_graph.num_params,
        "basis_floats": evo.ghn.basis_floats,
        "env_steps_per_generation": steps_per_gen,
        "baseline_rss_mb": baseline_mb,
        "peak_reset_supported": reset_peak(),
        "methods": {},
    }
    compiled: dict[str, Callable] = {}
    carries: dict[str, Any] = {}
    calls: dict[str, Callable] = {}
    for name in names:
        fn, carry, call = built[name]
        reset_peak()
        args = (carry, _STOP) if name == "sr_ghn" else (carry,)
        progress(f"{case.name}: compiling {METHOD_LABELS[name]}")
        c, compile_s = timed_compile(fn, *args)
        compiled[name] = c
        calls[name] = call or (lambda f, x: f(x))
        t0 = time.perf_counter()
        carry, ys = calls[name](c, carry)
        jax.block_until_ready((carry, ys))
        warmup_s = time.perf_counter() - t0
        carries[name] = carry
        out["methods"][name] = {
            "compile_s": compile_s,
            "warmup_call_s": warmup_s,
            "peak_rss_mb": rss_peak_mb(),
            "device_memory_mb": device_memory_mb(),
            "finite_outputs": bool(jnp.all(jnp.isfinite(jnp.asarray(_first_leaf(ys))))),
        }
    times: dict[str, list[float]] = {m: [] for m in names}
    for r in range(case.repeats):
        for name in names:
            t0 = time.perf_counter()
            carries[name], ys = calls[name](compiled[name], carries[name])
            jax.block_until_ready((carries[name], ys))
            times[name].append((time.perf_counter() - t0) / case.chunk)
        progress(
            f"{case.name}: repeat {r + 1}/{case.repeats}: "
            + ", ".join(f"{METHOD_LABELS[m]} {times[m][-1] * 1e3:.1f} ms/gen" for m in names)
        )
    for name in names:
        gen_s = median(times[name])
        out["methods"][name].update(
            generation_s=gen_s,
            generation_s_all=times[name],
            generations_per_s=1.0 / gen_s,
            env_steps_per_s=steps_per_gen / gen_s,
        )
    sr, bound = (out["methods"][m]["generation_s"] for m in ("sr_ghn", "rollout_bound"))
    out["ratios"] = {}
    for other in ("rollout_bound", "open_es"):
        if other not in names:
            continue
        short = "bound" if other == "rollout_bound" else other
        out["ratios"][f"sr_ghn_over_{short}"] = sr / out["methods"][other]["generation_s"]
        # per interleaved round: robust to load that changes between rounds
        out["ratios"][f"sr_ghn_over_{short}_paired"] = median(
            [a / b for a, b in zip(times["sr_ghn"], times[other], strict=True)]
        )
    out["hypernetwork_s"] = sr - bound
    out["rollout_s"] = bound
    if case.profile:
        progress(f"{case.name}: phase profile")
        # the state the timed calls ended with: its episodes are as long as theirs
        out["profile"] = profile_phases(
            evo, repeats=max(3, case.repeats), bound_s=bound, state=carries["sr_ghn"]
        )
        out["profile"]["generation"] = int(carries["sr_ghn"].generation)
        out["profile"]["fused_generation_s"] = sr
    out["process_peak_rss_mb"] = rss_peak_mb()
    out["device"] = {
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "device_kind": jax.devices()[0].device_kind,
    }
    return out


def _first_leaf(tree: Any) -> Any:
    import jax

    return jax.tree_util.tree_leaves(tree)[0]
