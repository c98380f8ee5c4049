"""ONNX export: checker, onnxruntime parity, latency report, table prediction, errors, CLI."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import proxyless.export as export_mod
from latency import Entry, LatencyTable, MissingKeyError, TableHeader
from latency.onnx_export import supported_opsets
from proxyless.arch import Arch
from proxyless.data import DataConfig
from proxyless.export import ExportConfig, ExportError, export, format_report, load_network
from proxyless.latency_bridge import arch_keys
from proxyless.run import CheckpointError, save_checkpoint
from proxyless.space import get_space
from proxyless.train import EmaConfig, TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
FAST = dict(warmup=1, repeats=3)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_arch() -> Arch:
    space = get_space("tiny")
    return Arch(space, [layer.candidates[0] for layer in space.layers()])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A train checkpoint with EMA, from two steps on synthetic data."""
    root = tmp_path_factory.mktemp("trained")
    tiny_arch().save(root / "arch.json")
    data = DataConfig(name="synthetic", batch_size=16, synthetic_train_samples=32)
    torch.set_num_threads(1)
    cfg = TrainConfig(
        arch=str(root / "arch.json"),
        out_dir=str(root / "run"),
        data=data,
        epochs=1,
        ema=EmaConfig(enabled=True, decay=0.5),
        tensorboard=False,
    )
    train(cfg)
    return root / "run" / "last.pt"


@pytest.fixture
def arch_file(tmp_path: Path) -> Path:
    tiny_arch().save(tmp_path / "arch.json")
    return tmp_path / "arch.json"


def test_export_checkpoint_round_trip(trained: Path, tmp_path: Path) -> None:
    report = export(ExportConfig(checkpoint=str(trained), out_dir=str(tmp_path), **FAST))
    path = tmp_path / "model.onnx"
    assert report["onnx"] == str(path) and report["source"]["weights"] == "ema"
    onnx.checker.check_model(onnx.load(path), full_check=True)
    assert report["parity"]["max_abs_diff"] <= 1e-4
    assert json.loads((tmp_path / "export.json").read_text())["parity"] == report["parity"]

    # Independent check: the file on disk vs the EMA weights of the checkpoint.
    arch, model, _ = load_network(ExportConfig(checkpoint=str(trained)))
    x = torch.randn(1, 3, 32, 32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    assert np.abs(got - want).max() <= 1e-4 and np.abs(want).max() > 0

    lat = report["latency"]
    assert lat["ort"]["ms"] > 0 and lat["torch"]["ms"] > 0 and lat["threads"] == 1
    assert report["table"] is None and "onnxruntime" in format_report(report)
    raw = export(ExportConfig(checkpoint=str(trained), out_dir=str(tmp_path), weights="model"))
    assert raw["source"]["weights"] == "model"


def test_export_arch_alone_dynamic_batch(arch_file: Path, tmp_path: Path) -> None:
    cfg = ExportConfig(arch=str(arch_file), out_dir=str(tmp_path), dynamic_batch=True, **FAST)
    report = export(cfg)
    assert report["source"]["weights"] == "random" and report["parity"]["batches"] == [1, 2]
    sess = ort.InferenceSession(report["onnx"], providers=["CPUExecutionProvider"])
    out = sess.run(None, {"input": np.random.randn(3, 3, 32, 32).astype(np.float32)})[0]
    assert out.shape == (3, 10) and not np.allclose(out[0], out[1])  # input-dependent


def _table(
    arch: Arch, path: Path, threads: int = 1, drop: int = 0, anchor_ms: float | None = None
) -> float:
    header = TableHeader(device="test-cpu", backend="ort-cpu", batch=1, dtype="float32")
    header.threads = threads
    header.anchor_ms = anchor_ms
    table = LatencyTable(header)
    keys = arch_keys(arch)
    for i, key in enumerate(dict.fromkeys(keys)):
        table.add(key, Entry(ms=0.01 * (i + 1), calls_p10_ms=0.0, calls_p90_ms=0.0, n=1))
    for key in list(table.entries)[:drop]:
        del table.entries[key]
    table.save(path)
    return sum(table.entries[k].ms for k in keys) if not drop else 0.0


def test_measurement_on_the_tables_backend_is_put_on_the_tables_speed(
    arch_file: Path, tmp_path: Path
) -> None:
    """A table with a speed anchor: the export's figure on the table's backend (ort-cpu) is
    rescaled to the machine speed the table was made at; torch, another backend, is not."""
    _table(tiny_arch(), tmp_path / "lut.json", anchor_ms=1e6)  # a table made on a slow machine
    cfg = ExportConfig(arch=str(arch_file), table=str(tmp_path / "lut.json"), **FAST)
    report = export(cfg)
    ort, torch_ = report["latency"]["ort"], report["latency"]["torch"]
    assert 0 < ort["speed_vs_table"] < 1e-3 and "speed_vs_table" not in torch_
    assert ort["ms"] > 1e3 * torch_["ms"]  # now on the table's (very slow) speed
    assert report["table"]["anchor_ms"] == 1e6
    assert "onnxruntime rescaled to the table's machine speed" in format_report(report)


def test_table_prediction_beside_measurements(arch_file: Path, tmp_path: Path) -> None:
    expected = _table(tiny_arch(), tmp_path / "lut.json", threads=2)
    cfg = ExportConfig(arch=str(arch_file), table=str(tmp_path / "lut.json"), **FAST)
    report = export(cfg)
    assert report["table"]["predicted_ms"] == pytest.approx(expected)
    assert report["latency"]["threads"] == 2  # measured like the table was
    assert "table" in format_report(report)

    _table(tiny_arch(), tmp_path / "partial.json", drop=1)
    with pytest.raises(MissingKeyError, match="profile"):
        export(ExportConfig(arch=str(arch_file), table=str(tmp_path / "partial.json"), **FAST))
    with pytest.raises(ExportError, match="batch 1, the export at batch 2"):
        export(ExportConfig(arch=str(arch_file), table=str(tmp_path / "lut.json"), batch=2))


def test_parity_failure_is_an_error(
    arch_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = export_mod.to_onnx

    def wrong_export(model: torch.nn.Module, *args: object) -> bytes:
        other = copy.deepcopy(model)
        with torch.no_grad():
            for p in other.parameters():
                p.add_(0.05)
        return real(other, *args)

    monkeypatch.setattr(export_mod, "to_onnx", wrong_export)
    with pytest.raises(ExportError, match="outputs differ by .* > parity_tol"):
        export(ExportConfig(arch=str(arch_file), out_dir=str(tmp_path)))
    assert not (tmp_path / "model.onnx").exists()  # nothing wrong is left behind


def test_export_errors(trained: Path, arch_file: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="exactly one of"):
        export(ExportConfig())
    with pytest.raises(ExportError, match="exactly one of"):
        export(ExportConfig(checkpoint=str(trained), arch=str(arch_file)))
    with pytest.raises(CheckpointError, match="does not exist"):
        export(ExportConfig(checkpoint=str(tmp_path / "missing.pt")))
    save_checkpoint(tmp_path / "search.pt", {"kind": "proxyless-search", "net": {}})
    with pytest.raises(CheckpointError, match="'proxyless-search' checkpoint, expected 'train'"):
        export(ExportConfig(checkpoint=str(tmp_path / "search.pt")))
    with pytest.raises(ExportError, match="pass it as arch="):
        export(ExportConfig(checkpoint=str(arch_file)))
    with pytest.raises(ExportError, match="format='tflite'"):
        export(ExportConfig(arch=str(arch_file), format="tflite"))


def test_cli_export_subprocess(arch_file: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    args = [f"arch={arch_file}", f"out_dir={tmp_path / 'exp'}", "warmup=1", "repeats=3"]
    cmd = [sys.executable, "-m", "proxyless.cli.export", *args]
    ok = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "onnxruntime" in ok.stdout and (tmp_path / "exp" / "export.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arch.json", "exp"]  # no litter


def test_cli_error_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from proxyless.cli import export as cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["proxyless-export", f"checkpoint={tmp_path / 'no.pt'}"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("proxyless-export: error: checkpoint") and "does not exist" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_unsupported_opset_is_refused_up_front(arch_file: Path, tmp_path: Path) -> None:
    """Issue 13: `proxyless-export … opset=3` exited 0 after ~200 lines of Torch IR, wrote
    opset 18 and reported opset 3."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    args = [f"arch={arch_file}", f"out_dir={tmp_path / 'exp'}", "opset=3"]
    cmd = [sys.executable, "-m", "proxyless.cli.export", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    ok = supported_opsets()  # torch 2.14: 7..20
    assert len(lines) == 1, lines
    assert lines[0] == (
        f"proxyless-export: error: opset=3 is not supported by the ONNX exporter of the "
        f"installed torch {torch.__version__}: choose an opset in {ok.start}..{ok.stop - 1} "
        "(default 17)"
    )
    assert not (tmp_path / "exp").exists()
    with pytest.raises(ExportError, match=rf"opset={ok.stop} is not supported"):
        export(ExportConfig(arch=str(arch_file), out_dir=str(tmp_path), opset=ok.stop))


def test_reported_opset_is_read_from_the_written_model(
    arch_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = export_mod.to_onnx

    def exporter_that_picks_its_own_opset(model, example, opset, dynamic_batch):
        return real(model, example, 18, dynamic_batch)  # as the dynamo fallback does

    monkeypatch.setattr(export_mod, "to_onnx", exporter_that_picks_its_own_opset)
    report = export(ExportConfig(arch=str(arch_file), out_dir=str(tmp_path), opset=13, **FAST))
    written = onnx.load(tmp_path / "model.onnx").opset_import
    assert [o.version for o in written if o.domain in ("", "ai.onnx")] == [18]
    assert report["opset"] == 18 and "opset 18" in format_report(report)
    assert json.loads((tmp_path / "export.json").read_text())["opset"] == 18
