"""The benchmark's cases: what :class:`Case` a workload measures, and :func:`plan`, which
turns workload letters into the cases to run.

Workloads: (a) preset ``cartpole-switch-long``; (b) CartPole-Switch at P=1024, C=2;
(c) a population sweep on CartPole; (d) LunarLander-Switch and Ant where their modules import;
(e) a 4x wider policy, to split the generation cost into hypernetwork and rollout parts;
(f) (also ``heads``) every deterministic head on policies from 226 to 200k parameters
(:mod:`selfref_ghn.tools.bench.heads`), SR-GHN against the rollout bound only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from selfref_ghn import presets
from selfref_ghn.config import Config
from selfref_ghn.tools.bench.heads import head_cases

WORKLOADS = ("a", "b", "c", "d", "e", "f")
DEFAULT_SWEEP = (64, 256, 1024, 4096)
FULL_SWEEP = (64, 256, 1024, 4096, 16384)


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
        env_spec: ``(obs_shape, num_actions, discrete)`` of a
            :mod:`~selfref_ghn.tools.bench.synthetic` environment that replaces
            ``config.env_id``'s; ``None``: the registered one.
        methods: the methods to measure (default: all of ``harness.METHODS``).
    """

    name: str
    workload: str
    config: Config
    chunk: int
    repeats: int
    profile: bool = False
    env_spec: tuple[tuple[int, ...], int, bool] | None = None
    methods: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "workload": self.workload,
            "config": self.config.to_dict(),
            "chunk": self.chunk,
            "repeats": self.repeats,
            "profile": self.profile,
            "env_spec": None if self.env_spec is None else list(self.env_spec),
            "methods": list(self.methods),
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
            env_spec=_env_spec(d.get("env_spec")),
            methods=tuple(d.get("methods", ())),
        )


def _env_spec(spec: Any) -> tuple[tuple[int, ...], int, bool] | None:
    if spec is None:
        return None
    shape, actions, discrete = spec
    return tuple(int(x) for x in shape), int(actions), bool(discrete)


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
        wl = "f" if wl == "heads" else wl
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
        elif wl == "f":
            for hc in head_cases(quick):
                cfg = hc.config.with_overrides(overrides) if overrides else hc.config
                rep = repeats or hc.repeats
                methods = ("sr_ghn", "rollout_bound")
                cases.append(Case(hc.name, "f", cfg, chunk or 1, rep, False, hc.env_spec, methods))
        else:
            raise ValueError(f"unknown workload {wl!r}; one of {', '.join(WORKLOADS)}")
    # The largest populations and the heavy environments last: a time budget that runs out
    # skips only those.
    # Workload (f) comes after all of them (its heaviest cases, the dense head on the largest
    # policies, last of all).
    cases.sort(
        key=lambda c: (c.workload == "f", c.workload == "d", c.config.population_size > 1024)
    )
    return cases, skipped
