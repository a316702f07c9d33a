"""Benchmark harness: how close one SR-GHN generation runs to the rollout bound.

DESIGN §4 makes a generation one compiled program (mutate, generate policies, roll out, select);
this package measures that program against the two things it should be compared with, side by
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
each method: compile time, steady generations/s (median of the timed calls after a warm-up call),
simulated environment steps/s (members x episodes x horizon per generation: what the bound
simulates; the others may stop earlier), peak host memory (``VmHWM``, reset
before each method; SR-GHN runs first, so its peak is that of a process that ran nothing else)
and, where the device reports it, device memory.

A **phase profile** jits each part of one generation separately (mutation, the children's
policy generation, rollouts, selection), each on the inputs the fused step gives it
(:func:`generation_phases`), and reports their times and fractions: it tells where to optimise.

Workloads: (a) preset ``cartpole-switch-long``; (b) CartPole-Switch at P=1024, C=2;
(c) a population sweep on CartPole; (d) LunarLander-Switch and Ant where their modules import;
(e) a 4x wider policy, to split the generation cost into hypernetwork and rollout parts;
(f) (``--workloads heads``) every deterministic head (DESIGN §2b) on MLP policies from 226 to
200k parameters: GHN parameters, basis floats, and the hypernetwork part against the rollout
bound (no Open_ES), on a synthetic environment where no registered one has the policy's sizes.

Every measured case runs in a fresh subprocess, so peaks are per case. Results go to
``OUT/bench.json`` (all figures and the machine) and ``OUT/bench.md`` (tables), and a plot of
throughput against population size to ``OUT/performance_population.png`` (and, for workload
(f), GHN parameters and hypernetwork part against policy size to ``OUT/performance_heads.png``).

Modules: ``cases`` (workloads and the cases they plan), ``measure`` (timing and memory
primitives), ``harness`` (the three methods of a case, built and timed), ``profile`` (the phase
profile), ``machine`` (what ran it), ``runner`` (one worker process per case, outputs),
``report`` (tables and plot), ``heads`` (workload f's policies, table and plot), ``synthetic``
(its environment of any size), ``cli`` (the command line; ``__main__`` runs it).

Example:
    ``python -m selfref_ghn.tools.bench --out bench_results --quick``
"""

from selfref_ghn.tools.bench.cases import DEFAULT_SWEEP, FULL_SWEEP, WORKLOADS, Case, plan
from selfref_ghn.tools.bench.cli import add_arguments, main, register, run_from_args
from selfref_ghn.tools.bench.harness import (
    METHOD_LABELS,
    METHODS,
    build_methods,
    evolution_of,
    measure_case,
)
from selfref_ghn.tools.bench.heads import POLICIES, PolicySpec, head_cases
from selfref_ghn.tools.bench.machine import machine_info
from selfref_ghn.tools.bench.profile import generation_phases, profile_phases
from selfref_ghn.tools.bench.report import markdown, plot_population
from selfref_ghn.tools.bench.runner import run_benchmark

__all__ = [
    "DEFAULT_SWEEP",
    "FULL_SWEEP",
    "METHODS",
    "METHOD_LABELS",
    "POLICIES",
    "WORKLOADS",
    "Case",
    "PolicySpec",
    "add_arguments",
    "build_methods",
    "evolution_of",
    "generation_phases",
    "head_cases",
    "machine_info",
    "main",
    "markdown",
    "measure_case",
    "plan",
    "plot_population",
    "profile_phases",
    "register",
    "run_benchmark",
    "run_from_args",
]
