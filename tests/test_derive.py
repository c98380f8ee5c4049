"""The derived arch: the most probable one within the cost window, checked by brute force."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from proxyless.derive import most_probable_archs_within
from proxyless.space import get_space
from proxyless.supernet import SuperNet


def most_probable_within(lp, costs, fixed, low, high):  # type: ignore[no-untyped-def]
    return most_probable_archs_within(lp, costs, fixed, low, high, 1)[0]


def brute_force(lp, costs, fixed, low, high):  # type: ignore[no-untyped-def]
    best, arg = -math.inf, None
    for idx in itertools.product(*(range(len(c)) for c in costs)):
        cost = fixed + sum(c[j] for c, j in zip(costs, idx))
        score = sum(p[j] for p, j in zip(lp, idx))
        if low <= cost <= high and score > best:
            best, arg = score, list(idx)
    return arg, best


@pytest.mark.parametrize("seed", range(6))
def test_matches_brute_force_on_random_instances(seed: int) -> None:
    rng = np.random.default_rng(seed)
    layers = [int(rng.integers(2, 6)) for _ in range(5)]
    lp = [np.log(rng.dirichlet(np.ones(n))).tolist() for n in layers]
    costs = [rng.uniform(0.5, 3.0, n).round(3).tolist() for n in layers]
    fixed = 1.0
    total = [
        fixed + sum(c[j] for c, j in zip(costs, idx))
        for idx in itertools.product(*(range(n) for n in layers))
    ]
    target = float(np.quantile(total, rng.uniform(0.2, 0.8)))
    low, high = 0.97 * target, 1.03 * target
    want, want_score = brute_force(lp, costs, fixed, low, high)
    got = most_probable_within(lp, costs, fixed, low, high)
    got_cost = fixed + sum(c[j] for c, j in zip(costs, got))
    assert low <= got_cost <= high
    assert sum(p[j] for p, j in zip(lp, got)) == pytest.approx(want_score)
    assert got == want


@pytest.mark.parametrize("seed", range(6))
def test_the_k_most_probable_match_brute_force(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    layers = [int(rng.integers(2, 6)) for _ in range(5)]
    lp = [np.log(rng.dirichlet(np.ones(n))).tolist() for n in layers]
    costs = [rng.uniform(0.5, 3.0, n).round(3).tolist() for n in layers]
    fixed = 1.0
    scored = []
    for idx in itertools.product(*(range(n) for n in layers)):
        cost = fixed + sum(c[j] for c, j in zip(costs, idx))
        scored.append((sum(p[j] for p, j in zip(lp, idx)), cost, list(idx)))
    target = float(np.quantile([c for _, c, _ in scored], rng.uniform(0.2, 0.8)))
    low, high = 0.95 * target, 1.05 * target
    inside = sorted((s for s in scored if low <= s[1] <= high), key=lambda s: -s[0])
    got = most_probable_archs_within(lp, costs, fixed, low, high, 7)
    assert len(got) == min(7, len(inside)) and len({tuple(g) for g in got}) == len(got)
    assert got == [idx for _, _, idx in inside[:7]]


def test_fewer_archs_than_asked_when_fewer_fit() -> None:
    lp = [np.log([0.6, 0.4]).tolist(), np.log([0.3, 0.7]).tolist()]
    costs = [[1.0, 2.0], [1.0, 3.0]]
    assert most_probable_archs_within(lp, costs, 0.0, 2.5, 3.5, 5) == [[1, 0]]  # only cost 3
    assert most_probable_archs_within(lp, costs, 0.0, 0.0, 10.0, 5) == [
        [0, 1],
        [1, 1],
        [0, 0],
        [1, 0],
    ]
    with pytest.raises(ValueError, match="count=0 must be >= 1"):
        most_probable_archs_within(lp, costs, 0.0, 0.0, 10.0, 0)


def test_argmax_is_kept_when_it_meets_the_window() -> None:
    lp = [np.log([0.7, 0.3]).tolist(), np.log([0.2, 0.8]).tolist()]
    costs = [[1.0, 2.0], [1.0, 3.0]]
    assert most_probable_within(lp, costs, 0.0, 3.5, 4.5) == [0, 1]


def test_a_window_no_arch_reaches_gives_the_closest_arch() -> None:
    lp = [np.log([0.5, 0.5]).tolist()] * 2
    costs = [[1.0, 2.0], [1.0, 2.0]]
    assert most_probable_within(lp, costs, 0.0, 10.0, 11.0) == [1, 1]  # all under: the largest
    assert most_probable_within(lp, costs, 0.0, 0.5, 1.0) == [0, 0]  # all over: the cheapest


def test_negative_costs_are_refused() -> None:
    with pytest.raises(ValueError, match="costs must be >= 0"):
        most_probable_within([[0.0, 0.0]], [[-1.0, 1.0]], 0.0, 0.0, 1.0)


def test_supernet_derive_meets_the_target_where_argmax_misses() -> None:
    torch.manual_seed(0)
    net = SuperNet(get_space("tiny"))
    costs = [[float(op.kernel * op.expand) for op in layer.spec.candidates] for layer in net.layers]
    net.set_costs(costs, fixed=5.0)
    with torch.no_grad():  # α favours Zero (cost 0) wherever it is a candidate
        for layer in net.layers:
            for i, op in enumerate(layer.spec.candidates):
                layer.alpha[i] = 1.0 if op.is_zero else 0.0
    plain = net.derive()
    target = 120.0
    arch = net.derive(target=target, tolerance=0.05)
    cost = net.cost_of(arch)
    assert net.cost_of(plain) < 0.95 * target
    assert 0.95 * target <= cost <= 1.05 * target
    assert net.derived_cost(target=target, tolerance=0.05) == pytest.approx(cost)
    assert arch.probs == plain.probs
