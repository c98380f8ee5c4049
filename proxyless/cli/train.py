"""`proxyless-train arch=<arch.json | net.config | preset> data=<name> ...`: a thin Hydra layer
over `train()` (presets: the published nets, e.g. `arch=proxyless_gpu`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from ..distributed import DistContext, run_distributed
from ..train import TrainConfig, finished_metrics, train
from ._common import (
    check_overrides,
    composed_for_resume,
    config_dir,
    exit_on_user_error,
    to_plain,
)

PROG = "proxyless-train"


def main() -> None:
    check_overrides(PROG, "train", sys.argv[1:])
    got = composed_for_resume("train", sys.argv[1:])
    try:
        done = finished_metrics(TrainConfig.from_dict(got[0])) if got is not None else None
    except ValueError:
        done = None
    if done is not None:  # exit 0, the run's files untouched (Hydra has not run)
        print(f"{PROG}: {Path(done['checkpoint']).parent} holds a finished run; nothing to do")
        _report(done)
        return
    _hydra_main()


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
@exit_on_user_error(PROG)
def _hydra_main(cfg: DictConfig) -> None:
    train_cfg = TrainConfig.from_dict(to_plain(cfg))
    if int(os.environ.get("WORLD_SIZE") or 1) > 1:  # torchrun: one process per rank
        metrics = run_distributed(lambda ctx: _train_rank(train_cfg, ctx), train_cfg.device)
        if metrics is None:  # not rank 0
            return
    else:
        metrics = train(train_cfg)
    _report(metrics)


def _report(metrics: dict) -> None:
    best = metrics["best"]
    if best["value"] is not None:
        print(f"best test top-1 {best['value']:.2f}% at epoch {best['epoch']} ({best['source']})")
    print(f"checkpoint: {metrics['checkpoint']}")


def _train_rank(train_cfg: TrainConfig, ctx: DistContext) -> dict | None:
    """One rank of a torchrun job; metrics returned on rank 0 only."""
    metrics = train(train_cfg, ctx)
    return metrics if ctx.is_main else None


if __name__ == "__main__":
    main()
