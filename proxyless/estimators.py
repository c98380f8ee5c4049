"""Gradient estimators for the architecture logits α — one small class each.

An estimator is an object handed to each arch step (`SuperNet.forward(x, estimator)`), never a
global mode. Binary gates g are a one-hot sample of p = softmax(α); the BinaryConnect-style
gradient is ``∂L/∂α_i = Σ_j ∂L/∂g_j · p_j (δ_ij − p_i)`` with ``∂L/∂g_j = ⟨∂L/∂y, o_j(x)⟩``.

>>> est = ESTIMATORS.build("all_paths")
>>> ESTIMATORS.names(), est.needs_graph
(['all_paths', 'darts', 'reinforce', 'two_path'], True)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch

from latency.registry import Registry

from .mixed_op import MixedLayer
from .ops import MBConv
from .recompute import dot, inner_products

Objective = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


ESTIMATORS: Registry[type[Estimator]] = Registry("estimator")


class Estimator:
    """Base: sample gates, run a layer, turn the task loss into the loss to backpropagate."""

    needs_graph: ClassVar[bool] = True

    def sample(self, layers: Iterable[MixedLayer], generator: torch.Generator | None) -> None:
        for layer in layers:
            layer.sample(generator)

    def forward(self, layer: MixedLayer, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def loss(
        self, net: Any, task_loss: torch.Tensor, objective: Objective | None = None
    ) -> torch.Tensor:
        """Differentiable estimators add the expected cost through the objective."""
        if objective is None:
            return task_loss
        return objective(task_loss, net.expected_cost() if net.has_costs else None)

    def after_step(self, layers: Iterable[MixedLayer]) -> None:
        """Hook run after the arch optimizer step."""


def gate_inner_products(
    layer: MixedLayer,
    x: torch.Tensor,
    grad: torch.Tensor,
    y_active: torch.Tensor | None,
    members: list[int],
    batch_fraction: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """⟨∂L/∂y, o_j(x)⟩ for j in `members` (Zero contributes 0), re-running inactive ones.

    With `batch_fraction` < 1 every member is evaluated on the same random subset of the
    batch and scaled up: unbiased for per-sample ops, while BatchNorm statistics then come
    from the subset (a small bias, measured in benchmarks/supernet_cost.py).
    """
    dg = torch.zeros(len(members), dtype=torch.float32, device=x.device)
    subset = batch_fraction < 1.0
    if subset:
        b = x.shape[0]
        m = max(2, round(b * batch_fraction))
        idx = torch.randperm(b, generator=generator)[:m].to(x.device)
        x, grad, scale = x[idx], grad[idx], b / m
    todo = [
        (k, j)
        for k, j in enumerate(members)
        if not layer.is_zero(j) and (subset or j != layer.active)
    ]
    with torch.no_grad():
        if not subset and y_active is not None and layer.active in members:
            dg[members.index(layer.active)] = dot(grad, y_active)
        ops = [layer.candidates[j] for _, j in todo]
        assert all(isinstance(op, MBConv) for op in ops)
        dg[[k for k, _ in todo]] = inner_products(ops, x, grad)  # type: ignore[arg-type]
    return dg * scale if subset else dg


class _BinaryGate(torch.autograd.Function):
    """Identity on the active output; backward turns ⟨∂L/∂y, o_j(x)⟩ into ∂L/∂α."""

    @staticmethod
    def forward(ctx: Any, alpha, x, y_active, layer, members, probs_fn, subsample):  # type: ignore[override]
        out = x + y_active if layer.residual else y_active
        ctx.save_for_backward(alpha, x, out)
        ctx.layer, ctx.members, ctx.probs_fn, ctx.subsample = layer, members, probs_fn, subsample
        # backward runs outside autocast; re-enter the forward's state for the re-runs
        dt = x.device.type
        ctx.amp = (dt, torch.is_autocast_enabled(dt), torch.get_autocast_dtype(dt))
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):  # type: ignore[override]
        alpha, x, out = ctx.saved_tensors
        layer: MixedLayer = ctx.layer
        y_active = None if layer.is_zero(layer.active) else (out - x if layer.residual else out)
        device_type, enabled, dtype = ctx.amp
        with torch.autocast(device_type, dtype=dtype, enabled=enabled):
            dg = gate_inner_products(layer, x, grad, y_active, ctx.members, *ctx.subsample)
        p = ctx.probs_fn(alpha)  # probabilities over `members`
        d_members = p * (dg - (dg * p).sum())
        d_alpha = torch.zeros_like(alpha)
        d_alpha[ctx.members] = d_members.to(alpha.dtype)
        return d_alpha, (grad if layer.residual else None), grad, None, None, None, None


def _active_output(layer: MixedLayer, x: torch.Tensor) -> torch.Tensor:
    if layer.is_zero(layer.active):
        return x.new_zeros(()).expand_as(x)
    return layer.candidates[layer.active](x)


@ESTIMATORS.register("all_paths")
class AllPaths(Estimator):
    """Memory-light exact estimator (official `full_v2`): one path forward, others re-run in
    backward under no_grad. Set `batch_fraction` < 1 for a cheaper, noisier estimate."""

    def __init__(self, batch_fraction: float = 1.0, generator: torch.Generator | None = None):
        if not 0.0 < batch_fraction <= 1.0:
            raise ValueError(f"batch_fraction must be in (0, 1], got {batch_fraction}")
        self.batch_fraction, self.generator = batch_fraction, generator

    def sample(self, layers: Iterable[MixedLayer], generator: torch.Generator | None) -> None:
        super().sample(layers, generator)
        if generator is not None:  # batch subsamples follow the step's seed like the paths
            self.generator = generator

    def forward(self, layer: MixedLayer, x: torch.Tensor) -> torch.Tensor:
        members = layer.members()

        def member_probs(alpha: torch.Tensor) -> torch.Tensor:
            return torch.softmax(alpha[members], dim=0)

        return _BinaryGate.apply(
            layer.alpha,
            x,
            _active_output(layer, x),
            layer,
            members,
            member_probs if len(members) < layer.num_candidates else _softmax,
            (self.batch_fraction, self.generator),
        )


def _softmax(a: torch.Tensor) -> torch.Tensor:
    return torch.softmax(a, dim=0)


@ESTIMATORS.register("two_path")
class TwoPath(Estimator):
    """Sample two candidates from p, gate between them with p renormalised over the pair,
    and after the update shift the pair's α so unsampled probabilities stay unchanged.

    The step's pairs and α before the update are this estimator's state, not the layers'."""

    def __init__(self) -> None:
        self.pairs: dict[MixedLayer, list[int]] = {}
        self.alpha_before: dict[MixedLayer, torch.Tensor] = {}

    def sample(self, layers: Iterable[MixedLayer], generator: torch.Generator | None) -> None:
        for layer in layers:
            with torch.no_grad():
                p = layer.probs().cpu()
                pair = torch.multinomial(p, 2, replacement=False, generator=generator).tolist()
                pick = int(torch.multinomial(p[pair], 1, generator=generator))
            layer.active = pair[pick]
            self.set_pair(layer, pair)

    def set_pair(self, layer: MixedLayer, pair: list[int]) -> None:
        """Gate `layer` between `pair` in the next step (its active path must be one of them)."""
        self.pairs[layer] = pair
        self.alpha_before[layer] = layer.alpha.detach().clone()

    def forward(self, layer: MixedLayer, x: torch.Tensor) -> torch.Tensor:
        pair = self.pairs[layer]

        def pair_probs(alpha: torch.Tensor) -> torch.Tensor:
            return torch.softmax(alpha[pair], dim=0)

        return _BinaryGate.apply(
            layer.alpha, x, _active_output(layer, x), layer, pair, pair_probs, (1.0, None)
        )

    def after_step(self, layers: Iterable[MixedLayer]) -> None:
        with torch.no_grad():
            for layer in layers:
                pair, old = self.pairs[layer], self.alpha_before[layer]
                new = layer.alpha.data
                keep = torch.ones_like(new, dtype=torch.bool)
                keep[pair] = False
                new[keep] = old[keep]  # optimizers with momentum must not move unsampled α
                new[pair] -= torch.logsumexp(new[pair], 0) - torch.logsumexp(old[pair], 0)


@ESTIMATORS.register("reinforce")
class Reinforce(Estimator):
    """Score-function estimator for non-differentiable objectives, with a moving baseline:
    loss = (value − b) · Σ_layers log p(g). The objective sees the *sampled* arch's cost."""

    needs_graph = False

    def __init__(self, baseline_decay: float = 0.99) -> None:
        self.baseline_decay, self.baseline = baseline_decay, None

    def forward(self, layer: MixedLayer, x: torch.Tensor) -> torch.Tensor:
        return layer(x)

    def loss(
        self, net: Any, task_loss: torch.Tensor, objective: Objective | None = None
    ) -> torch.Tensor:
        cost = net.sampled_cost() if net.has_costs else None
        value = task_loss if objective is None else objective(task_loss, cost)
        value = float(value.detach())
        if self.baseline is None:
            self.baseline = value
        advantage = value - self.baseline
        self.baseline = self.baseline_decay * self.baseline + (1 - self.baseline_decay) * value
        log_prob = sum(torch.log_softmax(layer.logits(), 0)[layer.active] for layer in net.layers)
        return advantage * log_prob  # type: ignore[operator]


@ESTIMATORS.register("darts")
class Darts(Estimator):
    """Full softmax mixture y = Σ p_j o_j(x): every path runs with autograd (the baseline)."""

    def sample(self, layers: Iterable[MixedLayer], generator: torch.Generator | None) -> None:
        """Nothing to sample: all paths run."""

    def forward(self, layer: MixedLayer, x: torch.Tensor) -> torch.Tensor:
        p = layer.probs()
        y = sum(p[j] * layer.candidates[j](x) for j in layer.members() if not layer.is_zero(j))
        return x + y if layer.residual else y  # type: ignore[return-value]
