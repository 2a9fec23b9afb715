"""The people's social graph: a Watts–Strogatz small world (as networkx builds it) or complete."""

from __future__ import annotations

import numpy as np

from valuegym.envs.coevolution.params import Params


def watts_strogatz(n: int, k: int, p: float, rng: np.random.Generator) -> np.ndarray:
    """Adjacency (symmetric bool, no self-loops) of a Watts–Strogatz small world, built as networkx does.

    A ring where everyone is linked to the k/2 nearest people on each side; then each ring
    edge (i, i+j) is rewired with probability p to (i, w), w uniform among the people not
    yet linked to i.
    """
    adjacency = np.zeros((n, n), dtype=bool)
    people = np.arange(n)
    for j in range(1, k // 2 + 1):
        adjacency[people, (people + j) % n] = adjacency[(people + j) % n, people] = True
    for j in range(1, k // 2 + 1):
        for i in range(n):
            neighbour = (i + j) % n
            if rng.random() >= p or not adjacency[i, neighbour]:
                continue
            candidates = np.flatnonzero(~adjacency[i])
            candidates = candidates[candidates != i]
            if candidates.size == 0:
                continue
            new = int(rng.choice(candidates))
            adjacency[i, neighbour] = adjacency[neighbour, i] = False
            adjacency[i, new] = adjacency[new, i] = True
    return adjacency


def social_graph(params: Params, rng: np.random.Generator) -> np.ndarray:
    n = params.n_humans
    if params.graph == "complete":
        return ~np.eye(n, dtype=bool)
    return watts_strogatz(n, params.graph_k, params.graph_p, rng)
