"""The phase profile of one SR-GHN generation.

:func:`generation_phases` splits :meth:`~selfref_ghn.evolution.generation.Evolution.step` into
its parts (mutation, the children's policy generation, rollouts, selection), each with the
inputs the fused step gives it; :func:`profile_phases` jits each alone and reports their times
and fractions: it tells where to optimise.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from selfref_ghn.tools.bench.measure import median, timed_compile, xla_gflop


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

    Raises:
        ValueError: for a config whose ``evolution_mode`` is not ``elitist_union`` (the other
            modes evaluate the children only; their phases are not these).
    """
    import jax
    import jax.numpy as jnp

    if evo.config.evolution_mode != "elitist_union":
        raise ValueError(
            f"the phase profile follows the elitist_union step, not evolution_mode="
            f"{evo.config.evolution_mode!r}"
        )
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
            compiled[name], compile_s[name] = timed_compile(jax.jit(fn), *args)
            gflop[name] = xla_gflop(compiled[name])
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
    sec = {k: median(v) for k, v in times.items()}
    total = sum(sec.values())
    rounds = [sum(t) for t in zip(*times.values(), strict=True)] if times else []
    return {
        "seconds": sec,
        "fractions": {k: v / total for k, v in sec.items()} if total > 0 else {},
        "sum_of_phases_s": total,
        "step_s": median(step_times) if step_times else None,
        "step_over_phases": (
            median([a / b for a, b in zip(step_times, rounds, strict=True)])
            if step_times and len(sec) == 4
            else None
        ),
        "compile_s": compile_s,
        "gflop": gflop,
        "rollout_bound_s": bound_s,
        "errors": errors,
    }
