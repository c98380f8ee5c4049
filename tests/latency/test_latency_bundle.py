"""Mobile path round trip: bundle -> standalone runner (subprocess) -> results -> table."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from latency.bundle import import_results, write_bundle
from latency.protocol import Protocol
from latency.table import LatencyTable, TableError

RUNNER = Path(__file__).resolve().parents[2] / "scripts" / "latency_runner.py"
FAST = [
    "--warmup",
    "2",
    "--rounds",
    "3",
    "--repeats",
    "3",
    "--max-repeats",
    "20",
    "--window-ms",
    "0.2",
]


# The runner must work on a device with onnxruntime and numpy only: importing torch or this
# project's packages fails inside its process.
BLOCKED = (
    "import runpy, sys\n"
    "for name in ('torch', 'latency', 'proxyless'):\n"
    "    sys.modules[name] = None\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def run_runner(bundle: Path, out: Path, *extra: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKED, str(RUNNER), str(bundle), "--out", str(out), *FAST, *extra],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_runner_protocol_defaults_match_the_library() -> None:
    spec = importlib.util.spec_from_file_location("latency_runner", RUNNER)
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    assert asdict(Protocol()) == runner.DEFAULTS


def test_bundle_round_trip(items, tmp_path) -> None:
    manifest = write_bundle(items, tmp_path / "bundle", batch=1, dtype="float32")
    data = json.loads(manifest.read_text())
    assert [it["key"] for it in data["items"]] == list(items)
    assert all((tmp_path / "bundle" / it["file"]).is_file() for it in data["items"])
    assert data["items"][0]["input_shape"][0] == 1 and data["dtype"] == "float32"

    out = tmp_path / "results.json"
    run_runner(tmp_path / "bundle", out, "--chunk", "2")
    table = import_results(out, {"device": "test-phone", "profile_command": "run it"})
    assert set(table.entries) == set(items)
    assert table.header.device == "test-phone" and table.header.backend == "ort-mobile"
    assert table.header.batch == 1 and table.header.threads == 1
    assert "onnxruntime" in table.header.versions
    assert all(e.ms > 0 and e.n > 0 for e in table.entries.values())
    back = LatencyTable.load(table.save(tmp_path / "t.json"), expect_device="test-phone")
    assert back.entries == table.entries

    # resumable: a second run measures nothing new and keeps the numbers
    assert "resuming: 3 keys" in run_runner(tmp_path / "bundle", out)
    assert import_results(out).entries == table.entries


@pytest.mark.parametrize(("flags", "most"), [(["--stream"], 8), ([], 10), (["--chunk", "3"], 3)])
def test_runner_keeps_a_chunk_of_models_open(flags, most, make_conv, tmp_path) -> None:
    """--stream: a board measures a bundle with 8 sessions open, not one per model; the
    default keeps them all open; each model is opened once either way."""
    import weakref

    items = dict(make_conv(c, c) for c in range(2, 12))
    write_bundle(items, tmp_path / "bundle", batch=1)
    spec = importlib.util.spec_from_file_location("latency_runner", RUNNER)
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    refs: list = []
    peak = [0]

    def counted(*args):
        sess = runner_session(*args)
        refs.append(weakref.ref(sess))
        peak[0] = max(peak[0], sum(r() is not None for r in refs))
        return sess

    runner_session, runner.session = runner.session, counted
    out = tmp_path / "results.json"
    argv = [str(tmp_path / "bundle"), "--out", str(out), *FAST, *flags]
    assert runner.main(argv) == 0
    data = json.loads(out.read_text())
    assert set(data["results"]) == set(items) and data["streamed"] is ("--stream" in flags)
    assert peak[0] == most and len(refs) == len(items)


def test_bundle_checks(items, tmp_path) -> None:
    with pytest.raises(TableError, match="batch"):
        write_bundle(items, tmp_path / "b", batch=4)
    bad = tmp_path / "r.json"
    bad.write_text("{}")
    with pytest.raises(TableError, match="not a latency_runner results"):
        import_results(bad)
    with pytest.raises(TableError, match="cannot read"):
        import_results(tmp_path / "missing.json")


def test_import_reads_results_of_an_older_runner(items, tmp_path) -> None:
    """A runner copied to a device before the field rename wrote `median_ms`/`p10_ms`/`p90_ms`."""
    out = tmp_path / "results.json"
    run_runner(write_bundle(items, tmp_path / "bundle", batch=1).parent, out)
    data = json.loads(out.read_text())
    new = import_results(out).entries
    renames = {"ms": "median_ms", "calls_p10_ms": "p10_ms", "calls_p90_ms": "p90_ms"}
    data["results"] = {
        k: {renames.get(f, f): v for f, v in r.items()} for k, r in data["results"].items()
    }
    out.write_text(json.dumps(data))
    assert import_results(out).entries == new
