"""Zero-cost proxies: ZiCo against a closed-form computation on a 2-layer linear network
(both variants), every proxy on a net with a Zero layer, a residual and a stride-2 layer,
the caller's model left untouched, and a clear error for NaN/inf inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from proxyless.arch import Arch
from proxyless.ops import Block
from proxyless.space import OpSpec, get_space
from proxyless.supernet import SuperNet
from proxyless.zeroshot import PROXIES, ProxyError, without_residuals, zico

W1 = np.array([[1.0, -0.5], [0.25, 2.0]])
W2 = np.array([[0.5, 1.0], [-1.0, 0.75]])
BATCHES = [
    (np.array([[1.0, 2.0], [0.0, -1.0]]), np.array([0, 1])),
    (np.array([[-2.0, 0.5], [1.0, 1.0]]), np.array([1, 1])),
    (np.array([[0.5, 0.5], [3.0, -1.0]]), np.array([0, 0])),
]


def _two_layer() -> nn.Module:
    net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.from_numpy(W1))
        net[1].weight.copy_(torch.from_numpy(W2))
    return net


def _hand_grads(x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """Mean cross-entropy of z = W2 W1 x: δ = (softmax(z) − onehot(y)) / B,
    ∂/∂W2 = Σ δ hᵀ with h = W1 x, ∂/∂W1 = Σ (W2ᵀ δ) xᵀ."""
    h = x @ W1.T
    z = h @ W2.T
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    delta = (p - np.eye(2)[y]) / len(y)
    return [((delta @ W2).T @ x).ravel(), (delta.T @ h).ravel()]


def _hand_zico(accumulate: bool) -> float:
    grads = [_hand_grads(x, y) for x, y in BATCHES]  # [batch][layer]
    if accumulate:
        grads = [[sum(g[layer] for g in grads[: b + 1]) for layer in range(2)] for b in range(3)]
    score = 0.0
    for layer in range(2):
        g = np.stack([grads[b][layer] for b in range(3)])
        mean_abs, std = np.abs(g).mean(0), g.std(0)  # numpy's std: population (ddof 0)
        score += math.log((mean_abs[std > 0] / std[std > 0]).sum())
    return score


@pytest.mark.parametrize("accumulate", [False, True])
def test_zico_matches_a_computation_by_hand(accumulate: bool) -> None:
    batches = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in BATCHES]
    got = zico(_two_layer(), batches, accumulate=accumulate)
    assert got == pytest.approx(_hand_zico(accumulate), rel=1e-9)
    assert PROXIES.get("zico_acc" if accumulate else "zico")(_two_layer(), batches) == got


def test_zico_no_reslink_scores_the_network_without_its_residual_link() -> None:
    """W2 as a residual block: with its link off the net is the 2-layer net of the hand
    computation; with it on, the score differs. The caller's block keeps its link."""
    net = _two_layer()
    model = nn.Sequential(net[0], Block(net[1], residual=True))
    batches = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in BATCHES]
    assert zico(model, batches, no_reslink=True) == pytest.approx(_hand_zico(False), rel=1e-9)
    assert zico(model, batches) != pytest.approx(_hand_zico(False), rel=1e-3)
    assert model[1].residual
    assert PROXIES.get("zico_noreslink")(model, batches) == zico(model, batches, no_reslink=True)


def test_without_residuals_keeps_zero_layers_the_identity() -> None:
    """Every link goes; a supernet layer on Zero still passes its input on."""
    model, batches = _tiny_net_with_zero_residual_and_stride2()
    blocks = [m for m in without_residuals(model).modules() if isinstance(m, Block)]
    assert blocks and not any(b.residual for b in blocks)
    net = SuperNet(get_space("tiny"))
    zero = net.layers[1].spec.candidates.index(OpSpec("zero"))
    net.layers[1].active = zero
    without_residuals(net)
    x = torch.randn(2, 16, 16, 16)
    assert not net.layers[1].residual and torch.equal(net.layers[1](x), x)
    assert math.isfinite(zico(net, batches, no_reslink=True))


def test_the_two_zico_variants_differ() -> None:
    assert _hand_zico(False) != pytest.approx(_hand_zico(True), rel=1e-3)


def _tiny_net_with_zero_residual_and_stride2() -> tuple[nn.Module, list]:
    space = get_space("tiny")
    layers = space.layers()
    ops = [layer.candidates[0] for layer in layers]
    ops[1] = OpSpec("zero")  # layer 1: stride 1, 16 -> 16: residual, Zero allowed
    assert layers[0].stride == 2 and layers[1].residual and layers[3].residual
    model = Arch(space, ops).build()
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(4, 3, 32, 32, generator=g), torch.randint(0, 10, (4,), generator=g))]
    return model, batches * 2


@pytest.mark.parametrize("name", list(PROXIES))
def test_every_proxy_scores_a_net_with_zero_residual_and_stride2(name: str) -> None:
    model, batches = _tiny_net_with_zero_residual_and_stride2()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    score = PROXIES.get(name)(model, batches)
    assert isinstance(score, float) and math.isfinite(score)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN stats
    assert all(p.grad is None for p in model.parameters())
    assert model.training


@pytest.mark.parametrize("name", ["zico", "synflow", "grad_norm", "naswot"])
def test_proxies_score_a_supernet_on_its_active_path(name: str) -> None:
    net = SuperNet(get_space("tiny"))
    net.sample_paths(torch.Generator().manual_seed(1), uniform=True)
    _, batches = _tiny_net_with_zero_residual_and_stride2()
    assert math.isfinite(PROXIES.get(name)(net, batches))


@pytest.mark.parametrize("name", list(PROXIES))
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_inputs_are_a_clear_error(name: str, bad: float) -> None:
    model, batches = _tiny_net_with_zero_residual_and_stride2()
    x, y = batches[1]
    x = x.clone()
    x[0, 0, 0, 0] = bad
    with pytest.raises(ProxyError, match=r"batch 1: .*NaN/inf"):
        PROXIES.get(name)(model, [batches[0], (x, y)])


def test_zico_needs_two_batches() -> None:
    model, batches = _tiny_net_with_zero_residual_and_stride2()
    with pytest.raises(ProxyError, match="at least 2 batch"):
        zico(model, batches[:1])


def test_synflow_tells_relu6_archs_apart() -> None:
    """ReLU6 clipped every activation of the |θ|, all-ones network at 6: every arch of the
    tiny space scored the same."""
    from proxyless.arch import Arch
    from proxyless.space import get_space

    batch = [(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))]
    scores = []
    for ops in (["mb_k3_e3", "zero"] * 3, ["mb_k7_e6"] * 6):
        torch.manual_seed(0)
        arch = Arch.from_strings(get_space("tiny"), ops)
        scores.append(PROXIES.get("synflow")(arch.build(), batch))
    assert scores[1] > 10 * scores[0]
