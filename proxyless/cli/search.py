"""`proxyless-search [group=option ...] [key=value ...]`: a thin Hydra layer over `search()`.

Configs: proxyless/configs/search.yaml (+ groups space, data, estimator, objective,
hardware, experiment, debug). Errors a user can fix print one line and exit with code 2.
"""

from __future__ import annotations

import os

import hydra
from omegaconf import DictConfig

from ..distributed import run_distributed
from ..search import search
from ..search_config import SearchConfig
from ._common import config_dir, exit_on_user_error, hydra_run_dir, to_plain

PROG = "proxyless-search"


@exit_on_user_error(PROG)
def run(cfg: DictConfig) -> dict:
    plain = to_plain(cfg)
    if plain.get("run_dir") is None:
        plain["run_dir"] = hydra_run_dir() or "runs/search"
    search_cfg = SearchConfig.from_dict(plain)
    if int(os.environ.get("WORLD_SIZE") or 1) > 1:  # torchrun: one process per rank
        return run_distributed(lambda ctx: search(search_cfg, ctx).metrics, search_cfg.device)
    return search(search_cfg).metrics


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="search")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
