"""The moves of the zero-shot search's evolution, on archs as per-layer candidate indices.

Pure functions of a numpy generator, so a candidate depends only on (seed, its number) and
the population it was bred from: a resumed search continues exactly where it stopped.

>>> from proxyless.hardware import SpaceCosts
>>> costs = SpaceCosts([[1.0, 2.0, 0.0], [3.0, 1.0]], fixed=1.0, unit="ms")
>>> rng = np.random.default_rng(0)
>>> arch = sample_within(costs, 3.0, rng)
>>> costs.cost_of(arch) <= 3.0
True
"""

from __future__ import annotations

import numpy as np

from .hardware import SpaceCosts


class BudgetError(ValueError):
    """No arch of the space meets the budget."""


def random_arch(costs: SpaceCosts, rng: np.random.Generator) -> list[int]:
    return [int(rng.integers(len(c))) for c in costs.per_layer]


def sample_within(costs: SpaceCosts, budget: float | None, rng: np.random.Generator) -> list[int]:
    """A uniformly random arch, then, while it is over `budget`, one random layer swapped for
    a random cheaper candidate of that layer (so tight budgets need no endless rejection;
    the cost falls at every swap, so this ends)."""
    if budget is not None and costs.min_cost() > budget:
        raise BudgetError(
            f"the cheapest arch of the space costs {costs.min_cost():.4g} {costs.unit}, more "
            f"than the target {budget:.4g}: raise hardware.target (or target_frac)"
        )
    arch = random_arch(costs, rng)
    while budget is not None and costs.cost_of(arch) > budget:
        layers = [i for i, c in enumerate(costs.per_layer) if min(c) < c[arch[i]]]
        i = layers[int(rng.integers(len(layers)))]
        cheaper = [j for j, c in enumerate(costs.per_layer[i]) if c < costs.per_layer[i][arch[i]]]
        arch[i] = cheaper[int(rng.integers(len(cheaper)))]
    return arch


def mutate(
    parent: list[int], costs: SpaceCosts, rate: float, rng: np.random.Generator
) -> list[int]:
    """Each layer re-drawn (to another candidate) with probability `rate`; at least one."""
    child = list(parent)
    n = len(child)
    layers = [i for i in range(n) if rng.random() < rate and len(costs.per_layer[i]) > 1]
    if not layers:
        choosable = [i for i in range(n) if len(costs.per_layer[i]) > 1]
        layers = [choosable[int(rng.integers(len(choosable)))]]
    for i in layers:
        others = [j for j in range(len(costs.per_layer[i])) if j != child[i]]
        child[i] = others[int(rng.integers(len(others)))]
    return child
