"""selfref_ghn: Self-Referential Graph HyperNetworks in JAX (arXiv 2512.16406).

The flat public API::

    Config, Hyperparams, ConfigError       configuration (config.py)
    SRGHN                                  the static model (model/srghn.py)
    Evolution, EvoState                    the generation step and loop (evolution/generation.py)
    SwitchSchedule                         inverted intervals (evolution/schedule.py)
    MLPPolicy                              default policy (model/policy.py)
    evolve                                 host-side run with results folder (run/loop.py)
    recovery, recovery_curves              recovery after switches (run/metrics.py)
    BaselineEvolution, BaselineState       evosax baselines, same harness (evolution/baselines.py)
    make_evolution                         Evolution or BaselineEvolution from config.method
    SelfReferentialGHN, AskTellState       SR-GHN behind evosax ask/tell (evolution/ask_tell.py)
    run_comparison                         methods x seeds, recovery table (tools/compare.py)
    run_sweep                              seeds x hyperparameters, vmapped (tools/sweep.py)
    Checkpoints                            orbax checkpoints of a run's state (run/checkpoint.py)
    presets                                named configurations: presets.get("cartpole-switch")

Names are imported on first use (PEP 562), so ``import selfref_ghn`` loads none of JAX, flax,
orbax, evosax, brax or matplotlib until one is needed (``tests/test_imports.py``).
"""

__version__ = "0.1.0"

import importlib
from typing import TYPE_CHECKING, Any

# public name -> the module that defines it ("presets" is the module itself)
_EXPORTS = {
    "AskTellState": "selfref_ghn.evolution.ask_tell",
    "SelfReferentialGHN": "selfref_ghn.evolution.ask_tell",
    "BaselineEvolution": "selfref_ghn.evolution.baselines",
    "BaselineState": "selfref_ghn.evolution.baselines",
    "make_evolution": "selfref_ghn.evolution.baselines",
    "Checkpoints": "selfref_ghn.run.checkpoint",
    "run_comparison": "selfref_ghn.tools.compare",
    "Config": "selfref_ghn.config",
    "ConfigError": "selfref_ghn.config",
    "Hyperparams": "selfref_ghn.config",
    "Evolution": "selfref_ghn.evolution.generation",
    "EvoState": "selfref_ghn.evolution.generation",
    "recovery": "selfref_ghn.run.metrics",
    "recovery_curves": "selfref_ghn.run.metrics",
    "SRGHN": "selfref_ghn.model.srghn",
    "MLPPolicy": "selfref_ghn.model.policy",
    "evolve": "selfref_ghn.run.loop",
    "SwitchSchedule": "selfref_ghn.evolution.schedule",
    "run_sweep": "selfref_ghn.tools.sweep",
    "presets": "selfref_ghn.presets",
}

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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'selfref_ghn' has no attribute {name!r}")
    value = importlib.import_module(module)
    if name != "presets":
        value = getattr(value, name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from selfref_ghn import presets
    from selfref_ghn.config import Config, ConfigError, Hyperparams
    from selfref_ghn.evolution.ask_tell import AskTellState, SelfReferentialGHN
    from selfref_ghn.evolution.baselines import BaselineEvolution, BaselineState, make_evolution
    from selfref_ghn.evolution.generation import Evolution, EvoState
    from selfref_ghn.evolution.schedule import SwitchSchedule
    from selfref_ghn.model.policy import MLPPolicy
    from selfref_ghn.model.srghn import SRGHN
    from selfref_ghn.run.checkpoint import Checkpoints
    from selfref_ghn.run.loop import evolve
    from selfref_ghn.run.metrics import recovery, recovery_curves
    from selfref_ghn.tools.compare import run_comparison
    from selfref_ghn.tools.sweep import run_sweep
