"""Supernet ranking measurements: BN re-estimation, inherited accuracy, strata, percentiles."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from proxyless.arch import Arch
from proxyless.ranking import (
    bn_recalibrated,
    front_at,
    inherited_accuracies,
    inherited_accuracy,
    kendall_tau,
    pareto_front,
    percentile_at_cost,
    percentile_ceiling,
    residual_seed_std,
    spearman_rho,
    stratified_archs,
)
from proxyless.space import get_space
from proxyless.supernet import SuperNet


def test_bn_recalibrated_holds_batch_statistics_then_restores() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    net[1].running_mean.fill_(5.0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    batches = [torch.randn(8, 3, 6, 6) for _ in range(3)]
    with torch.no_grad():
        feats = torch.cat([net[0](x) for x in batches])
    with bn_recalibrated(net, batches):
        assert not net.training
        expected = feats.mean(dim=(0, 2, 3))
        torch.testing.assert_close(net[1].running_mean, expected, rtol=1e-5, atol=1e-6)
        per_batch_var = [net[0](x).var(dim=(0, 2, 3)) for x in batches]  # unbiased, per batch
        torch.testing.assert_close(
            net[1].running_var, torch.stack(per_batch_var).mean(0), rtol=1e-4, atol=1e-6
        )
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert net[1].momentum == 0.1 and net.training


def test_inherited_accuracy_equals_the_standalone_net_with_inherited_weights() -> None:
    torch.manual_seed(0)
    space = get_space("tiny")
    net = SuperNet(space).eval()
    x = torch.randn(64, 3, 32, 32)
    y = torch.randint(0, 10, (64,))
    calib = [torch.randn(16, 3, 32, 32) for _ in range(2)]
    archs = stratified_archs(space, lambda a: float(len(a.block_strings())), 3, seed=1)
    paths_before = net.active_paths()
    state_before = {k: v.clone() for k, v in net.state_dict().items()}
    accs = inherited_accuracy(net, archs, [(x, y)], calib)
    for arch, acc in zip(archs, accs):
        model = net.extract(arch)
        with bn_recalibrated(model, calib), torch.no_grad():
            standalone = float((model(x).argmax(1) == y).float().mean())
        assert acc == pytest.approx(standalone, abs=1e-9)
    assert net.active_paths() == paths_before
    for k, v in net.state_dict().items():
        assert torch.equal(v, state_before[k]), k


def test_inherited_accuracies_score_each_set_as_inherited_accuracy_alone() -> None:
    torch.manual_seed(0)
    space = get_space("tiny")
    net = SuperNet(space)
    sets = {
        name: [(torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))) for _ in range(n)]
        for name, n in (("heldout", 1), ("test", 2))
    }
    calib = [torch.randn(16, 3, 32, 32)]
    archs = stratified_archs(space, lambda a: float(len(a.block_strings())), 4, seed=2)
    both = inherited_accuracies(net, archs, sets, calib)
    for name, batches in sets.items():
        assert both[name] == inherited_accuracy(net, archs, batches, calib)
    assert len(set(both["test"])) > 1  # the archs score differently: a real comparison


def test_stratified_archs_cover_the_cost_range() -> None:
    space = get_space("tiny")

    def cost(a: Arch) -> float:  # a made-up cost: kernel × expand summed
        return float(sum(op.kernel * op.expand for op in a.ops))

    archs = stratified_archs(space, cost, 6, seed=0, pool=3000)
    costs = [cost(a) for a in archs]
    assert len({tuple(a.block_strings()) for a in archs}) == 6
    assert costs == sorted(costs)
    # The space spans 27 (three k3e3 + three Zero) … 252 (six k7e6): the six strata reach
    # close to both ends, and neighbours are at least a bin apart on average.
    assert costs[0] <= 27 + 225 / 6 and costs[-1] >= 252 - 225 / 6
    assert (costs[-1] - costs[0]) / 5 >= 225 / 6 * 0.6
    assert stratified_archs(space, cost, 6, seed=0, pool=3000)[2].ops == archs[2].ops


def test_rank_correlations() -> None:
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [40, 30, 20, 10]) == pytest.approx(-1.0)
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    # a ranker that scores every arch alike carries no order: 0, not scipy's NaN
    assert kendall_tau([0.1, 0.1, 0.1], [1, 3, 2]) == 0.0
    assert spearman_rho([1, 3, 2], [5, 5, 5]) == 0.0
    assert spearman_rho([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)


def test_percentile_at_cost_counts_peers_within_tolerance() -> None:
    cloud = [(100, 0.5), (102, 0.6), (98, 0.7), (104, 0.8), (120, 0.99)]
    r = percentile_at_cost(100, 0.7, cloud)
    assert r["n_peers"] == 4  # 120 is outside ±5 %
    assert r["percentile"] == pytest.approx(100 * (2 + 0.5) / 4)
    assert r["vs_median"] == pytest.approx(0.7 - 0.65)
    assert r["vs_best"] == pytest.approx(0.7 - 0.8)
    assert percentile_at_cost(200, 0.7, cloud)["percentile"] is None


def test_residual_seed_std_removes_the_offset_each_seed_shares() -> None:
    # seed 1 is 0.1 lower for every arch: that offset is no noise between archs
    assert residual_seed_std([[0.8, 0.7], [0.9, 0.8], [0.6, 0.5]]) == pytest.approx(0.0)
    # the archs swap places: residuals ±0.05, 4 of them over (2-1)·(2-1) degrees of freedom
    assert residual_seed_std([[0.8, 0.7], [0.7, 0.8]]) == pytest.approx(0.1)
    assert residual_seed_std([[0.8], [0.7]]) is None


def test_percentile_ceiling_retrained_best_and_split_seed() -> None:
    # within ±5 % of 100: A (mean 0.85), B (0.75), C (0.80); 130 is outside
    cloud = [(100, [0.9, 0.8]), (101, [0.8, 0.7]), (99, [0.7, 0.9]), (130, [0.99, 0.99])]
    r = percentile_ceiling(100, cloud, seed_std=0.05)
    assert r["n_peers"] == 2
    # A re-measured: new minus stored mean has std 0.05·sqrt(2/2) = 0.05; gaps 0.10 and 0.05
    assert r["retrained_best"] == pytest.approx(100 * (0.977250 + 0.841345) / 2, abs=1e-3)
    # seed 0 picks A (0.9), scored on seed 1 (0.8 vs 0.7, 0.9): 50 %; seed 1 picks C (0.9),
    # scored on seed 0 (0.7 vs 0.9, 0.8): 0 %
    assert r["split_seed"] == pytest.approx(25.0)
    assert percentile_ceiling(100, cloud, seed_std=0.0)["retrained_best"] == 100.0


def test_percentile_ceiling_needs_a_peer_and_two_seeds_for_the_split() -> None:
    alone = percentile_ceiling(100, [(100, [0.8, 0.7]), (200, [0.9, 0.9])], seed_std=0.02)
    assert alone == {"n_peers": 0, "retrained_best": None, "split_seed": None}
    one_seed = percentile_ceiling(100, [(100, [0.8]), (101, [0.7])], seed_std=0.02)
    assert one_seed["split_seed"] is None
    assert one_seed["retrained_best"] > 50.0


def test_pareto_front_and_interpolation() -> None:
    cloud = [(1, 0.5), (2, 0.4), (3, 0.7), (4, 0.6), (5, 0.9)]
    front = pareto_front(cloud)
    assert front == [(1, 0.5), (3, 0.7), (5, 0.9)]
    assert front_at(front, 2) == pytest.approx(0.6)
    assert front_at(front, 0.5) == 0.5
    assert front_at(front, 9) == 0.9
