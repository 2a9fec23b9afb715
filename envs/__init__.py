"""valuegym environments, registered in PettingZoo's registry.

    from pettingzoo import make
    env = make("parallel", "valuegym/DecideSim-v0", scarcity="low")

Each environment's module (``ENVIRONMENTS``) exports ``parallel_env``, ``env`` and ``raw_env``
(PettingZoo's convention, see ``pettingzoo_exports.py``) and its ``Params``.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from types import ModuleType
from typing import Any

from pettingzoo import register


@dataclass(frozen=True)
class Environment:
    """One registered environment: its PettingZoo registry id and the module that builds it
    (imported on first use: ``parallel_env``, ``env``, ``raw_env`` and its ``Params``)."""

    registry_id: str
    module_name: str

    def module(self) -> ModuleType:
        return import_module(self.module_name)


#: env_name (as used in scenario files and records) -> its registry entry
ENVIRONMENTS: dict[str, Environment] = {
    "decide_sim": Environment("valuegym/DecideSim-v0", "valuegym.envs.decide_sim"),
    "moral_machine": Environment("valuegym/MoralMachine-v0", "valuegym.envs.moral_machine.moral_machine"),
    "coevolution": Environment("valuegym/Coevolution-v0", "valuegym.envs.coevolution.coevolution"),
    "dilemma": Environment("valuegym/Dilemma-v0", "valuegym.envs.dilemma.dilemma"),
}

for _environment in ENVIRONMENTS.values():
    register("parallel", _environment.registry_id, entry_point=f"{_environment.module_name}:parallel_env")
    register("aec", _environment.registry_id, entry_point=f"{_environment.module_name}:env")


def make_parallel(env_name: str, **kwargs: Any) -> Any:
    """Build the parallel env called ``env_name`` (e.g. ``"decide_sim"``) with ``kwargs``."""
    try:
        environment = ENVIRONMENTS[env_name]
    except KeyError:
        known = ", ".join(sorted(ENVIRONMENTS))
        raise ValueError(f"unknown environment {env_name!r}; known environments: {known}") from None
    return environment.module().parallel_env(**kwargs)
