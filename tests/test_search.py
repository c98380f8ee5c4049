"""The search loop end to end on CPU: outputs, checkpoints, exact resume after SIGKILL, NaN."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from search_configs import FAST_SEARCH, merged_config

from proxyless.arch import Arch
from proxyless.distributed import DistContext
from proxyless.run import load_checkpoint
from proxyless.search import SearchError, search
from proxyless.search_config import ConfigError, SearchConfig, result_fingerprint
from proxyless.search_report import summary_table

REPO = Path(__file__).resolve().parents[1]

FAST = FAST_SEARCH


def fast_cfg(run_dir: Path, **over: dict[str, Any]) -> SearchConfig:
    return merged_config(FAST, run_dir, **over)


def test_fast_search_writes_its_outputs(tmp_path: Path) -> None:
    result = search(fast_cfg(tmp_path, checkpoint={"every_steps": 3}))
    m = result.metrics
    assert m["steps"] == 12 and m["epochs"] == 3
    assert 0.0 <= m["test_acc"] <= 1.0 and m["params_m"] > 0 and m["mflops"] > 0
    assert 0 < m["mmacs_conv_linear"] < m["mflops"]  # fvcore also counts BN and pooling
    assert m["min_cost"] <= m["derived_cost"] <= m["max_cost"]
    arch = Arch.load(tmp_path / "arch.json")
    assert arch.block_strings() == m["arch"] and arch.probs is not None
    assert json.loads((tmp_path / "summary.json").read_text())["arch"] == m["arch"]
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt", kind="proxyless-search")
    assert ckpt["global_step"] == 12 and ckpt["epoch"] == 3
    assert ckpt["config"]["seed"] == 0 and "alpha" in "".join(ckpt["net"])
    for key in ("weight_optimizer", "arch_optimizer", "scheduler", "rng", "estimator", "heldout"):
        assert key in ckpt
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = EventAccumulator(str(tmp_path / "tb")).Reload()
    for tag in ("train/loss", "arch/loss", "cost/expected", "cost/target", "arch/entropy"):
        assert tag in tb.Tags()["scalars"], tag
    assert "arch/probabilities" in tb.Tags()["images"]  # per-layer heatmap each search epoch
    # α moved during the search epochs, not during warmup
    assert [e["phase"] for e in ckpt["history"]["epochs"]] == ["warmup", "search", "search"]


def test_keep_warmup_saves_the_supernet_as_warmup_left_it(tmp_path: Path) -> None:
    result = search(fast_cfg(tmp_path / "kept", checkpoint={"keep_warmup": True}))
    warm = load_checkpoint(tmp_path / "kept" / "checkpoints" / "warmup.pt", kind="proxyless-search")
    assert (warm["epoch"], warm["step_in_epoch"], warm["global_step"]) == (1, 0, 4)
    torch.manual_seed(0)  # α as initialised: no arch step has run at the end of warmup
    init = search(fast_cfg(tmp_path / "init", schedule={"epochs": 0})).net
    for name, value in warm["net"].items():
        if name.endswith("alpha"):
            assert torch.equal(value, init.state_dict()[name]), name
    assert not torch.equal(
        warm["net"]["layers.0.alpha"], result.net.state_dict()["layers.0.alpha"]
    )  # the search moved α afterwards
    search(fast_cfg(tmp_path / "plain"))
    assert not (tmp_path / "plain" / "checkpoints" / "warmup.pt").exists()


def test_reinforce_baseline_is_checkpointed(tmp_path: Path) -> None:
    search(fast_cfg(tmp_path, estimator={"name": "reinforce", "kwargs": {}}))
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert isinstance(ckpt["estimator"]["baseline"], float)


def test_existing_run_is_never_overwritten(tmp_path: Path) -> None:
    search(fast_cfg(tmp_path, schedule={"epochs": 0}))
    before = (tmp_path / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(SearchError, match="resume=true"):
        search(fast_cfg(tmp_path, schedule={"epochs": 0}))
    assert (tmp_path / "checkpoints" / "last.pt").read_bytes() == before


def test_resume_refuses_a_different_config(tmp_path: Path) -> None:
    search(fast_cfg(tmp_path, schedule={"epochs": 0}))
    with pytest.raises(SearchError, match="optim.lr"):
        search(fast_cfg(tmp_path, resume=True, optim={"lr": 0.5}))


def test_unknown_config_key_is_named() -> None:
    with pytest.raises(ConfigError, match="schedule.warmup"):
        SearchConfig.from_dict({"schedule": {"warmup": 3}})


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    cfg = fast_cfg(tmp_path, checkpoint={"every_steps": 2}, debug={"inject_nan_at_step": 7})
    with pytest.raises(SearchError, match="step 7") as err:
        search(cfg)
    assert "last good checkpoint" in str(err.value)
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert ckpt["global_step"] == 6
    assert all(torch.isfinite(t).all() for t in ckpt["net"].values() if t.is_floating_point())


def _final_state(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["net"]


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    """Kill a CLI run with SIGKILL mid-search (after a mid-epoch checkpoint), resume it in
    the same run dir: α, weights and BN statistics equal an uninterrupted run exactly."""
    from hydra import compose, initialize_config_dir

    from proxyless.cli._common import config_dir
    from proxyless.cli.search import run

    over = ["debug=fast", "threads=1", "schedule.epochs=2", "checkpoint.every_steps=1"]
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        run(compose(config_name="search", overrides=[*over, f"run_dir={ref_dir}"]))
    cmd = [sys.executable, "-m", "proxyless.cli.search", *over, f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [*cmd, "debug.step_delay_s=0.4"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    last = run_dir / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"run ended before it could be killed: {proc.stderr.read()[-2000:]}")
            if last.is_file():
                try:
                    step = load_checkpoint(last)["global_step"]
                except Exception:
                    step = 0
                if step >= 6:  # inside the first search epoch (warmup = steps 1-4)
                    break
            time.sleep(0.05)
        else:
            pytest.fail("no mid-run checkpoint appeared")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed_at = load_checkpoint(last)["global_step"]
    assert killed_at < 12
    done = subprocess.run([*cmd, "resume=true"], cwd=tmp_path, env=env, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    ref, got = _final_state(ref_dir), _final_state(run_dir)
    assert load_checkpoint(last)["global_step"] == 12
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k], got[k]), k


def test_resume_mid_warmup_after_a_crash_matches_uninterrupted_run(tmp_path: Path) -> None:
    """A run that dies at step 3 (mid-warmup; NaN injected) resumes from its step-2
    checkpoint and ends bit-identical to a run that never stopped (α, weights, BN stats)."""
    every = {"every_steps": 1}
    search(fast_cfg(tmp_path / "ref", checkpoint=every))
    with pytest.raises(SearchError):
        search(fast_cfg(tmp_path / "run", checkpoint=every, debug={"inject_nan_at_step": 3}))
    assert load_checkpoint(tmp_path / "run/checkpoints/last.pt")["global_step"] == 2
    search(fast_cfg(tmp_path / "run", checkpoint=every, resume=True))
    ref, got = _final_state(tmp_path / "ref"), _final_state(tmp_path / "run")
    for k in ref:
        assert torch.equal(ref[k], got[k]), k


@pytest.mark.slow
def test_quickstart_like_search_meets_the_target_with_the_task_loss(tmp_path: Path) -> None:
    """Digits, real task loss, add_abs objective: E[cost] ends within ±5% of the target."""
    cfg = fast_cfg(
        tmp_path,
        data={"name": "digits", "batch_size": 32},
        objective={"kind": "add_abs", "lam": 1.0},
        optim={"lr": 0.1, "arch_lr": 0.03},
        schedule={"warmup_epochs": 3, "epochs": 12, "arch_every": 2, "steps_per_epoch": None},
        hardware={"kind": "flops", "unit": "KFLOPs", "target_frac": 0.3},
        log={"progress": False, "tensorboard": False},
    )
    m = search(cfg).metrics
    assert m["expected_cost"] == pytest.approx(m["target"], rel=0.05)
    assert m["test_acc"] > 0.5


def test_sandwich_sampler_trains_the_largest_path_on_every_other_step(
    tmp_path: Path, trained_paths: list[list[int]]
) -> None:
    trained = trained_paths
    result = search(fast_cfg(tmp_path, schedule={"sampler": "sandwich"}))
    largest = result.net.largest_path()
    ops = [str(layer.spec.candidates[i]) for layer, i in zip(result.net.layers, largest)]
    assert all(op.startswith("mb_k7_e6") for op in ops)
    assert len(trained) == 12
    assert all(trained[i] == largest for i in range(0, 12, 2))  # steps 1, 3, 5, …
    assert any(trained[i] != largest for i in range(1, 12, 2))  # sampled on the others


def test_sandwich_epochs_limits_the_largest_path_to_the_first_epochs(
    tmp_path: Path, trained_paths: list[list[int]]
) -> None:
    """fast_cfg: 1 warmup + 2 search epochs of 4 steps; sandwich_epochs=1: the largest path
    on steps 1 and 3 only, drawn paths on every step of the two search epochs."""
    result = search(fast_cfg(tmp_path, schedule={"sampler": "sandwich", "sandwich_epochs": 1}))
    largest = result.net.largest_path()
    assert len(trained_paths) == 12
    assert trained_paths[0] == largest and trained_paths[2] == largest
    assert all(path != largest for path in trained_paths[4:])


def test_sandwich_anchors_take_turns_on_every_other_step(
    tmp_path: Path, trained_paths: list[list[int]]
) -> None:
    """anchors=[largest, smallest]: steps 1, 5, 9 train k7_e6 everywhere, steps 3, 7, 11
    k3_e3 everywhere (full depth, never Zero); the even steps a drawn path."""
    cfg = fast_cfg(tmp_path, schedule={"sampler": "sandwich", "anchors": ["largest", "smallest"]})
    result = search(cfg)
    net = result.net
    largest, smallest = net.largest_path(), net.smallest_path()
    ops = [str(layer.spec.candidates[i]) for layer, i in zip(net.layers, smallest)]
    assert ops == ["mb_k3_e3"] * len(net.layers)
    assert len(trained_paths) == 12
    assert [trained_paths[i] for i in range(0, 12, 4)] == [largest] * 3
    assert [trained_paths[i] for i in range(2, 12, 4)] == [smallest] * 3
    assert all(trained_paths[i] not in (largest, smallest) for i in range(1, 12, 2))


def test_near_largest_anchor_swaps_one_layer_of_the_largest_path(
    tmp_path: Path, trained_paths: list[list[int]]
) -> None:
    """anchors=[near_largest]: every odd step trains the largest path but in at most one
    layer (a drawn candidate there, sometimes the largest itself); over the six anchor
    steps the swapped layers and candidates vary, Zero included in the draw."""
    cfg = fast_cfg(tmp_path, schedule={"sampler": "sandwich", "anchors": ["near_largest"]})
    net = search(cfg).net
    largest = net.largest_path()
    anchored = [trained_paths[i] for i in range(0, 12, 2)]
    diffs = [[j for j, (a, b) in enumerate(zip(p, largest)) if a != b] for p in anchored]
    assert all(len(d) <= 1 for d in diffs)
    assert len({tuple(p) for p in anchored}) > 1
    # deterministic per step: the same seed draws the same anchors
    gen = torch.Generator().manual_seed(7)
    again = torch.Generator().manual_seed(7)
    draws = [net.anchor_path("near_largest", gen) for _ in range(200)]
    assert draws == [net.anchor_path("near_largest", again) for _ in range(200)]
    swapped = {(j, p[j]) for p in draws for j in range(len(p)) if p[j] != largest[j]}
    assert {j for j, _ in swapped} == set(range(len(largest)))
    assert any(net.layers[j].is_zero(i) for j, i in swapped)


def test_near_largest_run_resumed_after_a_crash_matches_uninterrupted_run(tmp_path: Path) -> None:
    """The anchor's draws are reproduced on resume: a run that dies at step 6 (a search
    epoch; anchors on steps 7, 9, 11 after it) resumes from step 5 and ends bit-identical
    to one that never stopped."""
    over = {
        "checkpoint": {"every_steps": 1},
        "schedule": {"sampler": "sandwich", "anchors": ["near_largest"]},
    }
    search(fast_cfg(tmp_path / "ref", **over))
    with pytest.raises(SearchError):
        search(fast_cfg(tmp_path / "run", **over, debug={"inject_nan_at_step": 6}))
    assert load_checkpoint(tmp_path / "run/checkpoints/last.pt")["global_step"] == 5
    search(fast_cfg(tmp_path / "run", **over, resume=True))
    ref, got = _final_state(tmp_path / "ref"), _final_state(tmp_path / "run")
    for k in ref:
        assert torch.equal(ref[k], got[k]), k


def test_smallest_anchor_of_a_layer_pruned_to_zero_is_zero(tmp_path: Path) -> None:
    net = search(fast_cfg(tmp_path)).net
    layer, zero = next(
        (layer, i) for layer in net.layers for i in range(layer.num_candidates) if layer.is_zero(i)
    )
    layer.restrict([zero])
    assert layer.smallest() == layer.largest() == zero


@pytest.mark.parametrize(
    "schedule, message",
    [
        ({"sampler": "sandwich", "anchors": []}, r"schedule.anchors=\[\] must be a non-empty"),
        (
            {"sampler": "sandwich", "anchors": ["largest", "tiny"]},
            r"schedule.anchors=\['largest', 'tiny'\] must be .* of: largest, smallest, near",
        ),
        (
            {"sampler": "uniform", "anchors": ["smallest"]},
            r"schedule.anchors=\['smallest'\] needs schedule.sampler=sandwich",
        ),
    ],
)
def test_bad_sandwich_anchors_are_refused(tmp_path: Path, schedule: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        fast_cfg(tmp_path, schedule=schedule)


def test_runs_from_before_anchors_resume_with_the_largest_path_alone(tmp_path: Path) -> None:
    old = fast_cfg(tmp_path).to_dict()
    del old["schedule"]["anchors"]
    assert result_fingerprint(old)["schedule"]["anchors"] == ["largest"]


@pytest.mark.parametrize("sampler, epochs", [("uniform", 2), ("sandwich", -1)])
def test_sandwich_epochs_needs_the_sandwich_sampler_and_a_count(
    tmp_path: Path, sampler: str, epochs: int
) -> None:
    message = rf"schedule.sandwich_epochs={epochs} needs schedule.sampler=sandwich and"
    with pytest.raises(ConfigError, match=message):
        fast_cfg(tmp_path, schedule={"sampler": sampler, "sandwich_epochs": epochs})


def test_distill_teaches_every_other_step_the_largest_paths_predictions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """schedule.distill: the sampled-path steps get the largest path's probabilities on their
    own batch (computed before their path is drawn); the largest-path steps get labels."""
    import proxyless.search as search_mod

    seen: list[tuple[list[int], torch.Tensor | None, torch.Tensor | None]] = []
    real = search_mod.weight_step

    def recording(net, x, *args, teacher=None, **kwargs):  # type: ignore[no-untyped-def]
        expected = None
        if teacher is not None:
            path = net.active_paths()
            net.set_paths(net.largest_path())
            with torch.no_grad():
                expected = net(x).softmax(1)
            net.set_paths(path)
        out = real(net, x, *args, teacher=teacher, **kwargs)
        seen.append((net.active_paths(), teacher, expected))
        return out

    monkeypatch.setattr(search_mod, "weight_step", recording)
    result = search(fast_cfg(tmp_path, schedule={"sampler": "sandwich", "distill": True}))
    largest = result.net.largest_path()
    assert len(seen) == 12
    for i, (path, teacher, expected) in enumerate(seen):
        if i % 2 == 0:  # steps 1, 3, …: the largest path, on labels
            assert path == largest and teacher is None
        else:  # BatchNorm in train mode: the same batch gives the same statistics
            assert teacher is not None and torch.allclose(teacher, expected, atol=1e-5)
            assert torch.allclose(teacher.sum(1), torch.ones(len(teacher)))


@pytest.mark.parametrize("paths", ["alpha", "uniform"])
def test_search_paths_sets_how_search_epochs_draw_the_trained_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, paths: str
) -> None:
    """Warmup steps always draw uniformly; search-epoch steps from softmax(α) (`alpha`) or
    uniformly too (`uniform`)."""
    import proxyless.search as search_mod

    uniform_flags: list[bool] = []
    real = search_mod.weight_step

    def recording(net, x, y, opt, gen, uniform, *args, **kwargs):  # type: ignore[no-untyped-def]
        uniform_flags.append(uniform)
        return real(net, x, y, opt, gen, uniform, *args, **kwargs)

    monkeypatch.setattr(search_mod, "weight_step", recording)
    search(fast_cfg(tmp_path, schedule={"sampler": "uniform", "search_paths": paths}))
    assert uniform_flags[:4] == [True] * 4  # the warmup epoch
    assert uniform_flags[4:] == [paths == "uniform"] * 8  # the two search epochs


def test_unknown_search_paths_is_named(tmp_path: Path) -> None:
    message = "schedule.search_paths='random' is not one of: alpha, uniform"
    with pytest.raises(ConfigError, match=message):
        fast_cfg(tmp_path, schedule={"search_paths": "random"})


def test_distill_needs_the_sandwich_sampler(tmp_path: Path) -> None:
    message = "schedule.distill=true needs schedule.sampler=sandwich"
    with pytest.raises(ConfigError, match=message):
        fast_cfg(tmp_path, schedule={"sampler": "uniform", "distill": True})


def test_negative_heatmap_interval_is_named(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"log.heatmap_every_s=-1.0 must be >= 0 \(0: every epoch\)"
    ):
        fast_cfg(tmp_path, log={"heatmap_every_s": -1})


def test_unknown_sampler_is_named(tmp_path: Path) -> None:
    message = "schedule.sampler='big' is not one of: uniform, sandwich"
    with pytest.raises(ConfigError, match=message):
        fast_cfg(tmp_path, schedule={"sampler": "big"})


def test_space_override_of_what_the_data_sets_is_one_clear_error(tmp_path: Path) -> None:
    cfg = fast_cfg(tmp_path, space={"name": "tiny", "overrides": {"num_classes": 7}})
    message = r"space.overrides.num_classes=7: num_classes comes from the data"
    with pytest.raises(SearchError, match=message):
        search(cfg)


def test_reported_accuracy_is_the_derived_path_with_batchnorm_re_estimated(tmp_path: Path) -> None:
    import itertools

    from proxyless.distributed import DistContext
    from proxyless.ranking import bn_recalibrated
    from proxyless.run import evaluate
    from proxyless.search import BN_CALIB_BATCHES
    from proxyless.search_setup import build_parts

    result = search(fast_cfg(tmp_path))
    saved = load_checkpoint(tmp_path / "checkpoints" / "last.pt", kind="proxyless-search")["net"]
    for name, value in result.net.state_dict().items():  # re-estimation leaves no trace
        assert torch.equal(value, saved[name]), name
    parts = build_parts(fast_cfg(tmp_path / "again"), DistContext())
    parts.net.load_state_dict(saved)
    parts.net.set_paths(result.arch.indices())
    parts.loaders.train.sampler.set_epoch(2)  # type: ignore[attr-defined]
    ctx = DistContext()
    plain = evaluate(parts.net, parts.loaders.test, ctx)["top1"] / 100
    calib = itertools.islice((x for x, _ in parts.loaders.train), BN_CALIB_BATCHES)
    with bn_recalibrated(parts.net, calib, ctx.device):
        recal = evaluate(parts.net, parts.loaders.test, ctx)["top1"] / 100
    assert plain != recal  # the statistics matter here, so the next line tells the two apart
    assert result.metrics["test_acc"] == pytest.approx(recal)


def test_derive_candidates_return_the_best_heldout_accuracy_of_the_most_probable(
    tmp_path: Path,
) -> None:
    """derive.candidates=4: the 4 most probable archs in the window, each scored on the
    held-out split with inherited weights; the best is the run's arch. Scoring leaves the
    supernet as it was: weights, BatchNorm statistics and α equal a run that did not score."""
    plain = search(fast_cfg(tmp_path / "plain"))
    picked = search(fast_cfg(tmp_path / "picked", derive={"candidates": 4}))
    assert plain.metrics["derive_candidates"] == []
    rows = picked.metrics["derive_candidates"]
    assert len(rows) == 4 and len({tuple(r["arch"]) for r in rows}) == 4
    assert [r["log_prob"] for r in rows] == sorted((r["log_prob"] for r in rows), reverse=True)
    assert rows[0]["arch"] == plain.arch.block_strings()  # α's own pick comes first
    target = picked.metrics["target"]
    assert all(abs(r["cost"] - target) <= 0.05 * target + 1e-6 for r in rows)
    accs = [r["heldout_acc"] for r in rows]
    best = accs.index(max(accs))
    assert [r.get("chosen", False) for r in rows] == [i == best for i in range(4)]
    assert picked.arch.block_strings() == rows[best]["arch"]
    assert Arch.load(tmp_path / "picked" / "arch.json").block_strings() == rows[best]["arch"]
    assert "best held-out accuracy (inherited weights) of the 4 most" in picked.metrics["derive"]
    table = summary_table(picked.metrics)
    assert table.count("candidate ") == 4 and table.count("← chosen") == 1
    assert f"candidate {best + 1}  " in next(ln for ln in table.splitlines() if "← chosen" in ln)
    before, after = plain.net.state_dict(), picked.net.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_derive_judge_train_picks_the_best_briefly_trained_candidate(tmp_path: Path) -> None:
    """derive.judge=train: the same candidates as judge=inherited (α's, unchanged by the
    judge), each scored by `brief_training_accuracy` with the search's seed and splits; the
    best wins and the supernet is left as a run that did not judge left it."""
    from proxyless.brief_training import brief_optim, brief_training_accuracy
    from proxyless.search_setup import build_parts

    inherited = search(fast_cfg(tmp_path / "inherited", derive={"candidates": 3}))
    cfg = fast_cfg(
        tmp_path / "trained", derive={"candidates": 3, "judge": "train", "train_epochs": 2}
    )
    trained = search(cfg)
    rows = trained.metrics["derive_candidates"]
    assert [r["arch"] for r in rows] == [r["arch"] for r in inherited.metrics["derive_candidates"]]
    assert "each trained from scratch for 2 epochs" in trained.metrics["derive"]
    accs = [r["heldout_acc"] for r in rows]
    assert trained.arch.block_strings() == rows[accs.index(max(accs))]["arch"]
    before, after = inherited.net.state_dict(), trained.net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # the recorded score is the judge's, recomputed outside the search
    o, ctx = cfg.optim, DistContext()
    optim = brief_optim(o, cfg.derive.train_lr)
    assert optim.lr == 0.1 and optim.lr_warmup_epochs == o.lr_warmup_epochs
    loaders = build_parts(cfg, ctx).loaders
    acc = brief_training_accuracy(
        trained.arch, loaders.train, loaders.heldout, ctx, 2, optim, cfg.seed, o.label_smoothing
    )
    assert acc == max(accs)


def test_runs_from_before_derive_candidates_resume_as_alpha_alone(tmp_path: Path) -> None:
    old = fast_cfg(tmp_path).to_dict()
    del old["derive"]["candidates"]
    del old["derive"]["judge"]
    assert result_fingerprint(old)["derive"]["candidates"] == 1
    assert result_fingerprint(old)["derive"]["judge"] == "inherited"


@pytest.mark.parametrize(
    "over, message",
    [
        ({"derive": {"candidates": 0}}, r"derive.candidates=0 must be >= 1"),
        (
            {"derive": {"candidates": 3}, "data": {"heldout_per_class": 0}},
            r"derive.candidates=3 scores archs on the held-out split: set data.heldout_per_class",
        ),
        ({"derive": {"judge": "zico"}}, r"derive.judge='zico' is not one of: inherited, train"),
        ({"derive": {"train_epochs": 0}}, r"derive.train_epochs=0 must be >= 1"),
    ],
)
def test_derive_candidates_errors(tmp_path: Path, over: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        fast_cfg(tmp_path, **over)
