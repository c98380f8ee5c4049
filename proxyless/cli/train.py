"""`proxyless-train arch=<arch.json> data=<name> ...`: a thin Hydra layer over `train()`."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from ..train import TrainConfig, TrainError, train
from ._common import config_dir, exit_on_user_error, fail, to_plain

PROG = "proxyless-train"


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
@exit_on_user_error(PROG)
def main(cfg: DictConfig) -> None:
    try:
        metrics = train(TrainConfig.from_dict(to_plain(cfg)))
    except TrainError as e:  # NaN loss, a run dir to resume, a wrong config key
        fail(PROG, str(e))
    best = metrics["best"]
    if best["value"] is not None:
        print(f"best test top-1 {best['value']:.2f}% at epoch {best['epoch']} ({best['source']})")
    print(f"checkpoint: {metrics['checkpoint']}")


if __name__ == "__main__":
    main()
