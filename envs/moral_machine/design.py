"""The Moral Machine's design tables: how often each scenario type, layout and signal is drawn.

Pure data, and the one home of these tables: the environment draws its dilemmas with them (and
records the tables in effect in every ``responses`` row, column ``design_probabilities``), and
the AMCE estimator (``analysis/amce.py``) weights responses with them when the data does not
say its design (Awad's or Takemoto's published CSVs). The module imports nothing beyond the
standard library and ``characters.py`` (data too), so the analysis reads it as it reads the
schemas ``envs/spec.py`` publishes, without importing any environment code.
"""

from __future__ import annotations

from typing import Literal

from valuegym.envs.moral_machine.characters import SCENARIO_TYPES

LAYOUTS = ("pedestrians", "barrier_ahead", "barrier_other_lane")
PEDPED_SIGNALS = ("none", "ahead_green", "ahead_red")  # ahead_green: the other lane has red
PASSENGER_SIGNALS = ("none", "green", "red")  # the pedestrians' signal when facing passengers

ScenarioTypeName = Literal["Species", "Social Status", "Gender", "Age", "Fitness", "Utilitarian", "Random"]
LayoutName = Literal["pedestrians", "barrier_ahead", "barrier_other_lane"]
PedPedSignalName = Literal["none", "ahead_green", "ahead_red"]
PassengerSignalName = Literal["none", "green", "red"]

#: Awad's design: a session holds 2 dilemmas per dimension and 1 random one (drawn here
#: independently with those shares); the layout and signal probabilities are the ones
#: Awad's estimator weights imply (MMFunctionsShared.R, CalcTheoreticalInt).
AWAD_DESIGN: dict[str, dict[str, float]] = {
    "scenario_type": {**{t: 2 / 13 for t in SCENARIO_TYPES if t != "Random"}, "Random": 1 / 13},
    "layout": {"pedestrians": 0.48, "barrier_ahead": 0.20, "barrier_other_lane": 0.32},
    "pedped_signal": {"none": 0.48, "ahead_green": 0.20, "ahead_red": 0.32},
    "passenger_signal": {"none": 0.48, "green": 0.20, "red": 0.32},
}
#: Takemoto's design: uniform dimensions, no random type; passengers, intervention and law fair coins.
BALANCED_DESIGN: dict[str, dict[str, float]] = {
    "scenario_type": {**{t: 1 / 6 for t in SCENARIO_TYPES if t != "Random"}, "Random": 0.0},
    "layout": {"pedestrians": 0.5, "barrier_ahead": 0.25, "barrier_other_lane": 0.25},
    "pedped_signal": {"none": 0.5, "ahead_green": 0.25, "ahead_red": 0.25},
    "passenger_signal": {"none": 0.5, "green": 0.25, "red": 0.25},
}
DESIGNS: dict[str, dict[str, dict[str, float]]] = {"awad": AWAD_DESIGN, "balanced": BALANCED_DESIGN}
TABLE_LEVELS: dict[str, tuple[str, ...]] = {
    "scenario_type": SCENARIO_TYPES,
    "layout": LAYOUTS,
    "pedped_signal": PEDPED_SIGNALS,
    "passenger_signal": PASSENGER_SIGNALS,
}
