"""Judging an arch by a short training from scratch: the `derive.judge=train` judge.

Why. On the clutter benchmark neither α nor the supernet's inherited weights see what
decides accuracy at equal cost between a search's finalists: with weight sharing, a Zero in
the one stride-1 layer at 8×8 looks no worse than a Zero elsewhere, yet costs 4–7 points
when the net trains alone. Training each finalist alone judges the net the user will train,
at the price of a few short trainings. Whether short is long enough depends on the task: on
clutter it is not (4- and 8-epoch trainings rank random archs at Kendall τ 0.03 and 0.22
against their 16-epoch accuracy: README, `benchmarks/brief_training_ranking.py`, which measures it
for any stored ground truth).

Every finalist trains with the same seed (same initial-weight stream and data order:
common random numbers), so the differences between them are the arch's, not the draw's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F

from .arch import Arch
from .distributed import DistContext
from .run import SGDConfig, evaluate, forked_rng, lr_at, set_lr, sgd


def brief_training_accuracy(
    arch: Arch,
    train: Any,
    heldout: Iterable[Any],
    ctx: DistContext,
    epochs: int,
    optim: SGDConfig,
    seed: int,
    label_smoothing: float = 0.0,
    memory_format: torch.memory_format = torch.preserve_format,
) -> float:
    """Held-out top-1 (fraction) of `arch` trained from scratch for `epochs` on `train`.

    `train` is a DataLoader whose sampler has `set_epoch` (and `start`, reset to 0): pass
    a search's training loader — the caller's sampler position is restored, and so are the
    global RNGs, so a search that judges archs at its end leaves no trace on its state.
    Under DDP every rank trains the same net on its shard, gradients averaged over ranks."""
    if epochs < 1:
        raise ValueError(f"epochs={epochs} must be >= 1")
    dev = ctx.device
    sampler = train.sampler
    saved = sampler.state_dict()
    try:
        with forked_rng(dev):
            torch.manual_seed(seed)
            model = arch.build().to(dev, memory_format=memory_format)
            optimizer = sgd(model.parameters(), optim, fused=True)
            sampler.start = 0
            steps = len(train)
            step = 0
            model.train()
            for epoch in range(epochs):
                sampler.set_epoch(epoch)
                for x, y in train:
                    x = x.to(dev, non_blocking=True, memory_format=memory_format)
                    y = y.to(dev, non_blocking=True)
                    set_lr(optimizer, lr_at(step, epochs * steps, optim, steps))
                    loss = F.cross_entropy(model(x), y, label_smoothing=label_smoothing)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if ctx.is_distributed:
                        _average_gradients(model.parameters(), ctx.world_size)
                    optimizer.step()
                    step += 1
            return evaluate(model, heldout, ctx, memory_format)["top1"] / 100
    finally:
        sampler.load_state_dict(saved)


def brief_optim(optim: SGDConfig, lr: float) -> SGDConfig:
    """The brief trainings' optimizer: `optim`'s settings (a search's weight optimizer:
    momentum, weight decay, lr warmup) at peak lr `lr` — a net trained alone from scratch
    takes a higher lr than a supernet's shared weights."""
    fields = {f.name: getattr(optim, f.name) for f in dataclasses.fields(SGDConfig)}
    return SGDConfig(**{**fields, "lr": lr})


def _average_gradients(params: Iterable[torch.nn.Parameter], world_size: int) -> None:
    """What DDP does after backward, for a net trained briefly without wrapping it."""
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()
