"""Everything a search is built from, given its config: data, space, hardware (costs, target,
objective), supernet, estimator and optimisers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from .data import DataConfig, DataSplits, InfiniteLoader, Loaders, build_datasets, build_loaders
from .distributed import DistContext
from .estimators import ESTIMATORS, Estimator
from .hardware import Hardware
from .run import resolve_memory_format, sgd
from .search_config import SearchConfig
from .search_state import SearchError
from .space import SearchSpace, get_space
from .supernet import SuperNet


@dataclass
class Parts:
    loaders: Loaders
    space: SearchSpace
    hardware: Hardware
    net: SuperNet
    estimator: Estimator
    weight_opt: torch.optim.Optimizer
    arch_opt: torch.optim.Optimizer
    heldout: InfiniteLoader | None
    per_epoch: int
    total_epochs: int
    memory_format: torch.memory_format = torch.contiguous_format  # of weights and batches

    @property
    def total_steps(self) -> int:
        return max(1, self.total_epochs * self.per_epoch)


def build_space(cfg: SearchConfig, splits: DataSplits) -> SearchSpace:
    """The configured preset; classes, input size and channels come from the dataset."""
    sp = cfg.space
    from_data = {
        "num_classes": splits.num_classes,
        "input_size": splits.input_size,
        "in_channels": splits.in_channels,
    }
    for key in sorted(from_data.keys() & sp.overrides.keys()):
        raise SearchError(
            f"space.overrides.{key}={sp.overrides[key]!r}: {key} comes from the data "
            f"({from_data[key]} for data={cfg.data.name}); remove the override"
            + (" (set data.image_size for another input size)" if key == "input_size" else "")
        )
    return get_space(
        sp.name,
        width_mult=sp.width_mult,
        dropout=sp.dropout,
        **sp.overrides,
        num_classes=splits.num_classes,
        input_size=splits.input_size,
        in_channels=splits.in_channels,
    )


def arch_optimizer(net: SuperNet, cfg: SearchConfig) -> torch.optim.Adam:
    o = cfg.optim
    return torch.optim.Adam(
        net.arch_parameters(),
        lr=o.arch_lr,
        betas=o.arch_betas,
        eps=o.arch_eps,
        weight_decay=o.arch_weight_decay,
    )


def data_config(cfg: SearchConfig) -> DataConfig:
    """`cfg.data` with a null `image_size` set to the space's input size: the latency
    table is keyed by input shape, so the data must come at the size the space assumes."""
    if cfg.data.image_size is not None:
        return cfg.data
    size = get_space(cfg.space.name, **cfg.space.overrides).input_size
    return dataclasses.replace(cfg.data, image_size=size)


def build_parts(
    cfg: SearchConfig, ctx: DistContext, saved_costs: dict[str, Any] | None = None
) -> Parts:
    """Build in a fixed order after `torch.manual_seed`, so initial weights depend only on
    the seed (a resumed run rebuilds the same objects, then loads the checkpoint).

    Loaders are sharded by rank. `saved_costs` (a resumed run's `Hardware.to_dict()`) are
    used as they are, instead of being computed again."""
    data = data_config(cfg)
    splits = build_datasets(data)
    loaders = build_loaders(splits, data, distributed=ctx.is_distributed)
    if cfg.schedule.epochs > 0 and loaders.heldout is None:
        raise SearchError("arch steps need a held-out split: set data.heldout_per_class > 0")
    space = build_space(cfg, splits)
    hardware = Hardware.resolve(space, cfg.hardware, cfg.objective, ctx, saved_costs)
    memory_format = resolve_memory_format(cfg.memory_format, ctx.device, cfg.precision)
    net = SuperNet(space, cfg.space.alpha_init_std, cfg.space.weight_sharing).to(
        ctx.device, memory_format=memory_format
    )
    net.set_costs(hardware.costs.per_layer, hardware.costs.fixed)
    estimator = ESTIMATORS.build(cfg.estimator.name, **cfg.estimator.kwargs)
    sch = cfg.schedule
    per_epoch = len(loaders.train)
    if sch.steps_per_epoch is not None:
        per_epoch = min(per_epoch, sch.steps_per_epoch)
    heldout = InfiniteLoader(loaders.heldout) if loaders.heldout is not None else None
    return Parts(
        loaders=loaders,
        space=space,
        hardware=hardware,
        net=net,
        estimator=estimator,
        weight_opt=sgd(net.weight_parameters(), cfg.optim),
        arch_opt=arch_optimizer(net, cfg),
        heldout=heldout,
        per_epoch=per_epoch,
        total_epochs=sch.warmup_epochs + sch.epochs,
        memory_format=memory_format,
    )
