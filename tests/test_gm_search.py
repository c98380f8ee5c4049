"""Few-shot search by gradient matching end to end on CPU (`gm.splits`): the split, the
children's start, equal step shares, the final choice, the reports, and exact resume."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from search_configs import FAST_SEARCH, merged, merged_config

from proxyless.run import load_checkpoint
from proxyless.search import SearchError, search
from proxyless.search_config import ConfigError, SearchConfig

FAST: dict[str, Any] = merged(
    FAST_SEARCH, gm={"splits": [1], "ways": 2, "batches": 1}, log={"heatmap": False}
)


def gm_cfg(run_dir: Path, **over: Any) -> SearchConfig:
    return merged_config(FAST, run_dir, **over)


def test_gm_search_splits_trains_children_and_chooses_a_leaf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import proxyless.search as search_mod

    loaded: list[dict[str, Any]] = []  # the states the children start from
    real_load = search_mod._Search.load

    def recording(self, state):  # type: ignore[no-untyped-def]
        loaded.append(copy.deepcopy(state))
        return real_load(self, state)

    monkeypatch.setattr(search_mod._Search, "load", recording)
    cfg = gm_cfg(tmp_path, schedule={"epochs": 1}, checkpoint={"keep_warmup": True})
    result = search(cfg)
    m = result.metrics
    assert m["steps"] == 8 and m["epochs"] == 2  # the plain search's weight steps
    gm = m["gm"]
    assert len(gm["tree"]) == 1
    split = gm["tree"][0]
    assert split["node"] == "root" and split["epoch"] == 1 and split["children"] == ["0", "1"]
    k = split["layer"]
    names = [str(c) for c in result.net.layers[k].spec.candidates]
    assert sorted(sum(split["groups"], [])) == sorted(names) and all(split["groups"])
    assert [leaf["id"] for leaf in gm["leaves"]] == ["0", "1"]
    assert gm["chosen"] in ("0", "1") and m["peak_mem_mb"] > 0
    chosen = next(leaf for leaf in gm["leaves"] if leaf["id"] == gm["chosen"])
    assert chosen["arch"] == m["arch"] and chosen["cost"] == m["derived_cost"]
    target = m["target"]
    within = [x for x in gm["leaves"] if abs(x["cost"] - target) <= 0.05 * target]
    if within:
        assert chosen["heldout_acc"] == max(x["heldout_acc"] for x in within)
    # the result is the winning leaf: its split layer searched only its group
    group = split["groups"][int(gm["chosen"])]
    assert [names[i] for i in result.net.layers[k].members()] == group
    assert m["arch"][k] in group or result.net.layers[k].is_zero(names.index(m["arch"][k]))
    # children start from the parent's complete state, the split layer restricted
    parent = load_checkpoint(tmp_path / "checkpoints" / "warmup.pt")
    starts = [s for s in loaded if s["gm"]["node"]["id"] in ("0", "1")][:2]
    for c, start in enumerate(starts):
        mask = start["net"].pop(f"layers.{k}.allowed")
        assert [names[i] for i in mask.nonzero().flatten().tolist()] == split["groups"][c]
        assert start["net"].keys() == parent["net"].keys()
        for name, value in parent["net"].items():
            assert torch.equal(value, start["net"][name]), name
        for key in ("weight_optimizer", "arch_optimizer"):
            a, b = parent[key]["state"], start[key]["state"]
            assert a.keys() == b.keys()
            for i in a:
                for name, v in a[i].items():
                    assert torch.equal(torch.as_tensor(v), torch.as_tensor(b[i][name])), key
        assert start["heldout"] == parent["heldout"] and start["global_step"] == 4
        assert torch.equal(start["rng"]["torch"], parent["rng"]["torch"])
    # reports
    record = json.loads((tmp_path / "gm.json").read_text())
    scored = record["scores"][0]["layers"]
    assert [r["layer"] for r in scored] == list(range(len(result.net.layers)))
    assert min(scored, key=lambda r: r["score"])["layer"] == k
    for r in scored:
        d = torch.tensor(r["D"])
        assert d.shape == (len(r["candidates"]),) * 2 and torch.allclose(d, d.T)
        assert (tmp_path / f"gm_layer{r['layer']}.png").stat().st_size > 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["gm"]["tree"] == gm["tree"] and summary["gm"]["chosen"] == gm["chosen"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = EventAccumulator(str(tmp_path / "tb")).Reload()
    assert f"gm/root/layer{k}" in tb.Tags()["images"]
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert ckpts == ["gm_0.pt", "gm_1.pt", "last.pt", "warmup.pt"]


def test_gm_steps_follow_the_plain_schedule_in_equal_shares(tmp_path: Path) -> None:
    from proxyless.gm_search import Node

    root, child = Node(), Node(id="1", start=40, lr_origin=40, stride=2, slot=1)
    assert root.share(10) == 10 and root.lr_step(7) == 7
    assert [Node(stride=4, slot=s).share(10) for s in range(4)] == [3, 3, 2, 2]
    assert child.lr_step(40) == 40 and child.lr_step(43) == 46


def test_gm_config_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="gm.splits=\\[3\\]"):
        gm_cfg(tmp_path, gm={"splits": [3]})  # the last epoch: children would not train
    with pytest.raises(ConfigError, match="gm.splits=\\[2, 1\\]"):
        gm_cfg(tmp_path, schedule={"epochs": 5}, gm={"splits": [2, 1]})
    with pytest.raises(ConfigError, match="gm.ways=1"):
        gm_cfg(tmp_path, gm={"ways": 1})
    with pytest.raises(ConfigError, match="gm.batches=0"):
        gm_cfg(tmp_path, gm={"batches": 0})
    with pytest.raises(ConfigError, match="strategy=differentiable"):
        gm_cfg(tmp_path, strategy="zeroshot")
    assert gm_cfg(tmp_path, gm={"splits": []}).gm.splits == []
    with pytest.raises(ConfigError, match="warmup.sampler=shift: .*warmup's end \\(epoch 2\\)"):
        gm_cfg(tmp_path, schedule={"warmup_epochs": 2}, warmup={"sampler": "shift"})


def test_gm_with_shift_warmup_splits_after_it(tmp_path: Path) -> None:
    """Both options together: shift draws the warmup's paths, GM splits at its end; the
    children train with their parent's weights and the plain step count."""
    cfg = gm_cfg(
        tmp_path,
        schedule={"epochs": 1},
        warmup={"sampler": "shift", "bins": 2, "update_every": 1},
    )
    m = search(cfg).metrics
    assert m["steps"] == 8 and m["shift"]["hit_rate"] == 1.0
    assert [leaf["id"] for leaf in m["gm"]["leaves"]] == ["0", "1"]


def _final(run_dir: Path) -> dict[str, Any]:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")


@pytest.mark.slow
@pytest.mark.parametrize("stop_at", [0, 6, 10])  # in the split, the first child, the second
def test_gm_run_stopped_after_the_split_resumes_bit_exactly(
    tmp_path: Path, stop_at: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from proxyless.gm_search import GMSearch

    every = {"every_steps": 1}
    ref = search(gm_cfg(tmp_path / "ref", checkpoint=every)).metrics
    with monkeypatch.context() as patch:
        if stop_at == 0:  # children written, last.pt not yet pointing at the first one

            def crash(self, node_id, trains=True):  # type: ignore[no-untyped-def]
                raise SearchError("killed")

            patch.setattr(GMSearch, "activate", crash)
        with pytest.raises(SearchError):
            debug = {"inject_nan_at_step": stop_at or None}
            search(gm_cfg(tmp_path / "run", checkpoint=every, debug=debug))
    assert _final(tmp_path / "run")["global_step"] == (stop_at - 1 if stop_at else 4)
    got = search(gm_cfg(tmp_path / "run", checkpoint=every, resume=True)).metrics
    a, b = _final(tmp_path / "ref"), _final(tmp_path / "run")
    assert a["net"].keys() == b["net"].keys()
    for k in a["net"]:
        assert torch.equal(a["net"][k], b["net"][k]), k
    assert a["gm"] == b["gm"]
    assert got["arch"] == ref["arch"] and got["test_acc"] == ref["test_acc"]
    assert got["gm"]["leaves"] == ref["gm"]["leaves"]


@pytest.mark.slow
def test_two_splits_give_four_leaves_and_the_plain_step_count(tmp_path: Path) -> None:
    cfg = gm_cfg(tmp_path, schedule={"epochs": 3}, gm={"splits": [1, 2]})
    m = search(cfg).metrics
    assert m["steps"] == 16  # 4 + 2 children × 2 + 2 epochs × 4 leaves × 1 = 4 epochs × 4
    tree = m["gm"]["tree"]
    assert [t["node"] for t in tree] == ["root", "0", "1"]
    assert tree[1]["layer"] != tree[0]["layer"] and tree[2]["layer"] != tree[0]["layer"]
    assert [x["id"] for x in m["gm"]["leaves"]] == ["0.0", "0.1", "1.0", "1.1"]
    assert (tmp_path / f"gm_0_layer{tree[1]['layer']}.png").is_file()


def test_gm_overrides_compose_on_the_command_line() -> None:
    from hydra import compose, initialize_config_dir

    from proxyless.cli._common import config_dir, override_error, to_plain

    over = ["gm.splits=[4,8]", "gm.ways=3", "gm.batches=5", "run_dir=x"]
    assert override_error("search", over) is None
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = SearchConfig.from_dict(to_plain(compose(config_name="search", overrides=over)))
    assert (cfg.gm.splits, cfg.gm.ways, cfg.gm.batches) == ([4, 8], 3, 5)
    assert "gm.splits" in (override_error("search", ["gm.split=[4]"]) or "")
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        default = SearchConfig.from_dict(to_plain(compose(config_name="search")))
    assert default.gm.splits == [] and default.gm.ways == 2 and default.gm.batches == 10
