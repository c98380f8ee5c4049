"""Training a derived arch: run files, exact resume, inherited weights, NaN stop, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from latency.config_dict import ConfigError
from proxyless.arch import Arch, ArchError
from proxyless.data import DataConfig
from proxyless.run import CheckpointError, load_checkpoint, save_checkpoint
from proxyless.space import get_space
from proxyless.supernet import SuperNet
from proxyless.train import (
    EmaConfig,
    InitConfig,
    TrainConfig,
    TrainError,
    TrainOptimConfig,
    build_model,
    train,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


pytestmark = pytest.mark.usefixtures("one_thread")


def first_arch() -> Arch:
    space = get_space("tiny")
    return Arch(space, [layer.candidates[0] for layer in space.layers()])


def last_arch() -> Arch:
    """Last candidate everywhere: k7 e6, and Zero where allowed (a layer disappears)."""
    space = get_space("tiny")
    return Arch(space, [layer.candidates[-1] for layer in space.layers()])


@pytest.fixture
def arch_file(tmp_path: Path) -> Path:
    path = tmp_path / "arch.json"
    first_arch().save(path)
    return path


def synthetic(**kw: Any) -> DataConfig:
    base = dict(name="synthetic", batch_size=16, synthetic_train_samples=48)
    return DataConfig(**{**base, "synthetic_test_samples": 16, **kw})  # 3 steps per epoch


def config(arch: Path, out: Path, **kw: Any) -> TrainConfig:
    kw.setdefault("data", synthetic())
    kw.setdefault("tensorboard", False)
    return TrainConfig(arch=str(arch), out_dir=str(out), **kw)


def test_train_writes_a_self_describing_run(arch_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = config(arch_file, out, epochs=1, tensorboard=True, ema=EmaConfig(enabled=True))
    metrics = train(cfg)
    assert metrics["step"] == 3 and metrics["epoch"] == 1 and metrics["finished"]
    assert metrics["best"]["source"] == "ema" and metrics["best"]["epoch"] == 1
    assert set(metrics["final"]) >= {"test", "test_ema", "train_loss", "lr"}
    assert json.loads((out / "metrics.json").read_text())["step"] == 3
    assert Arch.load(out / "arch.json") == first_arch()
    assert yaml.safe_load((out / "config.yaml").read_text())["epochs"] == 1
    assert any((out / "tb").iterdir())
    state = torch.load(out / "last.pt", weights_only=True)  # plain tensors and values only
    assert state["kind"] == "train" and state["arch"] == first_arch().to_dict()
    assert {"optimizer", "scheduler", "ema", "rng", "config", "best"} <= set(state)
    assert (out / "best.pt").is_file()


def _states(path: Path) -> dict[str, Any]:
    state = load_checkpoint(path, kind="train")
    return {"model": state["model"], "ema": state["ema"], "history": state["history"]}


def test_resume_equals_uninterrupted(arch_file: Path, tmp_path: Path) -> None:
    # digits with augmentation: random crops draw from the global RNG, so this checks that
    # the RNG, optimizer, EMA and loader position are all restored (resume mid-epoch 2).
    data = DataConfig(name="digits", batch_size=16, train_subset=48, test_subset=16)
    common = dict(data=data, epochs=2, ema=EmaConfig(enabled=True, decay=0.9))
    common["optim"] = TrainOptimConfig(lr=0.1, lr_warmup_epochs=0.5)
    train(config(arch_file, tmp_path / "a", **common))
    train(config(arch_file, tmp_path / "b", max_steps=4, **common))
    assert load_checkpoint(tmp_path / "b" / "last.pt")["batch"] == 1  # stopped mid-epoch
    metrics = train(config(arch_file, tmp_path / "b", resume=True, **common))
    assert metrics["step"] == 6
    a, b = _states(tmp_path / "a" / "last.pt"), _states(tmp_path / "b" / "last.pt")
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs after resume"
    for ra, rb in zip(a["history"], b["history"], strict=True):
        assert ra["test"] == rb["test"] and ra["train_loss"] == rb["train_loss"]


@pytest.mark.parametrize("weight_sharing", ["separate", "nested"])
def test_inherited_weights_give_the_supernet_outputs(tmp_path: Path, weight_sharing: str) -> None:
    arch = last_arch()
    assert any(op.is_zero for op in arch.ops)
    torch.manual_seed(0)
    supernet = SuperNet(arch.space, weight_sharing=weight_sharing)
    supernet.set_paths(supernet.arch_indices(arch))
    supernet.train()
    with torch.no_grad():  # non-trivial BN statistics
        for _ in range(3):
            supernet(torch.randn(8, 3, 32, 32))
    path = tmp_path / "search.pt"
    save_checkpoint(path, {"kind": "proxyless-search", "net": supernet.state_dict()})

    net = build_model(arch, from_search=path).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(net(x), supernet.eval()(x))
    fresh = build_model(arch).eval()
    with torch.no_grad():
        assert not torch.allclose(fresh(x), net(x))


def test_train_from_search_checkpoint(arch_file: Path, tmp_path: Path) -> None:
    supernet = SuperNet(first_arch().space)
    save_checkpoint(tmp_path / "s.pt", {"kind": "proxyless-search", "net": supernet.state_dict()})
    init = InitConfig(from_search=str(tmp_path / "s.pt"))
    metrics = train(config(arch_file, tmp_path / "run", epochs=1, max_steps=1, init=init))
    assert metrics["step"] == 1 and not metrics["finished"]
    with pytest.raises(CheckpointError, match="'train' checkpoint, expected 'proxyless-search'"):
        build_model(first_arch(), from_search=tmp_path / "run" / "last.pt")


def test_nan_loss_stops_and_keeps_last_good_checkpoint(arch_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(config(arch_file, out, epochs=3))  # 9 steps, all finite
    good = load_checkpoint(out / "last.pt")
    with pytest.raises(TrainError, match="loss became nan.*last good checkpoint is .*last.pt"):
        train(config(arch_file, out, epochs=6, resume=True, optim=TrainOptimConfig(lr=1e30)))
    kept = load_checkpoint(out / "last.pt")
    assert kept["step"] == good["step"] == 9
    assert all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())


def test_errors_say_what_to_do(arch_file: Path, tmp_path: Path) -> None:
    with pytest.raises(ArchError, match="does not exist"):
        train(config(tmp_path / "missing.json", tmp_path / "r"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ArchError, match="not valid JSON"):
        train(config(bad, tmp_path / "r"))
    bad.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ArchError, match="not a proxyless arch"):
        train(config(bad, tmp_path / "r"))
    with pytest.raises(TrainError, match="3 classes but the arch's head has 10"):
        train(config(arch_file, tmp_path / "r", data=synthetic(synthetic_num_classes=3)))
    out = tmp_path / "done"
    train(config(arch_file, out, epochs=1, max_steps=1))
    with pytest.raises(TrainError, match="pass resume=true"):
        train(config(arch_file, out, epochs=1))
    other = tmp_path / "other.json"
    last_arch().save(other)
    with pytest.raises(TrainError, match="different arch"):
        train(config(other, out, epochs=1, resume=True))
    with pytest.raises(ConfigError, match="unknown config key.*optim.learning_rate"):
        TrainConfig.from_dict({"arch": "a", "optim": {"learning_rate": 1}})


def test_hydra_compose_train_config(arch_file: Path, tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir

    from proxyless.cli._common import to_plain

    overrides = [
        f"arch={arch_file}",
        f"out_dir={tmp_path / 'run'}",
        "data=synthetic",  # the search's data group
        "data.batch_size=16",
        "data.train_subset=32",
        "epochs=2",
        "optim.lr=0.1",
        "ema.enabled=true",
        f"init.from_search={tmp_path / 's.pt'}",
    ]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = TrainConfig.from_dict(to_plain(compose("train", overrides=overrides)))
        export_cfg = compose("export", overrides=[f"checkpoint={tmp_path / 'last.pt'}"])
    assert cfg.data.name == "synthetic" and cfg.data.batch_size == 16
    assert cfg.data.train_subset == 32 and cfg.data.heldout_per_class is None
    assert cfg.optim.lr == 0.1 and cfg.optim.weight_decay == pytest.approx(4e-5)
    assert cfg.optim.nesterov and cfg.label_smoothing == 0.1 and cfg.ema.enabled
    assert cfg.init.from_search == str(tmp_path / "s.pt")
    assert export_cfg.format == "onnx" and export_cfg.batch == 1
