import pytest
import torch

from latency.errors import MissingKeyError
from latency.header import TableHeader
from latency.keys import OpKey
from latency.table import Entry, LatencyTable
from proxyless.latency_bridge import (
    arch_analysis,
    arch_keys,
    key_builder,
    sample_archs,
    space_keys,
    table_costs,
)
from proxyless.plan import arch_plan
from proxyless.space import get_space
from proxyless.supernet import SuperNet


def _table(space, skip=()):
    table = LatencyTable(
        TableHeader(
            "test-cpu", "torch-cpu", 1, "float32", profile_command="proxyless-profile space=tiny"
        )
    )
    for i, key in enumerate(space_keys(space)):
        if str(key) not in skip:
            table.add(str(key), Entry(0.1 + 0.01 * i, 0.1, 0.2, 5))
    return table


def test_every_key_builds_a_module_with_the_right_output():
    space = get_space("tiny")
    for key in space_keys(space):
        module, x = key_builder(key, batch=2)()
        with torch.no_grad():
            y = module(x)
        assert y.shape[:2] == (2, key.out_channels)
        assert OpKey.parse(str(key)) == key


def test_expected_cost_of_a_one_hot_supernet_equals_the_table_sum_of_its_arch():
    space = get_space("tiny")
    table = _table(space)
    net = SuperNet(space)
    net.set_costs(*table_costs(space, table))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for a in net.arch_parameters():
            a.zero_()[torch.randint(len(a), (1,), generator=gen)] = 50.0
    arch = net.derive()
    predicted = sum(table.entries[k].ms for k in arch_keys(arch))
    assert net.expected_cost().item() == pytest.approx(predicted, rel=1e-5)
    assert arch_analysis(arch, table).total() == pytest.approx(predicted)


def test_calibration_is_folded_into_the_costs():
    space = get_space("tiny")
    table = _table(space)
    table.header.calibration = {"a": 1.5, "b": 0.25}
    arch = sample_archs(space, 1, seed=3)[0]
    per_layer, fixed = table_costs(space, table)
    net = SuperNet(space)
    net.set_costs(per_layer, fixed)
    net.set_paths(net.arch_indices(arch))
    want = 1.5 * sum(table.entries[k].ms for k in arch_keys(arch)) + 0.25
    assert net.sampled_cost().item() == pytest.approx(want, rel=1e-5)
    # export and the search summary predict through the same calibration by default
    assert arch_analysis(arch, table).total() == pytest.approx(want)
    assert arch_analysis(arch, table, calibrated=False).total() == pytest.approx(
        (want - 0.25) / 1.5
    )


def test_missing_key_names_key_and_command():
    space = get_space("tiny")
    missing = str(space_keys(space)[7])
    with pytest.raises(MissingKeyError, match="proxyless-profile space=tiny") as e:
        table_costs(space, _table(space, skip={missing}))
    assert missing in str(e.value)


def test_sampled_archs_are_seeded_and_varied():
    space = get_space("tiny")
    a, b = sample_archs(space, 5, seed=1), sample_archs(space, 5, seed=1)
    assert [x.ops for x in a] == [x.ops for x in b]
    assert len({tuple(x.block_strings()) for x in a}) > 1


def test_the_model_keys_and_key_modules_come_from_one_plan():
    space = get_space("tiny")
    arch = sample_archs(space, 1, seed=5)[0]
    plan = arch_plan(space, arch.ops)
    assert [str(p.key) for p in plan] == arch_keys(arch)
    assert len(plan) == 4 + sum(not op.is_zero for op in arch.ops)
    # the standalone model is the plan's per-key modules, in order
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    model = arch.build()
    assert count(model) == sum(count(key_builder(p.key, 1)()[0]) for p in plan)
    x = torch.randn(1, 3, 32, 32)
    for part in plan:
        module, x_part = key_builder(part.key, 1)()
        assert x_part.shape[1:] == x.shape[1:]
        with torch.no_grad():
            x = module(x)
