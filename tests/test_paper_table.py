"""The ProxylessNAS paper's mobile table (Pixel 1) imported as a table of the `imagenet`
space: every key found, predictions equal the file's sums, the search's 80 ms target."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from latency.table import Entry, LatencyTable, TableError, TableHeader
from proxyless.arch import Arch
from proxyless.cli._common import config_dir, to_plain
from proxyless.hardware import layer_costs
from proxyless.latency_bridge import arch_analysis, sample_archs, space_keys
from proxyless.paper_table import import_paper_table, paper_key
from proxyless.search_config import SearchConfig
from proxyless.space import get_space

REPO = Path(__file__).resolve().parents[1]
YAML = REPO / ".." / "shared" / "data" / "proxylessnas" / "mobile_trim.yaml"
needs_yaml = pytest.mark.skipif(not YAML.is_file(), reason=f"{YAML} (published table) absent")


def paper_keys(arch: Arch) -> list[str]:
    """The file's key strings of `arch`'s network, written from the space directly (not
    through this project's keys), so the test checks the mapping independently."""
    s = arch.space
    r, f = s.stem_out_size, s.final_size
    keys = [
        f"Conv-input:{s.input_size}x{s.input_size}x3-output:{r}x{r}x{s.stem_channels}",
        f"expanded_conv-input:{r}x{r}x{s.stem_channels}-output:{r}x{r}x{s.first_channels}"
        "-expand:1-kernel:3-stride:1-idskip:0",
    ]
    for layer, op in zip(s.layers(), arch.ops):
        if op.is_zero:
            continue
        i, o = layer.in_size, layer.out_size
        keys.append(
            f"expanded_conv-input:{i}x{i}x{layer.in_channels}-output:{o}x{o}x{layer.out_channels}"
            f"-expand:{op.expand}-kernel:{op.kernel}-stride:{layer.stride}"
            f"-idskip:{int(layer.residual)}"
        )
    keys.append(f"Conv_1-input:{f}x{f}x{s.last_channels}-output:{f}x{f}x{s.head_channels}")
    keys.append(f"Logits-input:{f}x{f}x{s.head_channels}-output:{s.num_classes}")
    return keys


@pytest.fixture(scope="module")
def table() -> LatencyTable:
    return import_paper_table(YAML)


@needs_yaml
def test_every_key_of_the_imagenet_space_is_in_the_imported_table(table: LatencyTable) -> None:
    keys = [str(k) for k in space_keys(get_space("imagenet"))]
    assert table.missing(keys) == []
    h = table.header
    assert (h.device, h.backend, h.batch, h.dtype) == ("Pixel 1", "tflite", 1, "float32")
    assert h.protocol["statistic"].startswith("mean")


@needs_yaml
def test_prediction_is_the_sum_of_the_files_entries(table: LatencyTable) -> None:
    raw = yaml.safe_load(YAML.read_text())
    space = get_space("imagenet")
    archs = sample_archs(space, 20, seed=0)
    archs.append(Arch(space, [layer.candidates[-1] for layer in space.layers()]))  # Zero-heavy
    for arch in archs:
        expected = sum(raw[k]["mean"] for k in paper_keys(arch))
        assert arch_analysis(arch, table).total() == pytest.approx(expected, rel=1e-12)


@needs_yaml
def test_entries_keep_mean_var_and_count(table: LatencyTable, tmp_path: Path) -> None:
    raw = yaml.safe_load(YAML.read_text())
    e = table.lookup(str(paper_key("Conv-input:224x224x3-output:112x112x32")))
    src = raw["Conv-input:224x224x3-output:112x112x32"]
    assert (e.ms, e.var_ms2, e.n) == (src["mean"], src["var"], src["count"])
    assert e.calls_p10_ms < e.ms < e.calls_p90_ms
    table.save(tmp_path / "t.json")
    assert LatencyTable.load(tmp_path / "t.json").entries == table.entries


def test_tables_without_variance_are_written_as_before(tmp_path: Path) -> None:
    t = LatencyTable(TableHeader("cpu", "torch-cpu", 1, "float32"))
    t.add("stem_i3x8x8_o8_k3_e1_s2_r0", Entry(0.5, 0.4, 0.6, 9))
    t.save(tmp_path / "t.json")
    entry = json.loads((tmp_path / "t.json").read_text())["entries"]["stem_i3x8x8_o8_k3_e1_s2_r0"]
    assert set(entry) == {"ms", "calls_p10_ms", "calls_p90_ms", "n"}


def test_unknown_paper_key_is_an_error() -> None:
    with pytest.raises(TableError, match="mobile_trim.yaml"):
        paper_key("SE-input:7x7x320-output:7x7x320")
    with pytest.raises(TableError, match="stride 2"):
        paper_key("expanded_conv-input:14x14x8-output:14x14x8-expand:3-kernel:3-stride:2-idskip:0")


@needs_yaml
def test_cli_import_then_search_costs_with_the_papers_target(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = tmp_path / "pixel1.json"
    r = subprocess.run(
        [sys.executable, "-m", "proxyless.cli.profile", "mode=import", "space=imagenet",
         f"results={YAML}", f"out={out}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "imported 72 key(s)" in r.stdout and "2 key(s) outside the space kept" in r.stdout
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        overrides = ["experiment=imagenet_mobile", f"hardware.table={out}", "data.root=/data"]
        cfg = compose("search", overrides)
    sc = SearchConfig.from_dict(to_plain(cfg))
    space = get_space(sc.space.name, width_mult=sc.space.width_mult, **sc.space.overrides)
    costs = layer_costs(space, sc.hardware)
    assert sc.hardware.target == 80.0 and costs.unit == "ms"
    assert costs.min_cost() < 80.0 < costs.max_cost()
    assert "Pixel 1" in costs.source
