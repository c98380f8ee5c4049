"""`proxyless-export checkpoint=<last.pt> [table=<lut.json>]`: thin Hydra layer over export()."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from ..export import ExportConfig, ExportError, export, format_report
from ..train import TrainError, config_from_dict
from ._common import config_dir, exit_on_user_error, fail, to_plain

PROG = "proxyless-export"


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="export")
@exit_on_user_error(PROG)
def main(cfg: DictConfig) -> None:
    try:
        report = export(config_from_dict(ExportConfig, to_plain(cfg)))
    except (ExportError, TrainError) as e:  # parity failure, bad arguments, unknown keys
        fail(PROG, str(e))
    print(format_report(report))


if __name__ == "__main__":
    main()
