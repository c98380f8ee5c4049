"""Nested weight sharing (`space.weight_sharing=nested`): every candidate of a layer computes
with slices of that layer's largest op, so training one trains what the others use."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from search_configs import FAST_SEARCH, merged_config

from proxyless.mixed_op import MixedLayer
from proxyless.nested import NestedMBConvWeights, SlicedConv2d
from proxyless.ops import Conv2d
from proxyless.search import search
from proxyless.search_config import ConfigError, result_fingerprint
from proxyless.space import get_space
from proxyless.supernet import SuperNet


def _layer() -> MixedLayer:
    torch.manual_seed(0)
    spec = next(s for s in get_space("tiny").layers() if s.residual)
    return MixedLayer(spec, weight_sharing="nested")


def test_candidates_read_the_centre_and_leading_channels_of_the_largest_op() -> None:
    layer = _layer()
    shared = layer.shared["all"]
    cin = layer.spec.in_channels
    for op, cand in zip(layer.spec.candidates, layer.candidates, strict=True):
        if op.is_zero:
            continue
        mid, o = cin * op.expand, (7 - op.kernel) // 2
        torch.testing.assert_close(cand.expand_conv[0].weight, shared.expand.weight[:mid])
        torch.testing.assert_close(
            cand.depthwise[0].weight,
            shared.depthwise.weight[:mid, :, o : o + op.kernel, o : o + op.kernel],
        )
        torch.testing.assert_close(cand.project[0].weight, shared.project.weight[:, :mid])
    # no candidate owns a conv weight: only BatchNorm parameters are their own
    own = {n.rsplit(".", 2)[-2] for n, _ in layer.candidates.named_parameters()}
    assert own == {"1"}


def test_a_step_of_the_largest_candidate_moves_only_the_small_ones_slice() -> None:
    """The gradient of a 3×3 e3 candidate's loss reaches the shared depthwise weight only in
    its 3×3 centre and first in·3 channels; a step of the largest candidate changes what the
    small one computes."""
    layer = _layer()
    spec = layer.spec
    small = next(i for i, op in enumerate(spec.candidates) if (op.kernel, op.expand) == (3, 3))
    large = layer.largest()
    x = torch.randn(4, spec.in_channels, spec.in_size, spec.in_size)
    layer.active = small
    layer(x).square().sum().backward()
    g = layer.shared["all"].depthwise.weight.grad
    mid = spec.in_channels * 3
    inside = g[:mid, :, 2:5, 2:5]
    assert inside.abs().sum() > 0
    assert g.abs().sum() == pytest.approx(inside.abs().sum().item())
    layer.eval()
    with torch.no_grad():
        before = layer(x)
        layer.active = large
        layer.shared["all"].depthwise.weight.add_(0.1)  # as an optimizer step of the large op would
        layer.active = small
        assert not torch.allclose(layer(x), before)


def test_kernels_mode_nests_kernels_within_each_expansion_only() -> None:
    torch.manual_seed(0)
    spec = next(s for s in get_space("tiny").layers() if s.residual)
    layer = MixedLayer(spec, weight_sharing="kernels")
    assert list(layer.shared) == ["e3", "e6"]
    by_op = {(op.kernel, op.expand): c for op, c in zip(spec.candidates, layer.candidates)}
    e6 = layer.shared["e6"].depthwise.weight
    torch.testing.assert_close(by_op[3, 6].depthwise[0].weight, e6[:, :, 2:5, 2:5])
    assert by_op[3, 3].depthwise[0].weight.shape[0] == spec.in_channels * 3
    torch.testing.assert_close(
        by_op[3, 3].depthwise[0].weight, layer.shared["e3"].depthwise.weight[:, :, 2:5, 2:5]
    )


@pytest.mark.parametrize("sharing", ["kernels", "nested"])
def test_extracted_standalone_net_and_checkpoint_round_trip(sharing: str) -> None:
    torch.manual_seed(0)
    net = SuperNet(get_space("tiny"), weight_sharing=sharing).train()
    for _ in range(3):  # BN statistics along random paths
        net.sample_paths(uniform=True)
        net(torch.randn(4, 3, 32, 32))
    net.eval()
    arch = net.derive()
    x = torch.randn(2, 3, 32, 32)
    net.set_paths(net.arch_indices(arch))
    with torch.no_grad():
        torch.testing.assert_close(net.extract(arch).eval()(x), net(x), atol=0, rtol=0)
    state = net.state_dict()
    assert SuperNet.weight_sharing_of(state) == sharing
    assert SuperNet.weight_sharing_of(SuperNet(get_space("tiny")).state_dict()) == "separate"
    again = SuperNet(get_space("tiny"), weight_sharing=SuperNet.weight_sharing_of(state))
    again.load_state_dict(state)  # strict
    again.set_paths(net.arch_indices(arch))
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x), net(x), atol=0, rtol=0)
    separate = sum(p.numel() for p in SuperNet(get_space("tiny")).weight_parameters())
    assert sum(p.numel() for p in net.weight_parameters()) < separate * 0.6


def test_a_kernel_that_is_not_a_centre_is_refused() -> None:
    with pytest.raises(ValueError, match=r"a 4×4 kernel is not the centre of a 7×7 one"):
        SlicedConv2d(Conv2d(8, 8, 7, groups=8, bias=False), 8, 8, 4)
    weights = NestedMBConvWeights(8, 8, [3, 5], [3, 6])
    assert weights.depthwise.kernel_size == (5, 5) and weights.expand.out_channels == 48


def test_nested_search_runs_and_resumes_only_with_the_same_sharing(tmp_path: Path) -> None:
    cfg = merged_config(FAST_SEARCH, tmp_path, space={"weight_sharing": "nested"})
    result = search(cfg)
    assert result.net is not None and len(result.net.layers[0].shared) == 1
    assert any(".shared." in k for k in torch.load(tmp_path / "checkpoints" / "last.pt")["net"])
    with pytest.raises(
        ConfigError, match=r"space.weight_sharing='sliced' is not one of: separate, kernels, nested"
    ):
        merged_config(FAST_SEARCH, tmp_path / "x", space={"weight_sharing": "sliced"})
    old = cfg.to_dict()
    del old["space"]["weight_sharing"]  # a run from before the option: separate weights
    assert result_fingerprint(old)["space"]["weight_sharing"] == "separate"
