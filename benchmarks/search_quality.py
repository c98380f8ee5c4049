"""Does the search find architectures better than random ones of the same latency?

The NAS evaluation protocol, on any space and data group (defaults: the `tiny` space on the
procedural `clutter` task, a CPU latency table profiled and cached on this machine):

1. Ground truth: K random archs stratified over the space's latency range (by the table),
   each trained from scratch with one fixed budget and S seeds. Cached on disk per
   (space, data, budget, seed, arch), so later runs (and other methods) reuse it; or read
   back from a stored run's rows (`--ground-truth-from`), re-costed with this machine's table.
2. Supernet ranking: at the end of warmup and at the end of the search, the K archs are
   evaluated with inherited supernet weights (BatchNorm re-estimated per path on a few
   training batches) on the held-out split → Kendall τ / Spearman ρ against ground truth.
3. Searched archs: searches at 25 / 50 / 75 % of the latency range, S seeds each; each
   derived arch trained from scratch with the same budget and seeds; compared with the
   ground-truth archs within ±5 % latency (percentile, vs median, vs best) and with the
   ground-truth Pareto front (interpolated).
4. Baselines in the same run, at the middle target: the other estimators, and random
   search given the wall time of one search (a supernet trained with uniform paths for the
   search's epochs, then random archs within ±5 % of the target ranked by inherited
   accuracy; the best is trained from scratch).
5. Variants (`--variant "label: override override …"`, repeatable): the search with extra
   Hydra overrides (`init.alpha=zico`, `prune.keep=3`, `strategy=zeroshot`, …) at the
   middle target or the ones the label names (`zeroshot@0.25,0.5,0.75: …`), S seeds each,
   judged like the plain search; with the supernet's ranking of the ground truth (overall
   and per latency tercile), wall time and peak resident memory of each search.

Output: one JSON line per row on stdout (and in <out>/rows.jsonl), a last JSON summary line
(also <out>/summary.json) and a Pareto plot <out>/pareto.png.

    PYTHONPATH=. python benchmarks/search_quality.py --quick        # ≤10 min on 2 cores
    PYTHONPATH=. python benchmarks/search_quality.py                # full, ~75 min (16-epoch GT)
    PYTHONPATH=. python benchmarks/search_quality.py --variant "zico_init: init.alpha=zico" \
        --variant "zeroshot@0.25,0.5,0.75: strategy=zeroshot"         # methods beside it
    PYTHONPATH=. python benchmarks/search_quality.py --first-search-seed 2  # more search seeds
    PYTHONPATH=. python benchmarks/search_quality.py \
        --ground-truth-from benchmarks/results/search_quality_rows_gt5.jsonl   # no GT training
    PYTHONPATH=. python benchmarks/search_quality.py --data cifar10 --space cifar \
        --set data.root=/data/cifar --workers 1 --device cuda       # on a GPU
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# --- settings ------------------------------------------------------------------------------
@dataclass
class Budget:
    """One fixed training budget for every arch trained from scratch."""

    # 16, not 8: at 8 epochs nets stop mid-learning and a seed moved accuracy almost as much as
    # the arch did (pooled seed std 3.9-5.2 %, spread/noise 0.9-1.8); the same 24 archs at 16:
    # seed std 1.7 %, spread/noise 3.0, the two seeds' τ 0.66 — at 2x the ground truth's cost
    epochs: int = 16
    lr: float = 0.1
    lr_warmup_epochs: float = 0.6  # without it big archs fall apart at lr 0.1
    train_subset: int | None = None


@dataclass
class SearchBudget:
    # 4: against one ground truth, warmup 8 ranked no better at the end (τ 0.48 vs 0.53) and its
    # archs placed lower (percentile 64 vs 76) at 1.33x the search time (README)
    warmup_epochs: int = 4
    epochs: int = 8
    arch_every: int = 2
    arch_lr: float = 0.03
    lr_warmup_epochs: float = 0.6


@dataclass
class Settings:
    space: str = "tiny"
    data: str = "clutter"
    k: int = 24
    seeds: int = 2
    targets: tuple[float, ...] = (0.25, 0.5, 0.75)
    estimators: tuple[str, ...] = ("all_paths", "two_path", "reinforce")
    objective: str = "add_abs"
    backend: str = "ort-cpu"  # the latency table's backend (profiled, then calibrated)
    calib_archs: int = 60  # whole networks measured to calibrate the table (half fit, half scored)
    random_candidates: int = 24
    calib_batches: int = 8
    budget: Budget = field(default_factory=Budget)
    search: SearchBudget = field(default_factory=SearchBudget)
    overrides: tuple[str, ...] = ()  # extra Hydra overrides for search and train (data.*, …)
    search_overrides: tuple[str, ...] = ()  # extra Hydra overrides for the searches only
    random_search: bool = True
    # searches run with seeds first_search_seed … + seeds - 1 (their derived archs train with
    # the ground truth's seeds): more search seeds against one ground truth, run by run
    first_search_seed: int = 0
    # a stored rows.jsonl whose ground truth (archs and per-seed accuracies) this run reuses
    # instead of drawing and training its own: the accuracies do not depend on the table
    ground_truth_from: str | None = None
    # label -> (extra search overrides, targets as fractions of the range)
    variants: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = field(default_factory=dict)
    device: str = "auto"
    threads: int = 1
    table: str = ""  # set by `calibrated_table`


def quick_settings() -> Settings:
    return Settings(
        k=8,
        seeds=1,
        estimators=("all_paths",),
        random_candidates=8,
        budget=Budget(epochs=3, train_subset=4000),
        search=SearchBudget(warmup_epochs=2, epochs=4),
    )


# --- Hydra configs (the same composition as the CLIs) ---------------------------------------
def compose(name: str, overrides: list[str]) -> dict[str, Any]:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from proxyless.cli._common import config_dir, to_plain

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = hydra_compose(name, overrides=overrides)
    return to_plain(cfg)


def common_overrides(s: Settings) -> list[str]:
    return [f"data={s.data}", f"device={s.device}", *s.overrides]


def search_overrides(s: Settings, seed: int, run_dir: Path, extra: list[str]) -> list[str]:
    b = s.search
    return [
        f"space={s.space}",
        *common_overrides(s),
        f"objective={s.objective}",
        "hardware=lut",
        f"hardware.table={s.table}",
        "hardware.unit=us",
        "hardware.target=null",
        f"seed={seed}",
        f"threads={s.threads}",
        f"run_dir={run_dir}",
        f"schedule.warmup_epochs={b.warmup_epochs}",
        f"schedule.epochs={b.epochs}",
        f"schedule.arch_every={b.arch_every}",
        f"optim.arch_lr={b.arch_lr}",
        f"optim.lr_warmup_epochs={b.lr_warmup_epochs}",
        "log.tensorboard=false",
        "log.heatmap=false",
        "log.progress=false",
        "checkpoint.keep_warmup=true",
        *([f"++data.train_subset={s.budget.train_subset}"] if s.budget.train_subset else []),
        *s.search_overrides,
        *extra,
    ]


# --- workers ------------------------------------------------------------------------------
def _init_worker(threads: int) -> None:
    """Each worker: its own thread budget, quiet logs, and stdout kept for the JSON rows
    (the search's summary table goes to stderr)."""
    import torch

    torch.set_num_threads(threads)
    sys.stdout = sys.stderr
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("proxyless").setLevel(logging.WARNING)


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def _train_path(ops: list[str], space: dict[str, Any], seed: int, s: Settings, cache: str) -> Path:
    """Where one training's result is cached: keyed by everything that determines it (the
    latency table does not: which archs are drawn depends on it, how they train does not)."""
    key = _key("train", ops, space, seed, asdict(s.budget), common_overrides(s))
    return Path(cache) / "train" / f"{key}.json"


def train_job(arch_dict: dict[str, Any], seed: int, s: Settings, cache: str) -> dict[str, Any]:
    """Train one arch from scratch with the benchmark's budget; cached."""
    from proxyless.arch import Arch
    from proxyless.train import TrainConfig, train

    path = _train_path(arch_dict["ops"], arch_dict["space"], seed, s, cache)
    if path.is_file():
        return json.loads(path.read_text())
    work = path.with_suffix("")
    arch = Arch.from_dict(arch_dict)
    arch.save(work / "arch.json")
    plain = compose(
        "train",
        [
            *common_overrides(s),
            f"arch={work / 'arch.json'}",
            f"out_dir={work / 'run'}",
            f"epochs={s.budget.epochs}",
            f"optim.lr={s.budget.lr}",
            f"optim.lr_warmup_epochs={s.budget.lr_warmup_epochs}",
            f"seed={seed}",
            f"threads={s.threads}",  # not in the cache key: it does not change the result
            "tensorboard=false",
            f"resume={str((work / 'run' / 'last.pt').is_file()).lower()}",  # a killed one goes on
            *([f"++data.train_subset={s.budget.train_subset}"] if s.budget.train_subset else []),
        ],
    )
    t0 = time.time()
    metrics = train(TrainConfig.from_dict(plain))
    row = {
        "arch": arch.block_strings(),
        "seed": seed,
        "acc": metrics["final"]["test"]["top1"] / 100.0,
        "params": metrics["params"],
        "seconds": time.time() - t0,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(row))
    return row


class GroundTruthError(ValueError):
    """A stored ground truth that this run cannot reuse; the message says why and what to do."""


def stored_run_rows(path: Path, s: Settings) -> list[dict[str, Any]]:
    """The rows of a stored run whose ground truth this run may reuse (checked before any
    work starts): refuses a file trained with another space, data group, budget or Hydra
    overrides, or with fewer seeds than this run uses."""
    if not path.is_file():
        raise GroundTruthError(f"--ground-truth-from {path}: no such file (a rows.jsonl)")
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise GroundTruthError(f"--ground-truth-from {path}: not JSON lines ({e})") from e
    summary = next((r for r in rows if r.get("row") == "summary"), None)
    gt_rows = [r for r in rows if r.get("row") == "ground_truth"]
    if summary is None or not gt_rows:
        raise GroundTruthError(
            f"--ground-truth-from {path}: needs the ground_truth rows and the summary row of a "
            "finished search_quality run"
        )
    stored = {
        "space": summary.get("space"),
        "data": summary.get("data"),
        "budget": summary.get("budget"),
        "overrides": summary.get("overrides", []),  # runs before the key: none
    }
    wanted = {
        "space": s.space,
        "data": s.data,
        "budget": asdict(s.budget),
        "overrides": list(s.overrides),
    }
    for name, value in wanted.items():
        if stored[name] != value:
            raise GroundTruthError(
                f"--ground-truth-from {path}: trained with {name}={stored[name]!r}, this run "
                f"uses {value!r}; pass the same settings (--space/--data/--epochs/--lr/"
                "--train-subset/--set) or drop --ground-truth-from"
            )
    if summary.get("seeds", 0) < s.seeds:
        raise GroundTruthError(
            f"--ground-truth-from {path}: {summary.get('seeds')} seed(s) stored, this run uses "
            f"{s.seeds}; pass --seeds {summary.get('seeds')}"
        )
    return rows


def stored_ground_truth(
    rows: list[dict[str, Any]], s: Settings, space: Any
) -> tuple[list, list[tuple]]:
    """The ground-truth archs of a stored run (`stored_run_rows`), in their stored order, and
    every (arch, seed, accuracy) it trained — ground truth, searched archs and the extra
    seeds of its seed-noise arch — for `seed_train_cache`.

    Why: the ground truth is most of a full run's time (~60 of ~75 min here) and its
    accuracies depend on the arch, the data and the budget, not on the latency table, so a
    run on a fresh machine re-costs the stored archs with its own table instead of training
    24 new ones."""
    from proxyless.arch import Arch

    gt_rows = [r for r in rows if r.get("row") == "ground_truth"]

    def arch_of(ops: list[str]) -> Any:
        try:
            arch = Arch.from_strings(space, ops)
            arch.indices()
        except ValueError as e:
            raise GroundTruthError(
                f"--ground-truth-from {s.ground_truth_from}: arch {ops} is not in the "
                f"{s.space!r} space ({e})"
            ) from e
        return arch

    gt = [arch_of(r["arch"]) for r in gt_rows]
    trained = [
        (tuple(r["arch"]), seed, acc)
        for r in rows
        if r.get("row") in ("ground_truth", "search") and "acc_seeds" in r
        for seed, acc in enumerate(r["acc_seeds"][: s.seeds])
    ]
    trained += [
        (tuple(r["arch"]), seed, acc)
        for r in rows
        if r.get("row") == "seed_noise"
        for seed, acc in enumerate(r["accs"])
    ]
    return gt, trained


def seed_train_cache(
    trained: list[tuple], space: Any, s: Settings, cache: Path, source: Path
) -> int:
    """Write stored trainings into the training cache (not over one already there), so that
    `train_job` reads them back instead of training; returns how many it wrote."""
    written = 0
    for ops, seed, acc in trained:
        path = _train_path(list(ops), space.to_dict(), seed, s, str(cache))
        if path.is_file():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        row = {"arch": list(ops), "seed": seed, "acc": acc, "imported_from": str(source)}
        path.write_text(json.dumps(row))
        written += 1
    return written


def eval_batches(plain: dict[str, Any], calib: int) -> tuple[dict[str, list], list]:
    """Batches to score archs on — the held-out split (what the search's arch steps see) and
    the test split (eval transforms) — and training images to re-estimate BatchNorm
    statistics with: the same images and augmentations on every call (seeded), so rankings
    of different searches differ by their supernets only. (Unseeded, the augmentation drawn
    from a worker's global RNG moved τ by ~0.1 between two runs of the same search.)"""
    import torch

    from proxyless.data import build_datasets, build_loaders
    from proxyless.search_config import SearchConfig

    data_cfg = SearchConfig.from_dict(plain).data
    splits = build_datasets(data_cfg)
    loaders = build_loaders(splits, data_cfg)
    sets = {
        name: list(torch.utils.data.DataLoader(split, batch_size=256))
        for name, split in (("heldout", splits.heldout), ("test", splits.test))
    }
    calib_x = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for x, _ in loaders.train:
            calib_x.append(x)
            if len(calib_x) >= calib:
                break
    return sets, calib_x


def pooled_accuracy(accs: dict[str, list[float]], sets: dict[str, list]) -> list[float]:
    """Per arch, the accuracy over all the sets' images together."""
    sizes = {name: sum(len(y) for _, y in batches) for name, batches in sets.items()}
    total = sum(sizes.values())
    return [
        sum(sizes[name] * accs[name][i] for name in sets) / total
        for i in range(len(next(iter(accs.values()))))
    ]


def _load_net(run_dir: Path, which: str, plain: dict[str, Any]):
    import torch

    from proxyless.distributed import DistContext
    from proxyless.search_config import SearchConfig
    from proxyless.search_setup import build_parts

    cfg = SearchConfig.from_dict(plain)
    parts = build_parts(cfg, DistContext())
    state = torch.load(run_dir / "checkpoints" / which, weights_only=True, map_location="cpu")
    parts.net.load_state_dict(state["net"])
    return parts.net


def search_job(
    s: Settings, seed: int, run_dir: str, extra: list[str], gt_archs: list[dict] | None
) -> dict[str, Any]:
    """One search; with `gt_archs`, also the supernet's ranking of them after warmup and at
    the end (inherited weights, BN re-estimated per path). Peak resident memory is sampled
    while it runs. A finished search with the same overrides is read back, not rerun."""
    import torch

    from proxyless.search import search
    from proxyless.search_config import SearchConfig

    rd = Path(run_dir)
    overrides = search_overrides(s, seed, rd, extra)
    if (cached := _cached(rd, overrides)) is not None:
        if gt_archs is not None and "inherited_end" in cached and cached.get("ranked") != RANKED:
            plain = compose("search", overrides)  # ranked before the seeded batches: again
            cached.update(_ranking(rd, plain, gt_archs, s, _load_net(rd, "last.pt", plain)))
            (rd / "quality.json").write_text(json.dumps(cached))
        return cached
    plain = compose("search", overrides)
    t0 = time.time()
    with PeakRSS() as rss:
        result = search(SearchConfig.from_dict(plain))
    wall = time.time() - t0
    row: dict[str, Any] = {
        "overrides": overrides,
        "metrics": result.metrics,
        "arch": result.arch.to_dict(),
        "wall_s": wall,
        "peak_rss_mb": rss.peak_mb,
    }
    if result.net is not None:  # a supernet search (not zero-shot)
        history = torch.load(rd / "checkpoints" / "last.pt", weights_only=True)["history"]
        # α entropy (mean per layer) and the derived arch's cost after every epoch
        row["entropy"] = [e["entropy"] for e in history["epochs"]]
        row["derived_cost"] = [e["derived_cost"] for e in history["epochs"]]
    if gt_archs is not None and result.net is not None:
        row.update(_ranking(rd, plain, gt_archs, s, result.net))
    (rd / "quality.json").write_text(json.dumps(row))
    return row


# how a stored ranking was made; others are made again
RANKED = "seeded-calibration, held-out + test"


def _ranking(
    rd: Path, plain: dict[str, Any], gt_archs: list[dict], s: Settings, net: Any
) -> dict[str, Any]:
    """The ground-truth archs' inherited accuracies at the end of the search (a GM search:
    each in the leaf that holds it) and after warmup.

    Scored on the held-out and the test split together (3k images on clutter): on the 1k
    held-out images alone, an inherited accuracy near 50 % carries a binomial error of
    ~1.6 %, about the gap between neighbouring archs. (Measured: on four throw-away
    supernets τ rose 0.38 → 0.44 with the test images added; in the full run of the
    README it read 0.37 against 0.43 held-out only — a search seed moves τ by more.) The
    search never sees the test split and this score selects nothing; the held-out-only
    ranking is kept beside it (`inherited_*_heldout`)."""
    from proxyless.arch import Arch
    from proxyless.ranking import inherited_accuracies

    archs = [Arch.from_dict(a) for a in gt_archs]
    sets, calib = eval_batches(plain, s.calib_batches)
    out: dict[str, Any] = {"ranked": RANKED}
    phases = {"end": net}
    if (rd / "checkpoints" / "warmup.pt").is_file():
        phases["warmup"] = _load_net(rd, "warmup.pt", plain)
    for phase, phase_net in phases.items():
        if phase == "end" and (rd / "gm.json").is_file():
            accs = inherited_by_leaf(rd, plain, archs, sets, calib)
        else:
            accs = inherited_accuracies(phase_net, archs, sets, calib)
        out[f"inherited_{phase}"] = pooled_accuracy(accs, sets)
        out[f"inherited_{phase}_heldout"] = accs["heldout"]
    return out


def inherited_by_leaf(
    rd: Path, plain: dict[str, Any], archs: list, sets: dict[str, list], calib: list
) -> dict[str, list[float]]:
    """A GM search's ranking: every arch evaluated (on each of `sets`) with the weights of
    the leaf sub-supernet whose groups hold it (the leaves partition the space)."""
    from proxyless.ranking import inherited_accuracies

    leaves = json.loads((rd / "gm.json").read_text())["leaves"]
    accs: dict[str, list[float | None]] = {name: [None] * len(archs) for name in sets}
    for leaf in leaves:
        mine = [
            i
            for i, a in enumerate(archs)
            if all(str(a.ops[int(k)]) in ops for k, ops in leaf["groups"].items())
        ]
        if mine:
            net = _load_net(rd, f"gm_{leaf['id']}.pt", plain)
            ranked = inherited_accuracies(net, [archs[i] for i in mine], sets, calib)
            for name in sets:
                for i, acc in zip(mine, ranked[name], strict=True):
                    accs[name][i] = acc
    if any(a is None for values in accs.values() for a in values):
        raise RuntimeError(f"{rd}: some archs fall in no GM leaf; the leaves must partition")
    return accs  # type: ignore[return-value]


def _cached(rd: Path, overrides: list[str]) -> dict[str, Any] | None:
    """The stored result of a finished search run whose config (its config.yaml, as the run
    resolved it) has the same result-relevant settings as `overrides` resolve to today:
    where the run directory is does not matter (runs copied between benchmark outputs are
    reused), and a run made under another default is not taken for today's. Any other run
    (or an unfinished one) is moved aside, so the search starts afresh."""
    import yaml

    from proxyless.search_config import SearchConfig
    from proxyless.search_state import config_diffs

    done, saved = rd / "quality.json", rd / "config.yaml"
    if done.is_file() and saved.is_file():
        wanted = SearchConfig.from_dict(compose("search", overrides)).to_dict()
        if not config_diffs(yaml.safe_load(saved.read_text()), wanted):
            return json.loads(done.read_text())
    if rd.exists():
        stale = rd.with_name(f"{rd.name}.stale-{int(time.time())}")
        logging.getLogger("proxyless").warning("%s: settings changed; moved to %s", rd, stale)
        rd.rename(stale)
    return None


class PeakRSS:
    """The peak resident memory of this process while the block runs (sampled every 50 ms
    from /proc; `ru_maxrss` cannot say it, as it holds the worker's peak over all its jobs)."""

    def __enter__(self) -> PeakRSS:
        import threading

        self.peak_mb: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while True:
            try:
                rss = int(Path("/proc/self/statm").read_text().split()[1]) * page / 2**20
            except (OSError, ValueError):
                return  # not Linux: no figure
            self.peak_mb = max(self.peak_mb or 0.0, rss)
            if self._stop.wait(0.05):
                return

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def random_search_job(
    s: Settings,
    seed: int,
    run_dir: str,
    target: float,
    n: int,
    cost_table: dict,
    gt_archs: list[dict] | None = None,
) -> dict[str, Any]:
    """Random search with the wall time of one search: a supernet trained on uniformly
    sampled paths for the search's epochs (no arch steps), then `n` random archs within
    ±5 % of `target` ranked by inherited held-out accuracy."""
    from proxyless.arch import Arch
    from proxyless.ranking import inherited_accuracies, inherited_accuracy
    from proxyless.search import search
    from proxyless.search_config import SearchConfig

    rd = Path(run_dir)
    total = s.search.warmup_epochs + s.search.epochs
    extra = [
        f"schedule.warmup_epochs={total}",
        "schedule.epochs=0",
        "schedule.sampler=uniform",
        "objective=none",
    ]
    overrides = search_overrides(s, seed, rd, extra)
    if (cached := _cached(rd, overrides)) is not None:
        return cached
    plain = compose("search", overrides)
    t0 = time.time()
    result = search(SearchConfig.from_dict(plain))
    archs = _archs_near(result.net.space, cost_table, target, n, seed)
    sets, calib = eval_batches(plain, s.calib_batches)
    held = sets["heldout"]  # it picks an arch: never on the test split
    accs = inherited_accuracy(result.net, archs, held, calib)
    best = archs[int(np.argmax(accs))]
    if gt_archs is not None:  # how a supernet trained only on uniform paths ranks
        gt = [Arch.from_dict(a) for a in gt_archs]
        uniform_ranking = pooled_accuracy(inherited_accuracies(result.net, gt, sets, calib), sets)
    row = {
        "overrides": overrides,
        "inherited_uniform": uniform_ranking if gt_archs is not None else None,
        "arch": best.to_dict(),
        "candidates": len(archs),
        "best_inherited": max(accs),
        "wall_s": time.time() - t0,
        "cost": _cost(cost_table, best),
    }
    (rd / "quality.json").write_text(json.dumps(row))
    return row


# --- costs ---------------------------------------------------------------------------------
def calibrated_table(s: Settings, cache: Path) -> str:
    """The space's latency table on this machine, calibrated on whole networks.

    On a small space the per-op tables miss what whole networks pay once (call overhead):
    the tiny space's ORT entries sum to ~2× its measured networks. `proxyless-validate`
    fits `measured ≈ a·sum + b` on half of `calib_archs` networks, scores it on the other
    half and stores it in the table, which the search then uses (and so does this
    benchmark's latency axis). Made once per machine and cached."""
    import subprocess

    path = cache / "tables" / f"{s.space}_{s.backend}.json"
    if path.is_file() and json.loads(path.read_text())["header"].get("calibration"):
        return str(path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for cmd in (
        ["proxyless.cli.profile", f"space={s.space}", f"backend={s.backend}", f"out={path}"],
        [
            "proxyless.cli.validate",
            f"space={s.space}",
            f"table={path}",
            f"n_archs={s.calib_archs}",
            "calibrate=0.5",
            "noise_floor=false",
            f"hydra.run.dir={cache / 'tables' / 'validate'}",
        ],
    ):
        subprocess.run([sys.executable, "-m", *cmd], check=True, env=env, stdout=sys.stderr)
    return str(path)


def cost_table(s: Settings) -> dict[str, Any]:
    """Per-layer candidate costs and the fixed cost from the configured hardware group (the
    table the search uses), plus an id that changes when the table does."""
    from proxyless.distributed import DistContext
    from proxyless.search_config import SearchConfig
    from proxyless.search_setup import build_parts

    plain = compose(
        "search", search_overrides(s, 0, Path("/tmp/unused"), ["hardware.target_frac=0.5"])
    )
    parts = build_parts(SearchConfig.from_dict(plain), DistContext())
    c = parts.hardware.costs
    table = {
        "per_layer": [list(map(float, row)) for row in c.per_layer],
        "fixed": float(c.fixed),
        "unit": c.unit,
        "source": c.source,
        "space": parts.space.to_dict(),
    }
    table["id"] = _key(table["per_layer"], table["fixed"])
    return table


def _costs(table: dict[str, Any]) -> Any:
    """The search's own cost object (`SpaceCosts`) from the plain table dict workers receive."""
    from proxyless.hardware import SpaceCosts

    return SpaceCosts(table["per_layer"], table["fixed"], table["unit"], table["source"])


def _cost(table: dict[str, Any], arch: Any) -> float:
    return _costs(table).cost_of(arch.indices())


def _target(table: dict[str, Any], frac: float) -> float:
    """As the search resolves `hardware.target_frac`."""
    costs = _costs(table)
    return costs.min_cost() + frac * (costs.max_cost() - costs.min_cost())


def _archs_near(space: Any, table: dict[str, Any], target: float, n: int, seed: int) -> list:
    from proxyless.arch import Arch

    rng = np.random.default_rng(1000 + seed)
    layers = space.layers()
    out, seen = [], set()
    for _ in range(200_000):
        ops = [layer.candidates[int(rng.integers(len(layer.candidates)))] for layer in layers]
        arch = Arch(space, ops)
        key = tuple(arch.block_strings())
        if key in seen:
            continue
        seen.add(key)
        if abs(_cost(table, arch) - target) <= 0.05 * target:
            out.append(arch)
            if len(out) == n:
                break
    return out


# --- the run -------------------------------------------------------------------------------
def emit(out: Path, row: dict[str, Any]) -> None:
    line = json.dumps(row, default=float)
    print(line, flush=True)
    with open(out / "rows.jsonl", "a") as f:
        f.write(line + "\n")


def measure_quietly(
    s: Settings, space: Any, archs: list[list[str]], rounds: int = 3
) -> dict[tuple, float]:
    """End-to-end latency of each searched arch (the table's unit), measured in this process
    once every worker has stopped, in `rounds` passes over all archs (median per arch).

    Why: a search measures its arch while the other worker trains; under that load the same
    arch measured 16-22 % above its quiet latency here, which is the machine, not the search.
    """
    from proxyless.arch import Arch
    from proxyless.hardware import measured_latency
    from proxyless.search_config import SearchConfig

    plain = compose("search", search_overrides(s, 0, Path("/tmp/unused"), []))
    hw = SearchConfig.from_dict(plain).hardware
    unique = list(dict.fromkeys(tuple(a) for a in archs))
    times: dict[tuple, list[float]] = {a: [] for a in unique}
    for _ in range(rounds):
        for ops in unique:
            arch = Arch.from_strings(space, ops)
            value = measured_latency(arch, hw)
            if value is not None:
                times[ops].append(value)
    return {a: float(np.median(v)) for a, v in times.items() if v}


def run(s: Settings, out: Path, cache: Path, workers: int, gt_only: bool = False) -> dict[str, Any]:
    from proxyless.arch import Arch
    from proxyless.ranking import (
        front_at,
        kendall_tau,
        pareto_front,
        percentile_at_cost,
        percentile_ceiling,
        residual_seed_std,
        spearman_rho,
        stratified_archs,
    )
    from proxyless.space import SearchSpace

    t_start = time.time()
    # read first: the stored rows may be this --out's own rows.jsonl, emptied below
    stored = stored_run_rows(Path(s.ground_truth_from), s) if s.ground_truth_from else None
    out.mkdir(parents=True, exist_ok=True)
    (out / "rows.jsonl").write_text("")
    s.table = calibrated_table(s, cache)
    table = cost_table(s)
    space = SearchSpace.from_dict(table["space"])
    if stored is not None:
        gt, trained = stored_ground_truth(stored, s, space)
        n = seed_train_cache(trained, space, s, cache, Path(s.ground_truth_from))
        print(
            f"ground truth: {len(gt)} archs from {s.ground_truth_from}, {n} stored trainings "
            "added to the cache",
            file=sys.stderr,
        )
    else:
        gt = stratified_archs(space, lambda a: _cost(table, a), s.k, seed=0)
    gt_dicts = [a.to_dict() for a in gt]
    seeds = list(range(s.seeds))
    search_seeds = [s.first_search_seed + i for i in range(s.seeds)]
    pool = ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(s.threads,))
    cache_s = str(cache)

    def train_all(arch_dicts: list[dict], seed_list: list[int]) -> dict[tuple, Any]:
        futs = {
            (tuple(d["ops"]), sd): pool.submit(train_job, d, sd, s, cache_s)
            for d in arch_dicts
            for sd in seed_list
        }
        return futs

    # Everything is submitted up front so both workers stay busy.
    gt_futs = train_all(gt_dicts, seeds)
    mid = s.targets[len(s.targets) // 2]
    one_arch = gt_dicts[len(gt_dicts) // 2]
    noise_futs = train_all([one_arch], [s.seeds + i for i in range(max(0, 3 - s.seeds))])
    search_futs: dict[tuple, Any] = {}
    random_futs: dict[int, Any] = {}
    for t in s.targets if not gt_only else ():
        for sd in search_seeds:
            rd = out / "search" / f"all_paths_t{t}_s{sd}"
            ranking = gt_dicts if t == mid else None
            extra = [f"hardware.target_frac={t}", "estimator=all_paths"]
            search_futs[("all_paths", t, sd)] = pool.submit(
                search_job, s, sd, str(rd), extra, ranking
            )
    for est in s.estimators if not gt_only else ():
        if est == "all_paths":
            continue
        for sd in search_seeds:
            rd = out / "search" / f"{est}_t{mid}_s{sd}"
            extra = [f"hardware.target_frac={mid}", f"estimator={est}"]
            search_futs[(est, mid, sd)] = pool.submit(search_job, s, sd, str(rd), extra, None)
    for label, (overrides, targets) in s.variants.items() if not gt_only else ():
        for t in targets:
            for sd in search_seeds:
                rd = out / "search" / f"{label}_t{t}_s{sd}"
                ranking = gt_dicts if t == mid else None
                extra = [f"hardware.target_frac={t}", "estimator=all_paths", *overrides]
                search_futs[(label, t, sd)] = pool.submit(
                    search_job, s, sd, str(rd), extra, ranking
                )
    for sd in search_seeds if s.random_search and not gt_only else ():
        random_futs[sd] = pool.submit(
            random_search_job,
            s,
            sd,
            str(out / "search" / f"random_t{mid}_s{sd}"),
            _target(table, mid),
            s.random_candidates,
            table,
            gt_dicts,
        )

    # --- ground truth ---------------------------------------------------------------------
    gt_rows = []
    for d, a in zip(gt_dicts, gt, strict=True):
        accs = [gt_futs[(tuple(d["ops"]), sd)].result()["acc"] for sd in seeds]
        row = {
            "row": "ground_truth",
            "arch": d["ops"],
            "cost": _cost(table, a),
            "acc_mean": float(np.mean(accs)),
            "acc_seeds": accs,
        }
        gt_rows.append(row)
        emit(out, row)
    cloud = [(r["cost"], r["acc_mean"]) for r in gt_rows]
    front = pareto_front(cloud)
    arch_std = float(np.std([r["acc_mean"] for r in gt_rows], ddof=1))
    seed_std = (
        float(math.sqrt(np.mean([np.var(r["acc_seeds"], ddof=1) for r in gt_rows])))
        if s.seeds > 1
        else None
    )
    one_accs = [r["acc_seeds"] for r in gt_rows if r["arch"] == one_arch["ops"]][0] + [
        f.result()["acc"] for f in noise_futs.values()
    ]
    one_std = float(np.std(one_accs, ddof=1))
    # Seed noise left once each seed's shared offset is removed (all archs see the same data
    # order per seed): what a comparison between archs trained with the same seeds meets.
    acc_matrix = np.array([r["acc_seeds"] for r in gt_rows])
    seed_std_residual = residual_seed_std(acc_matrix)
    seed_offsets = acc_matrix.mean(axis=0).tolist()
    seed_cloud = [(r["cost"], r["acc_seeds"]) for r in gt_rows]

    def ceiling(cost: float) -> dict[str, Any]:
        """The percentile the best random arch near `cost` would score if trained again."""
        if seed_std_residual is None:
            return {"percentile_ceiling": None, "percentile_ceiling_split_seed": None}
        c = percentile_ceiling(cost, seed_cloud, seed_std_residual)
        return {
            "percentile_ceiling": c["retrained_best"],
            "percentile_ceiling_split_seed": c["split_seed"],
        }

    emit(
        out,
        {
            "row": "seed_noise",
            "arch": one_arch["ops"],
            "accs": one_accs,
            "std": one_std,
            "pooled_seed_std": seed_std,
            "arch_std": arch_std,
        },
    )
    if gt_only:
        pool.shutdown()
        return {"arch_std": arch_std, "seed_std_pooled": seed_std, "seed_std_one_arch": one_std}

    # --- searches -------------------------------------------------------------------------
    def trained(arch_dict: dict) -> list[float]:
        futs = train_all([arch_dict], seeds)
        return [f.result()["acc"] for f in futs.values()]

    gt_acc = [r["acc_mean"] for r in gt_rows]
    gt_cost = [r["cost"] for r in gt_rows]
    search_rows = []
    for (est, t, sd), fut in search_futs.items():
        res = fut.result()
        arch = Arch.from_dict(res["arch"])
        accs = trained(res["arch"])
        m = res["metrics"]
        cost = _cost(table, arch)
        target = m["target"]
        measured = m.get("measured_latency")
        row = {
            "row": "search",
            "estimator": est if est not in s.variants else None,
            "variant": est if est in s.variants else None,
            "target_frac": t,
            "seed": sd,
            "arch": arch.block_strings(),
            "target": target,
            "cost": cost,
            "measured": measured,
            "latency_error": (measured - target) / target if measured and target else None,
            "acc_mean": float(np.mean(accs)),
            "acc_seeds": accs,
            "search_wall_s": res["wall_s"],
            "peak_rss_mb": res.get("peak_rss_mb"),
            **percentile_at_cost(cost, float(np.mean(accs)), cloud),
            **ceiling(cost),
            "front": front_at(front, cost),
        }
        row["entropy"] = res.get("entropy")
        row["derived_cost_per_epoch"] = res.get("derived_cost")
        if m.get("derive_candidates"):  # derive.candidates > 1: the archs it chose among
            row["derive_candidates"] = m["derive_candidates"]
        for phase in ("warmup", "end"):
            if f"inherited_{phase}" in res:
                inh = res[f"inherited_{phase}"]
                row[f"tau_{phase}"] = kendall_tau(inh, gt_acc)
                row[f"rho_{phase}"] = spearman_rho(inh, gt_acc)
                row[f"tau_{phase}_by_tercile"] = tau_by_tercile(inh, gt_acc, gt_cost)
                row[f"tau_{phase}_vs_cost"] = kendall_tau(inh, gt_cost)  # bias to big archs?
                if f"inherited_{phase}_heldout" in res:  # rankings stored before the test split
                    row[f"tau_{phase}_heldout"] = kendall_tau(
                        res[f"inherited_{phase}_heldout"], gt_acc
                    )
        search_rows.append(row)  # emitted once its latency is re-measured, below

    random_rows = []
    for sd, fut in random_futs.items():
        res = fut.result()
        arch = Arch.from_dict(res["arch"])
        accs = trained(res["arch"])
        cost = _cost(table, arch)
        uniform = res.get("inherited_uniform")
        row = {
            "row": "random_search",
            "tau_uniform": kendall_tau(uniform, gt_acc) if uniform else None,
            "target_frac": mid,
            "seed": sd,
            "arch": arch.block_strings(),
            "candidates": res["candidates"],
            "cost": cost,
            "acc_mean": float(np.mean(accs)),
            "wall_s": res["wall_s"],
            **percentile_at_cost(cost, float(np.mean(accs)), cloud),
            "front": front_at(front, cost),
        }
        random_rows.append(row)
        emit(out, row)
    pool.shutdown()
    # Latency of the searched archs and, as a reference, every third ground-truth arch,
    # measured together on a quiet machine: the reference says how far today's machine has
    # drifted from the table (fitted when it was profiled).
    reference = gt_rows[::3]
    quiet = measure_quietly(s, space, [r["arch"] for r in search_rows + reference])
    ratios = [quiet[tuple(r["arch"])] / r["cost"] for r in reference if tuple(r["arch"]) in quiet]
    drift = float(np.median(ratios)) if ratios else None
    for r in search_rows:
        r["measured_in_search"] = r["measured"]
        r["measured"] = quiet.get(tuple(r["arch"]), r["measured"])
        t, m = r["target"], r["measured"]
        r["latency_error"] = (m - t) / t if m and t else None
        r["table_error"] = (r["cost"] - t) / t if t else None  # what the search controls
        # the same error with today's machine speed taken out: the measured latency scaled by
        # the drift its reference archs showed in the same measuring rounds
        r["latency_error_drift_corrected"] = (m / drift - t) / t if m and t and drift else None
        emit(out, r)
    emit(out, {"row": "table_drift", "measured_over_table": ratios, "median": drift})

    # --- summary --------------------------------------------------------------------------
    main_rows = [r for r in search_rows if r["estimator"] == "all_paths"]
    per_target = []
    on_front = 0
    for t in s.targets:
        rows = [r for r in main_rows if r["target_frac"] == t]
        pct = [r["percentile"] for r in rows if r["percentile"] is not None]
        per_target.append(float(np.mean(pct)) if pct else None)
        acc = float(np.mean([r["acc_mean"] for r in rows]))
        cost = float(np.mean([r["cost"] for r in rows]))
        on_front += acc >= front_at(front, cost)
    ranked = [r for r in main_rows if "tau_end" in r]
    est_rows = [r for r in search_rows if r["variant"] is None]
    by_est = {
        est: float(
            np.mean(
                [
                    r["percentile"]
                    for r in est_rows
                    if r["estimator"] == est and r["percentile"] is not None
                ]
                or [np.nan]
            )
        )
        for est in s.estimators
    }
    summary = {
        "row": "summary",
        "space": s.space,
        "data": s.data,
        "k": len(gt),
        "seeds": s.seeds,
        "first_search_seed": s.first_search_seed,
        "budget": asdict(s.budget),
        "search_budget": asdict(s.search),
        "search_overrides": list(s.search_overrides),
        "overrides": list(s.overrides),
        "ground_truth_from": s.ground_truth_from,
        "table": {"source": table["source"], "unit": table["unit"], "id": table["id"]},
        "gt_acc_min": min(gt_acc),
        "gt_acc_max": max(gt_acc),
        "arch_std": arch_std,
        "seed_std_pooled": seed_std,
        "seed_std_one_arch": one_std,
        "spread_over_seed_noise": arch_std / seed_std if seed_std else None,
        "spread_over_one_arch_seed_std": arch_std / one_std if one_std > 0 else None,
        "seed_std_residual": seed_std_residual,
        "spread_over_residual_seed_noise": arch_std / seed_std_residual
        if seed_std_residual
        else None,
        "gt_mean_acc_per_seed": seed_offsets,
        "gt_acc_vs_cost_spearman": spearman_rho([r["cost"] for r in gt_rows], gt_acc),
        # The baseline a supernet's ranking must beat: "the slower arch is the better one".
        "ranking_tau_cost_baseline": kendall_tau(gt_cost, gt_acc),
        "ranking_tau_cost_baseline_by_tercile": tau_by_tercile(gt_cost, gt_acc, gt_cost),
        # The ceiling on ranking τ that the ground truth's own noise sets: how well one
        # seed's accuracies rank the archs of another seed (a perfect ranker of the true
        # accuracies scores about this against one seed, a little more against the mean).
        "gt_tau_between_seeds": kendall_tau(acc_matrix[:, 0], acc_matrix[:, 1])
        if s.seeds > 1
        else None,
        "ranking_tau_warmup": float(np.mean([r["tau_warmup"] for r in ranked])),
        "ranking_tau_end": float(np.mean([r["tau_end"] for r in ranked])),
        "ranking_tau_warmup_heldout": _mean_or_none([r.get("tau_warmup_heldout") for r in ranked]),
        "ranking_tau_end_heldout": _mean_or_none([r.get("tau_end_heldout") for r in ranked]),
        # how strongly the supernet's ranking follows latency; the truth's own: cost baseline
        "ranking_tau_end_vs_cost": float(np.mean([r["tau_end_vs_cost"] for r in ranked])),
        "ranking_rho_warmup": float(np.mean([r["rho_warmup"] for r in ranked])),
        "ranking_rho_end": float(np.mean([r["rho_end"] for r in ranked])),
        "ranking_tau_end_by_tercile": _mean_lists([r["tau_end_by_tercile"] for r in ranked]),
        "searched_percentile": per_target,
        "searched_percentile_mean": float(np.mean([p for p in per_target if p is not None]))
        if any(p is not None for p in per_target)
        else None,
        # what the window's best random arch itself would score if trained again (the
        # ground truth's seed noise): a percentile target above it is not measurable here
        "searched_percentile_ceiling": _per_target(main_rows, s.targets, "percentile_ceiling"),
        "searched_percentile_ceiling_split_seed": _per_target(
            main_rows, s.targets, "percentile_ceiling_split_seed"
        ),
        "on_pareto_front": int(on_front),
        "latency_error_max": _max_abs([r["latency_error"] for r in est_rows]),
        # the derived archs' table cost vs target, and today's measured/table ratio on the
        # ground-truth archs: together they split latency_error into search and machine
        "table_error_max": _max_abs([r["table_error"] for r in est_rows]),
        "latency_error_max_drift_corrected": _max_abs(
            [r["latency_error_drift_corrected"] for r in est_rows]
        ),
        "table_drift_median": drift,
        "percentile_by_estimator": by_est,
        "ranking_tau_uniform": _mean_or_none([r["tau_uniform"] for r in random_rows]),
        "random_search_percentile": float(
            np.mean(
                [r["percentile"] for r in random_rows if r["percentile"] is not None] or [np.nan]
            )
        ),
        "variants": {
            label: variant_summary([r for r in search_rows if r["variant"] == label], s, front)
            for label in s.variants
        },
        "wall_s": time.time() - t_start,
    }
    emit(out, summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    plot(out / "pareto.png", gt_rows, front, search_rows, random_rows, table, s)
    return summary


def tau_by_tercile(scores: list[float], acc: list[float], cost: list[float]) -> list[float]:
    """Kendall τ within each third of the archs by cost (cheap, middle, expensive): whether
    the supernet ranks archs of every latency band, not only across bands."""
    from proxyless.ranking import kendall_tau

    order = np.argsort(cost, kind="stable")
    return [
        kendall_tau([scores[i] for i in part], [acc[i] for i in part])
        for part in np.array_split(order, 3)
    ]


def _mean_lists(lists: list[list[float]]) -> list[float] | None:
    return [float(v) for v in np.nanmean(np.array(lists, dtype=float), axis=0)] if lists else None


def variant_summary(rows: list[dict[str, Any]], s: Settings, front: Any) -> dict[str, Any]:
    """A variant's figures, as the summary gives them for the plain search."""
    from proxyless.ranking import front_at

    per_target, on_front = [], 0
    targets = s.variants[rows[0]["variant"]][1]
    for t in targets:
        at = [r for r in rows if r["target_frac"] == t]
        pct = [r["percentile"] for r in at if r["percentile"] is not None]
        per_target.append(float(np.mean(pct)) if pct else None)
        acc = float(np.mean([r["acc_mean"] for r in at]))
        on_front += acc >= front_at(front, float(np.mean([r["cost"] for r in at])))
    ranked = [r for r in rows if "tau_end" in r]
    return {
        "targets": list(targets),
        "percentile": per_target,
        "percentile_mean": _mean_or_none(per_target),
        "percentile_ceiling": _per_target(rows, targets, "percentile_ceiling"),
        "on_pareto_front": int(on_front),
        "acc_mean": float(np.mean([r["acc_mean"] for r in rows])),
        "ranking_tau_end": _mean_or_none([r["tau_end"] for r in ranked]),
        "ranking_tau_warmup": _mean_or_none([r.get("tau_warmup") for r in ranked]),
        "ranking_tau_end_by_tercile": _mean_lists([r["tau_end_by_tercile"] for r in ranked]),
        "latency_error_max": _max_abs([r["latency_error"] for r in rows]),
        "latency_error_max_drift_corrected": _max_abs(
            [r.get("latency_error_drift_corrected") for r in rows]
        ),
        "search_wall_s": _mean_or_none([r["search_wall_s"] for r in rows]),
        "peak_rss_mb": _mean_or_none([r["peak_rss_mb"] for r in rows]),
    }


def _per_target(rows: list[dict[str, Any]], targets: Any, key: str) -> list[float | None]:
    """The mean of `key` over the rows of each target (None where no row has it)."""
    return [_mean_or_none([r.get(key) for r in rows if r["target_frac"] == t]) for t in targets]


def _mean_or_none(values: list[Any]) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _max_abs(values: list[Any]) -> float | None:
    values = [abs(v) for v in values if v is not None]
    return max(values) if values else None


def plot(path: Path, gt_rows, front, search_rows, random_rows, table, s: Settings) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7 + 1.6 * bool(s.variants), 4.5))
    costs = [r["cost"] for r in gt_rows]
    accs = [100 * r["acc_mean"] for r in gt_rows]
    err = [100 * (max(r["acc_seeds"]) - min(r["acc_seeds"])) / 2 for r in gt_rows]
    ax.errorbar(costs, accs, yerr=err, fmt="o", color="0.6", ms=4, label="random archs (GT)")
    ax.plot(
        [c for c, _ in front],
        [100 * a for _, a in front],
        "-",
        color="0.4",
        lw=1,
        label="random Pareto front",
    )
    markers = {"all_paths": "*", "two_path": "^", "reinforce": "s"}
    for est in s.estimators:
        rows = [r for r in search_rows if r["estimator"] == est]
        ax.scatter(
            [r["cost"] for r in rows],
            [100 * r["acc_mean"] for r in rows],
            marker=markers.get(est, "D"),
            s=110 if est == "all_paths" else 50,
            zorder=3,
            label=f"searched ({est})",
        )
    for i, label in enumerate(s.variants):
        rows = [r for r in search_rows if r["variant"] == label]
        ax.scatter(
            [r["cost"] for r in rows],
            [100 * r["acc_mean"] for r in rows],
            marker="PXdvp<>h"[i % 8],
            s=60,
            zorder=3,
            label=label,
        )
    if random_rows:
        ax.scatter(
            [r["cost"] for r in random_rows],
            [100 * r["acc_mean"] for r in random_rows],
            marker="x",
            s=60,
            color="k",
            zorder=3,
            label="random search",
        )
    for t in s.targets:
        ax.axvline(_target(table, t), color="C3", ls=":", lw=1)
    ax.set_xlabel(f"predicted latency ({table['unit']}, calibrated {s.backend} table)")
    ax.set_ylabel("test accuracy, trained from scratch (%)")
    ax.set_title(f"{s.space} space on {s.data}: searched vs random archs")
    if s.variants:  # many markers: the legend beside the plot, not over the points
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_variant(
    text: str, parser: argparse.ArgumentParser, default_targets: tuple[float, ...]
) -> tuple[str, tuple[tuple[str, ...], tuple[float, ...]]]:
    """'label[@t,t…]: key=value key=value' → (label, (overrides, targets))."""
    head, sep, rest = text.partition(":")
    label, at, targets_text = head.strip().partition("@")
    usage = "expected 'LABEL[@FRAC,FRAC…]: OVERRIDE …' (LABEL: letters, digits, _, -)"
    if not sep or not label.replace("_", "").replace("-", "").isalnum():
        parser.error(f"--variant {text!r}: {usage}")
    if label in ("all_paths", "two_path", "reinforce", "random"):
        parser.error(f"--variant {text!r}: {label!r} names a baseline row; choose another label")
    targets = default_targets
    if at:
        try:
            targets = tuple(float(t) for t in targets_text.split(","))
        except ValueError:
            parser.error(f"--variant {text!r}: targets must be fractions like @0.25,0.5; {usage}")
        if not all(0 < t < 1 for t in targets):
            parser.error(f"--variant {text!r}: targets are fractions of the range, in (0, 1)")
    return label, (tuple(rest.split()), targets)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="K=8, 1 seed, short budgets (≤10 min)")
    p.add_argument("--space", default=None)
    p.add_argument("--data", default=None)
    p.add_argument("--k", type=int, default=None, help="ground-truth archs")
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None, help="training budget per arch")
    p.add_argument("--lr", type=float, default=None, help="learning rate of those trainings")
    p.add_argument("--train-subset", type=int, default=None, help="cap on training images")
    p.add_argument("--targets", type=float, nargs="+", default=None, help="fractions of range")
    p.add_argument("--random-candidates", type=int, default=None)
    p.add_argument("--calib-archs", type=int, default=None, help="networks for the table fit")
    p.add_argument("--warmup-epochs", type=int, default=None)
    p.add_argument("--search-epochs", type=int, default=None)
    p.add_argument("--arch-lr", type=float, default=None)
    p.add_argument("--arch-every", type=int, default=None)
    p.add_argument("--objective", default=None)
    p.add_argument("--estimators", nargs="+", default=None)
    p.add_argument("--set", nargs="*", default=[], help="extra Hydra overrides (data.root=…)")
    p.add_argument(
        "--search-set",
        nargs="*",
        default=[],
        help="extra Hydra overrides for the searches only (schedule.sampler=sandwich …)",
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="'LABEL: OVERRIDE …'",
        help="a search variant judged beside the plain search (repeatable), e.g. "
        "'zico_init: init.alpha=zico' or 'zeroshot@0.25,0.5,0.75: strategy=zeroshot' "
        "(default target: the middle one)",
    )
    p.add_argument(
        "--first-search-seed",
        type=int,
        default=0,
        help="searches use seeds N … N+S-1 (more search seeds against the same ground truth)",
    )
    p.add_argument("--no-random-search", action="store_true", help="skip that baseline")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--out", default="bench_quality")
    p.add_argument("--cache", default=None, help="ground-truth cache (default <out>/../gt_cache)")
    p.add_argument(
        "--ground-truth-from",
        default=None,
        metavar="ROWS_JSONL",
        help="reuse a stored run's ground truth (archs and accuracies, re-costed with this "
        "machine's table) instead of training one, e.g. "
        "benchmarks/results/search_quality_rows_gt5.jsonl",
    )
    p.add_argument(
        "--ground-truth-only",
        action="store_true",
        help="train (or read from the cache) the ground-truth archs and stop",
    )
    a = p.parse_args(argv)
    s = quick_settings() if a.quick else Settings()
    for name in ("space", "data", "k", "seeds", "objective"):
        if getattr(a, name) is not None:
            setattr(s, name, getattr(a, name))
    if a.estimators:
        s.estimators = tuple(a.estimators)
    if a.epochs is not None:
        s.budget.epochs = a.epochs
    if a.lr is not None:
        s.budget.lr = a.lr
    if a.train_subset is not None:
        s.budget.train_subset = a.train_subset
    if a.targets:
        s.targets = tuple(a.targets)
    if a.random_candidates is not None:
        s.random_candidates = a.random_candidates
    if a.calib_archs is not None:
        s.calib_archs = a.calib_archs
    for name, attr in (
        ("warmup_epochs", "warmup_epochs"),
        ("search_epochs", "epochs"),
        ("arch_lr", "arch_lr"),
        ("arch_every", "arch_every"),
    ):
        if getattr(a, name) is not None:
            setattr(s.search, attr, getattr(a, name))
    s.overrides, s.device, s.threads = tuple(a.set), a.device, a.threads
    s.search_overrides, s.random_search = tuple(a.search_set), not a.no_random_search
    s.first_search_seed = a.first_search_seed
    s.ground_truth_from = a.ground_truth_from
    mid = s.targets[len(s.targets) // 2]
    s.variants = dict(parse_variant(v, p, (mid,)) for v in a.variant)
    out = Path(a.out)
    cache = Path(a.cache) if a.cache else out.parent / "gt_cache"
    try:
        run(s, out, cache, a.workers, a.ground_truth_only)
    except GroundTruthError as e:
        p.error(str(e))


if __name__ == "__main__":
    main()
