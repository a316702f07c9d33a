"""Benchmark harness: how close one SR-GHN generation runs to the rollout bound.

DESIGN §4 makes a generation one compiled program (mutate, generate policies, roll out, select);
this module measures that program against the two things it should be compared with, side by
side in the same process, interleaved, so that a loaded machine slows all three alike:

* the **rollout bound**: the same environment, horizon, episodes, policy network and batch size
  (``P * (1 + C)`` members x ``episodes``), rolling out *fixed* per-member policy parameters
  (one distinct copy per member, drawn once and passed in as an argument) for every step of
  the horizon: no mutation, no hypernetwork, no selection. The other two methods' rollouts stop
  once every episode of the batch has ended, which an evolved population's rarely do; only a
  generation whose episodes all end early can beat the bound;
* **evosax** ``Open_ES`` evolving the same policy network directly, with population
  ``P * (1 + C)`` (the same episodes per generation), one generation = ask + evaluate + tell.

All three run the same number of generations per call in one ``lax.scan``; SR-GHN through
:meth:`~selfref_ghn.evolution.generation.Evolution.compiled_chunk`, the path a real run takes. For
each
method: compile time, steady generations/s (median of the timed calls after a warm-up call),
simulated environment steps/s (members x episodes x horizon per generation: what the bound
simulates; the others may stop earlier), peak host memory (``VmHWM``, reset
before each method; SR-GHN runs first, so its peak is that of a process that ran nothing else)
and, where the device reports it, device memory.

A **phase profile** jits each part of one generation separately (mutation, the children's
policy generation, rollouts, selection), each on the inputs the fused step gives it
(:func:`generation_phases`), and reports their times and fractions: it tells where to optimise.

Workloads: (a) preset ``cartpole-switch-long``; (b) CartPole-Switch at P=1024, C=2;
(c) a population sweep on CartPole; (d) LunarLander-Switch and Ant where their modules import;
(e) a 4x wider policy, to split the generation cost into hypernetwork and rollout parts.

Every measured case runs in a fresh subprocess, so peaks are per case. Results go to
``OUT/bench.json`` (all figures and the machine) and ``OUT/bench.md`` (tables), and a plot of
throughput against population size to ``OUT/performance_population.png``.

Example:
    ``python -m selfref_ghn.tools.bench --out bench_results --quick``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from selfref_ghn import presets
from selfref_ghn.config import Config

METHODS = ("sr_ghn", "rollout_bound", "open_es")
METHOD_LABELS = {"sr_ghn": "SR-GHN", "rollout_bound": "rollout bound", "open_es": "Open_ES"}
WORKLOADS = ("a", "b", "c", "d", "e")
DEFAULT_SWEEP = (64, 256, 1024, 4096)
FULL_SWEEP = (64, 256, 1024, 4096, 16384)
_STOP = 2**30  # ``stop_at`` for timed chunks: never reached, no generation is skipped


@dataclasses.dataclass(frozen=True)
class Case:
    """One measured configuration: a config plus how to time it.

    Attributes:
        name: unique case name, e.g. ``"b"`` or ``"c-P4096"``.
        workload: the workload's letter.
        config: the run configuration (population, horizon, policy, env).
        chunk: generations per compiled call, the same for all three methods.
        repeats: timed calls per method after the warm-up call.
        profile: also run the phase profile.
    """

    name: str
    workload: str
    config: Config
    chunk: int
    repeats: int
    profile: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "workload": self.workload,
            "config": self.config.to_dict(),
            "chunk": self.chunk,
            "repeats": self.repeats,
            "profile": self.profile,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Case:
        return cls(
            name=d["name"],
            workload=d["workload"],
            config=Config.from_dict(d["config"]),
            chunk=int(d["chunk"]),
            repeats=int(d["repeats"]),
            profile=bool(d["profile"]),
        )


# ---------------------------------------------------------------------------- planning
def _cartpole(population: int, **kw: Any) -> Config:
    base = dict(env_id="CartPole-Switch", population_size=population, num_children=2, horizon=500)
    return Config(**{**base, **kw}).validate()


def _env_status(env_id: str) -> str | None:
    """``None`` if ``env_id`` can be made here, else why not (one line)."""
    from selfref_ghn import envs

    if env_id not in envs.registered():
        return f"{env_id} is not in the environment registry"
    try:
        envs.make(env_id)
    except Exception as e:  # noqa: BLE001 - any import or build failure means "skip"
        return f"{env_id} unavailable: {type(e).__name__}: {str(e).splitlines()[0][:160]}"
    return None


def plan(
    workloads: Sequence[str],
    quick: bool = False,
    populations: Sequence[int] | None = None,
    overrides: dict[str, str] | None = None,
    repeats: int | None = None,
    chunk: int | None = None,
) -> tuple[list[Case], list[dict[str, str]]]:
    """The cases to measure for the chosen workloads.

    Args:
        workloads: letters from :data:`WORKLOADS`.
        quick: a short version (smaller populations, fewer repeats): about a minute.
        populations: the sweep's population sizes for workload (c).
        overrides: ``key=value`` config overrides applied to every case (e.g. a short horizon
            for tests).
        repeats: timed calls per method, overriding each case's default.
        chunk: generations per call, overriding each case's default.

    Returns:
        ``(cases, skipped)``: the cases in run order, and ``{"workload", "reason"}`` notes for
        workloads that cannot run here.
    """
    cases: list[Case] = []
    skipped: list[dict[str, str]] = []
    r = 2 if quick else 5

    def add(name: str, wl: str, cfg: Config, ch: int, rep: int, profile: bool = False) -> None:
        if overrides:
            cfg = cfg.with_overrides(overrides)
        cases.append(Case(name, wl, cfg, chunk or ch, repeats or rep, profile and not quick))

    for wl in workloads:
        if wl == "a":
            cfg = presets.get("cartpole-switch-long")
            add("a", "a", cfg, 10 if quick else 20, r, profile=True)
        elif wl == "b":
            p = 256 if quick else 1024
            add("b" if not quick else "b-quick", "b", _cartpole(p), 1, 2 if quick else 3, True)
        elif wl == "c":
            sweep = populations or ((64,) if quick else DEFAULT_SWEEP)
            for p in sweep:
                if "b" in workloads and p == (256 if quick else 1024) and not overrides:
                    continue  # the same configuration as workload (b): measured there
                add(f"c-P{p}", "c", _cartpole(p), 2 if p <= 1024 else 1, max(2, r - 2))
        elif wl == "d":
            for env_id in ("LunarLander-Switch", "Ant-Switch"):
                why = _env_status(env_id)
                if why is not None:
                    skipped.append({"workload": "d", "env": env_id, "reason": why})
                    continue
                p, horizon = (16, 200) if quick else (32, 1000)
                # The paper's Ant policy is 32-32-32; LunarLander uses the default policy.
                hidden = (32, 32, 32) if env_id.startswith("Ant") else (32,)
                cfg = _cartpole(p, env_id=env_id, horizon=horizon, policy_hidden=hidden)
                add(f"d-{env_id}", "d", cfg, 1, max(1, r - 4))
        elif wl == "e":
            p = 64 if quick else 256
            for width in (32, 128):
                add(f"e-w{width}", "e", _cartpole(p, policy_hidden=(width,)), 2, r - 1)
        else:
            raise ValueError(f"unknown workload {wl!r}; one of {', '.join(WORKLOADS)}")
    # The largest populations and the heavy environments last: a time budget that runs out
    # skips only those.
    cases.sort(key=lambda c: (c.workload == "d", c.config.population_size > 1024))
    return cases, skipped


# ---------------------------------------------------------------------------- memory
def _vm_hwm_mb() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset this process's peak resident memory (Linux ``clear_refs``); ``False`` if not."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _rss_peak_mb() -> float:
    hwm = _vm_hwm_mb()
    if hwm is not None:
        return hwm
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _device_memory_mb() -> dict[str, float] | None:
    import jax

    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - backends without memory stats
        return None
    if not stats:
        return None
    return {k: v / 2**20 for k, v in stats.items() if k in ("peak_bytes_in_use", "bytes_in_use")}


# ---------------------------------------------------------------------------- builders
def _timed_compile(fn: Callable, *args: Any) -> tuple[Callable, float]:
    t0 = time.perf_counter()
    compiled = fn.lower(*args).compile()
    return compiled, time.perf_counter() - t0


def _gflop(compiled: Any) -> float | None:
    """XLA's own count of floating-point operations of a compiled call, in GFLOP."""
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return float(cost["flops"]) / 1e9 if cost and "flops" in cost else None
    except Exception:  # noqa: BLE001 - not every backend reports costs
        return None


def build_methods(case: Case) -> tuple[dict[str, tuple[Callable, Any, Callable | None]], Any]:
    """The three methods of one case as ``name -> (jitted fn, initial carry)``.

    Each jitted function maps ``carry -> (carry, per-generation outputs)`` and runs
    ``case.chunk`` generations in one ``lax.scan``; the carry is donated.

    Args:
        case: the case to build.

    Returns:
        ``(methods, evo)``: ``methods`` maps each of :data:`METHODS` to ``(jitted fn, initial
        carry, call)`` where ``call(compiled, carry)`` runs it (``None``: ``compiled(carry)``);
        ``evo`` is the case's :class:`~selfref_ghn.evolution.generation.Evolution`.
    """
    import jax
    import jax.numpy as jnp
    from evosax.algorithms import Open_ES

    from selfref_ghn.evolution.generation import Evolution
    from selfref_ghn.evolution.rollout import evaluate

    cfg = case.config
    evo = Evolution.create(cfg)
    n = cfg.num_members
    key = jax.random.PRNGKey(cfg.seed)
    state = evo.init(jax.random.PRNGKey(cfg.seed))  # its own buffers: the state is donated
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
    member_params = jax.vmap(lambda k: evo.policy.init(k, obs)["params"])(member_keys)

    def bound_chunk(carry: tuple[jax.Array, Any]) -> tuple[Any, jax.Array]:
        g0, params = carry

        def body(g: jax.Array, _: None) -> tuple[jax.Array, jax.Array]:
            eval_key = jax.random.fold_in(jax.random.fold_in(key, g), 1)
            # every step of the horizon: these random policies' episodes end early, an
            # evolved population's do not
            return g + 1, jnp.mean(eval_all(eval_key, g, params, exact_horizon=True))

        g, fit = jax.lax.scan(body, g0, None, length=case.chunk)
        return (g, params), fit

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

    methods = {
        "sr_ghn": (sr_chunk, state, sr_call),
        "rollout_bound": (
            jax.jit(bound_chunk, donate_argnums=0),
            (jnp.int32(0), member_params),
            None,
        ),
        "open_es": (jax.jit(es_chunk, donate_argnums=0), (es_state, jnp.int32(0)), None),
    }
    return methods, evo


def _median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


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
    baseline_mb = _rss_peak_mb()
    built, evo = build_methods(case)
    steps_per_gen = cfg.num_members * cfg.episodes * cfg.horizon
    out: dict[str, Any] = {
        **case.to_json(),
        "env_id": cfg.env_id,
        "population_size": cfg.population_size,
        "num_children": cfg.num_children,
        "members": cfg.num_members,
        "episodes": cfg.episodes,
        "horizon": cfg.horizon,
        "policy_hidden": list(cfg.policy_hidden),
        "ghn_num_params": evo.ghn.num_params,
        "env_steps_per_generation": steps_per_gen,
        "baseline_rss_mb": baseline_mb,
        "peak_reset_supported": _reset_peak(),
        "methods": {},
    }
    compiled: dict[str, Callable] = {}
    carries: dict[str, Any] = {}
    calls: dict[str, Callable] = {}
    for name in METHODS:
        fn, carry, call = built[name]
        _reset_peak()
        args = (carry, _STOP) if name == "sr_ghn" else (carry,)
        progress(f"{case.name}: compiling {METHOD_LABELS[name]}")
        c, compile_s = _timed_compile(fn, *args)
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
            "peak_rss_mb": _rss_peak_mb(),
            "device_memory_mb": _device_memory_mb(),
            "finite_outputs": bool(jnp.all(jnp.isfinite(jnp.asarray(_first_leaf(ys))))),
        }
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    for r in range(case.repeats):
        for name in METHODS:
            t0 = time.perf_counter()
            carries[name], ys = calls[name](compiled[name], carries[name])
            jax.block_until_ready((carries[name], ys))
            times[name].append((time.perf_counter() - t0) / case.chunk)
        progress(
            f"{case.name}: repeat {r + 1}/{case.repeats}: "
            + ", ".join(f"{METHOD_LABELS[m]} {times[m][-1] * 1e3:.1f} ms/gen" for m in METHODS)
        )
    for name in METHODS:
        gen_s = _median(times[name])
        out["methods"][name].update(
            generation_s=gen_s,
            generation_s_all=times[name],
            generations_per_s=1.0 / gen_s,
            env_steps_per_s=steps_per_gen / gen_s,
        )
    sr, bound, es = (out["methods"][m]["generation_s"] for m in METHODS)
    paired = {  # per interleaved round: robust to load that changes between rounds
        other: _median([a / b for a, b in zip(times["sr_ghn"], times[other], strict=True)])
        for other in ("rollout_bound", "open_es")
    }
    out["ratios"] = {
        "sr_ghn_over_bound": sr / bound,
        "sr_ghn_over_open_es": sr / es,
        "sr_ghn_over_bound_paired": paired["rollout_bound"],
        "sr_ghn_over_open_es_paired": paired["open_es"],
    }
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
    out["process_peak_rss_mb"] = _rss_peak_mb()
    out["device"] = {
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "device_kind": jax.devices()[0].device_kind,
    }
    return out


def _first_leaf(tree: Any) -> Any:
    import jax

    return jax.tree_util.tree_leaves(tree)[0]


def generation_phases(evo: Any, state: Any) -> dict[str, tuple[Callable, tuple]]:
    """The four phases of :meth:`Evolution.step`, each with the inputs the step gives it.

    The inputs are computed from ``state`` by the phases themselves, chained as in the step:

    * ``mutation``: :meth:`Evolution.mutate_population` of ``state``: ``(P * C, num_params)``
      children and the parents' rates;
    * ``policy_generation``: :meth:`Evolution.policies` of the **children only**
      (``(P * C, num_policy_params)``); the parents' policies are the ones stored in
      ``state.policy``, as in the step;
    * ``rollout``: :meth:`Evolution.evaluate_members` of the ``(P * (1 + C),
      num_policy_params)`` flat policies, parents' first;
    * ``selection``: the step's (mu + lambda) selection: finiteness mask, ``child_factor``
      mixing, :func:`~selfref_ghn.evolution.selection.survivors`, and the gather of the survivors'
      parameters and policies. It returns ``(fitness, params, policy)`` of the next state.

    What the step does besides (its metrics, observation statistics, the runaway monitor, the
    scan around it) belongs to no phase.

    Args:
        evo: the :class:`~selfref_ghn.evolution.generation.Evolution`.
        state: the state the generation starts from.

    Returns:
        ``{phase: (fn, args)}`` in step order; ``fn(*args)`` runs the phase (not jitted).
    """
    import jax
    import jax.numpy as jnp

    children, _ = jax.jit(evo.mutate_population)(state)
    policies = jnp.concatenate([state.policy, jax.jit(evo.policies)(children)])
    fitness = jax.jit(evo.evaluate_members)(state, policies).fitness
    return {
        "mutation": (evo.mutate_population, (state,)),
        "policy_generation": (evo.policies, (children,)),
        "rollout": (evo.evaluate_members, (state, policies)),
        "selection": (
            lambda *args: _selection(evo, *args),
            (state, children, policies, fitness),
        ),
    }


def _selection(evo: Any, state: Any, children: Any, policies: Any, fitness: Any) -> tuple:
    """The selection part of :meth:`Evolution.step`: next ``(fitness, params, policy)``."""
    import jax.numpy as jnp

    from selfref_ghn.evolution import selection

    P = evo.config.population_size
    params_finite = jnp.concatenate(
        [jnp.all(jnp.isfinite(state.params), 1), jnp.all(jnp.isfinite(children), 1)]
    )
    fitness = jnp.where(jnp.isfinite(fitness) & params_finite, fitness, -jnp.inf)
    sel_fitness = selection.selection_fitness(fitness, P, state.hparams.child_factor)
    top_fit, selected = selection.survivors(sel_fitness, P, evo.config.selection_ties)
    params = selection.gather_survivors(selected, state.params, children)
    return top_fit, params, policies[selected]


def profile_phases(
    evo: Any, repeats: int = 5, bound_s: float | None = None, state: Any = None
) -> dict[str, Any]:
    """Time the phases of one generation (:func:`generation_phases`), each jitted alone.

    The phases and the whole step (:meth:`Evolution.step` jitted alone, the reference for their
    sum) run interleaved, ``repeats`` rounds after a warm-up call each, on the inputs the fused
    step gives them from ``state``, so that load which changes between rounds changes all of
    them alike. Rollouts stop once every episode of the batch has ended, so their cost depends
    on the state: profile the generation whose fused time it is compared with.

    Args:
        evo: the :class:`~selfref_ghn.evolution.generation.Evolution`.
        repeats: timed rounds after a warm-up.
        bound_s: the rollout bound's generation time, reported beside the profile.
        state: the state the generation starts from; default the run's initial population.

    Returns:
        Median seconds per phase (``seconds``), the fraction of each phase in their sum, the
        step's median seconds (``step_s``) and the median over rounds of step / sum of phases
        (``step_over_phases``), compile seconds, XLA's FLOP count per phase, and any phase that
        failed under ``errors``.
    """
    import jax

    if state is None:
        state = evo.init(jax.random.PRNGKey(evo.config.seed))
    runs = {**generation_phases(evo, state), "step": (evo.step, (state,))}
    compiled: dict[str, Callable] = {}
    compile_s: dict[str, float] = {}
    gflop: dict[str, float | None] = {}
    errors: dict[str, str] = {}
    for name, (fn, args) in runs.items():
        try:
            compiled[name], compile_s[name] = _timed_compile(jax.jit(fn), *args)
            gflop[name] = _gflop(compiled[name])
            jax.block_until_ready(compiled[name](*args))
        except Exception as e:  # noqa: BLE001 - report, keep the rest of the profile
            errors[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    times: dict[str, list[float]] = {k: [] for k in compiled}
    for _ in range(repeats):
        for name in compiled:
            args = runs[name][1]
            t0 = time.perf_counter()
            jax.block_until_ready(compiled[name](*args))
            times[name].append(time.perf_counter() - t0)
    step_times = times.pop("step", None)
    sec = {k: _median(v) for k, v in times.items()}
    total = sum(sec.values())
    rounds = [sum(t) for t in zip(*times.values(), strict=True)] if times else []
    return {
        "seconds": sec,
        "fractions": {k: v / total for k, v in sec.items()} if total > 0 else {},
        "sum_of_phases_s": total,
        "step_s": _median(step_times) if step_times else None,
        "step_over_phases": (
            _median([a / b for a, b in zip(step_times, rounds, strict=True)])
            if step_times and len(sec) == 4
            else None
        ),
        "compile_s": compile_s,
        "gflop": gflop,
        "rollout_bound_s": bound_s,
        "errors": errors,
    }


# ---------------------------------------------------------------------------- machine
def machine_info() -> dict[str, Any]:
    """CPU model, cores, memory, load, jax version and backend, git hash."""
    import jax

    from selfref_ghn.run.folder import git_hash

    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gb = None
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "memory_gb": mem_gb,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax_version": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "git_hash": git_hash(),
        "git_modified_files": _git_modified_files(),
    }


def _git_modified_files() -> list[str] | None:
    """Tracked files with uncommitted changes (what the git hash alone does not describe)."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return [line[3:] for line in out.stdout.splitlines() if line.strip()]


# ---------------------------------------------------------------------------- orchestration
def _run_worker(case: Case, timeout_s: float | None) -> dict[str, Any]:
    """Measure ``case`` in a fresh Python process; errors become ``{"error": ...}``."""
    with tempfile.TemporaryDirectory() as tmp:
        spec, result = Path(tmp) / "case.json", Path(tmp) / "result.json"
        spec.write_text(json.dumps(case.to_json()))
        cmd = [sys.executable, "-m", "selfref_ghn.tools.bench", "--worker", str(spec), str(result)]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, timeout=timeout_s, stdout=sys.stderr)
        except subprocess.TimeoutExpired:
            return {**case.to_json(), "error": f"timed out after {timeout_s:.0f} s"}
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not result.exists():
            why = f"worker exited with status {proc.returncode}"
            if proc.returncode in (-9, 137):
                why += " (killed: out of memory?)"
            return {**case.to_json(), "error": why, "wall_s": wall}
        out = json.loads(result.read_text())
        out["wall_s"] = wall
        return out


def run_benchmark(
    cases: Sequence[Case],
    out_dir: str | Path,
    skipped: Sequence[dict[str, str]] = (),
    budget_s: float | None = None,
    in_process: bool = False,
    argv: Sequence[str] | None = None,
    limit_s: float | None = None,
) -> dict[str, Any]:
    """Measure every case (one subprocess each), then write JSON, markdown and the plot.

    Args:
        cases: from :func:`plan`.
        out_dir: results folder (created).
        skipped: notes for workloads that were not run.
        budget_s: stop starting new cases once this much wall time has passed.
        in_process: measure in this process instead (tests; peaks are then not per case).
        argv: the command line, recorded in the JSON.
        limit_s: stop a case still running at this wall time (recorded as timed out), so
            the whole run ends by then; default ``budget_s * 1.45``.

    Returns:
        The results dict written to ``bench.json``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results: dict[str, Any] = {
        "command": " ".join(["python -m selfref_ghn.tools.bench", *(argv or [])]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine_info(),
        "skipped": list(skipped),
        "cases": [],
    }

    def say(msg: str) -> None:
        print(f"[bench {time.perf_counter() - start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    failed_sweep = False
    for case in cases:
        elapsed = time.perf_counter() - start
        if budget_s is not None and elapsed > budget_s:
            results["skipped"].append(
                {"workload": case.workload, "case": case.name, "reason": "time budget spent"}
            )
            continue
        if case.workload == "c" and failed_sweep:
            results["skipped"].append(
                {"workload": "c", "case": case.name, "reason": "a smaller population failed"}
            )
            continue
        say(f"case {case.name}: P={case.config.population_size} {case.config.env_id}")
        if in_process:
            res = measure_case(case, say)
        else:
            limit = limit_s if limit_s is not None else (budget_s and budget_s * 1.45)
            remaining = None if not limit else max(limit - elapsed, 60.0)
            res = _run_worker(case, remaining)
        if "error" in res:
            say(f"case {case.name} failed: {res['error']}")
            failed_sweep = failed_sweep or case.workload == "c"
        results["cases"].append(res)
        _write_outputs(results, out, time.perf_counter() - start)
    measured = [c["device"] for c in results["cases"] if "device" in c]
    if measured:  # the workers' backend, not the planning process's
        results["machine"].update(measured[0])
    results["machine"]["load_average_end"] = (
        list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    )
    _write_outputs(results, out, time.perf_counter() - start)
    plot_population(results, out / "performance_population.png")
    say(f"wrote {out / 'bench.json'} and {out / 'bench.md'}")
    return results


def _write_outputs(results: dict[str, Any], out: Path, wall_s: float) -> None:
    results["total_wall_s"] = wall_s
    (out / "bench.json").write_text(json.dumps(results, indent=2, default=_json_default))
    (out / "bench.md").write_text(markdown(results))


def _json_default(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    try:
        return float(x)
    except (TypeError, ValueError):
        return str(x)


# ---------------------------------------------------------------------------- reports
def _fmt(x: float | None, digits: int = 1) -> str:
    if x is None:
        return "n/a"
    if abs(x) >= 1e6:
        return f"{x / 1e6:.{digits}f} M"
    if abs(x) >= 1e4:
        return f"{x / 1e3:.0f} k"
    return f"{x:.{digits}f}"


def markdown(results: dict[str, Any]) -> str:
    """The results as markdown tables: throughput, compile and memory, profile, width.

    Args:
        results: the dict written to ``bench.json``.

    Returns:
        Markdown text.
    """
    m = results["machine"]
    lines = [
        f"Command: `{results['command']}`  ",
        f"Git: `{m['git_hash']}`, jax {m['jax_version']} ({m['backend']}), "
        f"{m['cpu_model']}, {m['cpus_usable']} usable cores, load average at start "
        + ", ".join(f"{x:.1f}" for x in (m.get("load_average") or []))
        + (
            ", at end " + ", ".join(f"{x:.1f}" for x in m["load_average_end"])
            if m.get("load_average_end")
            else ""
        )
        + f"; total {results.get('total_wall_s', 0):.0f} s."
        + (
            f"  \nUncommitted changes measured: {', '.join(m['git_modified_files'])}."
            if m.get("git_modified_files")
            else ""
        ),
        "",
        "### Generation time (median ms per generation; ratios < 1 would beat the bound)",
        "",
        "| case | env | P | C | members | horizon | policy | SR-GHN ms | bound ms | Open_ES ms "
        "| SR/bound | SR/Open_ES | SR-GHN env-steps/s | bound env-steps/s |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ok = [c for c in results["cases"] if "error" not in c]
    for c in ok:
        ms = {k: c["methods"][k]["generation_s"] * 1e3 for k in METHODS}
        lines.append(
            f"| {c['name']} | {c['env_id']} | {c['population_size']} | {c['num_children']} "
            f"| {c['members']} | {c['horizon']} | {c['policy_hidden']} | {ms['sr_ghn']:.1f} "
            f"| {ms['rollout_bound']:.1f} | {ms['open_es']:.1f} "
            f"| {c['ratios']['sr_ghn_over_bound']:.2f} | {c['ratios']['sr_ghn_over_open_es']:.2f} "
            f"| {_fmt(c['methods']['sr_ghn']['env_steps_per_s'])} "
            f"| {_fmt(c['methods']['rollout_bound']['env_steps_per_s'])} |"
        )
    lines += [
        "",
        "### Compile time (s) and peak host memory (MiB, resident; reset before each method)",
        "",
        "| case | SR-GHN compile | bound compile | Open_ES compile | SR-GHN peak RSS "
        "| bound peak RSS | Open_ES peak RSS | process peak | SR-GHN device peak |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in ok:
        mm = c["methods"]
        dev = (mm["sr_ghn"].get("device_memory_mb") or {}).get("peak_bytes_in_use")
        lines.append(
            f"| {c['name']} | {mm['sr_ghn']['compile_s']:.1f} "
            f"| {mm['rollout_bound']['compile_s']:.1f} | {mm['open_es']['compile_s']:.1f} "
            f"| {mm['sr_ghn']['peak_rss_mb']:.0f} | {mm['rollout_bound']['peak_rss_mb']:.0f} "
            f"| {mm['open_es']['peak_rss_mb']:.0f} | {c['process_peak_rss_mb']:.0f} "
            f"| {_fmt(dev, 0)} |"
        )
    prof = [c for c in ok if c.get("profile")]
    if prof:
        lines += [
            "",
            "### Phase profile of one SR-GHN generation (each phase jitted alone on the fused "
            "step's inputs; ms, fraction)",
            "",
            "| case | generation | mutation | policy generation | rollout | selection "
            "| sum of phases "
            "| step alone | step / sum | fused generation | rollout bound |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for c in prof:
            p = c["profile"]
            s, f = p["seconds"], p["fractions"]

            def cell(k: str, s: dict = s, f: dict = f) -> str:
                return f"{s[k] * 1e3:.1f} ({f.get(k, 0) * 100:.0f}%)" if k in s else "n/a"

            lines.append(
                f"| {c['name']} | {p.get('generation', 'n/a')} | {cell('mutation')} "
                f"| {cell('policy_generation')} "
                f"| {cell('rollout')} | {cell('selection')} | {p['sum_of_phases_s'] * 1e3:.1f} "
                f"| {_fmt(p['step_s'] and p['step_s'] * 1e3)} "
                f"| {_fmt(p['step_over_phases'], 2)} "
                f"| {p['fused_generation_s'] * 1e3:.1f} | {p['rollout_bound_s'] * 1e3:.1f} |"
            )
            if p.get("errors"):
                lines.append(f"| {c['name']} errors | | {p['errors']} | | | | | | | | |")
        lines += [
            "",
            "*generation*: the state profiled, the one the timed calls ended with; "
            "*step alone*: `Evolution.step` jitted alone, timed in the same rounds as the phases; "
            "*step / sum*: its median ratio to the phases' sum over those rounds; *fused "
            "generation*: one generation of `compiled_chunk` (the first table).",
        ]
        work = [c for c in prof if c["profile"].get("gflop")]
        if work:
            lines += [
                "",
                "Work per phase (GFLOP per generation: XLA's static count of the compiled phase, "
                "which counts a loop body once, so the scanned GNN rounds and environment steps "
                "are undercounted: a lower bound):",
                "",
                "| case | mutation | policy generation | rollout | selection |",
                "|---|---:|---:|---:|---:|",
            ]
            for c in work:
                g = c["profile"]["gflop"]
                cells = " | ".join(
                    _fmt(g.get(k), 3) if g.get(k) is not None else "n/a"
                    for k in ("mutation", "policy_generation", "rollout", "selection")
                )
                lines.append(f"| {c['name']} | {cells} |")
    width = [c for c in ok if c["workload"] == "e"]
    if width:
        lines += [
            "",
            "### Policy width (workload e): hypernetwork part = generation - rollout bound",
            "",
            "| case | policy | SR-GHN ms | rollout part (bound) ms | hypernetwork part ms |",
            "|---|---|---:|---:|---:|",
        ]
        for c in width:
            lines.append(
                f"| {c['name']} | {c['policy_hidden']} "
                f"| {c['methods']['sr_ghn']['generation_s'] * 1e3:.1f} "
                f"| {c['rollout_s'] * 1e3:.1f} | {c['hypernetwork_s'] * 1e3:.1f} |"
            )
        if len(width) == 2:
            hn = width[1]["hypernetwork_s"] - width[0]["hypernetwork_s"]
            ro = width[1]["rollout_s"] - width[0]["rollout_s"]
            lines.append(
                f"\nWidening the policy added {hn * 1e3:.1f} ms to the hypernetwork part and "
                f"{ro * 1e3:.1f} ms to the rollout part."
            )
    bad = [c for c in results["cases"] if "error" in c]
    notes = [
        f"- {s.get('case', s.get('env', s['workload']))}: skipped ({s['reason']})"
        for s in results["skipped"]
    ] + [f"- {c['name']}: failed ({c['error']})" for c in bad]
    if notes:
        lines += ["", "Not measured:", "", *notes]
    return "\n".join(lines) + "\n"


def plot_population(results: dict[str, Any], path: str | Path) -> bool:
    """Throughput (env-steps/s) against population size, CartPole cases (workloads b, c).

    Returns:
        ``True`` if a plot was written (it needs at least one such case).
    """
    pts = [
        c
        for c in results["cases"]
        if "error" not in c
        and c["workload"] in ("b", "c")
        and c["policy_hidden"] == [32]
        and c["env_id"].startswith("CartPole")
    ]
    if not pts:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts.sort(key=lambda c: c["population_size"])
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, marker in zip(METHODS, "osd", strict=True):
        ax.plot(
            [c["population_size"] for c in pts],
            [c["methods"][name]["env_steps_per_s"] for c in pts],
            marker=marker,
            label=METHOD_LABELS[name],
        )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("population size P (members evaluated: 3P)")
    ax.set_ylabel("simulated env steps / s")
    m = results["machine"]
    ax.set_title(f"CartPole-Switch, horizon 500 ({m['backend']}, {m['cpus_usable']} cores)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    """The benchmark's command-line options."""
    p.add_argument("--out", type=Path, default=Path("bench_results"), help="results folder")
    p.add_argument(
        "--quick", action="store_true", help="a short version: small cases, fewer repeats"
    )
    p.add_argument(
        "--workloads",
        default=None,
        help="comma-separated workload letters from a,b,c,d,e (default: all; with --quick: a,c)",
    )
    p.add_argument(
        "--populations",
        default=None,
        help=f"sweep sizes for (c), comma-separated (default {','.join(map(str, DEFAULT_SWEEP))})",
    )
    p.add_argument(
        "--full-sweep",
        action="store_true",
        help=f"sweep {','.join(map(str, FULL_SWEEP))} (may exceed memory or time on a CPU)",
    )
    p.add_argument("--repeats", type=int, default=None, help="timed calls per method")
    p.add_argument("--chunk", type=int, default=None, help="generations per compiled call")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field in every case (e.g. horizon=50)",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=600.0,
        help="seconds after which no new case starts (default 600)",
    )
    p.add_argument(
        "--limit",
        type=float,
        default=870.0,
        help="seconds after which a running case is stopped (default 870: under 15 minutes)",
    )
    p.add_argument(
        "--in-process", action="store_true", help="no subprocess per case (peaks not per case)"
    )


def run_from_args(args: argparse.Namespace, argv: Sequence[str] | None = None) -> int:
    """Plan and run the benchmark from parsed arguments; returns an exit code."""
    if not args.in_process:
        # The parent only plans and reports: keep it off the accelerator, whose memory the
        # workers need (a GPU backend would preallocate most of it here).
        import jax

        jax.config.update("jax_platforms", "cpu")
    chosen = args.workloads or ("a,c" if args.quick else ",".join(WORKLOADS))
    workloads = [w.strip() for w in chosen.split(",") if w.strip()]
    populations = None
    if args.populations:
        populations = [int(x) for x in args.populations.split(",")]
    elif args.full_sweep:
        populations = list(FULL_SWEEP)
    overrides = {}
    for pair in args.set:
        if "=" not in pair:
            print(f"bench: --set expects key=value, got {pair!r}", file=sys.stderr)
            return 2
        k, v = pair.split("=", 1)
        overrides[k.strip()] = v
    cases, skipped = plan(
        workloads, args.quick, populations, overrides or None, args.repeats, args.chunk
    )
    results = run_benchmark(
        cases,
        args.out,
        skipped,
        args.budget,
        args.in_process,
        argv=list(argv or []),
        limit_s=args.limit,
    )
    print(markdown(results))
    return 0 if all("error" not in c for c in results["cases"]) else 1


def register(subparsers: Any) -> None:
    """Add the ``bench`` subcommand to the ``selfref-ghn`` command line."""
    p = subparsers.add_parser("bench", help="benchmark SR-GHN against the rollout bound")
    add_arguments(p)
    p.set_defaults(func=lambda args: run_from_args(args, sys.argv[2:]))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m selfref_ghn.tools.bench``; ``--worker SPEC RESULT`` measures one case."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker"]:
        case = Case.from_json(json.loads(Path(argv[1]).read_text()))
        res = measure_case(
            case, lambda s: print(f"[bench worker] {s}", file=sys.stderr, flush=True)
        )
        Path(argv[2]).write_text(json.dumps(res, default=_json_default))
        return 0
    parser = argparse.ArgumentParser(prog="python -m selfref_ghn.tools.bench", description=__doc__)
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv), argv)


if __name__ == "__main__":
    sys.exit(main())
