"""The reference "moral progress" trajectory: synthetic and seeded, or read from a JSON file."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from valuegym.envs.coevolution.params import SYNTHETIC

SYNTHETIC_BEND = 0.25  # the synthetic path bends sideways by this fraction of its drift
#: the synthetic trajectory's random stream of an episode seed (the population has its own)
TRAJECTORY_STREAM = 0


@dataclass(frozen=True)
class Trajectory:
    """The reference trajectory: one row of d values per century, and where it came from."""

    values: np.ndarray  # T × d, in [0, 1]
    source: str  # "synthetic(seed=…)" or "file:<path>"


def synthetic_trajectory(n_dims: int, centuries: int, drift: float, seed: int) -> Trajectory:
    """A seeded smooth drift: a straight path of length ``drift`` (per √d) bent by a half sine.

    The path is centred near the middle of the cube so it stays inside [0, 1]; the bend
    makes its direction change over time (so extrapolation of order 2 differs from order 1).
    """
    rng = np.random.default_rng([seed, TRAJECTORY_STREAM])
    centre = rng.uniform(0.4, 0.6, n_dims)
    direction = rng.standard_normal(n_dims)
    direction *= drift * math.sqrt(n_dims) / np.linalg.norm(direction)
    bend = rng.standard_normal(n_dims)
    bend -= (bend @ direction) / (direction @ direction) * direction
    bend *= SYNTHETIC_BEND * drift * math.sqrt(n_dims) / np.linalg.norm(bend)
    progress = np.linspace(0.0, 1.0, centuries)[:, None]
    values = centre + (progress - 0.5) * direction + np.sin(np.pi * progress) * bend
    return Trajectory(np.clip(values, 0.0, 1.0), f"{SYNTHETIC}(seed={seed})")


def load_trajectory(path: str | Path, dims: tuple[str, ...], centuries: int | None = None) -> Trajectory:
    """Read a reference trajectory from JSON: ``{"dims": [names], "values": [[…d numbers…] × T]}``.

    ``dims`` must equal the environment's dimension names (same order); each row is one
    century's value profile in [0, 1]; T ≥ 2 (and equal to ``centuries`` when that is given).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"trajectory file {path} does not exist (or use trajectory: synthetic)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"trajectory file {path} is not valid JSON: {error}") from None
    if (
        not isinstance(data, dict)
        or set(data) - {"dims", "values", "source"}
        or not {"dims", "values"} <= set(data)
    ):
        raise ValueError(
            f"trajectory file {path} must be an object with keys 'dims' and 'values' (optionally 'source')"
        )
    if list(data["dims"]) != list(dims):
        raise ValueError(f"trajectory file {path} has dims {data['dims']}, the environment has {list(dims)}")
    try:
        values = np.asarray(data["values"], dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"trajectory file {path}: 'values' must be a list of rows of numbers") from None
    if values.ndim != 2 or values.shape[1] != len(dims) or values.shape[0] < 2:
        raise ValueError(
            f"trajectory file {path}: 'values' must be T ≥ 2 rows of {len(dims)} numbers, got shape {values.shape}"
        )
    if not np.all(np.isfinite(values)) or values.min() < 0.0 or values.max() > 1.0:
        raise ValueError(f"trajectory file {path}: every value must be a number in [0, 1]")
    if centuries is not None and centuries != values.shape[0]:
        raise ValueError(f"centuries={centuries} but trajectory file {path} has {values.shape[0]} rows")
    return Trajectory(values, f"file:{path}")
