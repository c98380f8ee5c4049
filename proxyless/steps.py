"""One weight step and one arch step: the two moves of the search, shared by the search loop,
the benchmarks and the tests so that what is measured is what runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .estimators import Estimator, Objective
from .supernet import SuperNet


def weight_step(
    net: SuperNet,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator | None = None,
    uniform: bool = False,
    label_smoothing: float = 0.0,
    resample: bool = True,
    teacher: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one path (uniformly in warmup), train only it. Returns (loss, logits), detached.

    With `teacher` (class probabilities for `x`), the path learns them instead of `y`.

    Gradients are set to None, not zero, so candidates off the path get no momentum or
    weight-decay update from optimizers that skip parameters without a gradient (SGD, Adam).
    """
    if resample:
        net.sample_paths(generator, uniform=uniform)
    optimizer.zero_grad(set_to_none=True)
    logits = net(x)
    if teacher is None:
        loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    else:
        loss = F.cross_entropy(logits, teacher)
    loss.backward()
    for p in net.arch_parameters():
        p.grad = None
    optimizer.step()
    return loss.detach(), logits.detach()


def arch_step(
    net: SuperNet,
    estimator: Estimator,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator | None = None,
    objective: Objective | None = None,
    resample: bool = True,
    stats: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Update α on a held-out batch; weights are frozen, so no weight gradient is computed.

    Returns (task loss, loss that was backpropagated), detached; `stats`, when given,
    receives the batch's accuracy (`acc`, a 0-d tensor) of the sampled path.
    """
    optimizer.zero_grad(set_to_none=True)
    with net.frozen_weights():
        if resample:
            estimator.sample(net.layers, generator)
        with torch.set_grad_enabled(estimator.needs_graph):
            logits = net(x, estimator)
            task_loss = F.cross_entropy(logits, y)
        if stats is not None:
            stats["acc"] = (logits.detach().argmax(1) == y).float().mean()  # no host sync
        loss = estimator.loss(net, task_loss, objective)
        loss.backward()
    optimizer.step()
    estimator.after_step(net.layers)
    return task_loss.detach(), loss.detach()
