"""The arch-gradient math, checked against exact values."""

import pytest
import torch

from proxyless.estimators import ESTIMATORS, Darts
from proxyless.mixed_op import MixedLayer
from proxyless.space import get_space
from proxyless.supernet import SuperNet


def _layer(residual: bool, weight_sharing: str = "separate") -> MixedLayer:
    torch.manual_seed(0)
    layers = get_space("tiny").layers()
    spec = next(layer for layer in layers if layer.residual == residual)
    layer = MixedLayer(spec, weight_sharing=weight_sharing)
    with torch.no_grad():
        layer.alpha.normal_(0, 0.5)
    for p in layer.parameters():
        p.requires_grad_(p is layer.alpha)
    return layer


def _linear_loss_grad(layer, estimator, x, w):
    layer.alpha.grad = None
    out = estimator.forward(layer, x)
    (out * w).sum().backward()
    return layer.alpha.grad.clone()


@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize("train_mode", [True, False])
@pytest.mark.parametrize("weight_sharing", ["separate", "nested"])
def test_all_paths_equals_exact_mixture_gradient_for_every_active_path(
    residual, train_mode, weight_sharing
):
    layer = _layer(residual, weight_sharing)
    if not train_mode:  # BatchNorm on running statistics: the re-runs must fold those instead
        layer.train()
        for _ in range(3):
            for op in layer.candidates:
                op(torch.randn(8, layer.spec.in_channels, layer.spec.in_size, layer.spec.in_size))
        layer.eval()
    spec = layer.spec
    x = torch.randn(4, spec.in_channels, spec.in_size, spec.in_size)
    w = torch.randn(4, spec.out_channels, spec.out_size, spec.out_size)
    exact = _linear_loss_grad(layer, Darts(), x, w)
    assert exact.abs().max() > 1e-3
    for active in range(layer.num_candidates):  # includes Zero where the layer allows it
        layer.active = active
        got = _linear_loss_grad(layer, ESTIMATORS.build("all_paths"), x, w)
        torch.testing.assert_close(got, exact, atol=1e-5, rtol=1e-4)


def test_zero_sampled_still_gives_an_arch_gradient():
    layer = _layer(residual=True)
    layer.active = next(i for i in range(layer.num_candidates) if layer.is_zero(i))
    spec = layer.spec
    x = torch.randn(2, spec.in_channels, spec.in_size, spec.in_size)
    grad = _linear_loss_grad(layer, ESTIMATORS.build("all_paths"), x, torch.randn_like(x))
    assert grad.abs().sum() > 0 and torch.isfinite(grad).all()


def test_all_paths_recompute_leaves_batchnorm_statistics_alone():
    layer = _layer(residual=True)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    layer.active = 0
    spec = layer.spec
    x = torch.randn(2, spec.in_channels, spec.in_size, spec.in_size)
    _linear_loss_grad(layer, ESTIMATORS.build("all_paths"), x, torch.randn_like(x))
    after = layer.state_dict()
    changed = {
        k.split(".")[1] for k in before if k != "alpha" and not torch.equal(before[k], after[k])
    }
    assert changed == {"0"}  # only the active candidate ran in train mode


def test_subsampled_all_paths_is_close_to_exact_on_average():
    layer = _layer(residual=True)
    layer.active = 0
    spec = layer.spec
    x = torch.randn(16, spec.in_channels, spec.in_size, spec.in_size)
    w = torch.randn_like(x)
    exact = _linear_loss_grad(layer, ESTIMATORS.build("all_paths"), x, w)
    gen = torch.Generator().manual_seed(0)
    est = ESTIMATORS.build("all_paths", batch_fraction=0.5, generator=gen)
    mean = torch.stack([_linear_loss_grad(layer, est, x, w) for _ in range(200)]).mean(0)
    # BatchNorm statistics of a half batch bias the estimate slightly; it stays close.
    assert torch.linalg.vector_norm(mean - exact) < 0.2 * torch.linalg.vector_norm(exact)
    with pytest.raises(ValueError, match="batch_fraction"):
        ESTIMATORS.build("all_paths", batch_fraction=0.0)


def test_two_path_keeps_unsampled_probabilities_and_matches_pair_mixture():
    layer = _layer(residual=True)
    spec = layer.spec
    x = torch.randn(4, spec.in_channels, spec.in_size, spec.in_size)
    w = torch.randn_like(x)
    est = ESTIMATORS.build("two_path")
    # Momentum on purpose: the estimator must still keep unsampled α where they were.
    opt = torch.optim.Adam([layer.alpha], lr=0.1, betas=(0.9, 0.999))
    for _ in range(5):
        est.sample([layer], torch.Generator().manual_seed(_))
        p_before = layer.probs().detach().clone()
        pair = est.pairs[layer]
        grad = _linear_loss_grad(layer, est, x, w)
        others = [j for j in range(layer.num_candidates) if j not in pair]
        assert torch.all(grad[others] == 0)
        # exact gradient of the two-candidate mixture with p renormalised over the pair
        alpha = layer.alpha.detach().clone().requires_grad_(True)
        q = torch.softmax(alpha[pair], 0)
        outs = [torch.zeros_like(x) if layer.is_zero(j) else layer.candidates[j](x) for j in pair]
        (((q[0] * outs[0] + q[1] * outs[1]) + x) * w).sum().backward()
        torch.testing.assert_close(grad, alpha.grad, atol=1e-5, rtol=1e-4)
        opt.step()
        est.after_step([layer])
        p_after = layer.probs().detach()
        torch.testing.assert_close(p_after[others], p_before[others], atol=1e-7, rtol=1e-6)
        assert not torch.allclose(p_after[pair], p_before[pair])


class _OneLayerNet:
    has_costs = False

    def __init__(self, layer):
        self.layers = [layer]


def test_reinforce_is_unbiased_on_a_toy_problem():
    torch.manual_seed(0)
    layer = _layer(residual=True)
    with torch.no_grad():
        layer.alpha.copy_(torch.linspace(-1, 1, layer.num_candidates))
    losses = torch.linspace(0.5, 3.0, layer.num_candidates)  # loss of each candidate
    p = layer.probs().detach()
    exact = p * (losses - (p * losses).sum())  # ∇_α Σ_j p_j L_j
    est, net = ESTIMATORS.build("reinforce", baseline_decay=0.9), _OneLayerNet(layer)
    gen = torch.Generator().manual_seed(1)
    total, n = torch.zeros_like(exact), 20000
    for _ in range(n):
        est.sample(net.layers, gen)
        layer.alpha.grad = None
        est.loss(net, losses[layer.active].clone()).backward()
        total += layer.alpha.grad
    torch.testing.assert_close(total / n, exact, atol=0.01, rtol=0.05)


def test_weight_steps_never_touch_unsampled_candidates():
    from proxyless.steps import weight_step

    torch.manual_seed(0)
    net = SuperNet(get_space("tiny"))
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):  # give many candidates momentum buffers
        weight_step(net, x, y, opt, gen, uniform=True)
    net.set_paths([0] * len(net.layers))
    off_path = [p for layer in net.layers for c in layer.candidates[1:] for p in c.parameters()]
    before = [p.detach().clone() for p in off_path]
    momentum = [opt.state[p]["momentum_buffer"].clone() for p in off_path if p in opt.state]
    weight_step(net, x, y, opt, resample=False)
    assert all(p.grad is None for p in off_path)
    assert all(torch.equal(p, b) for p, b in zip(off_path, before, strict=True))
    after = [opt.state[p]["momentum_buffer"] for p in off_path if p in opt.state]
    assert all(torch.equal(a, b) for a, b in zip(after, momentum, strict=True))
    assert all(p.grad is None for p in net.arch_parameters())


def test_weight_step_learns_a_teachers_probabilities_instead_of_labels():
    """One-hot teacher probabilities give the label step exactly; soft ones the gradient of
    the cross-entropy against them, −Σ p_t log softmax(z), computed by hand."""
    import copy

    from proxyless.steps import weight_step

    torch.manual_seed(0)
    net = SuperNet(get_space("tiny")).train()
    net.set_paths([1] * len(net.layers))
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    a, b = copy.deepcopy(net), copy.deepcopy(net)
    loss_a, _ = weight_step(a, x, y, torch.optim.SGD(a.weight_parameters(), lr=0.0), resample=False)
    one_hot = torch.nn.functional.one_hot(y, 10).float()
    opt_b = torch.optim.SGD(b.weight_parameters(), lr=0.0)
    loss_b, _ = weight_step(b, x, y, opt_b, resample=False, teacher=one_hot)
    assert torch.equal(loss_a, loss_b)
    for pa, pb in zip(a.weight_parameters(), b.weight_parameters(), strict=True):
        assert (pa.grad is None) == (pb.grad is None)
        if pa.grad is not None:
            assert torch.equal(pa.grad, pb.grad)
    soft = torch.softmax(torch.randn(4, 10), 1)
    c = copy.deepcopy(net)
    loss_c, logits = weight_step(
        c, x, y, torch.optim.SGD(c.weight_parameters(), lr=0.0), resample=False, teacher=soft
    )
    by_hand = -(soft * torch.log_softmax(logits, 1)).sum(1).mean()
    assert loss_c == pytest.approx(float(by_hand), rel=1e-6)


@pytest.mark.parametrize("name", ["all_paths", "two_path", "darts", "reinforce"])
def test_arch_step_changes_only_alpha(name):
    from proxyless.steps import arch_step

    torch.manual_seed(0)
    net = SuperNet(get_space("tiny"))
    net.set_costs([[1.0 + j for j in range(layer.num_candidates)] for layer in net.layers], 1.0)
    weights = [p.detach().clone() for p in net.weight_parameters()]
    alphas = [a.detach().clone() for a in net.arch_parameters()]
    opt = torch.optim.Adam(net.arch_parameters(), lr=0.01, betas=(0.0, 0.999))
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    est = ESTIMATORS.build(name)
    for _ in range(2):  # reinforce's first step only sets its baseline
        arch_step(net, est, x, y, opt, objective=lambda loss, cost: loss + 0.1 * cost)
    assert all(torch.equal(p, w) for p, w in zip(net.weight_parameters(), weights, strict=True))
    assert all(p.requires_grad for p in net.weight_parameters())
    assert any(not torch.equal(a, b) for a, b in zip(net.arch_parameters(), alphas, strict=True))


def test_unknown_estimator_lists_choices():
    with pytest.raises(KeyError, match="all_paths"):
        ESTIMATORS.build("gumbel")
