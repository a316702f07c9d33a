"""Named run configurations: the paper's settings and quick defaults (DESIGN §3).

Each preset is a set of :class:`~selfref_ghn.config.Config` overrides; ``get(name)`` returns the
validated config. The command line accepts these names; ``--set key=value`` overrides fields.
"""

from __future__ import annotations

from typing import Any

from selfref_ghn.config import Config, ConfigError

PRESETS: dict[str, dict[str, Any]] = {
    # A small CartPole-Switch run for `make run`: about a minute on two CPU cores.
    "quick": dict(
        env_id="CartPole-Switch",
        population_size=16,
        num_children=2,
        horizon=500,
        generations=60,
        switch_intervals=((20, 40),),
        log_every=5,
    ),
    # The paper's sanity setting (DESIGN §3).
    "cartpole-switch": dict(
        env_id="CartPole-Switch",
        population_size=30,
        num_children=2,
        horizon=500,
        generations=250,
        switch_intervals=((50, 150),),
        policy_hidden=(32,),
        log_every=10,
    ),
    # The setting of the authors' published JAX code.
    "cartpole-switch-long": dict(
        env_id="CartPole-Switch",
        population_size=10,
        num_children=2,
        horizon=500,
        generations=1500,
        switch_intervals=((600, 1200),),
        policy_hidden=(32,),
        log_every=50,
    ),
    # LunarLander-Switch (DESIGN §3): engines swapped during the switch interval.
    "lunarlander-switch": dict(
        env_id="LunarLander-Switch",
        population_size=50,
        num_children=2,
        horizon=1000,
        generations=1000,
        switch_intervals=((500, 750),),
        policy_hidden=(32,),
        log_every=10,
    ),
    # The paper's Ant setting: brax's ant (default backend), continuous SR-GHN policies.
    "ant": dict(
        env_id="Ant",
        population_size=50,
        num_children=2,
        horizon=1000,
        generations=1000,
        policy_hidden=(32, 32, 32),
        update_clip=0.1,
        obs_norm=True,
        # generated weights have unit scale whatever the fan-in: without these the torques
        # saturate and the ant flips within steps (docs/envs/ant.md)
        policy_fan_in_scale=True,
        policy_output_scale=0.1,
        log_every=10,
    ),
    # Gymnasium's Ant-v5 (on MJX) with actions negated during the switch interval.
    "ant-switch": dict(
        env_id="Ant-Switch",
        population_size=50,
        num_children=2,
        horizon=1000,
        generations=1000,
        switch_intervals=((500, 750),),
        policy_hidden=(32, 32, 32),
        update_clip=0.1,
        obs_norm=True,
        # generated weights have unit scale whatever the fan-in: without these the torques
        # saturate and the ant flips within steps (docs/envs/ant.md)
        policy_fan_in_scale=True,
        policy_output_scale=0.1,
        log_every=10,
    ),
    # brax's HalfCheetah, rewarded for running backwards from generation 20 (docs/envs/brax.md:
    # about 6 minutes on a busy 2-core CPU)
    "halfcheetah-backwards": dict(
        env_id="HalfCheetah",
        switch="run_backwards",
        population_size=8,
        num_children=2,
        horizon=200,
        generations=40,
        switch_intervals=((20, 40),),
        policy_hidden=(16,),
        obs_norm=True,
        policy_fan_in_scale=True,
        policy_output_scale=0.1,
        log_every=5,
    ),
    # MinAtar Breakout on CPU (docs/envs/minatar.md): a conv policy (3x3x16, then 128 tanh
    # units; 132k weights) generated block by block, so the GHN does not grow with it
    "minatar-breakout": dict(
        env_id="Breakout-MinAtar",
        population_size=16,
        num_children=2,
        horizon=500,
        generations=100,
        policy_conv=((16, 3, 1),),
        policy_hidden=(128,),
        head="block",
        log_every=5,
    ),
}


def names() -> list[str]:
    """Preset names, sorted."""
    return sorted(PRESETS)


def get(name: str) -> Config:
    """The validated :class:`Config` of preset ``name``.

    Raises:
        ConfigError: for an unknown preset (field ``preset``).
    """
    if name not in PRESETS:
        raise ConfigError("preset", name, f"one of {names()}")
    return Config(**PRESETS[name]).validate()
