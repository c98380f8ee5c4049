"""Exact values and gradients of the hardware-aware objectives."""

from __future__ import annotations

import math

import pytest
import torch

from proxyless.estimators import ESTIMATORS
from proxyless.objective import ObjectiveError, build_objective
from proxyless.space import get_space
from proxyless.supernet import SuperNet


def _leaf(v: float) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.float64, requires_grad=True)


def test_mul_log_value_and_gradients() -> None:
    ce, cost, t = _leaf(2.0), _leaf(50.0), 40.0
    alpha, beta = 0.2, 0.3
    loss = build_objective("mul_log", target=t, alpha=alpha, beta=beta)(ce, cost)
    ratio = math.log(50.0) / math.log(40.0)
    assert loss.item() == pytest.approx(alpha * 2.0 * ratio**beta, rel=1e-12)
    loss.backward()
    # d/dE [a·CE·(log E / log T)^b] = a·CE·b·ratio^(b-1) / (E·log T)
    want = alpha * 2.0 * beta * ratio ** (beta - 1) / (50.0 * math.log(40.0))
    assert float(cost.grad) == pytest.approx(want, rel=1e-12)
    assert float(ce.grad) == pytest.approx(alpha * ratio**beta, rel=1e-12)


def test_mul_log_at_target_is_scaled_task_loss() -> None:
    loss = build_objective("mul_log", target=80.0)(torch.tensor(1.5), torch.tensor(80.0))
    assert loss.item() == pytest.approx(0.2 * 1.5)


def test_add_linear_value_and_gradients() -> None:
    ce, cost = _leaf(1.0), _leaf(12.0)
    loss = build_objective("add_linear", target=10.0, lam=0.1)(ce, cost)
    assert loss.item() == pytest.approx(1.0 + 0.1 * 2.0 / 10.0, rel=1e-12)
    loss.backward()
    assert float(cost.grad) == pytest.approx(0.1 / 10.0, rel=1e-12)
    assert float(ce.grad) == 1.0


def test_none_and_latency_only() -> None:
    ce, cost = _leaf(0.7), _leaf(30.0)
    assert build_objective("none")(ce, cost) is ce
    assert build_objective("none")(ce, None) is ce
    loss = build_objective("latency_only", target=20.0)(ce, cost)
    assert loss.item() == pytest.approx(0.25)
    loss.backward()
    assert float(cost.grad) == pytest.approx(2 * 0.5 / 20.0)
    assert ce.grad is None  # the task loss is switched off entirely
    assert build_objective("latency_only")(ce, cost) is cost


@pytest.mark.parametrize(
    ("kind", "target", "match"),
    [
        ("mul_log", None, "positive hardware.target"),
        ("mul_log", 0.9, "T > 1|> 1"),
        ("add_linear", -1.0, "positive"),
        ("bogus", 1.0, "unknown objective"),
    ],
)
def test_bad_objectives(kind: str, target: float | None, match: str) -> None:
    with pytest.raises(ObjectiveError, match=match):
        build_objective(kind, target=target)


def test_objective_without_cost_names_the_fix() -> None:
    with pytest.raises(ObjectiveError, match="hardware"):
        build_objective("add_linear", target=5.0)(torch.tensor(1.0), None)


def test_estimator_loss_backpropagates_cost_into_alpha() -> None:
    """Through Estimator.loss, the latency term reaches α (a port once lost this gradient)."""
    net = SuperNet(get_space("tiny"))
    net.set_costs([[float(j) for j in range(layer.num_candidates)] for layer in net.layers], 1.0)
    est = ESTIMATORS.build("all_paths")
    loss = est.loss(net, torch.tensor(0.0), build_objective("latency_only"))
    loss.backward()
    for layer in net.layers:
        g = layer.alpha.grad
        assert g is not None and float(g.abs().sum()) > 0
        assert int(g.argmin()) == 0  # cheapest candidate's logit is pushed up the most


def test_add_abs_value_and_gradient_sign_flips_at_target() -> None:
    f = build_objective("add_abs", target=10.0, lam=1.0)
    above, below = _leaf(12.0), _leaf(8.0)
    assert f(torch.tensor(1.0), above).item() == pytest.approx(1.2)
    f(torch.tensor(1.0), above).backward()
    f(torch.tensor(1.0), below).backward()
    assert float(above.grad) == pytest.approx(0.1) and float(below.grad) == pytest.approx(-0.1)
