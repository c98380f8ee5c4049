"""warmup.sampler=shift (ShiftNAS-style warmup paths): the probability formula, quantile bins,
paths of the requested bin, p following the loss improvement, the search loop (reports,
uniform runs unchanged, bit-exact resume) and its config errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from search_configs import FAST_SEARCH, merged, merged_config

from proxyless.distributed import step_generator
from proxyless.hardware import HardwareConfig, layer_costs
from proxyless.run import load_checkpoint
from proxyless.search import SearchError, search
from proxyless.search_config import ConfigError, SearchConfig
from proxyless.search_state import config_diffs
from proxyless.shift_sampler import ShiftError, ShiftSampler, shift_probs
from proxyless.space import get_space
from proxyless.supernet import SuperNet

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensor ops: one thread is fastest

FAST: dict[str, Any] = merged(FAST_SEARCH, schedule={"warmup_epochs": 2, "epochs": 1})
SHIFT = {"sampler": "shift", "update_every": 3}


def fast_cfg(run_dir: Path, **over: Any) -> SearchConfig:
    return merged_config(FAST, run_dir, **over)


def tiny_sampler(bins: int = 4, seed: int = 0, members: Any = None) -> ShiftSampler:
    costs = layer_costs(get_space("tiny"), HardwareConfig(kind="params"))
    members = members or [range(len(c)) for c in costs.per_layer]
    return ShiftSampler(costs.per_layer, costs.fixed, members, bins=bins, seed=seed)


# --- the sampler -------------------------------------------------------------------------------
def test_probabilities_match_the_formula() -> None:
    # p = (1 − ε)·softmax(Δ/T) + ε/K, Δ/T = (2, 0, −1, 1): e^z / Σ e^z by hand, ·0.9 + 0.025
    p = shift_probs([0.02, 0.0, -0.01, 0.01], temperature=0.01, epsilon=0.1)
    assert p == pytest.approx([0.6045228, 0.1034299, 0.0538527, 0.2381945], abs=1e-7)
    assert shift_probs([5.0, -5.0], temperature=1.0, epsilon=1.0) == pytest.approx([0.5, 0.5])
    assert sum(shift_probs([0.3, 0.1, 0.0], 0.05, 0.0)) == pytest.approx(1.0)


def test_p_moves_towards_the_bin_whose_loss_improves_more() -> None:
    s = ShiftSampler([[0.0, 1.0], [0.0, 2.0]], 0.0, [[0, 1], [0, 1]], 2, 0.5, 1.0, 0.1)
    for k, loss in ((0, 2.0), (0, 2.0), (1, 1.0)):  # first window: it sets the EMAs
        s.record(k, torch.tensor(loss))
    assert s.update() == [0.5, 0.5] and s.ema == [2.0, 1.0]
    s.record(0, torch.tensor(1.0))  # bin 0 improves, bin 1 does not
    s.record(1, torch.tensor(1.0))
    p = s.update()
    # EMA 0.5·2 + 0.5·1 = 1.5, Δ_0 = (2 − 1.5)/1.5 = 1/3, Δ_1 = 0;
    # p_0 = 0.9·e^(1/3)/(1 + e^(1/3)) + 0.05
    assert s.ema == [1.5, 1.0] and s.delta == pytest.approx([1 / 3, 0.0])
    assert p == pytest.approx([0.5743132, 0.4256868], abs=1e-7)
    s.record(1, torch.tensor(1.0))  # no bin-0 step in this window: its EMA and Δ stay
    assert s.update() == pytest.approx(p) and s.window_n == [0, 0]


def test_bins_are_quantiles_of_the_uniform_path_cost() -> None:
    s = tiny_sampler(bins=4)
    assert s.inner_edges == tiny_sampler(bins=4).inner_edges  # seeded: deterministic
    edges = s.edges()
    assert edges == sorted(edges) and len(edges) == 5
    costs = layer_costs(get_space("tiny"), HardwareConfig(kind="params"))
    assert edges[0] == pytest.approx(costs.min_cost()) and edges[-1] == pytest.approx(
        costs.max_cost()
    )
    # roughly equal mass on fresh uniform paths (another generator than the edges came from)
    fresh = s.path_costs(s.uniform_paths(8192, torch.Generator().manual_seed(123)))
    counts = torch.bincount(s.bin_of(fresh), minlength=4).double() / len(fresh)
    assert counts.tolist() == pytest.approx([0.25] * 4, abs=0.03)
    assert s.mass == pytest.approx([0.25] * 4, abs=0.01)


@pytest.mark.parametrize("bins", [4, 8])
def test_drawn_paths_land_in_the_requested_bin(bins: int) -> None:
    s = tiny_sampler(bins=bins)
    s.p = [0.5] + [0.5 / (bins - 1)] * (bins - 1)
    costs = layer_costs(get_space("tiny"), HardwareConfig(kind="params"))
    edges, n = s.edges(), 1000
    inside = 0
    for step in range(1, n + 1):
        k, path = s.draw(step_generator(0, step))
        cost = costs.cost_of(path)
        inside += edges[k] <= cost + 1e-9 and (cost < edges[k + 1] or k == bins - 1)
    print(f"bins={bins}: bin-hit rate {s.hit_rate:.4f} ({s.misses} misses in {n} draws)")
    assert s.hit_rate is not None and s.hit_rate >= 0.95
    assert inside / n >= 0.95 and s.hits <= inside  # a counted hit is really inside its bin
    assert sum(s.steps) == n and s.steps[0] / n == pytest.approx(0.5, abs=0.05)


def test_paths_respect_pruned_layers() -> None:
    members = [[0, 2, 4]] * 6
    s = tiny_sampler(bins=4, members=members)
    for step in range(1, 200):
        _, path = s.draw(step_generator(1, step))
        assert set(path) <= {0, 2, 4}


def test_costs_that_do_not_split_into_bins_are_one_clear_error() -> None:
    with pytest.raises(ShiftError, match="lower warmup.bins or use warmup.sampler=uniform"):
        ShiftSampler([[1.0, 2.0]] * 3, 0.0, [[0]] * 3, bins=2)  # one path: one cost


# --- in the search -----------------------------------------------------------------------------
def test_uniform_warmup_is_todays_uniform_paths(
    tmp_path: Path, trained_paths: list[list[int]]
) -> None:
    """warmup.sampler=uniform (the default; the shift keys are inert) trains the step
    generator's uniform paths, as before the option existed."""
    trained = trained_paths
    other = {"sampler": "uniform", "bins": 8, "ema": 0.5, "temperature": 1.0, "update_every": 1}
    result = search(fast_cfg(tmp_path / "a", warmup=other))
    ref = SuperNet(result.net.space)
    for step in range(1, 9):
        assert trained[step - 1] == ref.sample_paths(step_generator(0, step), uniform=True)
    trained.clear()
    search(fast_cfg(tmp_path / "b"))
    a = load_checkpoint(tmp_path / "a/checkpoints/last.pt")
    b = load_checkpoint(tmp_path / "b/checkpoints/last.pt")
    assert a["shift"] is None and "shift" not in result.metrics
    for k in a["net"]:
        assert torch.equal(a["net"][k], b["net"][k]), k


def test_shift_warmup_draws_paths_by_bin_and_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trained_paths: list[list[int]]
) -> None:
    """With sandwich: odd steps stay the largest path, the other warmup steps train a path
    of the bin the shift sampler drew. objective=none: the bins still come from the
    hardware costs (a search always has them)."""
    trained = trained_paths
    drawn: list[tuple[int, list[int]]] = []
    real_draw = ShiftSampler.draw

    def recording_draw(self, generator):  # type: ignore[no-untyped-def]
        drawn.append(real_draw(self, generator))
        return drawn[-1]

    monkeypatch.setattr(ShiftSampler, "draw", recording_draw)
    cfg = fast_cfg(
        tmp_path,
        warmup={**SHIFT, "update_every": 2},
        schedule={"sampler": "sandwich"},
        objective={"kind": "none"},
    )
    result = search(cfg)
    largest = result.net.largest_path()
    assert all(trained[i] == largest for i in range(0, 12, 2))
    assert [path for _, path in drawn] == [trained[i] for i in (1, 3, 5, 7)]  # warmup only
    shift = result.metrics["shift"]
    edges, costs = shift["edges"], json.loads((tmp_path / "costs.json").read_text())
    for k, path in drawn:
        cost = costs["fixed"] + sum(c[i] for c, i in zip(costs["per_layer"], path, strict=True))
        assert edges[k] - 1e-9 <= cost <= edges[k + 1] + 1e-9
    assert sum(shift["steps_per_bin"]) == 4 and shift["hit_rate"] == 1.0
    assert shift["updates"] == 4 and sum(shift["p"]) == pytest.approx(1.0)
    assert len(edges) == 5 and shift["unit"] == "Kparams"
    assert json.loads((tmp_path / "summary.json").read_text())["shift"] == shift
    history = load_checkpoint(tmp_path / "checkpoints/last.pt")["history"]
    assert history["shift"] == shift  # as warmup left it: nothing changes it afterwards
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = EventAccumulator(str(tmp_path / "tb")).Reload().Tags()["scalars"]
    assert {"shift/p_0", "shift/p_3", "shift/hit_rate"} <= set(tags)


def test_shift_resume_mid_warmup_matches_uninterrupted_run(tmp_path: Path) -> None:
    """Killed at step 5 (NaN), resumed from the step-4 checkpoint, which falls inside an
    update window (every 3 steps): weights, α, BN statistics and the sampler's state end
    equal to a run that never stopped."""
    over = {"warmup": SHIFT, "checkpoint": {"every_steps": 1}}
    ref = search(fast_cfg(tmp_path / "ref", **over)).metrics["shift"]
    with pytest.raises(SearchError):
        search(fast_cfg(tmp_path / "run", **over, debug={"inject_nan_at_step": 5}))
    cut = load_checkpoint(tmp_path / "run/checkpoints/last.pt")
    assert cut["global_step"] == 4 and cut["shift"]["window_n"] != [0, 0, 0, 0]
    got = search(fast_cfg(tmp_path / "run", **over, resume=True)).metrics["shift"]
    assert got == ref
    a = load_checkpoint(tmp_path / "ref/checkpoints/last.pt")
    b = load_checkpoint(tmp_path / "run/checkpoints/last.pt")
    for k in a["net"]:
        assert torch.equal(a["net"][k], b["net"][k]), k
    assert a["shift"]["p"] == b["shift"]["p"] and a["shift"]["ema"] == b["shift"]["ema"]


# --- config --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("warmup", "message"),
    [
        ({"sampler": "big"}, "warmup.sampler='big' is not one of: uniform, shift"),
        ({"bins": 1}, "warmup.bins=1 must be >= 2"),
        ({"epsilon": 1.5}, r"warmup.epsilon=1.5 must be in \[0, 1\]"),
        ({"epsilon": -0.1}, r"warmup.epsilon=-0.1 must be in \[0, 1\]"),
        ({"ema": 1.0}, r"warmup.ema=1.0 must be in \[0, 1\)"),
        ({"temperature": 0}, "warmup.temperature=0.0 must be > 0"),
        ({"update_every": 0}, "warmup.update_every=0 must be >= 1"),
    ],
)
def test_bad_warmup_settings_are_one_clear_error(
    tmp_path: Path, warmup: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        fast_cfg(tmp_path, warmup=warmup)
    assert "\n" not in str(err.value)


def test_every_warmup_key_is_a_valid_override() -> None:
    from proxyless.cli._common import override_error, to_plain
    from proxyless.cli.search import _hydra_main  # noqa: F401 (the search entry point)

    over = [
        "warmup.sampler=shift",
        "warmup.bins=8",
        "warmup.ema=0.5",
        "warmup.temperature=0.1",
        "warmup.epsilon=0",
        "warmup.update_every=5",
    ]
    assert override_error("search", over) is None
    from hydra import compose, initialize_config_dir

    from proxyless.cli._common import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = SearchConfig.from_dict(to_plain(compose("search", overrides=over)))
    assert (cfg.warmup.sampler, cfg.warmup.bins, cfg.warmup.epsilon) == ("shift", 8, 0.0)
    message = override_error("search", ["warmup.bins=many"])
    assert message is not None and "warmup.bins" in message and "integer" in message


def test_a_run_from_before_the_warmup_block_still_resumes() -> None:
    cfg = SearchConfig().to_dict()
    old = {k: v for k, v in cfg.items() if k != "warmup"}
    assert config_diffs(old, cfg) == []
    shifted = SearchConfig.from_dict({"warmup": {"sampler": "shift"}}).to_dict()
    assert config_diffs(old, shifted) == ["warmup.sampler ('uniform' → 'shift')"]
