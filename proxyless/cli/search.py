"""`proxyless-search [group=option ...] [key=value ...]`: a thin Hydra layer over `search()`.

Configs: proxyless/configs/search.yaml (+ groups space, data, estimator, objective,
hardware, experiment, debug). Errors a user can fix print one line and exit with code 2.
"""

from __future__ import annotations

import os
import sys

import hydra
from omegaconf import DictConfig

from ..distributed import run_distributed
from ..search import finished_summary, search
from ..search_config import SearchConfig
from ..search_report import summary_table
from ._common import (
    check_overrides,
    composed_for_resume,
    config_dir,
    exit_on_user_error,
    hydra_run_dir,
    to_plain,
)

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
def _hydra_main(cfg: DictConfig) -> None:
    run(cfg)


def main() -> None:
    check_overrides(PROG, "search", sys.argv[1:])
    if (summary := finished(sys.argv[1:])) is not None:
        print(f"{PROG}: {summary['run_dir']} holds a finished search; nothing to do")
        print(summary_table(summary), flush=True)
        return  # exit 0, the run's files untouched (Hydra has not run)
    _hydra_main()


def finished(argv: list[str]) -> dict | None:
    """The summary of the finished run a `resume=true` command line points at, else None."""
    got = composed_for_resume("search", argv)
    if got is None:
        return None
    plain, hydra_dir = got
    if plain.get("run_dir") is None:
        plain["run_dir"] = hydra_dir
    try:
        return finished_summary(SearchConfig.from_dict(plain))
    except ValueError:
        return None


if __name__ == "__main__":
    main()
