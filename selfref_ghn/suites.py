"""Named non-stationary benchmark suites (DESIGN §3b "Suites"): environments, each with its
switch rule, run with one protocol by a list of methods on a list of seeds.

``selfref-ghn suite NAME`` runs one (:mod:`selfref_ghn.tools.suite`); ``get(name)`` returns it
and :meth:`Suite.configs` each environment's validated config.

* ``classic``: CartPole-v1, Acrobot-v1 and MountainCar-v0 with reversed actions,
  MountainCarContinuous-v0 with negated actions, Pendulum-v1 with its observation
  ``[cos, sin, w]`` seen as ``[sin, cos, -w]``; switched during generations [400, 700) and
  [900, 1200) of 1500; P=50, C=4, horizon 500, 10 seeds (the paper's protocol; a GPU command).
* ``classic-cpu``: the same environments and rules, P=16, horizon 200, 300 generations with
  the windows scaled by 1/5; 3 seeds; about an hour on a 2-core CPU for the
  nine evolutionary methods, PPO about as long again.
* ``minatar``: four MinAtar games with reversed actions, conv policies generated in blocks.
* ``brax``: Ant and HalfCheetah rewarded for running backwards, or for a target speed.

Example:
    >>> [c.switch for c in get("classic").configs().values()][:2]
    ['reverse_actions', 'reverse_actions']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from selfref_ghn.config import Config, ConfigError

GRADIENT_METHODS = ("ppo",)
ALL_METHODS = (
    "srghn",
    "fixed_rate",
    "frozen_head",
    "external",
    "open_es",
    "cma_es",
    "simple_ga",
    "gesmr_ga",
    "samr_ga",
    "ppo",
)


@dataclasses.dataclass(frozen=True)
class SuiteEnv:
    """One environment of a suite: its folder name and the config fields it sets."""

    name: str
    settings: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Suite:
    """A named suite: a protocol (config fields shared by every environment), its
    environments, and the methods and seeds it runs by default."""

    name: str
    description: str
    protocol: Mapping[str, Any]
    envs: tuple[SuiteEnv, ...]
    methods: tuple[str, ...] = ALL_METHODS
    seeds: tuple[int, ...] = tuple(range(10))

    def configs(self, overrides: Mapping[str, str] | None = None) -> dict[str, Config]:
        """Each environment's validated config (``overrides``: ``--set`` strings, applied
        last). Raises :class:`ConfigError` naming the field before anything compiles."""
        out = {}
        for env in self.envs:
            cfg = Config(**{**self.protocol, **env.settings})
            cfg = cfg.with_overrides(dict(overrides)) if overrides else cfg.validate()
            out[env.name] = cfg
        return out


def _pendulum_swap() -> tuple[tuple[str, Any], ...]:
    # Pendulum-v1's observation [cos, sin, w] -> [sin, cos, -w]
    return (("perm", (1, 0, 2)), ("signs", (1, 1, -1)))


def _classic_envs() -> tuple[SuiteEnv, ...]:
    return (
        SuiteEnv("CartPole-v1", {"env_id": "CartPole-v1", "switch": "reverse_actions"}),
        SuiteEnv("Acrobot-v1", {"env_id": "Acrobot-v1", "switch": "reverse_actions"}),
        SuiteEnv("MountainCar-v0", {"env_id": "MountainCar-v0", "switch": "reverse_actions"}),
        SuiteEnv(
            "MountainCarContinuous-v0",
            {"env_id": "MountainCarContinuous-v0", "switch": "negate_actions"},
        ),
        SuiteEnv(
            "Pendulum-v1",
            {
                "env_id": "Pendulum-v1",
                "switch": "permute_observations",
                "switch_options": _pendulum_swap(),
            },
        ),
    )


_MINATAR = ("Asterix", "Breakout", "Freeway", "SpaceInvaders")

SUITES: dict[str, Suite] = {
    "classic": Suite(
        "classic",
        "the paper's classic-control suite: five environments, controls changed during "
        "generations [400, 700) and [900, 1200) of 1500 (P=50, C=4, horizon 500, 10 seeds)",
        dict(
            population_size=50,
            num_children=4,
            horizon=500,
            generations=1500,
            switch_intervals=((400, 700), (900, 1200)),
            policy_hidden=(32,),
            log_every=50,
        ),
        _classic_envs(),
    ),
    "classic-cpu": Suite(
        "classic-cpu",
        "the classic suite at the scale of a 2-core CPU (about an hour for the nine "
        "evolutionary methods, PPO about as long again): P=16, C=4, horizon 200, 300 "
        "generations with the paper's windows scaled by 1/5 ([80, 140) and [180, 240)), 3 seeds",
        dict(
            population_size=16,
            num_children=4,
            horizon=200,
            generations=300,
            switch_intervals=((80, 140), (180, 240)),
            policy_hidden=(32,),
            log_every=25,
        ),
        _classic_envs(),
        seeds=(0, 1, 2),
    ),
    "minatar": Suite(
        "minatar",
        "four MinAtar games with reversed actions during generations [6400, 11200) and "
        "[14400, 22400), conv policies generated in blocks (a GPU command)",
        dict(
            population_size=50,
            num_children=4,
            horizon=1000,
            generations=25000,
            switch_intervals=((6400, 11200), (14400, 22400)),
            policy_conv=((16, 3, 1),),
            policy_hidden=(128,),
            head="block",
            block_size=1024,
            log_every=100,
        ),
        tuple(
            SuiteEnv(f"{g}-MinAtar", {"env_id": f"{g}-MinAtar", "switch": "reverse_actions"})
            for g in _MINATAR
        ),
        seeds=tuple(range(5)),
    ),
    "brax": Suite(
        "brax",
        "Ant and HalfCheetah on brax: rewarded for running backwards, and for a target speed "
        "of 1 m/s, from generation 400 of 1000 (a GPU command)",
        dict(
            population_size=50,
            num_children=4,
            horizon=1000,
            generations=1000,
            switch_intervals=((400, 1000),),
            policy_hidden=(32, 32),
            obs_norm=True,
            policy_fan_in_scale=True,
            policy_output_scale=0.1,
            update_clip=0.1,
            log_every=10,
        ),
        tuple(
            SuiteEnv(f"{env}-{rule}", {"env_id": env, "switch": rule, "switch_options": opts})
            for env in ("Ant", "HalfCheetah")
            for rule, opts in (("run_backwards", ()), ("target_speed", (("target", 1.0),)))
        ),
        seeds=tuple(range(5)),
    ),
}


def get(name: str) -> Suite:
    """The suite called ``name`` (raises :class:`ConfigError` naming ``suite``)."""
    if name not in SUITES:
        raise ConfigError("suite", name, f"one of {sorted(SUITES)}")
    return SUITES[name]
