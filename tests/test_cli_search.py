"""`proxyless-search`: every config group composes (Hydra Compose API), run files are
written, and user errors give one line and exit code 2 without losing earlier outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import proxyless
from latency.table import Entry, LatencyTable, TableHeader
from proxyless import latency_bridge as bridge
from proxyless.cli._common import config_dir, to_plain
from proxyless.cli.search import run
from proxyless.estimators import ESTIMATORS
from proxyless.objective import build_objective
from proxyless.run import load_checkpoint
from proxyless.search_config import SearchConfig
from proxyless.space import get_space

REPO = Path(__file__).resolve().parents[1]
GROUPS = ("space", "data", "estimator", "objective", "hardware", "experiment", "debug")
OPTIONS = [
    (group, p.stem) for group in GROUPS for p in sorted((Path(config_dir()) / group).glob("*.yaml"))
]


def _compose(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="search", overrides=list(overrides))


def test_configs_ship_inside_the_package() -> None:
    assert Path(config_dir()) == Path(proxyless.__file__).parent / "configs"
    assert (Path(config_dir()) / "search.yaml").is_file()
    setup = (REPO / "setup.cfg").read_text()
    assert "configs/*/*.yaml" in setup  # package data: group files install too


@pytest.mark.parametrize(("group", "option"), OPTIONS)
def test_every_config_group_option_composes(group: str, option: str, tmp_path: Path) -> None:
    fill = ["data.root=/data", "hardware.table=t.json", "hardware.target=10"]
    cfg = _compose(f"{group}={option}", f"run_dir={tmp_path}")
    missing = [f for f in fill if f.split("=")[0] in _missing_keys(cfg)]
    cfg = _compose(f"{group}={option}", f"run_dir={tmp_path}", *missing)
    sc = SearchConfig.from_dict(to_plain(cfg))
    assert sc.estimator.name in ESTIMATORS
    get_space(sc.space.name, width_mult=sc.space.width_mult, **sc.space.overrides)
    build_objective(sc.objective.kind, 10.0, sc.objective.alpha, sc.objective.beta)
    assert sc.data.seed == sc.seed


def _missing_keys(cfg: DictConfig) -> set[str]:
    from omegaconf import OmegaConf

    out = set()
    for section in ("data", "hardware"):
        for k in cfg[section]:
            if OmegaConf.is_missing(cfg[section], k):
                out.add(f"{section}.{k}")
    return out


def test_defaults_are_the_quickstart() -> None:
    sc = SearchConfig.from_dict(to_plain(_compose("run_dir=x")))
    assert (sc.space.name, sc.data.name, sc.hardware.kind) == ("tiny", "digits", "profile")
    assert sc.hardware.target_frac is not None and sc.objective.kind == "add_abs"


def test_debug_fast_writes_run_files(tmp_path: Path) -> None:
    metrics = run(_compose("debug=fast", f"run_dir={tmp_path}"))
    for name in ("config.yaml", "run_info.json", "arch.json", "summary.json", "costs.json"):
        assert (tmp_path / name).is_file(), name
    assert "schedule:" in (tmp_path / "config.yaml").read_text()
    assert "${" not in (tmp_path / "config.yaml").read_text()  # resolved
    assert metrics["steps"] == 8


def _fails(capsys: pytest.CaptureFixture[str], *overrides: str) -> str:
    with pytest.raises(SystemExit) as exc:
        run(_compose(*overrides))
    assert exc.value.code == 2
    # Only our own line is checked: in a full test run, logging handlers that earlier tests
    # bound to since-closed capture streams may add "Logging error" noise to stderr.
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("proxyless-")]
    assert len(lines) == 1 and lines[0].startswith("proxyless-search: error: "), lines
    return lines[0]


def test_missing_dataset_path(capsys, tmp_path: Path) -> None:
    err = _fails(capsys, "data=cifar10", f"data.root={tmp_path}/nope", f"run_dir={tmp_path}/r")
    assert "data.root" in err


def test_target_below_minimum(capsys, tmp_path: Path) -> None:
    err = _fails(capsys, "debug=fast", "hardware.target=1.0", f"run_dir={tmp_path}")
    assert "minimum cost" in err and "14.97" in err


def _table(path: Path, device: str, drop_first: bool = False) -> Path:
    t = LatencyTable(TableHeader(device, "torch-cpu", 1, "float32"))
    keys = bridge.space_keys(get_space("tiny"))
    for i, key in enumerate(keys[1:] if drop_first else keys):
        t.add(str(key), Entry(1.0 + i, 0.0, 0.0, 3))
    t.save(path)
    return path


def test_table_for_another_device(capsys, tmp_path: Path) -> None:
    table = _table(tmp_path / "t.json", "pixel-7")
    over = ["debug=fast", "hardware=lut", f"hardware.table={table}", "hardware.target=40"]
    err = _fails(capsys, *over, "hardware.device=this-cpu", f"run_dir={tmp_path}/r")
    assert "pixel-7" in err and "force" in err


def test_table_without_a_needed_key(capsys, tmp_path: Path) -> None:
    table = _table(tmp_path / "t.json", "cpu", drop_first=True)
    over = ["debug=fast", "hardware=lut", f"hardware.table={table}", "hardware.target=40"]
    err = _fails(capsys, *over, f"run_dir={tmp_path}/r")
    assert str(bridge.space_keys(get_space("tiny"))[0]) in err


def test_nan_loss_exits_and_keeps_outputs(capsys, tmp_path: Path) -> None:
    over = ["debug=fast", "debug.inject_nan_at_step=6", "checkpoint.every_steps=2"]
    err = _fails(capsys, *over, f"run_dir={tmp_path}")
    assert "nan" in err.lower() and "step 6" in err
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["global_step"] == 4
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "arch.json").is_file()


def test_rerun_into_a_finished_run_dir_loses_nothing(capsys, tmp_path: Path) -> None:
    run(_compose("debug=fast", "schedule.epochs=0", f"run_dir={tmp_path}"))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    err = _fails(capsys, "debug=fast", "seed=3", f"run_dir={tmp_path}")
    assert "resume=true" in err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_invalid_override_via_the_real_cli(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "proxyless.cli.search", "space=nope"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode != 0
    assert "space" in done.stderr and "nope" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("experiment", [o for g, o in OPTIONS if g == "experiment"])
def test_debug_fast_composes_with_every_experiment(experiment: str, tmp_path: Path) -> None:
    cfg = _compose(f"experiment={experiment}", "debug=fast", f"run_dir={tmp_path}")
    sc = SearchConfig.from_dict(to_plain(cfg))
    assert sc.hardware.kind == "params" and sc.hardware.unit == "Kparams"
    assert sc.data.name == "synthetic" and sc.device == "auto"


def test_summary_says_when_a_table_calibration_is_applied(capsys, tmp_path: Path) -> None:
    """Issue 13: nothing in a search's results said its costs came through a calibration."""
    path = _table(tmp_path / "t.json", "cpu")
    table = LatencyTable.load(path)
    table.header.calibration = {"kind": "linear", "a": 1.5, "b": 0.25, "fit_on": ["n"] * 9}
    table.save(path)
    over = ["debug=fast", "hardware=lut", f"hardware.table={path}", "hardware.target=null"]
    run(_compose(*over, "hardware.target_frac=0.35", f"run_dir={tmp_path}/r"))
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["calibration"] == {
        "a": 1.5,
        "b_ms": 0.25,
        "per_key": 0,
        "fit_on": 9,
        "date": None,
    }
    out = capsys.readouterr().out
    assert "latency calibration" in out and "applied: a·sum + b with a=1.5, b=0.25 ms" in out
    raw = tmp_path / "raw"
    run(_compose(*over, "hardware.target_frac=0.35", "hardware.calibrated=false", f"run_dir={raw}"))
    assert json.loads((raw / "summary.json").read_text())["calibration"] is None
    assert "none (raw table sums)" in capsys.readouterr().out
