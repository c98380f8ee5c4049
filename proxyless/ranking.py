"""How well a supernet ranks architectures, and how a searched arch compares with others of
equal cost: the measurements behind `benchmarks/search_quality.py`, reusable by any method
that ranks archs (zero-shot proxies, split supernets).

- `inherited_accuracy`: an arch's accuracy with weights inherited from the supernet, after
  re-estimating BatchNorm statistics on a few training batches for that path (the shared
  running statistics are an average over all sampled paths and mislead every single one);
  the supernet's own statistics are restored afterwards.
- `stratified_archs`: archs spread evenly over a space's cost range, so a ranking covers
  cheap and expensive archs alike.
- `kendall_tau` / `spearman_rho`, `percentile_at_cost`, `pareto_front` / `front_at`.
- `residual_seed_std`, `percentile_ceiling`: what percentile the best random arch near a
  cost would itself score if it were trained again — how much of a percentile target the
  ground truth's own seed noise leaves measurable.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import nn

from .arch import Arch
from .space import SearchSpace
from .supernet import SuperNet

BN_CALIB_BATCHES = 20  # training batches that re-estimate BatchNorm on a derived path


@contextmanager
def bn_recalibrated(
    net: nn.Module, batches: Iterable[torch.Tensor], device: torch.device | None = None
):
    """Inside the block every BatchNorm of `net` holds statistics of `batches` run through
    its current path (cumulative average, as if from scratch); on exit, the original
    statistics and momenta come back. BNs off the path keep fresh (reset) statistics
    inside the block, which is harmless: they are not used."""
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [
        (m.momentum, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
        for m in bns
    ]
    was_training = net.training
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average over the calibration batches
        net.train()
        with torch.no_grad():
            for x in batches:
                net(x.to(device) if device is not None else x)
        net.eval()
        yield net
    finally:
        for m, (momentum, mean, var, count) in zip(bns, saved, strict=True):
            m.momentum = momentum
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(count)
        net.train(was_training)


@torch.no_grad()
def accuracy(net: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device) -> float:
    """Top-1 accuracy (fraction) of `net` in its current mode over `batches`."""
    correct = total = 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        correct += int((net(x).argmax(1) == y).sum())
        total += len(y)
    if total == 0:
        raise ValueError("no evaluation samples: the loader is empty")
    return correct / total


def inherited_accuracy(
    net: SuperNet,
    archs: Sequence[Arch],
    eval_batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    calib_batches: Sequence[torch.Tensor],
) -> list[float]:
    """Accuracy of each arch on `eval_batches` with the supernet's weights on its path and
    BatchNorm statistics re-estimated on `calib_batches` (images only) for that path."""
    return inherited_accuracies(net, archs, {"eval": eval_batches}, calib_batches)["eval"]


def inherited_accuracies(
    net: SuperNet,
    archs: Sequence[Arch],
    eval_sets: Mapping[str, Sequence[tuple[torch.Tensor, torch.Tensor]]],
    calib_batches: Sequence[torch.Tensor],
) -> dict[str, list[float]]:
    """`inherited_accuracy` on several named evaluation sets at once (BatchNorm re-estimated
    once per arch): e.g. a held-out split and a test split, to score on each and on both."""
    device = next(net.parameters()).device
    saved_paths = net.active_paths()
    out: dict[str, list[float]] = {name: [] for name in eval_sets}
    try:
        for arch in archs:
            net.set_paths(net.arch_indices(arch))
            with bn_recalibrated(net, calib_batches, device):
                for name, batches in eval_sets.items():
                    out[name].append(accuracy(net, batches, device))
    finally:
        net.set_paths(saved_paths)
    return out


def stratified_archs(
    space: SearchSpace,
    cost_of: Callable[[Arch], float],
    k: int,
    seed: int,
    pool: int = 4000,
) -> list[Arch]:
    """`k` distinct archs whose costs spread evenly over the range of `pool` random archs:
    the range is cut into `k` equal-width bins and each bin contributes one arch (drawn at
    random within it; an empty bin takes the unused arch nearest to its centre)."""
    rng = np.random.default_rng(seed)
    layers = space.layers()
    seen: dict[tuple[str, ...], tuple[float, Arch]] = {}
    for _ in range(pool):
        ops = [layer.candidates[int(rng.integers(len(layer.candidates)))] for layer in layers]
        arch = Arch(space, ops)
        key = tuple(arch.block_strings())
        if key not in seen:
            seen[key] = (cost_of(arch), arch)
    if len(seen) < k:
        raise ValueError(f"the space has only {len(seen)} distinct archs in {pool} draws, < {k}")
    items = sorted(seen.values(), key=lambda t: t[0])
    costs = np.array([c for c, _ in items])
    edges = np.linspace(costs[0], costs[-1], k + 1)
    chosen: list[int] = []
    for b in range(k):
        lo, hi = edges[b], edges[b + 1]
        inside = [
            i
            for i in range(len(items))
            if (lo <= costs[i] < hi or (b == k - 1 and costs[i] == hi)) and i not in chosen
        ]
        if inside:
            chosen.append(int(rng.choice(inside)))
        else:
            centre = (lo + hi) / 2
            free = [i for i in range(len(items)) if i not in chosen]
            chosen.append(min(free, key=lambda i: abs(costs[i] - centre)))
    return [items[i][1] for i in sorted(chosen, key=lambda i: costs[i])]


def _constant(values: Sequence[float]) -> bool:
    return len(set(values)) <= 1


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall τ-b; 0.0 (no ordering information) when either side is constant — e.g. an
    untrained supernet scoring every arch alike — where scipy gives NaN, which would turn
    every mean over searches into NaN."""
    if _constant(a) or _constant(b):
        return 0.0
    return float(stats.kendalltau(a, b).statistic)


def spearman_rho(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman ρ; 0.0 when either side is constant (as `kendall_tau`)."""
    if _constant(a) or _constant(b):
        return 0.0
    return float(stats.spearmanr(a, b).statistic)


def _near(cost: float, cloud: Sequence[tuple[float, Any]], tol: float) -> list[Any]:
    """The values of the cloud's points whose cost is within ±tol (a fraction) of `cost`."""
    return [v for c, v in cloud if abs(c - cost) <= tol * cost]


def percentile_at_cost(
    cost: float, acc: float, cloud: Sequence[tuple[float, float]], tol: float = 0.05
) -> dict[str, Any]:
    """Where `acc` falls among the cloud's archs whose cost is within ±tol of `cost`:
    percentile (share below, ties count half), and acc minus their median and their best."""
    peers = _near(cost, cloud, tol)
    if not peers:
        return {"n_peers": 0, "percentile": None, "vs_median": None, "vs_best": None}
    below = sum(a < acc for a in peers) + 0.5 * sum(a == acc for a in peers)
    return {
        "n_peers": len(peers),
        "percentile": 100.0 * below / len(peers),
        "vs_median": acc - float(np.median(peers)),
        "vs_best": acc - max(peers),
    }


def residual_seed_std(acc: np.ndarray) -> float | None:
    """The seed std of one arch's accuracy once each seed's offset shared by all archs is
    removed (all archs of one seed see the same data order): the noise a comparison between
    archs trained with the same seeds meets. `acc`: archs x seeds; None with one seed."""
    acc = np.asarray(acc, dtype=float)
    if acc.ndim != 2 or acc.shape[1] < 2:
        return None
    centred = acc - acc.mean(axis=1, keepdims=True)
    residual = centred - centred.mean(axis=0, keepdims=True)
    dof = max(1, (acc.shape[0] - 1) * (acc.shape[1] - 1))
    return float(np.sqrt((residual**2).sum() / dof))


def percentile_ceiling(
    cost: float,
    cloud: Sequence[tuple[float, Sequence[float]]],
    seed_std: float,
    tol: float = 0.05,
) -> dict[str, Any]:
    """The percentile that the best of the cloud's archs within ±tol of `cost` would score
    among the others if it were trained again with the same seeds — about the figure a search
    scores when it finds an arch exactly as good as the best random one there (a little more:
    the searched arch also has that best one among its peers).

    `cloud`: (cost, per-seed accuracies) of each random arch; `seed_std`: the ground
    truth's residual seed std (one seed, the per-seed offset shared by all archs removed).
    Two estimates:
    - `retrained_best`: the best arch by mean re-measured with Gaussian noise: its new
      S-seed mean minus its stored one has std seed_std·sqrt(2/S), so it beats a peer of
      mean m with probability Φ((m_best − m)/(seed_std·sqrt(2/S))); optimistic, because the
      best stored mean is also the luckiest (winner's curse).
    - `split_seed`: no model: pick the best arch by one seed's accuracies, score it by
      another seed's among the others; the mean over ordered seed pairs (None with 1 seed).
      Pessimistic: a pick from one seed is noisier than one from S.
    Both None with fewer than 2 archs in the window (no peer to beat)."""
    window = [np.asarray(a, dtype=float) for a in _near(cost, cloud, tol)]
    if len(window) < 2:
        return {"n_peers": 0, "retrained_best": None, "split_seed": None}
    accs = np.stack(window)  # archs x seeds
    n_seeds = accs.shape[1]
    means = accs.mean(axis=1)
    best = int(means.argmax())
    gaps = np.delete(means[best] - means, best)
    scale = seed_std * np.sqrt(2.0 / n_seeds)
    beats = stats.norm.cdf(gaps / scale) if scale > 0 else (gaps > 0) + 0.5 * (gaps == 0)
    split = []
    for pick_seed in range(n_seeds):
        for score_seed in range(n_seeds):
            if pick_seed == score_seed:
                continue
            pick = int(accs[:, pick_seed].argmax())
            scored = accs[:, score_seed]
            others = np.delete(scored, pick)
            split.append(np.mean((others < scored[pick]) + 0.5 * (others == scored[pick])))
    return {
        "n_peers": len(window) - 1,
        "retrained_best": 100.0 * float(np.mean(beats)),
        "split_seed": 100.0 * float(np.mean(split)) if split else None,
    }


def pareto_front(cloud: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """(cost, acc) points no other point beats on both, sorted by cost."""
    front: list[tuple[float, float]] = []
    for c, a in sorted(cloud, key=lambda t: (t[0], -t[1])):
        if not front or a > front[-1][1]:
            front.append((c, a))
    return front


def front_at(front: Sequence[tuple[float, float]], cost: float) -> float:
    """The front's accuracy at `cost`, linearly interpolated between its points (below the
    cheapest point: that point's accuracy; above the dearest: the best accuracy)."""
    costs = [c for c, _ in front]
    i = bisect.bisect_right(costs, cost)
    if i == 0:
        return front[0][1]
    if i == len(front):
        return front[-1][1]
    (c0, a0), (c1, a1) = front[i - 1], front[i]
    return a0 + (a1 - a0) * (cost - c0) / (c1 - c0)
