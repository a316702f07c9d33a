"""selfref_ghn: Self-Referential Graph HyperNetworks in JAX (arXiv 2512.16406).

The flat public API::

    Config, Hyperparams, ConfigError       configuration (config.py)
    SRGHN                                  the static model (model.py)
    Evolution, EvoState                    the generation step and loop (evolution.py)
    SwitchSchedule                         inverted intervals (schedule.py)
    MLPPolicy                              default policy (policy.py)
    evolve                                 host-side run with results folder (runner.py)
    recovery                               recovery after switches (metrics.py)
"""

__version__ = "0.1.0"

from selfref_ghn.config import Config, ConfigError, Hyperparams
from selfref_ghn.evolution import Evolution, EvoState
from selfref_ghn.metrics import recovery
from selfref_ghn.model import SRGHN
from selfref_ghn.policy import MLPPolicy
from selfref_ghn.runner import evolve
from selfref_ghn.schedule import SwitchSchedule

__all__ = [
    "SRGHN",
    "Config",
    "ConfigError",
    "EvoState",
    "Evolution",
    "Hyperparams",
    "MLPPolicy",
    "SwitchSchedule",
    "evolve",
    "recovery",
]
