"""`proxyless-search [group=option ...] [key=value ...]`: a thin Hydra layer over `search()`.

Configs: proxyless/configs/search.yaml (+ groups space, data, estimator, objective,
hardware, experiment, debug). Errors a user can fix print one line and exit with code 2.
"""

from __future__ import annotations

import logging
import os

import hydra
from omegaconf import DictConfig

from ..distributed import DistContext, run_distributed
from ..search import prepare_run_dir, search
from ..search_config import SearchConfig
from ._common import config_dir, exit_on_user_error, hydra_run_dir, to_plain, write_run_files

PROG = "proxyless-search"


@exit_on_user_error(PROG)
def run(cfg: DictConfig) -> dict:
    plain = to_plain(cfg)
    if plain.get("run_dir") is None:
        plain["run_dir"] = hydra_run_dir() or "runs/search"
    search_cfg = SearchConfig.from_dict(plain)
    if int(os.environ.get("WORLD_SIZE") or 1) > 1:  # torchrun: one process per rank
        return run_distributed(lambda ctx: _run_rank(search_cfg, plain, ctx), search_cfg.device)
    resuming = prepare_run_dir(search_cfg)  # refuses to overwrite a run before writing
    write_run_files(search_cfg.run_dir, plain, resumed=resuming)
    return search(search_cfg).metrics


def _run_rank(search_cfg: SearchConfig, plain: dict, ctx: DistContext) -> dict:
    """One rank of a torchrun job: rank 0's run dir for all (Hydra's timestamped dir may
    differ by a second between ranks), run files written by rank 0 only."""
    import torch.distributed as dist

    box = [search_cfg.run_dir]
    dist.broadcast_object_list(box, src=0)
    search_cfg.run_dir = plain["run_dir"] = box[0]
    if not ctx.is_main:
        logging.getLogger("proxyless").setLevel(logging.WARNING)
    resuming = prepare_run_dir(search_cfg)  # every rank refuses the same way
    if ctx.is_main:
        write_run_files(search_cfg.run_dir, plain, resumed=resuming)
    return search(search_cfg, ctx).metrics


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="search")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
