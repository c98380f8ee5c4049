import json

import pytest
import timm.models.efficientnet as tefn
import torch
from timm.models._efficientnet_builder import decode_arch_def

from proxyless.arch import Arch, ArchError
from proxyless.space import OpSpec, get_space
from proxyless.supernet import SuperNet


def test_parameter_groups_are_disjoint_and_complete():
    net = SuperNet(get_space("tiny"))
    arch, weights = net.arch_parameters(), net.weight_parameters()
    assert len(arch) == len(net.layers)
    assert {id(p) for p in arch}.isdisjoint(id(p) for p in weights)
    assert len(arch) + len(weights) == len(list(net.parameters()))


def test_expected_cost_and_its_gradient_are_exact():
    torch.manual_seed(0)
    net = SuperNet(get_space("tiny"))
    costs = [torch.rand(layer.num_candidates).tolist() for layer in net.layers]
    net.set_costs(costs, fixed=2.5)
    expected = net.expected_cost()
    probs = [p.detach() for p in net.probabilities()]
    c = [torch.tensor(x) for x in costs]
    assert expected.item() == pytest.approx(2.5 + sum(float(p @ ci) for p, ci in zip(probs, c)))
    expected.backward()
    for layer, p, ci in zip(net.layers, probs, c, strict=True):
        torch.testing.assert_close(layer.alpha.grad, p * (ci - p @ ci))
    net.set_paths([1] * len(net.layers))
    assert net.sampled_cost().item() == pytest.approx(2.5 + sum(float(ci[1]) for ci in c))


def test_set_costs_and_paths_reject_wrong_shapes():
    net = SuperNet(get_space("tiny"))
    with pytest.raises(ValueError, match="need costs for 6 layers"):
        net.set_costs([[1.0]], 0.0)
    with pytest.raises(ValueError, match="candidates"):
        net.set_costs([[1.0]] * 6, 0.0)
    with pytest.raises(RuntimeError, match="set_costs"):
        net.expected_cost()
    with pytest.raises(ValueError, match="out of range"):
        net.set_paths([99] * 6)


def _trained_looking_supernet(space_name="tiny"):
    torch.manual_seed(0)
    net = SuperNet(get_space(space_name))
    with torch.no_grad():
        for p in net.arch_parameters():
            p.normal_(0, 1)
    net.train()  # populate BN running statistics along random paths
    for _ in range(3):
        net.sample_paths(uniform=True)
        net(torch.randn(4, 3, 32, 32))
    return net.eval()


def test_derive_then_standalone_with_inherited_weights_matches_supernet_path():
    net = _trained_looking_supernet()
    arch = net.derive()
    assert arch.ops == [
        layer.spec.candidates[int(p.argmax())] for layer, p in zip(net.layers, net.probabilities())
    ]
    model = net.extract(arch).eval()
    net.set_paths(net.arch_indices(arch))
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), net(x), atol=0, rtol=0)


def test_zero_layers_disappear_from_the_standalone_model():
    space = get_space("tiny")
    ops = [
        OpSpec("zero") if OpSpec("zero") in layer.candidates else layer.candidates[0]
        for layer in space.layers()
    ]
    model = Arch(space, ops).build()
    assert len(model.blocks) == sum(not op.is_zero for op in ops) < len(ops)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_arch_file_round_trip(tmp_path):
    net = _trained_looking_supernet()
    arch = net.derive()
    path = tmp_path / "arch.json"
    arch.save(path)
    again = Arch.load(path)
    assert again == arch
    data = json.loads(path.read_text())
    assert data["version"] == 1 and data["ops"] == arch.block_strings()
    assert len(data["probs"]) == 6 and data["input_size"] == 32


@pytest.mark.parametrize(
    ("space_name", "overrides"),
    [("tiny", {}), ("imagenet", {}), ("tiny", {"expand_ratios": (1, 6)})],  # e1: timm's ds
)
def test_timm_builds_the_same_network(space_name, overrides):
    space = get_space(space_name, **overrides)
    gen = torch.Generator().manual_seed(3)
    ops = [
        layer.candidates[int(torch.randint(len(layer.candidates), (1,), generator=gen))]
        for layer in space.layers()
    ]
    arch = Arch(space, ops)
    ours = arch.build()
    theirs = tefn.EfficientNet(
        decode_arch_def(arch.timm_arch_def()),
        num_classes=space.num_classes,
        num_features=space.head_channels,
        stem_size=space.stem_channels,
        fix_stem=True,
        act_layer=torch.nn.ReLU6,
    )
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(theirs) == count(ours)


def _write(tmp_path, data):
    path = tmp_path / "arch.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_malformed_and_incompatible_arch_files_give_clear_errors(tmp_path):
    good = Arch(get_space("tiny"), [l.candidates[0] for l in get_space("tiny").layers()])
    with pytest.raises(ArchError, match="does not exist"):
        Arch.load(tmp_path / "missing.json")
    with pytest.raises(ArchError, match="not valid JSON"):
        Arch.load(_write(tmp_path, "{oops"))
    with pytest.raises(ArchError, match="not a proxyless arch"):
        Arch.load(_write(tmp_path, {"ops": []}))
    d = good.to_dict()
    with pytest.raises(ArchError, match="version 9"):
        Arch.load(_write(tmp_path, {**d, "version": 9}))
    with pytest.raises(ArchError, match="has 2 layers but space 'tiny' has 6"):
        Arch.load(_write(tmp_path, {**d, "ops": d["ops"][:2]}))
    with pytest.raises(ArchError, match="layer 0: op zero not allowed"):
        Arch.load(_write(tmp_path, {**d, "ops": ["zero"] + d["ops"][1:]}))
    with pytest.raises(ArchError, match="unknown op 'conv9'"):
        Arch.load(_write(tmp_path, {**d, "ops": ["conv9"] + d["ops"][1:]}))
    with pytest.raises(ArchError, match="different configuration"):
        SuperNet(get_space("tiny", num_classes=5)).arch_indices(good)


def test_arch_from_strings_inverts_block_strings() -> None:
    from proxyless.arch import Arch
    from proxyless.space import get_space

    space = get_space("tiny")
    ops = ["mb_k3_e3", "zero", "mb_k7_e6", "zero", "mb_k5_e3", "mb_k3_e6"]
    arch = Arch.from_strings(space, ops)
    assert arch.block_strings() == ops and arch.space == space
