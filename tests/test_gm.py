"""GM scoring and partitioning (`proxyless.gm`): the exhaustive partition against brute
force, and a dissimilarity that leaves the supernet exactly as it was."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from proxyless.gm import best_partition, dissimilarity, set_partitions
from proxyless.space import get_space
from proxyless.supernet import SuperNet


def stirling2(n: int, k: int) -> int:
    return sum((-1) ** i * math.comb(k, i) * (k - i) ** n for i in range(k + 1)) // math.factorial(
        k
    )


@pytest.mark.parametrize(("n", "ways"), [(2, 2), (4, 2), (5, 3), (7, 2), (7, 3), (3, 3)])
def test_set_partitions_are_all_partitions_once(n: int, ways: int) -> None:
    parts = list(set_partitions(n, ways))
    assert len(parts) == stirling2(n, ways)
    keys = {tuple(tuple(g) for g in p) for p in parts}
    assert len(keys) == len(parts)
    for p in parts:
        assert len(p) == ways and all(p) and sorted(i for g in p for i in g) == list(range(n))


def brute_force(d: torch.Tensor, ways: int) -> float:
    n = d.shape[0]
    best = math.inf
    for labels in itertools.product(range(ways), repeat=n):
        if len(set(labels)) < ways:
            continue
        s = sum(float(d[i, j]) for i in range(n) for j in range(i + 1, n) if labels[i] == labels[j])
        best = min(best, s)
    return best


@pytest.mark.parametrize("ways", [2, 3])
@pytest.mark.parametrize("n", [3, 5, 7])
def test_best_partition_matches_brute_force(n: int, ways: int) -> None:
    gen = torch.Generator().manual_seed(n * 10 + ways)
    for _ in range(3):
        a = torch.rand(n, n, generator=gen, dtype=torch.float64)
        d = a + a.T
        d.fill_diagonal_(0)
        groups, score = best_partition(d, ways)
        assert score == pytest.approx(brute_force(d, ways))
        within = sum(float(d[i, j]) for g in groups for i in g for j in g if i < j)
        assert within == pytest.approx(score)


def test_best_partition_separates_two_obvious_camps() -> None:
    # candidates 0, 2, 4 agree with each other, 1, 3, 5 too; the camps disagree
    camp = torch.tensor([0, 1, 0, 1, 0, 1])
    d = (camp[:, None] != camp[None, :]).double() * 1.5 + 0.05
    d.fill_diagonal_(0)
    groups, score = best_partition(d, 2)
    assert groups == [[0, 2, 4], [1, 3, 5]]
    assert score == pytest.approx(6 * 0.05)
    groups3, _ = best_partition(d[:5, :5], 3)  # 3 groups of 5: one camp is cut in two
    assert all(len({int(camp[i]) for i in g}) == 1 for g in groups3)


def test_best_partition_refuses_too_few_candidates() -> None:
    with pytest.raises(ValueError, match="cannot split 2 candidates into 3"):
        best_partition(torch.zeros(2, 2), 3)


def test_dissimilarity_is_a_dissimilarity_and_changes_nothing() -> None:
    torch.manual_seed(0)
    net = SuperNet(get_space("tiny"))
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    from proxyless.steps import weight_step

    weight_step(net, x, y, opt, uniform=True)  # some momentum and moved BN statistics
    net.layers[3].restrict([0, 2, 5, 6])  # a pruned layer: D over its members, zero included
    before = {k: v.clone() for k, v in net.state_dict().items()}
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in net.named_parameters()}
    momentum = {id(p): s["momentum_buffer"].clone() for p, s in opt.state.items()}
    paths = net.active_paths()
    batches = [(torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))) for _ in range(2)]
    d = dissimilarity(net, 3, batches, torch.Generator().manual_seed(1))
    assert d.shape == (4, 4) and d.dtype == torch.float64
    assert torch.allclose(d, d.T) and bool((d.diagonal() == 0).all())
    off = d[~torch.eye(4, dtype=torch.bool)]
    assert bool((off > 0).all()) and bool((off < 2).all())
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    for n, p in net.named_parameters():
        assert (p.grad is None) == (grads[n] is None) and (
            p.grad is None or torch.equal(p.grad, grads[n])
        ), n
    for p, s in opt.state.items():
        assert torch.equal(s["momentum_buffer"], momentum[id(p)])
    assert net.active_paths() == paths
    again = dissimilarity(net, 3, batches, torch.Generator().manual_seed(1))
    assert torch.equal(d, again)  # a function of the state, batches and generator
