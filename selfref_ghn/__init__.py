"""selfref_ghn: Self-Referential Graph HyperNetworks in JAX (arXiv 2512.16406).

The flat public API::

    Config, Hyperparams, ConfigError       configuration (config.py)
    SRGHN                                  the static model (model.py)
    Evolution, EvoState                    the generation step and loop (evolution.py)
    SwitchSchedule                         inverted intervals (schedule.py)
    MLPPolicy                              default policy (policy.py)
    evolve                                 host-side run with results folder (runner.py)
    recovery, recovery_curves              recovery after switches (metrics.py)
    BaselineEvolution, BaselineState       evosax baselines on the same harness (baselines.py)
    make_evolution                         Evolution or BaselineEvolution from config.method
    SelfReferentialGHN, AskTellState       SR-GHN with evosax's ask/tell contract (ask_tell.py)
    run_comparison                         methods x seeds, recovery table, figure (compare.py)
    run_sweep                              seeds x hyperparameters, vmapped (sweep.py)
    Checkpoints                            orbax checkpoints of a run's state (checkpoint.py)
    presets                                named configurations: presets.get("cartpole-switch")
"""

__version__ = "0.1.0"

from selfref_ghn import presets
from selfref_ghn.ask_tell import AskTellState, SelfReferentialGHN
from selfref_ghn.baselines import BaselineEvolution, BaselineState, make_evolution
from selfref_ghn.checkpoint import Checkpoints
from selfref_ghn.compare import run_comparison
from selfref_ghn.config import Config, ConfigError, Hyperparams
from selfref_ghn.evolution import Evolution, EvoState
from selfref_ghn.metrics import recovery, recovery_curves
from selfref_ghn.model import SRGHN
from selfref_ghn.policy import MLPPolicy
from selfref_ghn.runner import evolve
from selfref_ghn.schedule import SwitchSchedule
from selfref_ghn.sweep import run_sweep

__all__ = [
    "SRGHN",
    "AskTellState",
    "BaselineEvolution",
    "BaselineState",
    "Checkpoints",
    "Config",
    "ConfigError",
    "EvoState",
    "Evolution",
    "Hyperparams",
    "MLPPolicy",
    "SelfReferentialGHN",
    "SwitchSchedule",
    "evolve",
    "make_evolution",
    "presets",
    "recovery",
    "recovery_curves",
    "run_comparison",
    "run_sweep",
]
