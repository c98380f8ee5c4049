"""The speed anchor: a table remembers how fast the machine was, and later measurements
against it (more keys, whole networks) are put back on that speed. Timed on a
deterministic clock whose speed the test sets, so every figure is exact."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from latency.anchor import ANCHOR_KEY, anchor_builder
from latency.backends import Backend
from latency.errors import TableError
from latency.profile import profile
from latency.protocol import Protocol
from latency.validate import Network, validate

FAST = Protocol(warmup=1, rounds=2, repeats=2, window_ms=0.0)
ANCHOR_COST = 0.8  # ms the anchor "takes" on the clock at speed 1


class Clock(Backend):
    """A module costs its `cost_ms` (the anchor ANCHOR_COST) times `slow`, every call."""

    name = "torch-cpu"

    def __init__(self, slow: float) -> None:
        super().__init__(1)
        self.slow = slow

    def prepare(self, module: nn.Module, example_input: torch.Tensor):
        cost = getattr(module, "cost_ms", ANCHOR_COST)
        return lambda: cost

    def time_calls(self, run, repeats: int) -> list[float]:
        return [run() * self.slow] * repeats


class Drifting(Clock):
    """A clock whose speed changes at each measurement (the anchor is prepared once per
    measurement, after its items)."""

    def __init__(self, speeds: list[float]) -> None:
        super().__init__(speeds[0])
        self.speeds = iter(speeds)

    def prepare(self, module: nn.Module, example_input: torch.Tensor):
        if not hasattr(module, "cost_ms"):
            self.slow = next(self.speeds)
        return super().prepare(module, example_input)


def item(cost: float):
    def build() -> tuple[nn.Module, torch.Tensor]:
        m = nn.Identity()
        m.cost_ms = cost
        return m, torch.zeros(1, 2)

    return build


def test_profile_stores_the_anchor_and_extends_at_the_tables_speed() -> None:
    table = profile({"a": item(1.0), "b": item(2.0)}, Clock(1.0), protocol=FAST, progress=False)
    assert table.header.anchor_ms == pytest.approx(ANCHOR_COST)
    assert ANCHOR_KEY not in table.entries
    assert table.entries["a"].ms == pytest.approx(1.0)
    # the machine is now 2x slower: new keys are still entered at the table's speed
    more = profile({"a": item(1.0), "c": item(3.0)}, Clock(2.0), table, progress=False)
    assert more.entries["c"].ms == pytest.approx(3.0)
    assert more.entries["c"].calls_p90_ms == pytest.approx(3.0)
    assert more.header.anchor_ms == pytest.approx(ANCHOR_COST)
    # chunks of one key each, the machine slowing from 1.5x to 3x between them: every
    # chunk is entered at the speed of the first
    chunked = profile(
        {"x": item(1.0), "y": item(4.0)},
        Drifting([1.5, 3.0]),
        protocol=FAST,
        progress=False,
        chunk=1,
    )
    assert [chunked.entries[k].ms for k in "xy"] == pytest.approx([1.5, 6.0])
    assert chunked.header.anchor_ms == pytest.approx(1.5 * ANCHOR_COST)


def test_a_table_without_anchor_is_extended_as_measured() -> None:
    table = profile({"a": item(1.0)}, Clock(1.0), protocol=FAST, progress=False)
    table.header.anchor_ms = None  # a table written before anchors
    more = profile({"c": item(3.0)}, Clock(2.0), table, progress=False)
    assert more.entries["c"].ms == pytest.approx(6.0) and more.header.anchor_ms is None


@pytest.mark.parametrize("stream", [True, False])
def test_validation_puts_networks_on_the_tables_speed(stream: bool) -> None:
    table = profile({"k": item(1.0)}, Clock(1.0), protocol=FAST, progress=False)
    nets = [Network(f"n{i}", item(float(i)), ["k"] * i) for i in range(1, 5)]
    s = validate(table, nets, Clock(1.5), FAST, progress=False, stream=stream)
    assert s["anchored"] and s["speed_vs_table"] == pytest.approx([1.5, 1.5])
    assert [r["measured_ms"] for r in s["networks"]] == pytest.approx([1.0, 2.0, 3.0, 4.0])
    assert s["within_5pct"] == 1.0 and s["noise_floor"]["mape"] == pytest.approx(0.0)
    table.header.anchor_ms = None  # unanchored: the drift is the table's error
    s = validate(table, nets, Clock(1.5), FAST, progress=False, stream=stream)
    assert not s["anchored"] and s["speed_vs_table"] is None
    assert [r["measured_ms"] for r in s["networks"]] == pytest.approx([1.5, 3.0, 4.5, 6.0])


def test_the_anchor_key_is_reserved_and_the_anchor_is_the_same_every_time() -> None:
    with pytest.raises(TableError, match="reserved for the speed anchor"):
        profile({ANCHOR_KEY: item(1.0)}, Clock(1.0), protocol=FAST, progress=False)
    (m1, x1), (m2, x2) = anchor_builder(), anchor_builder()
    assert torch.equal(x1, x2)
    assert all(
        torch.equal(p, q) for p, q in zip(m1.state_dict().values(), m2.state_dict().values())
    )
    state = torch.random.get_rng_state()
    anchor_builder()
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG untouched
