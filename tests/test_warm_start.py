"""`init.alpha=<proxy>`: α from standardised per-candidate proxy scores; the rest of the run
is what a plain run would do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from proxyless.search import search
from proxyless.search_config import ConfigError, SearchConfig
from proxyless.space import get_space
from proxyless.supernet import SuperNet
from proxyless.warm_start import alpha_from_scores, candidate_scores, kept_candidates
from proxyless.zeroshot import PROXIES


def fast_cfg(run_dir: Path, **over: dict) -> SearchConfig:
    d: dict = {
        "data": {"name": "synthetic", "batch_size": 16, "synthetic_train_samples": 160},
        "hardware": {"kind": "params", "target_frac": 0.3},
        "schedule": {"warmup_epochs": 1, "epochs": 1, "arch_every": 2, "steps_per_epoch": 2},
        "log": {"progress": False},
        "threads": 1,
        "run_dir": str(run_dir),
    }
    for key, value in over.items():
        d.setdefault(key, {}).update(value)
    return SearchConfig.from_dict(d)


def test_candidates_are_scored_as_the_subnets_that_force_them() -> None:
    net = SuperNet(get_space("tiny"))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    batches = [(torch.randn(2, 3, 32, 32), torch.zeros(2, dtype=torch.long))]
    scores = candidate_scores(net, PROXIES.get("params"), batches, 1, torch.Generator())
    for layer, row in zip(net.layers, scores, strict=True):
        sizes = [0 if layer.is_zero(j) else sum(p.numel() for p in c.parameters())
                 for j, c in enumerate(layer.candidates)]  # fmt: skip
        # the same path elsewhere: the scores differ exactly by the candidate's own params
        assert [s - row[0] for s in row] == [n - sizes[0] for n in sizes]
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())


def test_alpha_is_standardised_and_divided_by_the_temperature() -> None:
    (a,) = alpha_from_scores([[1.0, 3.0, float("-inf")]], 0.5)
    z = torch.tensor([1.0, 3.0, 1.0])
    assert torch.allclose(a, (z - z.mean()) / z.std(correction=0) / 0.5)


@pytest.mark.parametrize(
    "proxy",
    ["params", pytest.param("zico", marks=pytest.mark.slow)],  # zico: ~10 s
)
def test_search_with_init_alpha_from_a_proxy(tmp_path: Path, proxy: str) -> None:
    cfg = fast_cfg(
        tmp_path,
        init={"alpha": proxy, "temperature": 0.5, "paths": 1},
        schedule={"warmup_epochs": 1, "epochs": 0},
    )
    result = search(cfg)
    record = json.loads((tmp_path / "init_alpha.json").read_text())
    assert record["proxy"] == proxy and len(record["alpha"]) == len(result.net.layers)
    for layer, alpha in zip(result.net.layers, record["alpha"], strict=True):
        assert torch.allclose(layer.alpha.detach(), torch.tensor(alpha))  # no arch step ran
        assert abs(sum(alpha)) < 1e-4
    if proxy == "params":  # the candidate with the most weights starts most probable
        for alpha, layer in zip(record["alpha"], result.net.layers, strict=True):
            assert int(torch.tensor(alpha).argmax()) == layer.largest()


def test_init_alpha_must_name_a_proxy(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="init.alpha='zicoo'"):
        fast_cfg(tmp_path, init={"alpha": "zicoo"})


def test_a_pruned_layer_never_uses_its_pruned_candidates() -> None:
    from proxyless.estimators import ESTIMATORS
    from proxyless.steps import arch_step

    net = SuperNet(get_space("tiny"))
    layer = net.layers[1]  # residual: 7 candidates, Zero included
    layer.restrict([0, 3, 6])
    g = torch.Generator().manual_seed(0)
    assert {layer.sample(g, uniform=True) for _ in range(200)} == {0, 3, 6}
    assert {layer.sample(g) for _ in range(200)} == {0, 3, 6}
    assert layer.probs()[[1, 2, 4, 5]].sum() == 0 and layer.largest() == 3
    for name in ("all_paths", "two_path", "reinforce", "darts"):
        opt = torch.optim.SGD(net.arch_parameters(), lr=0.1)
        est = ESTIMATORS.build(name)
        x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
        before = layer.alpha.detach().clone()
        arch_step(net, est, x, y, opt, g)
        assert torch.equal(layer.alpha.detach()[[1, 2, 4, 5]], before[[1, 2, 4, 5]]), name
    kept = {str(layer.spec.candidates[j]) for j in (0, 3, 6)}
    assert str(net.derive().ops[1]) in kept


def test_search_with_prune_keep_and_its_resume(tmp_path: Path) -> None:
    over = {"init": {"alpha": "params", "paths": 1}, "prune": {"keep": 3}}
    result = search(fast_cfg(tmp_path, **over))
    kept = json.loads((tmp_path / "init_alpha.json").read_text())["kept"]
    assert all(len(k) in (3, 4) for k in kept)  # 4: its cheapest op kept for the target
    assert all(str(op) in k for op, k in zip(result.arch.ops, kept, strict=True))
    m = result.metrics
    assert abs(m["derived_cost"] - m["target"]) <= 0.05 * m["target"]  # params prefers big ops
    again = search(_resumed(tmp_path, over))  # finished: read back, masks included
    assert again.arch.block_strings() == result.arch.block_strings()
    assert [ly.members() for ly in again.net.layers] == [ly.members() for ly in result.net.layers]
    with pytest.raises(ConfigError, match="prune.keep=3 needs"):
        fast_cfg(tmp_path, prune={"keep": 3})


def test_pruning_keeps_the_cheapest_ops_the_target_needs() -> None:
    a = [torch.tensor([3.0, 2.0, 1.0])] * 3  # the proxy prefers candidate 0, the largest
    costs = [[5.0, 3.0, 1.0], [5.0, 3.0, 1.0], [4.0, 3.5, 3.0]]
    assert kept_candidates(a, 2, costs, 1.0, 20.0) == ([[0, 1]] * 3, [])  # 1+3+3+3.5 fits
    kept, added = kept_candidates(a, 2, costs, 1.0, 8.0)
    assert added == [0, 1] and kept == [[0, 1, 2], [0, 1, 2], [0, 1]]  # 1+1+1+3.5 = 6.5
    kept, added = kept_candidates(a, 2, costs, 1.0, 4.0)  # below the space's cheapest (6)
    assert kept == [[0, 1, 2]] * 3 and added == [0, 1, 2]
    assert kept_candidates(a, 2, costs, 1.0, None) == ([[0, 1]] * 3, [])  # no target


def _resumed(run_dir: Path, over: dict) -> SearchConfig:
    cfg = fast_cfg(run_dir, **over)
    cfg.resume = True
    return cfg
