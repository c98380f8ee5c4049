"""Zero-cost proxies: score an untrained network from a few batches, without training it.

ZiCo (ICLR 2023; ../shared/METHODS.md) and the usual baselines, all with one signature
`proxy(model, batches) -> float` (higher = predicted better) in the `PROXIES` registry.
Every proxy works on a copy of the model, so the caller's weights, BatchNorm statistics and
`.grad` are left as they were. Only `Conv2d` and `Linear` weights count as "layers".

>>> from torch import nn
>>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
>>> g = torch.Generator().manual_seed(0)
>>> batches = [(torch.randn(5, 4, generator=g), torch.tensor([0, 1, 2, 0, 1])) for _ in range(2)]
>>> sorted(PROXIES)
['flops', 'grad_norm', 'naswot', 'params', 'synflow', 'zico', 'zico_acc', 'zico_noreslink']
>>> PROXIES.get("params")(net, batches)
67.0
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from latency.registry import Registry

Batch = tuple[torch.Tensor, torch.Tensor]
Proxy = Callable[[nn.Module, Sequence[Batch]], float]

PROXIES: Registry[Proxy] = Registry("zero-cost proxy")


class ProxyError(ValueError):
    """A proxy cannot score with these inputs; the message says why."""


def check_batches(batches: Sequence[Batch], at_least: int = 1) -> None:
    """Non-empty, finite inputs: a NaN image would give a NaN score that ranks anywhere."""
    if len(batches) < at_least:
        raise ProxyError(f"need at least {at_least} batch(es) of (x, y), got {len(batches)}")
    for i, (x, _) in enumerate(batches):
        if not torch.isfinite(x).all():
            bad = int((~torch.isfinite(x)).sum())
            raise ProxyError(
                f"batch {i}: the input holds {bad} NaN/inf value(s); proxies need finite "
                "inputs (check the data, or use random inputs)"
            )


def _scratch(model: nn.Module) -> nn.Module:
    """A copy to score, with no gradients carried over: the caller's model stays untouched."""
    net = copy.deepcopy(model)
    for p in net.parameters():
        p.grad = None
    return net


def _device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _weight_layers(model: nn.Module) -> list[nn.Parameter]:
    return [m.weight for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def _batch_grads(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor | None]:
    """Cross-entropy gradients of every Conv2d/Linear weight for one batch (None: unused)."""
    dev = _device(net)
    net.zero_grad(set_to_none=True)
    F.cross_entropy(net(x.to(dev)), y.to(dev)).backward()
    return [None if w.grad is None else w.grad.flatten().clone() for w in _weight_layers(net)]


def _add(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    return None if a is None or b is None else a + b


# --- ZiCo ---------------------------------------------------------------------------------------
def without_residuals(net: nn.Module) -> nn.Module:
    """Switch off `net`'s residual links in place (ZiCo's `no_reslink`), for every module that
    carries one (`Block`, `MixedLayer`). A Zero layer still passes its input on: Zero means
    "no block" (a standalone net does not build it; a mixed layer on Zero returns its input)."""
    for m in net.modules():
        if isinstance(getattr(m, "residual", None), bool):
            m.residual = False
    return net


def zico(
    model: nn.Module,
    batches: Sequence[Batch],
    accumulate: bool = False,
    no_reslink: bool = False,
) -> float:
    """Σ_l log Σ_{w∈l} mean_b|g_w| / std_b(g_w) over Conv2d/Linear weights (population std,
    weights with std 0 dropped, layers whose sum is 0 skipped). Train mode: BatchNorm on
    batch statistics. `accumulate=True` records the running sum of gradients, as the
    reference code does (it never zeroes them): batch b contributes g_1 + … + g_b.
    `no_reslink=True` scores the network with its residual links off, as the authors do
    (`without_residuals`)."""
    check_batches(batches, at_least=2)  # a std over one batch is 0 everywhere
    net = _scratch(model).train()
    if no_reslink:
        without_residuals(net)
    per_batch: list[list[torch.Tensor | None]] = []
    for x, y in batches:
        grads = _batch_grads(net, x, y)
        if accumulate and per_batch:
            prev = per_batch[-1]
            grads = [_add(p, g) for p, g in zip(prev, grads, strict=True)]
        per_batch.append(grads)
    score = 0.0
    for layer in zip(*per_batch, strict=True):
        if any(g is None for g in layer):
            continue  # not on the forward path (e.g. an inactive supernet candidate)
        g = torch.stack(layer).double()  # (batches, weights)
        std = g.std(dim=0, correction=0)
        keep = std > 0
        s = float((g.abs().mean(dim=0)[keep] / std[keep]).sum())
        if s > 0:
            score += math.log(s)
    return score


PROXIES.register("zico")(zico)


@PROXIES.register("zico_acc")
def zico_acc(model: nn.Module, batches: Sequence[Batch]) -> float:
    """ZiCo with the reference code's gradient accumulation."""
    return zico(model, batches, accumulate=True)


@PROXIES.register("zico_noreslink")
def zico_noreslink(model: nn.Module, batches: Sequence[Batch]) -> float:
    """ZiCo on the network with its residual links off (the authors' `no_reslink`)."""
    return zico(model, batches, no_reslink=True)


# --- baselines ----------------------------------------------------------------------------------
@PROXIES.register("params")
def params(model: nn.Module, batches: Sequence[Batch]) -> float:
    """Number of parameters (the batches are only checked, for one contract across proxies)."""
    check_batches(batches)
    return float(sum(p.numel() for p in model.parameters()))


@PROXIES.register("flops")
def flops(model: nn.Module, batches: Sequence[Batch]) -> float:
    """fvcore FLOPs of one input image (1 multiply-add = 1 flop)."""
    from latency.costs import flops as count

    check_batches(batches)
    net = _scratch(model).eval()  # tracing in train mode would update BN statistics
    return float(count(net, batches[0][0][:1].to(_device(net))))


def _linearised(net: nn.Module) -> nn.Module:
    """SynFlow's network: BatchNorm removed and ReLU6 made ReLU. With |θ| weights and an
    all-ones input every activation is positive, so ReLU is the identity SynFlow relies on,
    while ReLU6 would clip at 6: every MobileNet-style arch then scores the same (seen on
    all 24 ground-truth archs of benchmarks/search_quality.py)."""
    for name, child in net.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(net, name, nn.Identity())
        elif isinstance(child, nn.ReLU6 | nn.Hardtanh):
            setattr(net, name, nn.ReLU())
        else:
            _linearised(child)
    return net


@PROXIES.register("synflow")
def synflow(model: nn.Module, batches: Sequence[Batch]) -> float:
    """SynFlow (Tanaka et al. 2020): |θ| weights, BatchNorm removed, ReLU6 as ReLU, an
    all-ones input in float64; Σ |θ · ∂R/∂θ| over Conv2d/Linear weights with R the summed
    output. Data-free: only the input shape is used."""
    check_batches(batches)
    net = _linearised(_scratch(model)).double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    x = torch.ones_like(batches[0][0][:1], dtype=torch.float64, device=_device(net))
    net(x).sum().backward()
    grads = [(w * w.grad).abs().sum() for w in _weight_layers(net) if w.grad is not None]
    return float(torch.stack(grads).sum().detach()) if grads else 0.0


@PROXIES.register("grad_norm")
def grad_norm(model: nn.Module, batches: Sequence[Batch]) -> float:
    """Σ over Conv2d/Linear weights of ‖∂CE/∂w‖₂, averaged over batches (train mode)."""
    check_batches(batches)
    net = _scratch(model).train()
    total = 0.0
    for x, y in batches:
        total += sum(float(g.norm()) for g in _batch_grads(net, x, y) if g is not None)
    return total / len(batches)


@PROXIES.register("naswot")
def naswot(model: nn.Module, batches: Sequence[Batch]) -> float:
    """NASWOT (Mellor et al. 2021): log|det K| of the Hamming-similarity kernel of the
    binary ReLU/ReLU6 activation codes of the images of a batch, averaged over batches."""
    check_batches(batches)
    net = _scratch(model).train()
    codes: list[torch.Tensor] = []

    def hook(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
        codes.append((out.detach().flatten(1) > 0).double())

    handles = [
        m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.ReLU | nn.ReLU6)
    ]
    total = 0.0
    try:
        for x, _ in batches:
            codes.clear()
            with torch.no_grad():
                net(x.to(_device(net)))
            if not codes:
                raise ProxyError("naswot needs ReLU or ReLU6 modules in the model")
            c = torch.cat(codes, dim=1)
            k = c @ c.T + (1 - c) @ (1 - c).T
            total += float(torch.linalg.slogdet(k).logabsdet)
    finally:
        for h in handles:
            h.remove()
    return total / len(batches)
