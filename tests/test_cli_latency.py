"""proxyless-profile / proxyless-validate: config composition, the tiny space end to end in
subprocesses (profile, resume, validate; bundle -> runner -> import), one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from latency.table import LatencyTable
from proxyless.cli import profile as profile_cli
from proxyless.cli import validate as validate_cli

REPO = Path(__file__).resolve().parents[1]
FAST = ["protocol.rounds=2", "protocol.warmup=1", "protocol.repeats=2", "protocol.window_ms=0.5"]


def cfg_of(name: str, *overrides: str):
    with initialize_config_dir(config_dir=profile_cli.config_dir(), version_base="1.3"):
        return compose(name, overrides=list(overrides))


def cli(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run(
        [sys.executable, "-m", f"proxyless.cli.{module}", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


# --- configs --------------------------------------------------------------------------------


@pytest.mark.parametrize("space", ["imagenet", "cifar", "tiny"])
def test_configs_compose_for_every_space(space: str) -> None:
    p = cfg_of("profile", f"space={space}", "out=t.json", "protocol.rounds=3")
    assert (p.space.name, p.mode, p.backend, p.batch, p.threads) == (
        space,
        "profile",
        "ort-cpu",
        1,
        1,
    )
    assert p.protocol.rounds == 3 and p.protocol.warmup is None
    assert profile_cli.make_space(p).name == space
    v = cfg_of("validate", f"space={space}", "table=t.json")
    assert (v.n_archs, v.calibrate, v.backend, v.noise_floor) == (300, 0.1, None, True)


def test_config_helpers() -> None:
    p = cfg_of("profile", "space=tiny", "out=t.json", "resolution=64", "num_classes=7")
    space = profile_cli.make_space(p)
    assert (space.input_size, space.num_classes) == (64, 7)
    assert profile_cli.protocol_overrides(p.protocol) == {}
    assert profile_cli.make_protocol({}, None) is None
    proto = profile_cli.make_protocol({"rounds": 2}, {"rounds": 7, "warmup": 3, "statistic": "x"})
    assert (proto.rounds, proto.warmup) == (2, 3)
    with pytest.raises(profile_cli.CLIError, match="unknown protocol field"):
        profile_cli.protocol_overrides({"roundz": 2})


# --- end to end, in subprocesses ------------------------------------------------------------


def test_profile_resume_validate_end_to_end(tmp_path: Path) -> None:
    args = ["space=tiny", "backend=torch-cpu", "out=t.json", *FAST]
    r = cli("profile", *args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "measured 40 key(s)" in r.stdout and "table has 40 key(s)" in r.stdout
    table = LatencyTable.load(tmp_path / "t.json")
    assert table.header.profile_command == "proxyless-profile " + " ".join(args)
    assert table.header.protocol["rounds"] == 2 and len(table) == 40
    assert not [p for p in tmp_path.iterdir() if p.name != "t.json"]  # nothing else written

    again = cli("profile", *args, cwd=tmp_path)  # resumable: nothing left to measure
    assert again.returncode == 0, again.stderr
    assert "measured 0 key(s)" in again.stdout

    r = cli(
        "validate",
        "space=tiny",
        "table=t.json",
        "n_archs=4",
        "calibrate=0.25",
        "hydra.run.dir=val",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    for needle in ("raw sum", "calibrated", "noise floor"):
        assert needle in r.stdout
    # Issue 13: a fit on one network is reported, never saved, and the output says why
    assert "fits on 1 network(s), fewer than 8" in r.stdout and "n_archs>=32" in r.stdout
    assert "calibration NOT saved into t.json: fitted on 1 network(s)" in r.stdout
    assert "calibration saved" not in r.stdout
    s = json.loads((tmp_path / "val/validation.json").read_text())
    assert s["n"] == 4 and s["backend"] == "torch-cpu" and s["protocol"]["rounds"] == 2
    assert len(s["calibrated"]["fit_on"]) == 1 and s["calibrated"]["n"] == 3
    assert s["calibrated"]["accepted"] is False and "fewer than" in s["calibrated"]["refused"]
    assert s["noise_floor"]["n"] == 4 and len(s["networks"]) == 4
    assert (tmp_path / "val/validation.png").stat().st_size > 0
    assert (tmp_path / "val/.hydra/config.yaml").is_file()  # the resolved config is recorded
    assert LatencyTable.load(tmp_path / "t.json").header.calibration is None


def test_bundle_runner_import_round_trip(tmp_path: Path) -> None:
    r = cli("profile", "mode=bundle", "space=tiny", "out=bundle", *FAST, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    run_line = "python latency_runner.py bundle --out results.json --threads 1"
    assert run_line in r.stdout
    manifest = json.loads((tmp_path / "bundle/manifest.json").read_text())
    assert len(manifest["items"]) == 40 and manifest["protocol"]["rounds"] == 2
    assert (tmp_path / "bundle/latency_runner.py").is_file()  # the folder is self-contained

    # The runner as a device would run it: from inside the bundle, with only the folder.
    device = tmp_path / "device"
    (tmp_path / "bundle").rename(device)
    runner = [sys.executable, "latency_runner.py", ".", "--out", "results.json"]
    r = subprocess.run(
        [*runner, "--threads", "1", "--warmup", "1", "--repeats", "2", "--window-ms", "0.5"],
        cwd=device,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr

    args = ["mode=import", "space=tiny", "results=device/results.json", "out=phone.json"]
    r = cli("profile", *args, "device=Pixel 7", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    table = LatencyTable.load(tmp_path / "phone.json")
    assert (len(table), table.header.device, table.header.backend) == (40, "Pixel 7", "ort-mobile")
    assert "mode=bundle space=tiny" in table.header.profile_command
    assert "latency_runner.py" in table.header.profile_command

    r = cli("profile", "mode=import", "space=cifar", *args[2:], cwd=tmp_path)
    assert r.returncode == 2 and "does not have" in r.stderr  # results of another space


# --- errors: one line, exit code 2 ----------------------------------------------------------


def small_table(path: Path, **header) -> None:
    """A tiny-space torch-cpu table with made-up numbers (no timing needed)."""
    from latency.header import TableHeader
    from latency.table import Entry
    from proxyless.latency_bridge import space_keys
    from proxyless.space import get_space

    fields = {
        "device": profile_cli.make_backend("torch-cpu", 1).device_name(),
        "backend": "torch-cpu",
        "batch": 1,
        "dtype": "float32",
        "profile_command": "proxyless-profile space=tiny backend=torch-cpu out=t.json",
        **header,
    }
    table = LatencyTable(TableHeader(**fields))
    for key in space_keys(get_space("tiny")):
        table.add(str(key), Entry(0.1, 0.09, 0.12, 10))
    table.save(path)


def main_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, main, *argv: str
) -> str:
    monkeypatch.setattr(sys, "argv", ["prog", *argv])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2, err
    assert ": error: " in err and "\n" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["space=tiny", "table=nope.json"], ["'nope.json' not found", "proxyless-profile"]),
        (["space=tiny", "table=t.json", "backend=ort-cpu"], ["backend 'torch-cpu'", "force"]),
        (["space=tiny", "table=other.json"], ["device 'Other CPU'", "force"]),
        (["space=tiny", "table=t.json", "threads=2"], ["1 thread(s)", "threads=2"]),
        (["space=tiny", "table=t.json", "backend=tpu"], ["unknown backend 'tpu'", "torch-cpu"]),
        (["space=marsnet", "table=t.json"], ["space=marsnet: no such option", "imagenet"]),
        (["space=tiny", "table=t.json", "calibrate=1.5"], ["calibrate must be"]),
        (
            ["space=tiny", "table=t.json", "calibration_model=cubic"],
            ["calibration_model=cubic is unknown", "calibration_model=per_key"],
        ),
        (["space=tiny", "table=t.json", "stream_live=0"], ["stream_live must be >= 1"]),
        (
            ["space=tiny", "table=partial.json"],
            # issue 13: into the table passed, not the one its header's command wrote
            [
                "no key",
                "measure it with: proxyless-profile space=tiny backend=torch-cpu threads=1 "
                "batch=1 out=partial.json",
            ],
        ),
        (
            ["space=cifar", "table=t.json"],
            ["no keys", "proxyless-profile space=cifar backend=torch-cpu threads=1 batch=1"],
        ),
    ],
)
def test_validate_errors(
    argv: list[str], needles: list[str], tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    small_table(tmp_path / "t.json")
    small_table(tmp_path / "other.json", device="Other CPU")
    small_table(tmp_path / "partial.json")
    partial = LatencyTable.load(tmp_path / "partial.json")
    del partial.entries[sorted(partial.entries)[0]]
    partial.save(tmp_path / "partial.json")
    err = main_error(monkeypatch, capsys, validate_cli.main, *argv, "hydra.run.dir=val")
    for needle in needles:
        assert needle in err


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["space=marsnet", "out=t.json"], ["space=marsnet: no such option", "tiny"]),
        (["space=tiny", "backend=tpu", "out=t.json"], ["unknown backend 'tpu'", "ort-cpu"]),
        (["space=tiny", "mode=nap", "out=t.json"], ["unknown mode 'nap'"]),
        (["space=tiny", "mode=import", "out=t.json"], ["needs results="]),
        (["space=tiny", "mode=import", "results=r.json", "out=t.json"], ["cannot read"]),
        (["space=tiny", "backend=torch-cpu", "out=other.json"], ["cannot resume", "device"]),
    ],
)
def test_profile_errors(argv: list[str], needles: list[str], tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    small_table(tmp_path / "other.json", device="Other CPU")
    err = main_error(monkeypatch, capsys, profile_cli.main, *argv)
    for needle in needles:
        assert needle in err


def test_validate_refuses_mobile_table(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    small_table(tmp_path / "phone.json", backend="ort-mobile", device="Pixel 7")
    err = main_error(monkeypatch, capsys, validate_cli.main, "space=tiny", "table=phone.json")
    assert "Pixel 7" in err and "latency_runner" in err


@pytest.mark.slow
@pytest.mark.skipif(not (Path(sys.executable).parent / "proxyless-profile").exists(), reason="")
def test_console_scripts_installed() -> None:
    for name in ("proxyless-profile", "proxyless-validate"):
        r = subprocess.run(
            [str(Path(sys.executable).parent / name), "--help"], capture_output=True, text=True
        )
        assert r.returncode == 0 and "space" in r.stdout, r.stderr


def test_validation_saves_each_network_once(tmp_path: Path) -> None:
    """Both passes load the networks saved once (an ONNX export per network is the slow part
    of an ORT validation), and measure the networks again all the same."""
    from latency.backends import TorchCPU
    from latency.protocol import Protocol
    from latency.validate import validate
    from proxyless.latency_bridge import arch_network, sample_archs
    from proxyless.space import get_space

    class Counting(TorchCPU):
        saved = 0

        def save(self, module, example_input, stem):
            Counting.saved += 1
            return super().save(module, example_input, stem)

    small_table(tmp_path / "t.json")
    nets = [arch_network(a, f"n{i}") for i, a in enumerate(sample_archs(get_space("tiny"), 3))]
    fast = Protocol(warmup=1, rounds=2, repeats=2, window_ms=0.2)
    s = validate(LatencyTable.load(tmp_path / "t.json"), nets, Counting(), fast, progress=False)
    assert Counting.saved == 3 and s["noise_floor"]["n"] == 3
