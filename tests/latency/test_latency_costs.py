"""Expected cost gradients against the analytic formula; fvcore counts against hand counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from latency.costs import expected_cost, flops, params


def test_expected_cost_value_and_gradient() -> None:
    alphas = [
        torch.tensor([0.3, -0.2], requires_grad=True),
        torch.tensor([0.1, 0.5, -1.0], requires_grad=True),
    ]
    costs = [torch.tensor([2.0, 5.0]), [1.0, 3.0, 0.0]]  # last candidate: Zero, cost 0
    probs = [a.softmax(0) for a in alphas]
    total = expected_cost(probs, costs, fixed=0.7)
    p0, p1 = (p.detach() for p in probs)
    c1 = torch.tensor([1.0, 3.0, 0.0])
    assert total.item() == pytest.approx(0.7 + (p0 * costs[0]).sum() + (p1 * c1).sum())
    total.backward()
    # two candidates: dE/dα_0 = p(1-p)(c_0 - c_1)
    p = p0[0].item()
    assert alphas[0].grad[0].item() == pytest.approx(p * (1 - p) * (2.0 - 5.0), rel=1e-6)
    # general: dE/dα_i = p_i (c_i - Σ_j p_j c_j)
    want = p1 * (c1 - (p1 * c1).sum())
    torch.testing.assert_close(alphas[1].grad, want)


def test_expected_cost_checks_shapes() -> None:
    with pytest.raises(ValueError, match="shape"):
        expected_cost([torch.ones(2) / 2], [torch.ones(3)])
    with pytest.raises(ValueError, match="cost vectors"):
        expected_cost([torch.ones(2) / 2], [])
    assert expected_cost([], [], fixed=1.5).item() == 1.5


def test_flops_and_params_hand_counted() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU(), nn.Conv2d(8, 4, 1))
    x = torch.randn(1, 3, 16, 16)
    # fvcore counts multiply-adds: 16·16 outputs · (8·3·9 + 4·8)
    assert flops(net, x) == 16 * 16 * (8 * 3 * 9) + 16 * 16 * (4 * 8)
    assert params(net) == 8 * 3 * 9 + (4 * 8 + 4)
    assert net.training  # restored
