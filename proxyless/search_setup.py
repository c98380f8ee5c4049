"""Everything a search is built from, given its config: data, space, costs and target,
objective, supernet, estimator, optimisers and schedule. Also the run-directory guard.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from .costs import SpaceCosts, layer_costs
from .data import InfiniteLoader, Loaders, build_datasets, build_loaders
from .distributed import DistContext
from .estimators import ESTIMATORS, Estimator, Objective
from .objective import build_objective
from .search_config import SearchConfig
from .search_state import SearchError
from .space import SearchSpace, get_space
from .supernet import SuperNet

log = logging.getLogger("proxyless.search")


@dataclass
class Parts:
    loaders: Loaders
    space: SearchSpace
    costs: SpaceCosts
    target: float | None
    objective: Objective
    net: SuperNet
    estimator: Estimator
    weight_opt: torch.optim.Optimizer
    arch_opt: torch.optim.Optimizer
    scheduler: Any
    heldout: InfiniteLoader | None
    per_epoch: int
    total_epochs: int


def weight_optimizer(net: SuperNet, cfg: SearchConfig) -> torch.optim.SGD:
    """SGD Nesterov. BN affine parameters and biases get no weight decay (when configured):
    sampled paths train them for a fraction of the steps, and decaying scale/shift of
    normalised activations only changes the effective learning rate, never regularises."""
    o = cfg.optim
    decay, no_decay = [], []
    for name, p in net.named_parameters():
        if name.endswith("alpha"):
            continue
        (no_decay if o.no_decay_bn_bias and p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": o.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return torch.optim.SGD(groups, lr=o.weight_lr, momentum=o.momentum, nesterov=o.nesterov)


def prepare_run_dir(cfg: SearchConfig) -> bool:
    """Check the run directory before anything is written; True if a run is resumed.

    A directory holding a checkpoint is never started over (that would lose the run)."""
    return _prepare_run_dir(cfg)[2]


def _prepare_run_dir(cfg: SearchConfig) -> tuple[Path, Path, bool]:
    run_dir = Path(cfg.run_dir)
    last = run_dir / "checkpoints" / "last.pt"
    if last.is_file() and not cfg.resume:
        raise SearchError(
            f"{run_dir} already holds a search checkpoint ({last}); pass resume=true to "
            "continue it, or choose another run directory (hydra.run.dir=...)"
        )
    resuming = cfg.resume and last.is_file()
    if cfg.resume and not resuming:
        log.warning("resume=true but %s has no checkpoint yet: starting afresh", run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir, last, resuming


def build_parts(cfg: SearchConfig, device: torch.device, ctx: DistContext | None = None) -> Parts:
    """Build in a fixed order after `torch.manual_seed`, so initial weights depend only on
    the seed (a resumed run rebuilds the same objects, then loads the checkpoint).

    Distributed (`ctx.is_distributed`): loaders are sharded by rank, and the costs are
    computed on rank 0 only and broadcast, so every rank searches against the same table
    and target (profiled latencies are noisy) and no two ranks write a cost cache at once.
    """
    ctx = ctx or DistContext(device=device)

    # --- data, space, costs ----------------------------------------------------------------
    splits = build_datasets(cfg.data)
    loaders = build_loaders(splits, cfg.data, distributed=ctx.is_distributed)
    if cfg.schedule.epochs > 0 and loaders.heldout is None:
        raise SearchError("arch steps need a held-out split: set data.heldout_per_class > 0")
    sp = cfg.space
    space = get_space(
        sp.name,
        width_mult=sp.width_mult,
        dropout=sp.dropout,
        **sp.overrides,
        num_classes=splits.num_classes,
        input_size=splits.input_size,
        in_channels=splits.in_channels,
    )
    # Cost sources build and run modules; keep that off the seeded global RNG, so initial
    # weights do not depend on whether costs were cached (in-process) or computed.
    costs: SpaceCosts | None = None
    if ctx.is_main:
        with torch.random.fork_rng(devices=[]):
            costs = layer_costs(space, cfg.hardware)
    if ctx.is_distributed:
        box = [costs]
        dist.broadcast_object_list(box, src=0)
        costs = box[0]
    assert costs is not None
    target = costs.resolve_target(cfg.hardware)
    objective = build_objective(
        cfg.objective.kind,
        target,
        cfg.objective.alpha,
        cfg.objective.beta,
        cfg.objective.lam,
    )
    net = SuperNet(space, sp.alpha_init_std).to(device)
    net.set_costs(costs.per_layer, costs.fixed)
    estimator = ESTIMATORS.build(cfg.estimator.name, **cfg.estimator.kwargs)

    # --- optimisers: per-step cosine over warmup + search ---------------------------------
    sch = cfg.schedule
    per_epoch = len(loaders.train)
    if sch.steps_per_epoch is not None:
        per_epoch = min(per_epoch, sch.steps_per_epoch)
    total_epochs = sch.warmup_epochs + sch.epochs
    w_opt = weight_optimizer(net, cfg)
    o = cfg.optim
    a_opt = torch.optim.Adam(
        net.arch_parameters(),
        lr=o.arch_lr,
        betas=o.arch_betas,
        eps=o.arch_eps,
        weight_decay=o.arch_weight_decay,
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(
        w_opt, T_max=max(1, total_epochs * per_epoch), eta_min=o.lr_min
    )
    heldout = InfiniteLoader(loaders.heldout) if loaders.heldout is not None else None
    return Parts(
        loaders,
        space,
        costs,
        target,
        objective,
        net,
        estimator,
        w_opt,
        a_opt,
        sched,
        heldout,
        per_epoch,
        total_epochs,
    )


def adopt_saved_costs(parts: Parts, saved: dict[str, Any], cfg: SearchConfig) -> None:
    """On resume, continue with the costs and target the run started with: a re-profiled
    (noisy) table must not change a run half-way, nor break exact resume."""
    if saved["per_layer"] == parts.costs.per_layer and saved["fixed"] == parts.costs.fixed:
        return
    log.warning("costs differ from those in the checkpoint (table re-measured?); keeping the run's")
    parts.costs = SpaceCosts(saved["per_layer"], saved["fixed"], saved["unit"], saved["source"])
    parts.target = saved["target"]
    parts.net.set_costs(parts.costs.per_layer, parts.costs.fixed)
    o = cfg.objective
    parts.objective = build_objective(o.kind, parts.target, o.alpha, o.beta, o.lam)
