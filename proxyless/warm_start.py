"""`init.alpha=<proxy>`: start the differentiable search from zero-cost scores, not N(0, σ).

Per layer l and candidate j, score the supernet with l forced to j and every other layer on
a random path, averaged over `paths` such paths (the same paths for every candidate of a
layer, so their differences are the candidate's own); α_l = standardised scores / T. A low
temperature T commits early; T → ∞ is the uniform start of the paper.

>>> scores = [[1.0, 2.0, 3.0], [5.0, 5.0]]
>>> [[round(a, 3) for a in row.tolist()] for row in alpha_from_scores(scores, 1.0)]
[[-1.225, 0.0, 1.225], [0.0, 0.0]]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .supernet import SuperNet
from .zeroshot import Batch, Proxy


def candidate_scores(
    net: SuperNet, proxy: Proxy, batches: Sequence[Batch], paths: int, generator: torch.Generator
) -> list[list[float]]:
    """scores[l][j]: the proxy of subnets with layer l on candidate j, averaged over `paths`
    uniformly random paths of the other layers. Each subnet is scored as the standalone
    network of that path holding the supernet's weights (`SuperNet.extract`), so size-based
    proxies (params, flops) see the path, not the whole supernet. The net is not changed."""
    scores = [[0.0] * layer.num_candidates for layer in net.layers]
    specs = [layer.spec.candidates for layer in net.layers]
    for _ in range(paths):
        base = [int(torch.randint(len(c), (1,), generator=generator)) for c in specs]
        for li, cands in enumerate(specs):
            for j in range(len(cands)):
                path = [*base[:li], j, *base[li + 1 :]]
                sub = net.extract(net.path_arch(path))
                device = net.layers[0].alpha.device
                scores[li][j] += proxy(sub.to(device), batches) / paths
    return scores


def alpha_from_scores(scores: Sequence[Sequence[float]], temperature: float) -> list[torch.Tensor]:
    """Per layer (s − mean) / std / T (population std; equal scores give α = 0). A non-finite
    score (e.g. NASWOT's −inf for a singular kernel) counts as the layer's lowest."""
    out = []
    for row in scores:
        finite = [s for s in row if math.isfinite(s)]
        low = min(finite) if finite else 0.0
        s = torch.tensor([v if math.isfinite(v) else low for v in row], dtype=torch.float64)
        std = s.std(correction=0)
        z = (s - s.mean()) / std if std > 0 else torch.zeros_like(s)
        out.append((z / temperature).float())
    return out


def kept_candidates(
    alphas: Sequence[torch.Tensor],
    keep: int,
    costs: Sequence[Sequence[float]],
    fixed: float,
    target: float | None,
) -> tuple[list[list[int]], list[int]]:
    """`prune.keep`: per layer the `keep` best candidates by α, then, while the cheapest arch
    left costs more than `target`, the cheapest candidate of the layer where it saves most
    is kept too — a proxy that prefers large ops (ZiCo does) would otherwise prune every
    arch that meets the target. Returns (kept indices per layer, layers that got one back).

    >>> a = [torch.tensor([3.0, 2.0, 1.0]), torch.tensor([3.0, 2.0, 1.0])]
    >>> kept_candidates(a, 2, [[5, 3, 1], [5, 3, 1]], 0.0, 5.0)
    ([[0, 1, 2], [0, 1]], [0])
    """
    kept = [sorted(torch.argsort(a, descending=True, stable=True)[:keep].tolist()) for a in alphas]
    added: list[int] = []

    def cheapest() -> float:
        return fixed + sum(min(c[j] for j in k) for c, k in zip(costs, kept, strict=True))

    while target is not None and cheapest() > target:
        saving = [min(c[j] for j in k) - min(c) for c, k in zip(costs, kept, strict=True)]
        layer = max(range(len(kept)), key=saving.__getitem__)
        if saving[layer] <= 0:
            break  # the space itself cannot meet the target
        kept[layer] = sorted(
            {*kept[layer], min(range(len(costs[layer])), key=costs[layer].__getitem__)}
        )
        added.append(layer)
    return kept, added


def set_alpha(net: SuperNet, alphas: Sequence[torch.Tensor]) -> None:
    with torch.no_grad():
        for layer, a in zip(net.layers, alphas, strict=True):
            layer.alpha.copy_(a.to(layer.alpha.device))
