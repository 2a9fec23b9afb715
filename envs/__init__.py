"""valuegym environments, registered in PettingZoo's registry.

    from pettingzoo import make
    env = make("parallel", "valuegym/DecideSim-v0", scarcity="low")

Each environment's module (``ENVIRONMENTS``) exports ``parallel_env``, ``env`` and ``raw_env``
(PettingZoo's convention, see ``pettingzoo_exports.py``) and its ``Params``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from pettingzoo import register

#: env_name (as used in scenario files and records) -> (registry id, module)
ENVIRONMENTS: dict[str, tuple[str, str]] = {
    "decide_sim": ("valuegym/DecideSim-v0", "valuegym.envs.decide_sim"),
    "moral_machine": ("valuegym/MoralMachine-v0", "valuegym.envs.moral_machine.moral_machine"),
    "coevolution": ("valuegym/Coevolution-v0", "valuegym.envs.coevolution.coevolution"),
    "dilemma": ("valuegym/Dilemma-v0", "valuegym.envs.dilemma.dilemma"),
}

for _env_id, _module in ENVIRONMENTS.values():
    register("parallel", _env_id, entry_point=f"{_module}:parallel_env")
    register("aec", _env_id, entry_point=f"{_module}:env")


def make_parallel(env_name: str, **kwargs: Any) -> Any:
    """Build the parallel env called ``env_name`` (e.g. ``"decide_sim"``) with ``kwargs``."""
    try:
        _, module = ENVIRONMENTS[env_name]
    except KeyError:
        known = ", ".join(sorted(ENVIRONMENTS))
        raise ValueError(f"unknown environment {env_name!r}; known environments: {known}") from None
    return import_module(module).parallel_env(**kwargs)
