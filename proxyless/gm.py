"""Few-shot NAS by gradient matching (GM, ICLR 2022): how much a layer's candidates disagree
on the update of the weights they share, and the partition of a layer's candidates that
keeps the disagreeing ones apart. The split itself (children, their training, the final
choice) is `proxyless.gm_search`'s business.

>>> d = torch.tensor([[0.0, 0.1, 0.9], [0.1, 0.0, 0.8], [0.9, 0.8, 0.0]])
>>> best_partition(d, 2)
([[0, 1], [2]], 0.1...)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from .supernet import SuperNet

__all__ = ["best_partition", "dissimilarity", "set_partitions"]


@contextmanager
def _kept_state(net: SuperNet) -> Iterator[None]:
    """Buffers (BN running statistics), the active path and the train/eval mode come back
    as they were; weights, α and optimizer state are never touched (`autograd.grad`)."""
    buffers = [(b, b.clone()) for b in net.buffers()]
    paths, training = net.active_paths(), net.training
    try:
        yield
    finally:
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
        net.set_paths(paths)
        net.train(training)


def dissimilarity(
    net: SuperNet,
    layer_index: int,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """D (n × n, float64, over the layer's allowed members in order): per batch, one uniform
    path for the other layers; for each member i of the layer forced in turn, G_i = the
    cross-entropy gradient of every weight that gets one, except the layer's own candidates
    (stem, head, the other layers' active ops); D_ij += 1 − cos(G_i, G_j); averaged over
    batches. A Zero candidate has no weights of its own but still a G (the others' weights).

    The network is left exactly as it was (weights, α, `.grad`, BN statistics, paths)."""
    layer = net.layers[layer_index]
    members = layer.members()
    own = {id(p) for p in layer.op_parameters()}
    params = [p for p in net.weight_parameters() if id(p) not in own and p.requires_grad]
    total = torch.zeros(len(members), len(members), dtype=torch.float64)
    count = 0
    with _kept_state(net):
        net.train()
        for x, y in batches:
            net.sample_paths(generator, uniform=True)
            flat = []
            for i in members:
                layer.active = i
                loss = F.cross_entropy(net(x), y)
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                flat.append(
                    torch.cat(
                        [
                            (torch.zeros_like(p) if g is None else g).reshape(-1)
                            for p, g in zip(params, grads, strict=True)
                        ]
                    )
                )
            g = torch.stack(flat).double()
            g = g / g.norm(dim=1, keepdim=True).clamp_min(1e-30)
            total += (1.0 - g @ g.T).cpu()
            count += 1
    if count == 0:
        raise ValueError("dissimilarity needs at least one batch")
    d = total / count
    d.fill_diagonal_(0.0)  # 1 − cos(G, G) is 0 up to rounding
    return d


def set_partitions(n: int, ways: int) -> Iterator[list[list[int]]]:
    """Every partition of 0..n−1 into exactly `ways` non-empty groups, each once (groups in
    order of their smallest element; restricted growth strings)."""
    if not 1 <= ways <= n:
        return
    labels = [0] * n

    def grow(i: int, used: int) -> Iterator[list[list[int]]]:
        if n - i < ways - used:  # not enough elements left to open the missing groups
            return
        if i == n:
            groups: list[list[int]] = [[] for _ in range(ways)]
            for element, g in enumerate(labels):
                groups[g].append(element)
            yield groups
            return
        for g in range(min(used + 1, ways)):
            labels[i] = g
            yield from grow(i + 1, max(used, g + 1))

    yield from grow(0, 0)


def best_partition(d: torch.Tensor, ways: int) -> tuple[list[list[int]], float]:
    """The partition of D's rows into `ways` non-empty groups with the least within-group
    dissimilarity Σ_groups Σ_{i<j in group} D_ij, and that sum (exhaustive: n ≤ 7 and
    ways ≤ 3 are a few hundred partitions). Ties: the first in `set_partitions` order."""
    n = d.shape[0]
    if not 2 <= ways <= n:
        raise ValueError(f"cannot split {n} candidates into {ways} non-empty groups")
    m = d.double().tolist()
    best: tuple[list[list[int]], float] | None = None
    for groups in set_partitions(n, ways):
        score = sum(m[i][j] for g in groups for a, i in enumerate(g) for j in g[a + 1 :])
        if best is None or score < best[1]:
            best = (groups, score)
    assert best is not None
    return best
