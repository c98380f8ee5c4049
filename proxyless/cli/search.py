"""`proxyless-search [group=option ...] [key=value ...]`: a thin Hydra layer over `search()`.

Configs: proxyless/configs/search.yaml (+ groups space, data, estimator, objective,
hardware, experiment, debug). Errors a user can fix print one line and exit with code 2.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

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
    resuming = prepare_run_dir(search_cfg)  # refuses to overwrite a run before writing
    write_run_files(search_cfg.run_dir, plain, resumed=resuming)
    return search(search_cfg).metrics


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="search")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
