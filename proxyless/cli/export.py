"""`proxyless-export checkpoint=<last.pt> [table=<lut.json>]`: thin Hydra layer over export()."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from ..export import ExportConfig, export, format_report
from ._common import check_overrides, config_dir, exit_on_user_error, set_cli_threads, to_plain

PROG = "proxyless-export"


def main() -> None:
    check_overrides(PROG, "export", sys.argv[1:])
    _hydra_main()


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="export")
@exit_on_user_error(PROG)
def _hydra_main(cfg: DictConfig) -> None:
    set_cli_threads()  # measurements use `threads` (or the table's) while they time
    report = export(ExportConfig.from_dict(to_plain(cfg)))
    print(format_report(report))


if __name__ == "__main__":
    main()
