"""Issue 13, "what a new user meets": each test replays the command (or the library call
behind it) a user ran, and checks what they should have got instead."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import latency.threads as lthreads
from latency.config_dict import ConfigError
from proxyless.arch import Arch
from proxyless.cli import _common
from proxyless.cli._common import check_overrides, config_dir, override_error, to_plain
from proxyless.data import DataConfig, DataError, build_datasets, build_loaders
from proxyless.objective import ObjectiveError, check_target
from proxyless.search import search
from proxyless.search_config import SearchConfig
from proxyless.search_setup import data_config
from proxyless.space import get_space
from proxyless.train import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
SOURCES = "\n".join(p.read_text() for p in (REPO / "proxyless").rglob("*.py"))
FAST = ["debug=fast", "threads=1"]


def _compose(name: str, *overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _main(module: Any, monkeypatch: pytest.MonkeyPatch, *argv: str) -> None:
    monkeypatch.setattr(sys, "argv", [module.PROG, *argv])
    module.main()


def _one_error_line(capsys: pytest.CaptureFixture[str], prog: str) -> str:
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("proxyless-")]
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), lines
    return lines[0]


def _arch_file(tmp_path: Path, num_classes: int = 10) -> Path:
    space = get_space("tiny", num_classes=num_classes)
    path = tmp_path / "arch.json"
    Arch(space, [layer.candidates[0] for layer in space.layers()]).save(path)
    return path


TRAIN_DATA = ["data=synthetic", "data.batch_size=16", "data.train_subset=32", "data.test_subset=16"]


# --- item 3: resume of a finished run ---------------------------------------------------------
def test_search_resume_of_a_finished_run_touches_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from proxyless.cli import search as cli

    run_dir = tmp_path / "run"
    cli.run(_compose("search", *FAST, f"run_dir={run_dir}"))
    before = _snapshot(run_dir)
    capsys.readouterr()
    # proxyless-search resume=true hydra.run.dir=<finished run>
    _main(cli, monkeypatch, *FAST, "resume=true", f"hydra.run.dir={run_dir}")
    assert "finished" in capsys.readouterr().out
    assert _snapshot(run_dir) == before
    # the library call behind it: the run's own result, nothing re-measured or rewritten
    cfg = SearchConfig.from_dict(to_plain(_compose("search", *FAST, f"run_dir={run_dir}")))
    cfg.resume = True
    result = search(cfg)
    assert result.metrics == json.loads((run_dir / "summary.json").read_text())
    assert result.arch == Arch.load(run_dir / "arch.json")
    assert _snapshot(run_dir) == before


def test_train_resume_of_a_finished_run_touches_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from proxyless.cli import train as cli

    arch, out = _arch_file(tmp_path), tmp_path / "out"
    argv = [f"arch={arch}", f"out_dir={out}", "epochs=1", "threads=1", *TRAIN_DATA]
    train(TrainConfig.from_dict(to_plain(_compose("train", *argv))))
    before = _snapshot(out)
    capsys.readouterr()
    _main(cli, monkeypatch, *argv, "resume=true")
    printed = capsys.readouterr().out
    assert "finished" in printed and f"checkpoint: {out / 'last.pt'}" in printed
    assert _snapshot(out) == before
    metrics = train(TrainConfig.from_dict(to_plain(_compose("train", *argv, "resume=true"))))
    assert metrics["finished"] and _snapshot(out) == before


# --- item 4: epochs=0, one class ------------------------------------------------------------
def test_train_epochs_zero_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from proxyless.cli import train as cli

    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        _main(cli, monkeypatch, f"arch={_arch_file(tmp_path)}", f"out_dir={out}", "epochs=0")
    assert exc.value.code == 2
    assert "epochs=0 must be >= 1" in _one_error_line(capsys, "proxyless-train")
    assert not (out / "last.pt").exists()
    with pytest.raises(ConfigError, match="max_steps=0"):
        TrainConfig(arch="a", max_steps=0)


def test_a_one_class_folder_is_refused(tmp_path: Path, make_image_folder) -> None:
    make_image_folder(tmp_path / "one", ["cat"], 6)
    with pytest.raises(DataError, match=r"1 class\(es\).*\(cat\).*at least 2"):
        build_datasets(DataConfig(name="folder", root=str(tmp_path / "one"), image_size=16))
    arch = _arch_file(tmp_path, num_classes=1)
    data = DataConfig(name="folder", root=str(tmp_path / "one"), batch_size=2)
    with pytest.raises(DataError, match="at least 2"):
        train(TrainConfig(arch=str(arch), out_dir=str(tmp_path / "o"), epochs=1, data=data))


# --- item 7: threads --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cores", "load", "free"), [(2, 0.0, 2), (2, 1.2, 1), (2, 5.0, 1), (16, 3.4, 13)]
)
def test_free_cores(cores: int, load: float, free: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    assert lthreads.free_cores() == free
    assert lthreads.resolve_threads(None) == free and lthreads.resolve_threads(3) == 3


def test_train_takes_threads_and_defaults_to_the_free_cores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from proxyless import train as train_mod

    arch = _arch_file(tmp_path)
    base = [f"arch={arch}", "epochs=1", *TRAIN_DATA]
    assert TrainConfig.from_dict(to_plain(_compose("train", *base, "threads=1"))).threads == 1
    seen: list[int] = []
    step = train_mod._Train.train_step

    def record(self: Any, x: torch.Tensor, y: torch.Tensor) -> None:
        seen.append(torch.get_num_threads())
        step(self, x, y)

    monkeypatch.setattr(train_mod._Train, "train_step", record)
    monkeypatch.setattr(lthreads, "free_cores", lambda: 1)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cfg = to_plain(_compose("train", *base, f"out_dir={tmp_path / 'o'}"))
        train(TrainConfig.from_dict(cfg))  # threads: null
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2  # restored
    finally:
        torch.set_num_threads(before)


def test_cli_threads_and_loader_workers_follow_the_free_cores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import proxyless.data.loaders as loaders

    monkeypatch.setattr(lthreads, "free_cores", lambda: 1)
    monkeypatch.setattr(loaders, "free_cores", lambda: 2)
    before = torch.get_num_threads()
    try:
        assert _common.set_cli_threads() == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    cfg = DataConfig(
        name="synthetic", num_workers=8, synthetic_train_samples=64, heldout_per_class=0
    )
    built = build_loaders(build_datasets(cfg), cfg)
    assert built.train.num_workers == 2 and built.test.num_workers == 2


def test_cpu_experiments_run_on_a_cpu_machine() -> None:
    for exp in ("cifar10_cpu", "imagenet_cpu"):
        over = [f"experiment={exp}", "run_dir=x", "data.root=/d"]
        cfg = SearchConfig.from_dict(to_plain(_compose("search", *over)))
        assert cfg.device == "auto" and cfg.threads is None  # null: the free cores


# --- item 8: data defaults that fit the space, progress without a terminal ----------------------
def test_folder_images_come_at_the_space_input_size(tmp_path: Path, make_image_folder) -> None:
    make_image_folder(tmp_path / "f", ["a", "b"], 8, size=8)
    over = ["data=folder", f"data.root={tmp_path / 'f'}", "run_dir=x", "space=tiny"]
    cfg = SearchConfig.from_dict(to_plain(_compose("search", *over)))
    assert data_config(cfg).image_size == get_space("tiny").input_size == 32
    cfg = SearchConfig.from_dict(to_plain(_compose("search", *over[:-1], "space=imagenet")))
    assert data_config(cfg).image_size == 224
    arch = _arch_file(tmp_path, num_classes=2)
    data = DataConfig(name="folder", root=str(tmp_path / "f"), batch_size=4, heldout_per_class=0)
    out = tmp_path / "o"
    metrics = train(TrainConfig(arch=str(arch), out_dir=str(out), epochs=1, data=data, threads=1))
    assert metrics["input_shape"] == [3, 32, 32]


def test_search_without_a_terminal_logs_progress_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    over = [*FAST, f"run_dir={tmp_path}", "log.progress_every_s=0", "log.tensorboard=false"]
    cfg = SearchConfig.from_dict(to_plain(_compose("search", *over)))
    with caplog.at_level(logging.INFO, logger="proxyless.search"):
        search(cfg)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress:")]
    assert len(lines) == 8  # every step with a 0 s interval
    assert lines[0].startswith("progress: epoch 1/2 (warmup) step 1/4")


# --- item 9: a corrupt image ------------------------------------------------------------------
def _folder_with_a_broken_image(tmp_path: Path, make_image_folder) -> Path:
    root = make_image_folder(tmp_path / "digits", [str(c) for c in range(6)], 6)
    (root / "5" / "broken.png").write_text("this is not a PNG")
    return root


def test_a_corrupt_image_is_named_before_the_search_starts(
    tmp_path: Path, make_image_folder, capsys: pytest.CaptureFixture[str]
) -> None:
    from proxyless.cli.search import run

    root = _folder_with_a_broken_image(tmp_path, make_image_folder)
    over = [*FAST, "data=folder", f"data.root={root}", "data.heldout_per_class=1"]
    with pytest.raises(SystemExit) as exc:
        run(_compose("search", *over, f"run_dir={tmp_path / 'run'}"))
    assert exc.value.code == 2
    line = _one_error_line(capsys, "proxyless-search")
    assert "broken.png" in line and "remove or replace" in line
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_an_unreadable_image_past_the_check_is_named_in_one_line(
    tmp_path: Path, make_image_folder
) -> None:
    root = _folder_with_a_broken_image(tmp_path, make_image_folder)
    cfg = DataConfig(
        name="folder",
        root=str(root),
        image_size=16,
        check_images=False,
        heldout_per_class=0,
        batch_size=2,
        num_workers=1,  # raised in a worker process, as in a real run
        test_fraction=0.5,
    )
    loaders = build_loaders(build_datasets(cfg), cfg)
    with pytest.raises(DataError) as err:
        for _ in loaders.train:
            pass
        for _ in loaders.test:
            pass
    message = _common._message(err.value)
    assert "broken.png" in message and "Traceback" not in message and "\n" not in message


# --- item 11: every override a hint suggests works as printed -----------------------------------
HINTS = [
    # (config, composes with, the override as a message prints it, where the message says it)
    ("search", [], "data.heldout_per_class=5", "set data.heldout_per_class > 0"),
    ("search", [], "data.drop_last=false", "data.drop_last=false"),
    ("search", [], "data.batch_size=8", "lower data.batch_size"),
    ("search", ["data=cifar10"], "data.download=true", "data.download=true"),
    ("search", ["data=cifar10"], "data.check_md5=false", "data.check_md5=false"),
    ("search", ["data=folder"], "data.check_images=false", "data.check_images=false"),
    ("search", ["hardware=lut", "hardware.target=3"], "hardware.force=true", "hardware.force=true"),
    ("search", [], "hardware.table=t.json", "hardware.table=<path"),
    ("search", [], "resume=true", "pass resume=true"),
    ("search", [], "hydra.run.dir=/tmp/elsewhere", "hydra.run.dir=..."),
    ("search", [], "optim.arch_lr=0.001", "optim.arch_lr"),
    ("search", [], "objective=none", "objective=none"),
    ("search", ["warmup.sampler=shift"], "warmup.sampler=uniform", "use warmup.sampler=uniform"),
    ("search", ["warmup.sampler=shift"], "warmup.bins=2", "lower warmup.bins"),
    ("train", [], "resume=true", "then resume=true"),
    ("train", [], "out_dir=/tmp/elsewhere", '"out_dir"'),
    ("train", [], "optim.grad_clip=1.0", "set optim.grad_clip"),
    ("train", [], "data.heldout_per_class=5", "data.heldout_per_class"),
    ("train", [], "data.check_md5=false", "data.check_md5=false"),
    ("export", [], "weights=model", "use weights=model"),
    ("export", [], "force_table=true", "force_table=true"),
    ("profile", ["out=t.json"], "force=true", "or force=true"),
    ("validate", ["table=t.json"], "force=true", "pass force=true"),
]


@pytest.mark.parametrize(("name", "base", "override", "said"), HINTS)
def test_every_suggested_override_works_as_printed(
    name: str, base: list[str], override: str, said: str
) -> None:
    assert said in SOURCES  # the hint is still given
    fill = {"search": ["run_dir=x", "data.root=/d", "hardware.table=t.json"], "train": ["arch=a"]}
    over = [*base, *fill.get(name, [])]
    over = [o for o in over if o.split("=")[0] != override.split("=")[0]]
    assert override_error(name, [*over, override]) is None
    cfg = _compose(name, *over, override)
    if name == "search":
        SearchConfig.from_dict(to_plain(cfg))
    elif name == "train":
        TrainConfig.from_dict(to_plain(cfg))


def test_a_foreign_table_suggests_the_search_option_that_forces(tmp_path: Path) -> None:
    from latency.table import Entry, LatencyTable, TableHeader
    from proxyless import latency_bridge as bridge
    from proxyless.hardware import HardwareConfig, load_table

    table = LatencyTable(TableHeader("pixel-7", "torch-cpu", 1, "float32"))
    for key in bridge.space_keys(get_space("tiny")):
        table.add(str(key), Entry(1.0, 0.0, 0.0, 3))
    table.save(tmp_path / "t.json")
    hw = dict(kind="lut", table=str(tmp_path / "t.json"), device="this-cpu", target=3.0)
    with pytest.raises(ValueError, match="pass hardware.force=true") as err:
        load_table(HardwareConfig(**hw))
    assert "force=True" not in str(err.value)
    assert len(load_table(HardwareConfig(**hw, force=True))) == len(table)  # as suggested


# --- item 12: bad overrides: one line, exit 2, naming the key and what it takes -------------------
BAD = [
    ("search", ["foo=1"], ["foo", "known keys", "seed"]),
    ("search", ["estimator=foo"], ["estimator=foo", "all_paths", "two_path"]),
    ("search", ["schedule.epochs=abc"], ["schedule.epochs", "an integer"]),
    ("search", ["seed=[1"], ["seed=[1"]),
    ("train", ["arch=a", "epochs=abc"], ["epochs", "an integer"]),
    ("train", ["arch=a", "data=nope"], ["data=nope", "digits", "folder"]),
    ("export", ["batch=abc"], ["batch", "an integer"]),
    ("export", ["foo=1"], ["foo", "known keys"]),
    ("profile", ["out=t.json", "space=nope"], ["space=nope", "imagenet", "tiny"]),
    ("profile", ["out=t.json", "threads=abc"], ["threads", "an integer"]),
    ("validate", ["table=t.json", "n_archs=many"], ["n_archs", "an integer"]),
    ("validate", ["table=t.json", "calibrate=yes"], ["calibrate", "a number"]),
]


@pytest.mark.parametrize(("name", "argv", "needles"), BAD)
def test_bad_overrides_give_one_line_and_exit_2(
    name: str, argv: list[str], needles: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    prog = f"proxyless-{name}"
    with pytest.raises(SystemExit) as exc:
        check_overrides(prog, name, argv)
    assert exc.value.code == 2
    line = _one_error_line(capsys, prog)
    assert all(n in line for n in needles), line


def test_wrong_types_are_named_by_the_library_too() -> None:
    with pytest.raises(ConfigError, match=r"schedule.epochs='abc': expected an integer"):
        SearchConfig.from_dict({"schedule": {"epochs": "abc"}})
    with pytest.raises(ConfigError, match=r"threads='x': expected an integer or null"):
        TrainConfig.from_dict({"arch": "a", "threads": "x"})


@pytest.mark.parametrize("argv", [["foo=1"], ["schedule.epochs=abc"], ["estimator=foo"]])
def test_bad_overrides_through_the_real_cli(argv: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "proxyless.cli.search", *argv]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and argv[0].split("=")[0] in done.stderr
    assert not list(tmp_path.iterdir())  # nothing written


# --- small ones -------------------------------------------------------------------------------
def test_train_messages_count_epochs_from_1(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    arch = _arch_file(tmp_path)
    data = DataConfig(name="synthetic", batch_size=16, synthetic_train_samples=48)
    cfg = TrainConfig(arch=str(arch), out_dir=str(tmp_path / "a"), epochs=1, log_every=1, data=data)
    cfg.threads, cfg.tensorboard = 1, False
    with caplog.at_level(logging.INFO, logger="proxyless.train"):
        train(cfg)
    steps = [r.getMessage() for r in caplog.records if " step " in r.getMessage()]
    assert steps and all(m.startswith("epoch 1 step") for m in steps), steps
    cfg.out_dir, cfg.optim.lr = str(tmp_path / "b"), 1e30
    with pytest.raises(Exception, match=r"\(epoch 1\)"):
        train(cfg)


@pytest.mark.parametrize(
    ("every_s", "drawn"),
    [(0, [2, 3, 4]), (1e9, [4])],  # each search epoch; only the last (the default's 10 s here)
)
def test_search_writes_the_heatmap_png_and_accuracy_scalars(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, every_s: float, drawn: list[int]
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import proxyless.search_report as report

    titles: list[str] = []
    figure = report.heatmap_figure

    def record(names: list[str], grid: Any, title: str = "") -> Any:
        titles.append(title)
        return figure(names, grid, title)

    monkeypatch.setattr(report, "heatmap_figure", record)
    over = [f"run_dir={tmp_path}", "schedule.epochs=3", f"log.heatmap_every_s={every_s}"]
    cfg = SearchConfig.from_dict(to_plain(_compose("search", *FAST, *over)))
    result = search(cfg)
    assert (tmp_path / "heatmap.png").read_bytes()[:4] == b"\x89PNG"
    assert titles == [f"p per layer after epoch {e}/4" for e in drawn]  # warmup is epoch 1
    tags = EventAccumulator(str(tmp_path / "tb")).Reload().Tags()["scalars"]
    assert {"heldout/acc", "epoch/heldout_acc", "test/acc"} <= set(tags)
    assert result.metrics["target"] is not None


def test_heatmap_drawn_in_the_background_is_waited_for_and_its_error_raised(
    tmp_path: Path,
) -> None:
    """The epoch heatmap is drawn while the next epoch runs: `close` waits for the file, and
    an error met while drawing is raised there, not lost with the thread."""
    from proxyless.search_report import Reporter
    from proxyless.space import get_space
    from proxyless.supernet import SuperNet

    net = SuperNet(get_space("tiny"))
    reporter = Reporter(tmp_path, enabled=False)
    reporter.heatmap(1, net, "epoch 1", tmp_path / "heatmap.png")
    reporter.close()
    assert (tmp_path / "heatmap.png").read_bytes()[:4] == b"\x89PNG"
    (tmp_path / "a_file").write_text("")
    reporter = Reporter(tmp_path, enabled=False)
    reporter.heatmap(1, net, "epoch 1", tmp_path / "a_file" / "heatmap.png")
    with pytest.raises(OSError):
        reporter.close()


def test_train_yaml_points_at_the_search_checkpoint() -> None:
    text = (Path(config_dir()) / "train.yaml").read_text()
    assert "runs/search/x/last.pt" not in text and "runs/search/x/checkpoints/last.pt" in text


def test_targets_in_messages_are_readable() -> None:
    with pytest.raises(ObjectiveError) as err:
        check_target("mul_log", 0.9876543210123, None, "ms")
    assert "0.987654" in str(err.value) and "0.9876543210" not in str(err.value)
