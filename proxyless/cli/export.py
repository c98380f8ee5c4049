"""`proxyless-export checkpoint=<last.pt> [table=<lut.json>]`: thin Hydra layer over export()."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from ..export import ExportConfig, export, format_report
from ._common import config_dir, exit_on_user_error, to_plain

PROG = "proxyless-export"


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="export")
@exit_on_user_error(PROG)
def main(cfg: DictConfig) -> None:
    report = export(ExportConfig.from_dict(to_plain(cfg)))
    print(format_report(report))


if __name__ == "__main__":
    main()
