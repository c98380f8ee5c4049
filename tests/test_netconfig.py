"""The original code's `net.config` <-> Arch, the published nets as presets, `resolve_arch`,
and FLOPs in both conventions (the authors' logged figures, reproduced exactly)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from latency.costs import conv_linear_macs, flops
from proxyless.arch import ARCH_PRESETS, NETS_DIR, Arch, ArchError, resolve_arch
from proxyless.export import ExportConfig, export, format_report
from proxyless.latency_bridge import sample_archs
from proxyless.netconfig import arch_from_net_config, arch_to_net_config, load_net_config
from proxyless.space import get_space

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO / ".." / "shared" / "data" / "proxylessnas"
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason="../shared/data/proxylessnas (published files) absent"
)

# The authors' logs (logs/imagenet_*_log.txt): params, conv+linear multiply-adds, in millions.
LOGGED = {
    "proxyless_cpu": (4.36, 439.2),
    "proxyless_gpu": (7.12, 465.3),
    "proxyless_mobile": (4.08, 320.4),
}


def _x(arch: Arch) -> torch.Tensor:
    s = arch.space
    return torch.zeros(1, s.in_channels, s.input_size, s.input_size)


def _without_bn(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != "bn"}


@pytest.mark.parametrize("name", list(LOGGED))
def test_presets_reproduce_the_logged_params_and_macs(name: str) -> None:
    arch = resolve_arch(name)
    model = arch.build()
    params = sum(p.numel() for p in model.parameters())
    macs = conv_linear_macs(model, _x(arch))
    assert (round(params / 1e6, 2), round(macs / 1e6, 1)) == LOGGED[name]


def test_fvcore_total_counts_more_than_conv_and_linear() -> None:
    arch = resolve_arch("proxyless_mobile")
    model = arch.build()
    macs, total = conv_linear_macs(model, _x(arch)), flops(model, _x(arch))
    assert macs < total < 1.05 * macs  # + BatchNorm and pooling: a few percent


def test_preset_spaces_are_read_off_the_files() -> None:
    mobile = resolve_arch("proxyless_mobile").space
    assert (mobile.stem_width, mobile.first_width, mobile.head_width) == (32, 16, 1280)
    assert [(s.width, s.depth, s.stride) for s in mobile.stages] == [
        (32, 4, 2), (40, 4, 2), (80, 4, 2), (96, 4, 1), (192, 4, 2), (320, 1, 1)
    ]  # fmt: skip
    gpu = resolve_arch("proxyless_gpu")
    assert (gpu.space.stem_width, gpu.space.first_width, gpu.space.head_width) == (40, 24, 1728)
    assert [s.width for s in gpu.space.stages] == [32, 56, 112, 128, 256, 432]
    assert gpu.block_strings().count("zero") == 8 and len(gpu.ops) == 21


@needs_shared
@pytest.mark.parametrize("name", ARCH_PRESETS)
def test_presets_are_the_published_files(name: str) -> None:
    shipped = json.loads((NETS_DIR / f"{name}.config").read_text())
    assert shipped == json.loads((SHARED / f"{name}.config").read_text())


@needs_shared
@pytest.mark.parametrize("name", [*ARCH_PRESETS, "proxyless_mobile_14"])
def test_published_configs_round_trip(name: str) -> None:
    original = json.loads((SHARED / f"{name}.config").read_text())
    arch = load_net_config(SHARED / f"{name}.config")
    exported = arch_to_net_config(arch)
    assert _without_bn(exported) == _without_bn(original)
    assert exported["bn"] == {"momentum": 0.1, "eps": 1e-05}  # this project's BatchNorm


@pytest.mark.parametrize(("space", "size"), [("imagenet", 224), ("tiny", 32), ("cifar", 32)])
def test_arch_round_trips_through_net_config(space: str, size: int) -> None:
    for arch in sample_archs(get_space(space), 4, seed=1):
        back = arch_from_net_config(arch_to_net_config(arch), name=space, input_size=size)
        assert back == arch  # the same space (as data) and the same ops, Zero included


def _mobile() -> dict[str, Any]:
    return json.loads((NETS_DIR / "proxyless_mobile.config").read_text())


def _edit(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    config = copy.deepcopy(_mobile())
    node = config
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return config


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("blocks", 5, "mobile_inverted_conv", "kernel_size"), 4, "blocks[5]"),
        (("blocks", 5, "mobile_inverted_conv", "act_func"), "h_swish", "act_func='h_swish'"),
        (("blocks", 5, "mobile_inverted_conv", "use_se"), True, "use_se=True"),
        (("blocks", 2, "shortcut"), None, "blocks[2] (searchable layer 1): has no shortcut"),
        (("blocks", 0, "mobile_inverted_conv", "expand_ratio"), 6, "blocks[0] (the first block)"),
        (("blocks", 1, "mobile_inverted_conv", "name"), "ZeroLayer", "cannot be skipped"),
        (("blocks", 1, "mobile_inverted_conv", "name"), "MixedEdge", "a MixedEdge"),
        (("blocks", 1, "mobile_inverted_conv", "out_channels"), 30, "not a multiple of 8"),
        (("first_conv", "kernel_size"), 5, "first_conv: kernel_size=5"),
        (("feature_mix_layer", "act_func"), "relu", "feature_mix_layer: act_func='relu'"),
        (("classifier", "name"), "MBInvertedConvLayer", "classifier: a MBInvertedConvLayer"),
        (("name",), "MobileNetV3", "network 'MobileNetV3'"),
    ],
)
def test_configs_this_space_cannot_express_are_clear_errors(
    path: tuple[Any, ...], value: Any, expected: str
) -> None:
    with pytest.raises(ArchError, match="cannot express") as e:
        arch_from_net_config(_edit(path, value), source="x.config")
    assert expected in str(e.value) and str(e.value).startswith("x.config: ")


def test_not_a_net_config() -> None:
    with pytest.raises(ArchError, match="missing field 'blocks'"):
        arch_from_net_config({"name": "ProxylessNASNets", "first_conv": _mobile()["first_conv"]})


def test_resolve_arch_takes_presets_arch_json_and_net_config(tmp_path: Path) -> None:
    arch = resolve_arch("proxyless_cpu")
    arch.save(tmp_path / "arch.json")
    (tmp_path / "net.config").write_text(json.dumps(arch_to_net_config(arch)))
    (tmp_path / "net.json").write_text(json.dumps(arch_to_net_config(arch)))  # told by content
    assert resolve_arch(str(tmp_path / "arch.json")) == arch
    for name in ("net.config", "net.json"):
        got = resolve_arch(str(tmp_path / name))
        assert got.ops == arch.ops and got.space.stages == arch.space.stages


def test_resolve_arch_errors_list_what_it_accepts(tmp_path: Path) -> None:
    for spec, start in [("proxyless_phone", "unknown arch"), ("runs/x/arch.json", "arch file")]:
        with pytest.raises(ArchError) as e:
            resolve_arch(spec)
        msg = str(e.value)
        assert msg.startswith(start) and all(p in msg for p in ARCH_PRESETS)
        assert "arch.json" in msg and "net.config" in msg
    (tmp_path / "other.json").write_text('{"format": "something"}')
    with pytest.raises(ArchError, match="not a proxyless arch.json"):
        resolve_arch(str(tmp_path / "other.json"))
    (tmp_path / "bad.config").write_text("not json")
    with pytest.raises(ArchError, match="not valid JSON"):
        resolve_arch(str(tmp_path / "bad.config"))


def test_export_writes_net_config_with_both_flop_counts(tmp_path: Path) -> None:
    report = export(
        ExportConfig(arch="proxyless_mobile", format="net_config", out_dir=str(tmp_path))
    )
    written = json.loads((tmp_path / "net.config").read_text())
    assert _without_bn(written) == _without_bn(_mobile())
    assert round(report["flops"]["conv_linear_macs"] / 1e6, 1) == 320.4
    assert report["flops"]["fvcore_total"] > report["flops"]["conv_linear_macs"]
    line = format_report(report)
    assert "320.4M (conv+linear multiply-adds" in line and "fvcore total" in line


def test_train_cli_takes_a_net_config(tmp_path: Path) -> None:
    from proxyless.train import TrainConfig, train

    space = get_space("tiny")
    arch = sample_archs(space, 1, seed=3)[0]
    (tmp_path / "net.config").write_text(json.dumps(arch_to_net_config(arch)))
    cfg = TrainConfig.from_dict(
        {
            "arch": str(tmp_path / "net.config"),
            "out_dir": str(tmp_path / "run"),
            "epochs": 1,
            "device": "cpu",
            "tensorboard": False,
            "data": {"name": "synthetic", "batch_size": 8, "image_size": 32,
                     "synthetic_train_samples": 16, "synthetic_test_samples": 8},
        }
    )  # fmt: skip
    metrics = train(cfg)
    assert Path(metrics["checkpoint"]).is_file()
