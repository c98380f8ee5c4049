"""The search-quality benchmark end to end at toy size (slow: trains and searches for real)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _bench():  # type: ignore[no-untyped-def]
    """benchmarks/search_quality.py as a module (it is a script, not part of the package)."""
    if "search_quality" in sys.modules:
        return sys.modules["search_quality"]
    path = REPO / "benchmarks" / "search_quality.py"
    spec = importlib.util.spec_from_file_location("search_quality", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["search_quality"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_variants_are_parsed_and_bad_ones_named() -> None:
    bench = _bench()
    parser = argparse.ArgumentParser()
    got = bench.parse_variant("zico_init: init.alpha=zico prune.keep=3", parser, (0.5,))
    assert got == ("zico_init", (("init.alpha=zico", "prune.keep=3"), (0.5,)))
    got = bench.parse_variant("zs@0.25,0.75: strategy=zeroshot", parser, (0.5,))
    assert got == ("zs", (("strategy=zeroshot",), (0.25, 0.75)))
    for bad in ("no colon here", "all_paths: estimator=all_paths", "a@x: b=1", "a@1.5: b=1"):
        with pytest.raises(SystemExit):
            bench.parse_variant(bad, parser, (0.5,))


def test_tau_by_tercile_ranks_within_each_cost_band() -> None:
    bench = _bench()
    cost = [1, 2, 3, 4, 5, 6, 7, 8, 9]
    acc = [1, 2, 3, 3, 2, 1, 1, 2, 3]  # rising, falling, rising within the thirds
    assert bench.tau_by_tercile(acc, acc, cost) == [1.0, 1.0, 1.0]
    assert bench.tau_by_tercile(list(range(9)), acc, cost) == [1.0, -1.0, 1.0]


def test_pooled_accuracy_weights_each_set_by_its_images() -> None:
    bench = _bench()
    sets = {"heldout": [(None, [0] * 10)], "test": [(None, [0] * 20), (None, [0] * 10)]}
    got = bench.pooled_accuracy({"heldout": [0.2, 1.0], "test": [0.6, 0.0]}, sets)
    assert got == pytest.approx([0.5, 0.25])


def test_a_stored_search_is_reused_only_under_the_same_resolved_config(tmp_path: Path) -> None:
    import yaml

    from proxyless.search_config import SearchConfig

    bench = _bench()
    rd = tmp_path / "run"
    rd.mkdir()
    then = ["seed=1", "schedule.search_paths=alpha", f"run_dir={tmp_path / 'elsewhere'}"]
    cfg = SearchConfig.from_dict(bench.compose("search", then)).to_dict()
    (rd / "quality.json").write_text(json.dumps({"arch": "x"}))
    (rd / "config.yaml").write_text(yaml.safe_dump(cfg))
    copied = ["seed=1", "schedule.search_paths=alpha", f"run_dir={rd}"]
    assert bench._cached(rd, copied)["arch"] == "x"  # copied runs count
    # A run from before schedule.search_paths existed drew its paths from α: it stands for
    # a search with search_paths=alpha, not for one with uniform (whatever the default).
    del cfg["schedule"]["search_paths"]
    (rd / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert bench._cached(rd, copied)["arch"] == "x"
    assert bench._cached(rd, ["seed=1", "schedule.search_paths=uniform"]) is None
    assert not rd.exists() and len(list(tmp_path.glob("run.stale-*"))) == 1


def _stored_run(path: Path, s, archs: list[list[str]], **summary) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import asdict

    rows = [
        {
            "row": "ground_truth",
            "arch": a,
            "cost": 1.0 + i,
            "acc_mean": 0.5,
            "acc_seeds": [0.4 + i / 10, 0.6],
        }
        for i, a in enumerate(archs)
    ]
    rows.append({"row": "seed_noise", "arch": archs[-1], "accs": [0.6, 0.6, 0.7]})
    rows.append({"row": "search", "arch": archs[0][::-1], "acc_seeds": [0.8, 0.9]})
    rows.append(
        {
            "row": "summary",
            "space": s.space,
            "data": s.data,
            "budget": asdict(s.budget),
            "seeds": 2,
            **summary,
        }
    )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_a_stored_ground_truth_is_reused_without_training(tmp_path: Path) -> None:
    """The stored archs come back in their order, and every stored training — ground truth,
    searched arch, the seed-noise arch's extra seed — is what `train_job` then returns for
    that arch and seed (a cache miss would start a real training and could not match)."""
    from proxyless.arch import Arch
    from proxyless.space import get_space

    bench = _bench()
    s = bench.Settings(space="tiny")
    space = get_space("tiny")
    ops = [layer.candidates for layer in space.layers()]
    archs = [[str(c[(i + j) % len(c)]) for j, c in enumerate(ops)] for i in range(3)]
    rows = tmp_path / "rows.jsonl"
    _stored_run(rows, s, archs)
    gt, trained = bench.stored_ground_truth(bench.stored_run_rows(rows, s), s, space)
    assert [a.block_strings() for a in gt] == archs
    cache = tmp_path / "cache"
    assert bench.seed_train_cache(trained, space, s, cache, rows) == 3 * 2 + 1 + 2
    assert bench.seed_train_cache(trained, space, s, cache, rows) == 0  # never overwrites

    def acc(arch_ops: list[str], seed: int) -> float:
        d = Arch.from_strings(space, arch_ops).to_dict()
        return bench.train_job(d, seed, s, str(cache))["acc"]

    assert acc(archs[0], 0) == pytest.approx(0.4) and acc(archs[2], 0) == pytest.approx(0.6)
    assert acc(archs[2], 1) == 0.6 and acc(archs[2], 2) == 0.7
    assert acc(archs[0][::-1], 1) == 0.9


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"data": "digits"}, "trained with data='digits'"),
        ({"budget": {"epochs": 8}}, "trained with budget="),
        ({"overrides": ["data.clutter_train_samples=24000"]}, "trained with overrides="),
        ({"seeds": 1}, "pass --seeds 1"),
    ],
)
def test_a_stored_ground_truth_from_other_settings_is_refused(
    tmp_path: Path, change: dict, message: str
) -> None:
    from proxyless.space import get_space

    bench = _bench()
    s = bench.Settings(space="tiny")
    space = get_space("tiny")
    archs = [[str(layer.candidates[0]) for layer in space.layers()]]
    rows = tmp_path / "rows.jsonl"
    _stored_run(rows, s, archs, **change)
    with pytest.raises(bench.GroundTruthError, match=message):
        bench.stored_run_rows(rows, s)


def test_a_stored_ground_truth_file_that_is_not_one_is_named(tmp_path: Path) -> None:
    bench = _bench()
    s = bench.Settings(space="tiny")
    with pytest.raises(bench.GroundTruthError, match="no such file"):
        bench.stored_run_rows(tmp_path / "missing.jsonl", s)
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(bench.GroundTruthError, match="not JSON lines"):
        bench.stored_run_rows(tmp_path / "bad.jsonl", s)
    (tmp_path / "no_gt.jsonl").write_text(json.dumps({"row": "summary"}) + "\n")
    with pytest.raises(bench.GroundTruthError, match="ground_truth rows and the summary row"):
        bench.stored_run_rows(tmp_path / "no_gt.jsonl", s)
    other = tmp_path / "other_space.jsonl"
    _stored_run(other, s, [["mb_k9_e9"] * 6])
    from proxyless.space import get_space

    with pytest.raises(bench.GroundTruthError, match="not in the 'tiny' space"):
        bench.stored_ground_truth(bench.stored_run_rows(other, s), s, get_space("tiny"))


def test_percentile_ceiling_script_reads_stored_rows(tmp_path: Path) -> None:
    gt = [(100, [0.9, 0.8]), (101, [0.8, 0.7]), (99, [0.7, 0.9]), (130, [0.99, 0.99])]
    rows = [{"row": "ground_truth", "cost": c, "acc_seeds": a} for c, a in gt]
    search = {"row": "search", "target_frac": 0.5, "cost": 100.0, "percentile": 50.0}
    rows += [
        {**search, "estimator": "all_paths", "variant": None, "seed": 0},
        {**search, "estimator": None, "variant": "v", "seed": 0, "percentile": 0.0},
    ]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cmd = [sys.executable, str(REPO / "benchmarks" / "percentile_ceiling.py"), str(path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    (line,) = [json.loads(x) for x in done.stdout.splitlines()]
    assert line["percentile"] == 50.0 and line["searches"] == 1 and line["peers"] == [3]
    assert line["ceiling_split_seed"] == pytest.approx(25.0)  # as in tests/test_ranking.py
    # residual seed std of the 4 archs: the ceiling of the best of the window under it
    assert 50.0 < line["ceiling_retrained_best"] < 100.0
    variant = subprocess.run([*cmd, "--variant", "v"], capture_output=True, text=True)
    assert json.loads(variant.stdout)["percentile"] == 0.0
    path.write_text("not json\n")
    bad = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "not a search_quality rows file" in bad.stderr


def test_search_seeds_pool_over_runs_of_one_ground_truth(tmp_path: Path) -> None:
    gt = [{"row": "ground_truth", "arch": ["a"], "cost": 1.0, "acc_seeds": [0.5, 0.6]}]
    search = {"row": "search", "target_frac": 0.5, "estimator": "all_paths", "variant": None}

    def run_file(name: str, gt_rows: list, searches: list) -> Path:
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in gt_rows + searches))
        return path

    s01 = [
        {
            **search,
            "seed": 0,
            "percentile": 100.0,
            "acc_mean": 0.9,
            "front": 0.85,
            "tau_end": 0.6,
            "vs_median": 0.04,
        },
        {
            **search,
            "seed": 1,
            "percentile": 50.0,
            "acc_mean": 0.8,
            "front": 0.86,
            "tau_end": 0.4,
            "vs_median": 0.0,
        },
        {
            **search,
            "seed": 0,
            "estimator": None,
            "variant": "v",
            "percentile": 0.0,
            "acc_mean": 0.7,
            "front": 0.8,
        },
        {
            **search,
            "seed": 0,
            "estimator": "reinforce",
            "percentile": 0.0,
            "acc_mean": 0.1,
            "front": 0.8,
        },
    ]
    s23 = [
        {
            **search,
            "seed": 2,
            "percentile": 0.0,
            "acc_mean": 0.82,
            "front": 0.84,
            "tau_end": 0.2,
            "vs_median": -0.01,
        },
        {**search, "seed": 1, "percentile": 99.0, "acc_mean": 0.99, "front": 0.0},  # counted once
    ]
    moved = [{**gt[0], "cost": 2.0}]  # the same ground truth re-costed by another table
    cmd = [sys.executable, str(REPO / "benchmarks" / "pool_search_seeds.py")]
    files = [str(run_file("a.jsonl", gt, s01)), str(run_file("b.jsonl", moved, s23))]
    done = subprocess.run([*cmd, *files], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(x) for x in done.stdout.splitlines()]
    plain = [r for r in rows if r["setting"] == "default" and not r.get("summary")][0]
    assert plain["seeds"] == [0, 1, 2] and plain["percentile"] == pytest.approx(50.0)
    assert plain["front_margin"] == pytest.approx((0.05 - 0.06 - 0.02) / 3)
    assert not plain["on_front"] and plain["tau_end"] == pytest.approx(0.4)
    assert plain["vs_median"] == pytest.approx(0.01)
    summaries = {r["setting"]: r for r in rows if r.get("summary")}
    margins = summaries["default"]
    assert margins["vs_median_mean"] == pytest.approx(0.01) and margins["vs_median_n"] == 3
    assert margins["vs_median_se"] == pytest.approx(0.026457513 / 3**0.5)  # std (ddof 1) / √n
    assert summaries["v"]["vs_median_mean"] is None and summaries["v"]["vs_median_se"] is None
    assert (
        summaries["v"]["searched_percentile"] == [0.0]
        and summaries["default"]["on_pareto_front"] == 0
    )
    other = run_file("c.jsonl", [{**gt[0], "acc_seeds": [0.5, 0.7]}], s23)
    bad = subprocess.run([*cmd, files[0], str(other)], capture_output=True, text=True)
    assert bad.returncode != 0 and "another ground truth" in bad.stderr


def test_ground_truth_fit_recovers_known_coefficients(tmp_path: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    ops = ["mb_k3_e3", "mb_k7_e6", "mb_k5_e6", "zero"]
    rows = []
    for _ in range(40):
        arch = [str(o) for o in rng.choice(ops, size=6)]
        cost = float(rng.uniform(20, 50))
        acc = (
            50 + 0.5 * cost + 1.0 * arch.count("zero") - 5.0 * (arch[1] == "zero")
            + 2.0 * sum("_e6" in o for o in arch) + 0.25 * sum("_k7" in o for o in arch)
        )  # fmt: skip
        rows.append({"row": "ground_truth", "arch": arch, "cost": cost, "acc_mean": acc / 100})
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cmd = [sys.executable, str(REPO / "benchmarks" / "ground_truth_fit.py"), str(path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    want = {"cost": 0.5, "zero_layers": 1.0, "zero_in_layer": -5.0, "e6_ops": 2.0, "k7_ops": 0.25}
    assert {k: got[k] for k in want} == pytest.approx(want, abs=1e-6)
    assert got["residual_std"] < 1e-6 and got["zero_layer"] == 2


def test_pair_agreement_counts_only_near_pairs() -> None:
    sys.path.insert(0, str(REPO))
    from benchmarks.brief_training_ranking import pair_agreement

    costs, truth = [10.0, 10.5, 11.0, 30.0], [0.8, 0.9, 0.7, 0.95]
    # near pairs (within 10 %): (0,1), (0,2), (1,2); this judge gets (0,1) wrong
    assert pair_agreement(costs, truth, [0.9, 0.8, 0.5, 0.0], 0.1) == (2 / 3, 3)
    # this one gets (0,1) right, (0,2) wrong and ties (1,2): half a hit
    assert pair_agreement(costs, truth, [0.5, 0.6, 0.6, 0.0], 0.1) == (1.5 / 3, 3)
    assert pair_agreement(costs, truth, truth, 0.01) == (None, 0)


def test_brief_training_ranking_scores_stored_ground_truth(tmp_path: Path) -> None:
    """Three stored archs on digits, one epoch: a training row each (cached: a rerun trains
    nothing), an epochs row with τ against the stored accuracies, a summary."""
    gt = [
        {"row": "ground_truth", "arch": ops, "cost": c, "acc_mean": a}
        for ops, c, a in [
            (["mb_k3_e3", "zero", "mb_k3_e3", "zero", "mb_k3_e3", "zero"], 10.0, 0.7),
            (["mb_k3_e6"] * 6, 20.0, 0.8),
            (["mb_k7_e6"] * 6, 30.0, 0.9),
        ]
    ]
    summary = {"row": "summary", "space": "tiny", "data": "digits", "ranking_tau_end": 0.5}
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in [*gt, summary]))
    script = REPO / "benchmarks" / "brief_training_ranking.py"
    cmd = [sys.executable, str(script), "--rows", str(rows), "--epochs", "1", "--workers", "1"]
    cmd += ["--cache", str(tmp_path / "cache.jsonl")]
    env = {**os.environ, "PYTHONPATH": str(REPO), "PROXYLESS_CACHE": str(tmp_path / "data")}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    out = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["row"] for r in out] == ["training"] * 3 + ["epochs", "summary"]
    assert all(0.0 <= r["acc"] <= 1.0 for r in out[:3])
    assert out[3]["epochs"] == 1 and -1.0 <= out[3]["tau"] <= 1.0
    assert out[4]["cost_tau"] == 1.0 and out[4]["supernet_tau_end"] == 0.5
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert [json.loads(line)["row"] for line in again.stdout.splitlines()] == ["epochs", "summary"]
    assert json.loads(again.stdout.splitlines()[0])["tau"] == out[3]["tau"]


def test_peak_rss_sees_memory_taken_inside_the_block() -> None:
    bench = _bench()
    with bench.PeakRSS() as before:
        pass
    with bench.PeakRSS() as rss:
        block = bytearray(200 * 2**20)
        block[::4096] = b"x" * len(block[::4096])  # touch every page
        import time

        time.sleep(0.2)
    del block
    assert rss.peak_mb >= before.peak_mb + 150


@pytest.mark.slow
def test_benchmark_emits_rows_summary_and_plot(tmp_path: Path) -> None:
    cmd = [
        sys.executable, str(REPO / "benchmarks" / "search_quality.py"),
        "--k", "4", "--seeds", "2", "--epochs", "1", "--train-subset", "300",
        "--warmup-epochs", "1", "--search-epochs", "1", "--targets", "0.5",
        "--estimators", "all_paths", "--random-candidates", "2", "--calib-archs", "8",
        "--workers", "1", "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"),
        "--set", "data.clutter_train_samples=600", "data.clutter_test_samples=100",
        "++data.heldout_per_class=10",
        "--variant", "zs: strategy=zeroshot zeroshot.population=4 zeroshot.iterations=4",
    ]  # fmt: skip
    env_extra = {"PROXYLESS_CACHE": str(tmp_path / "data")}
    done = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, **env_extra}, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    kinds = [r["row"] for r in rows]
    assert kinds.count("ground_truth") == 4 and kinds[-1] == "summary"
    assert {"search", "random_search", "seed_noise"} <= set(kinds)
    summary = rows[-1]
    for key in (
        "spread_over_seed_noise",
        "ranking_tau_warmup",
        "ranking_tau_end",
        "searched_percentile",
        "searched_percentile_mean",
        "on_pareto_front",
        "latency_error_max",
    ):
        assert key in summary, key
    assert len(summary["searched_percentile"]) == 1
    # what the best random arch near each searched arch would score if trained again
    assert len(summary["searched_percentile_ceiling"]) == 1
    for r in (r for r in rows if r["row"] == "search" and r["n_peers"] >= 2):
        assert 0.0 <= r["percentile_ceiling"] <= 100.0
    zs = summary["variants"]["zs"]
    assert zs["targets"] == [0.5] and len(zs["percentile"]) == 1
    assert zs["ranking_tau_end"] is None  # zero-shot: no supernet to rank with
    assert zs["peak_rss_mb"] > 50
    assert len([r for r in rows if r.get("variant") == "zs"]) == 2  # two seeds
    assert len(summary["ranking_tau_end_by_tercile"]) == 3
    assert -1.0 <= summary["ranking_tau_end"] <= 1.0
    assert -1.0 <= summary["ranking_tau_end_heldout"] <= 1.0  # the held-out-only ranking
    # the latency error with the machine's drift (measured beside it) taken out
    drift = next(r for r in rows if r["row"] == "table_drift")["median"]
    searched = [r for r in rows if r["row"] == "search" and r["variant"] is None]
    corrected = [abs(r["measured"] / drift - r["target"]) / r["target"] for r in searched]
    assert summary["latency_error_max_drift_corrected"] == pytest.approx(max(corrected))
    assert (tmp_path / "out" / "pareto.png").stat().st_size > 10_000
    # A second run reuses every trained arch and search: nothing is trained again.
    again = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, **env_extra}, timeout=900
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert (
        json.loads(again.stdout.splitlines()[-1])["ranking_tau_end"] == summary["ranking_tau_end"]
    )

    def rows_of(args: list[str]) -> list[dict]:
        done = subprocess.run(
            args, capture_output=True, text=True, env={**os.environ, **env_extra}, timeout=900
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return [json.loads(line) for line in done.stdout.splitlines()]

    def of_kind(rows: list[dict], kind: str) -> list[dict]:
        return [r for r in rows if r["row"] == kind]

    # Other search seeds against the same ground truth: new searches, the same truth.
    other_rows = rows_of([*cmd, "--first-search-seed", "2", "--no-random-search"])
    assert of_kind(other_rows, "ground_truth") == of_kind(rows, "ground_truth")
    assert sorted(r["seed"] for r in other_rows if r["row"] == "search") == [2, 2, 3, 3]
    assert (tmp_path / "out" / "search" / "all_paths_t0.5_s3" / "quality.json").is_file()
    assert other_rows[-1]["first_search_seed"] == 2
    # A fresh cache with the first run's ground truth read back: the same truth and seed-noise
    # row, nothing trained (every arch and seed comes from the stored rows; a training leaves
    # a work dir), the archs re-costed by this cache's table.
    stored = tmp_path / "stored_rows.jsonl"
    stored.write_bytes((tmp_path / "out" / "rows.jsonl").read_bytes())
    fresh = tmp_path / "fresh_cache"
    shutil.copytree(tmp_path / "cache" / "tables", fresh / "tables")
    cmd_fresh = [*cmd[: cmd.index("--cache") + 1], str(fresh), *cmd[cmd.index("--cache") + 2 :]]
    reused = rows_of([*cmd_fresh, "--ground-truth-from", str(stored), "--ground-truth-only"])
    for kind in ("ground_truth", "seed_noise"):
        assert of_kind(reused, kind) == of_kind(rows, kind)
    assert not [d for d in (fresh / "train").iterdir() if d.is_dir()]


@pytest.mark.slow
def test_seed_noise_pools_seeds_per_learning_rate_and_reuses_trainings(tmp_path: Path) -> None:
    cmd = [
        sys.executable, str(REPO / "benchmarks" / "seed_noise.py"),
        "--seeds", "2", "--lr", "0.1", "0.05", "--epochs", "1", "--train-subset", "200",
        "--set", "data.clutter_train_samples=400", "data.clutter_test_samples=100",
        "--workers", "1", "--cache", str(tmp_path / "cache"),
    ]  # fmt: skip
    env = {**os.environ, "PROXYLESS_CACHE": str(tmp_path / "data")}
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    rows = [json.loads(line) for line in first.stdout.splitlines()]
    assert [r["lr"] for r in rows] == [0.1, 0.05]
    for r in rows:
        assert r["train_subset"] == 200 and r["epochs"] == 1  # what it was measured under
        assert r["set"] == ["data.clutter_train_samples=400", "data.clutter_test_samples=100"]
        accs = r["accs"]
        assert len(accs) == 2 and all(len(a) == 2 for a in accs)
        within = [(a[0] - a[1]) ** 2 / 2 for a in accs]  # each arch's variance over 2 seeds
        assert r["pooled_seed_std"] == pytest.approx((sum(within) / 2) ** 0.5, abs=1e-4)
    trained = list((tmp_path / "cache" / "train").glob("*.json"))
    assert len(trained) == 8  # 2 rates x 2 archs x 2 seeds
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert again.stdout == first.stdout  # read back from the cache, not retrained
    assert len(list((tmp_path / "cache" / "train").glob("*.json"))) == 8


def test_op_swap_ratings_rate_every_candidate_of_every_layer(tmp_path: Path) -> None:
    """Each layer lists every candidate; its derived op's rating is the derived arch's own
    inherited accuracy, so it is the same number in every layer."""
    from search_configs import FAST_SEARCH, merged_config

    from proxyless.search import search

    run = tmp_path / "run"
    search(merged_config(FAST_SEARCH, run))
    cmd = [sys.executable, str(REPO / "benchmarks" / "op_swap_ratings.py")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([*cmd, str(run)], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    derived = json.loads((run / "summary.json").read_text())["arch"]
    assert out["arch"] == derived and len(out["layers"]) == len(derived)
    own = {entry["ratings"][entry["derived"]] for entry in out["layers"]}
    assert len(own) == 1 and 0.0 <= own.pop() <= 1.0
    assert all(len(entry["ratings"]) >= 6 for entry in out["layers"])
    # α's final probabilities and the run's costs, per candidate, beside the ratings
    costs = json.loads((run / "costs.json").read_text())["per_layer"]
    for li, entry in enumerate(out["layers"]):
        assert entry["probs"].keys() == entry["ratings"].keys() == entry["costs"].keys()
        assert sum(entry["probs"].values()) == pytest.approx(1.0, abs=1e-5)
        assert sorted(entry["costs"].values()) == sorted(costs[li])
    missing = subprocess.run([*cmd, str(tmp_path)], capture_output=True, text=True, env=env)
    assert missing.returncode != 0 and "does not exist" in missing.stderr
