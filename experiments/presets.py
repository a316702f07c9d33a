"""Presets for the paper's experiments (DESIGN §1, §3; paper §4): CartPole-Switch,
LunarLander-Switch and Ant, each run with SR-GHN, the five evosax baselines and the three
ablations, at three scales.

* ``smoke``: tiny populations and a few generations; minutes on a CPU (CI runs it);
* ``cpu``: on a 2-core CPU, about 25 minutes for CartPole-Switch (5 seeds, 9 methods) and
  about 45 minutes each for LunarLander-Switch and brax's Ant at a size that runs on a CPU (one
  seed; mostly compilation for LunarLander, CMA-ES's covariance for Ant);
* ``full``: the paper's scale, for a GPU.

Each experiment is a set of :class:`selfref_ghn.Config` overrides per scale, plus seeds. At
``full`` scale an experiment uses the library's own preset (``selfref_ghn.presets``) when one
by that name exists. An experiment whose environment is not registered in
``selfref_ghn.envs`` is skipped by ``reproduce.py``, which says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from selfref_ghn import presets as lib_presets
from selfref_ghn.config import Config
from selfref_ghn.tools.compare import ABLATIONS, DEFAULT_METHODS

SCALES = ("smoke", "cpu", "full")
# SR-GHN, the five evosax baselines, then the ablations (DESIGN §2 "Ablations").
METHODS: tuple[str, ...] = DEFAULT_METHODS + ABLATIONS


@dataclass(frozen=True)
class Experiment:
    """One of the paper's tasks: its config per scale and the seeds it runs."""

    name: str
    env_id: str
    scales: dict[str, dict[str, Any]]
    seeds: dict[str, tuple[int, ...]]
    library_preset: str | None = None  # used at full scale when selfref_ghn.presets has it
    notes: str = ""
    methods: tuple[str, ...] = field(default=METHODS)

    def config(self, scale: str) -> Config:
        """The validated task config at ``scale`` (the comparison sets method and seed)."""
        if scale == "full" and self.library_preset in lib_presets.names():
            return lib_presets.get(self.library_preset)
        return Config(**{"env_id": self.env_id, **self.scales[scale]}).validate()


EXPERIMENTS: dict[str, Experiment] = {
    "cartpole": Experiment(
        name="cartpole",
        env_id="CartPole-Switch",
        library_preset="cartpole-switch-long",
        scales={
            "smoke": dict(
                population_size=8,
                horizon=100,
                generations=12,
                switch_intervals=((4, 8),),
                policy_hidden=(8,),
                log_every=4,
            ),
            # the library's `cartpole-switch` preset: the paper's sanity setting
            "cpu": dict(lib_presets.PRESETS["cartpole-switch"]),
            # the authors' published setting: switched on at 600, back off at 1200
            "full": dict(lib_presets.PRESETS["cartpole-switch-long"]),
        },
        seeds={"smoke": (0,), "cpu": (0, 1, 2, 3, 4), "full": (0, 1, 2, 3, 4)},
        notes="controls inverted: pushing left moves the cart right",
    ),
    "lunarlander": Experiment(
        name="lunarlander",
        env_id="LunarLander-Switch",
        library_preset="lunarlander-switch",
        scales={
            "smoke": dict(
                population_size=8,
                horizon=50,
                generations=8,
                switch_intervals=((3, 6),),
                policy_hidden=(8,),
                log_every=4,
            ),
            # sized to the JAX LunarLander's CPU speed (about 5k env-steps/s at this batch,
            # docs/envs/lunar_lander.md): ~3 minutes per method, compile included; far too
            # short to learn to land, it shows the first phase (stop crashing) and the switch
            "cpu": dict(
                population_size=16,
                horizon=200,
                generations=50,
                switch_intervals=((25, 40),),
                policy_hidden=(32,),
                log_every=5,
            ),
            # the library's `lunarlander-switch` preset
            "full": dict(lib_presets.PRESETS["lunarlander-switch"]),
        },
        seeds={"smoke": (0,), "cpu": (0,), "full": (0, 1, 2, 3, 4)},
        notes="left and right engines swapped while inverted",
    ),
    "ant": Experiment(
        name="ant",
        env_id="Ant-v5",
        library_preset=None,  # the `ant` preset runs brax's ant; the paper's task is Ant-v5
        scales={
            # brax's ant on spring, as at `cpu` scale: a smoke run checks the pipeline, and
            # Ant-v5 on MJX took 9 of a warm smoke reproduction's 14 minutes on this CPU
            "smoke": dict(
                env_id="Ant",
                env_kwargs=(("backend", "spring"),),
                population_size=8,
                horizon=20,
                generations=4,
                policy_hidden=(8,),
                obs_norm=True,
                update_clip=0.1,
                log_every=2,
            ),
            # brax's ant on its spring backend: Ant-v5 (MuJoCo's solver settings on MJX) is far
            # too slow on a CPU, and spring is brax's fastest CPU backend (docs/envs/ant.md)
            "cpu": dict(
                env_id="Ant",
                env_kwargs=(("backend", "spring"),),
                population_size=16,
                horizon=200,
                generations=60,
                policy_hidden=(32, 32, 32),
                obs_norm=True,
                update_clip=0.1,
                policy_fan_in_scale=True,
                policy_output_scale=0.1,
                log_every=10,
            ),
            # the library's `ant` preset (the paper's setting) on Gymnasium's Ant-v5
            "full": {**lib_presets.PRESETS["ant"], "env_id": "Ant-v5"},
        },
        seeds={"smoke": (0,), "cpu": (0,), "full": (0, 1, 2, 3, 4)},
        notes="no switch: the paper studies gait evolution and variation on Ant-v5",
    ),
}
