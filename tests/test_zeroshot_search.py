"""`strategy=zeroshot` end to end on CPU: the run files, the budget (no over-budget candidate
is ever scored), exact resume after an interruption, a finished run left alone, the CLI,
and the evolution's moves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from search_configs import merged_config

from proxyless import zeroshot_search as zs
from proxyless.cli.search import run
from proxyless.evolution import BudgetError, mutate, sample_within
from proxyless.hardware import SpaceCosts
from proxyless.objective import ObjectiveError
from proxyless.run import load_checkpoint
from proxyless.search import search
from proxyless.search_config import ConfigError, SearchConfig

FAST: dict[str, Any] = {
    "strategy": "zeroshot",
    "zeroshot": {"population": 4, "iterations": 6, "mutation_rate": 0.3},
    "data": {
        "name": "synthetic",
        "batch_size": 8,
        "synthetic_train_samples": 64,
        "synthetic_test_samples": 16,
    },
    "hardware": {"kind": "params", "target_frac": 0.4},
    "log": {"progress": False},
    "threads": 1,
}


def zs_cfg(run_dir: Path, **over: dict[str, Any]) -> SearchConfig:
    return merged_config(FAST, run_dir, **over)


def test_zeroshot_search_writes_what_a_search_writes(tmp_path: Path) -> None:
    result = search(zs_cfg(tmp_path))
    for name in ("arch.json", "summary.json", "config.yaml", "run_info.json", "costs.json"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "checkpoints" / "last.pt").is_file()
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    m = json.loads((tmp_path / "summary.json").read_text())
    assert m == json.loads(json.dumps(result.metrics))
    assert m["strategy"] == "zeroshot" and m["candidates"] == 10 and m["proxy"] == "zico"
    assert m["derived_cost"] <= m["target"]
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt", zs.ZEROSHOT_KIND)
    scores = [s for _, s in state["population"]["scored"]]
    assert len(scores) == 10 and m["score"] == max(scores)
    assert len(state["population"]["members"]) == 4
    assert result.arch.block_strings() == m["arch"]


def test_candidates_over_budget_are_never_scored(tmp_path: Path, monkeypatch) -> None:
    scored: list[list[int]] = []
    real = zs._ZeroShot.score

    def spy(self, indices, seed):
        scored.append(list(indices))
        assert self.costs.cost_of(indices) <= self.budget
        return real(self, indices, seed)

    monkeypatch.setattr(zs._ZeroShot, "score", spy)
    cfg = zs_cfg(tmp_path, hardware={"target_frac": 0.1}, zeroshot={"mutation_rate": 1.0})
    m = search(cfg).metrics
    assert len(scored) == 10 and len({tuple(a) for a in scored}) == 10  # no arch twice
    assert m["rejected_over_budget"] > 0  # a tight budget: many children were over it


def test_an_interrupted_zeroshot_search_resumes_exactly(tmp_path: Path, monkeypatch) -> None:
    whole = search(zs_cfg(tmp_path / "whole", zeroshot={"proxy": "grad_norm"})).metrics
    real, calls = zs._ZeroShot.score, [0]

    def dies_at_8(self, indices, seed):
        calls[0] += 1
        if calls[0] == 8:
            raise KeyboardInterrupt
        return real(self, indices, seed)

    monkeypatch.setattr(zs._ZeroShot, "score", dies_at_8)
    cut = zs_cfg(tmp_path / "cut", zeroshot={"proxy": "grad_norm"}, checkpoint={"every_steps": 3})
    with pytest.raises(KeyboardInterrupt):
        search(cut)
    state = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert len(state["population"]["scored"]) == 6
    monkeypatch.setattr(zs._ZeroShot, "score", real)
    again = search(zs_cfg(tmp_path / "cut", zeroshot={"proxy": "grad_norm"}, resume=True))
    for key in ("arch", "score", "derived_cost", "candidates", "rejected_over_budget"):
        assert again.metrics[key] == whole[key], key
    # finished: a second resume scores nothing and leaves the summary as it was
    before = (tmp_path / "cut" / "summary.json").read_text()
    monkeypatch.setattr(zs._ZeroShot, "score", None)
    search(zs_cfg(tmp_path / "cut", zeroshot={"proxy": "grad_norm"}, resume=True))
    assert (tmp_path / "cut" / "summary.json").read_text() == before


def test_random_inputs_and_a_target_below_every_arch(tmp_path: Path) -> None:
    m = search(zs_cfg(tmp_path / "rand", zeroshot={"inputs": "random"})).metrics
    assert m["candidates"] == 10
    with pytest.raises(ObjectiveError, match="below the minimum cost of this space"):
        search(zs_cfg(tmp_path / "low", hardware={"target": 1.0, "target_frac": None}))


def test_zeroshot_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="zeroshot.proxy='bogus'"):
        zs_cfg(tmp_path, zeroshot={"proxy": "bogus"})
    with pytest.raises(ConfigError, match="strategy='evolution'"):
        zs_cfg(tmp_path, strategy="evolution")
    with pytest.raises(ConfigError, match="mutation_rate"):
        zs_cfg(tmp_path, zeroshot={"mutation_rate": 0.0})


def test_cli_strategy_zeroshot(tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir

    from proxyless.cli._common import config_dir

    overrides = [
        "strategy=zeroshot",
        "debug=fast",
        "zeroshot.population=3",
        "zeroshot.iterations=2",
        "zeroshot.proxy=naswot",
        f"run_dir={tmp_path}",
    ]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        metrics = run(compose(config_name="search", overrides=overrides))
    assert metrics["candidates"] == 5 and metrics["proxy"] == "naswot"


def test_sample_within_and_mutate() -> None:
    costs = SpaceCosts([[1.0, 2.0, 0.0], [3.0, 1.0], [5.0, 0.5, 2.0]], fixed=1.0, unit="ms")
    for seed in range(50):
        rng = np.random.default_rng(seed)
        arch = sample_within(costs, 3.0, rng)
        assert costs.cost_of(arch) <= 3.0
        child = mutate(arch, costs, 0.01, rng)
        assert sum(a != b for a, b in zip(arch, child, strict=True)) >= 1
    with pytest.raises(BudgetError):
        sample_within(costs, 2.0, np.random.default_rng(0))


def test_proxy_batches_are_the_same_whatever_the_global_rng(tmp_path: Path) -> None:
    import torch
    from torch.utils.data import Dataset

    from proxyless.space import get_space

    class Augmented(Dataset):  # a random "augmentation" drawn from the global RNG
        def __len__(self) -> int:
            return 40

        def __getitem__(self, i: int):
            return torch.full((3, 32, 32), float(i)) + torch.rand(3, 32, 32), i % 10

    cfg, space = zs_cfg(tmp_path), get_space("tiny")
    first = zs.proxy_batches(cfg, space, Augmented())
    torch.rand(100)
    state = torch.random.get_rng_state()
    second = zs.proxy_batches(cfg, space, Augmented())
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG untouched
    assert len(first) == 2
    for (x1, y1), (x2, y2) in zip(first, second, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
