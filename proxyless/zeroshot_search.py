"""`strategy=zeroshot`: evolutionary search with a zero-cost proxy as fitness, no training.

Candidates are archs of the configured space, each built with fresh weights and scored once
by the proxy (`proxyless.zeroshot.PROXIES`, default ZiCo) on the same few batches. The cost
target is a hard budget: derived cost <= target, as ZiCo's own search does (it rejects
over-budget candidates before scoring). A proxy that grows with capacity fills the budget
by itself, so no lower bound is needed; summary.json reports how much of it was used.

Writes what a differentiable search writes: config.yaml, run_info.json, costs.json,
arch.json (the best so far, after every checkpoint), checkpoints/last.pt (every
generation of `population` candidates, or `checkpoint.every_steps`), TensorBoard events,
summary.json and the summary table. Candidate c depends only on (seed, c) and the
population it was bred from, so a resumed run ends exactly as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from latency.threads import resolve_threads, torch_threads

from .arch import Arch
from .data import build_datasets
from .distributed import DistContext, init_distributed
from .evolution import BudgetError, mutate, sample_within
from .hardware import Hardware, measured_latency
from .objective import ObjectiveConfig
from .run import (
    RunDir,
    host_memory,
    load_checkpoint,
    save_checkpoint,
    write_json,
    write_run_files,
)
from .search_config import SearchConfig
from .search_report import Reporter, derived_stats, summary_table
from .search_setup import build_space, data_config
from .search_state import SearchError, check_same_run
from .space import SearchSpace
from .zeroshot import PROXIES, Batch, ProxyError

log = logging.getLogger("proxyless.search")
ZEROSHOT_KIND = "proxyless-zeroshot"
MAX_TRIES = 1000  # mutations per candidate before a fresh random arch is drawn instead


@dataclass
class Population:
    """Every arch scored so far (in order, with its score) and the members kept."""

    scored: list[tuple[list[int], float]] = field(default_factory=list)
    members: list[int] = field(default_factory=list)  # positions in `scored`
    rejected: int = 0  # candidates over budget, never scored
    duplicates: int = 0  # candidates already scored, not scored again

    def best(self) -> tuple[list[int], float]:
        return max(self.scored, key=lambda s: s[1])

    def to_dict(self) -> dict[str, Any]:
        return {
            "scored": [[list(a), s] for a, s in self.scored],
            "members": list(self.members),
            "rejected": self.rejected,
            "duplicates": self.duplicates,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Population:
        scored = [(list(a), float(s)) for a, s in d["scored"]]
        return cls(scored, list(d["members"]), d["rejected"], d["duplicates"])


def zeroshot_search(cfg: SearchConfig, ctx: DistContext | None = None) -> Any:
    """Run (or resume) a zero-shot search in `cfg.run_dir`; returns a `SearchResult`."""
    from .search import SearchResult, finished_summary

    t0 = time.time()
    ctx = ctx or init_distributed(cfg.device)
    if ctx.is_distributed:
        raise SearchError("strategy=zeroshot runs in one process: launch it without torchrun")
    hint = "run directory (hydra.run.dir=...)"
    run = RunDir.open(cfg.run_dir, "checkpoints/last.pt", cfg.resume, ctx, SearchError, hint)
    if (summary := finished_summary(cfg)) is not None:  # its files stay as they are
        log.info("%s holds a finished search (summary.json): nothing to do", run.path)
        return SearchResult(summary, Arch.load(run.path / "arch.json"), None, run.path)
    state = load_checkpoint(run.checkpoint, ZEROSHOT_KIND) if run.resuming else None
    if state is not None:
        check_same_run(state["config"], cfg.to_dict(), run.checkpoint)
    write_run_files(run.path, cfg.to_dict(), run.resuming)
    with torch_threads(resolve_threads(cfg.threads)), host_memory(cfg.host_memory):
        z = _ZeroShot(cfg, ctx, run, state)
        z.run()
        metrics, arch = z.result(t0)
    return SearchResult(metrics, arch, None, run.path)  # type: ignore[arg-type]


def proxy_batches(cfg: SearchConfig, space: SearchSpace, train: Dataset | None) -> list[Batch]:
    """The batches a proxy scores on: `zeroshot.batches` batches of `data.batch_size` from a
    loader of its own over the training split (order and augmentation seeded by `seed`, so a
    resumed run scores on the same images; the search's loaders and the global RNG are not
    touched), or N(0, 1) images with uniformly random labels."""
    z, n = cfg.zeroshot, cfg.data.batch_size
    g = torch.Generator().manual_seed(cfg.seed)
    if z.inputs == "random" or train is None:
        shape = (n, space.in_channels, space.input_size, space.input_size)
        return [
            (torch.randn(shape, generator=g), torch.randint(space.num_classes, (n,), generator=g))
            for _ in range(z.batches)
        ]
    out = []
    with torch.random.fork_rng(devices=[]):  # augmentations: seeded, the caller's RNG untouched
        torch.manual_seed(cfg.seed)
        for x, y in DataLoader(train, batch_size=n, shuffle=True, generator=g, drop_last=True):
            out.append((x, y))
            if len(out) == z.batches:
                return out
    raise SearchError(
        f"zeroshot.batches={z.batches} but the training split gives only {len(out)} batch(es) "
        f"of data.batch_size={n}: lower one of them, or use zeroshot.inputs=random"
    )


class _ZeroShot:
    def __init__(
        self, cfg: SearchConfig, ctx: DistContext, run: RunDir, state: dict[str, Any] | None
    ) -> None:
        self.cfg, self.ctx, self.rundir, self.z = cfg, ctx, run, cfg.zeroshot
        data = data_config(cfg)
        if data.heldout_per_class is None:  # no arch steps: no held-out split is needed
            data = dataclasses.replace(data, heldout_per_class=0)
        splits = build_datasets(data)
        self.space = build_space(cfg, splits)
        saved = state["costs"] if state is not None else None
        # The objective is not used (no arch loss); `none` needs no target.
        self.hw = Hardware.resolve(self.space, cfg.hardware, ObjectiveConfig("none"), ctx, saved)
        self.costs, self.budget = self.hw.costs, self.hw.target
        batches = proxy_batches(cfg, self.space, splits.train)
        self.batches = [(x.to(ctx.device), y.to(ctx.device)) for x, y in batches]
        self.proxy = PROXIES.get(self.z.proxy)
        self.pop = Population.from_dict(state["population"]) if state else Population()
        self.seen = {tuple(a) for a, _ in self.pop.scored}
        self.total = self.z.population + self.z.iterations
        every = cfg.checkpoint.every_steps
        self.every = every if every > 0 else self.z.population
        done = len(self.pop.scored)
        self.reporter = Reporter(run.path, cfg.log.tensorboard, done if run.resuming else None)
        show = cfg.log.progress if cfg.log.progress is not None else sys.stderr.isatty()
        self.show, self.last_line = show, time.monotonic()
        if state is not None:
            log.info("resumed %s after %d candidate(s)", run.checkpoint, done)

    # --- the loop ------------------------------------------------------------------------------
    def run(self) -> None:
        write_json(self.rundir.path / "costs.json", self.hw.to_dict())
        log.info(
            "zero-shot search, space %s: %d layers, proxy %s on %d %s batch(es) of %d; "
            "budget cost <= target; %s",
            self.space.name,
            len(self.costs.per_layer),
            self.z.proxy,
            len(self.batches),
            self.z.inputs,
            self.cfg.data.batch_size,
            self.hw.describe(),
        )
        if self.budget is None:
            log.warning("no cost target (hardware.target / target_frac): no budget at all")
        done = self.started = len(self.pop.scored)
        t0 = time.monotonic()
        bar = tqdm(total=self.total, initial=done, desc="zeroshot", disable=not self.show)
        try:
            for c in range(done, self.total):
                arch, score = self.candidate(c)
                best, best_score = self.pop.best()
                bar.update(1)
                bar.set_postfix(best=f"{best_score:.4g}", cost=f"{self.costs.cost_of(best):.4g}")
                self.reporter.scalars(
                    c + 1,
                    {
                        "zeroshot/score": score,
                        "zeroshot/cost": self.costs.cost_of(arch),
                        "zeroshot/best_score": best_score,
                        "zeroshot/best_cost": self.costs.cost_of(best),
                        "zeroshot/rejected": self.pop.rejected,
                    },
                )
                if (c + 1) % self.every == 0 or c + 1 == self.total:
                    self.checkpoint()
                self.progress_line(c + 1, best_score)
                if self.cfg.debug.step_delay_s:
                    time.sleep(self.cfg.debug.step_delay_s)
        except BaseException:
            self.reporter.close()
            raise
        finally:
            bar.close()
            self.scoring_s = time.monotonic() - t0

    def candidate(self, c: int) -> tuple[list[int], float]:
        """Draw candidate `c` (random while the population fills, else a mutated member),
        score it, keep the best `population`."""
        rng = np.random.default_rng([self.cfg.seed, c])
        arch = self.draw(c, rng)
        score = self.score(arch, int(rng.integers(2**62)))
        self.pop.scored.append((arch, score))
        self.seen.add(tuple(arch))
        self.pop.members.append(len(self.pop.scored) - 1)
        if len(self.pop.members) > self.z.population:
            worst = min(self.pop.members, key=lambda i: self.pop.scored[i][1])
            self.pop.members.remove(worst)
        return arch, score

    def draw(self, c: int, rng: np.random.Generator) -> list[int]:
        try:
            for _ in range(MAX_TRIES):
                if c < self.z.population:
                    arch = sample_within(self.costs, self.budget, rng)
                else:
                    parent = self.pop.members[int(rng.integers(len(self.pop.members)))]
                    arch = mutate(self.pop.scored[parent][0], self.costs, self.z.mutation_rate, rng)
                    if self.budget is not None and self.costs.cost_of(arch) > self.budget:
                        self.pop.rejected += 1
                        continue
                if tuple(arch) in self.seen:
                    self.pop.duplicates += 1
                    continue
                return arch
            for _ in range(MAX_TRIES):  # a tight budget: mutations rarely meet it
                arch = sample_within(self.costs, self.budget, rng)
                if tuple(arch) not in self.seen:
                    return arch
                self.pop.duplicates += 1
        except BudgetError as e:
            raise SearchError(str(e)) from None
        raise SearchError(
            f"candidate {c + 1}: no arch under the budget that was not scored already in "
            f"{2 * MAX_TRIES} draws; the budget leaves few archs: raise the target or lower "
            "zeroshot.iterations"
        )

    def score(self, indices: list[int], seed: int) -> float:
        """The proxy of the arch with fresh weights drawn from `seed`."""
        ops = [layer.candidates[i] for layer, i in zip(self.space.layers(), indices, strict=True)]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = Arch(self.space, ops).build().to(self.ctx.device)
        try:
            value = self.proxy(model, self.batches)
        except ProxyError as e:
            raise SearchError(f"zeroshot.proxy={self.z.proxy}: {e}") from None
        return value if math.isfinite(value) else -math.inf  # never kept over a finite score

    def progress_line(self, done: int, best: float) -> None:
        every = self.cfg.log.progress_every_s
        if self.show or every is None or time.monotonic() - self.last_line < every:
            return
        self.last_line = time.monotonic()
        log.info("progress: %d/%d candidates scored, best %s %.4g", done, self.total,
                 self.z.proxy, best)  # fmt: skip

    def best_arch(self) -> Arch:
        indices, _ = self.pop.best()
        ops = [layer.candidates[i] for layer, i in zip(self.space.layers(), indices, strict=True)]
        return Arch(self.space, ops)

    def checkpoint(self) -> None:
        state = {
            "kind": ZEROSHOT_KIND,
            "version": 1,
            "config": self.cfg.to_dict(),
            "candidates": len(self.pop.scored),
            "population": self.pop.to_dict(),
            "costs": self.hw.to_dict(),
        }
        save_checkpoint(self.rundir.checkpoint, state)
        self.best_arch().save(self.rundir.path / "arch.json")

    # --- result --------------------------------------------------------------------------------
    def result(self, t0: float) -> tuple[dict[str, Any], Arch]:
        arch = self.best_arch()
        arch.save(self.rundir.path / "arch.json")
        indices, score = self.pop.best()
        params_m, mflops, mmacs = derived_stats(arch)
        cost, n = self.costs.cost_of(indices), len(self.pop.scored)
        budget = "no budget" if self.budget is None else "cost <= target"
        wall = time.time() - t0
        metrics = {
            "strategy": "zeroshot",
            "arch": arch.block_strings(),
            "derive": f"highest {self.z.proxy} among {n} candidates scored, {budget}",
            "proxy": self.z.proxy,
            "score": score,
            "expected_cost": None,  # no α: nothing is expected
            "derived_cost": cost,
            "budget_used": None if not self.budget else cost / self.budget,
            "measured_latency": measured_latency(arch, self.cfg.hardware),
            "target": self.budget,
            "unit": self.costs.unit,
            "min_cost": self.costs.min_cost(),
            "max_cost": self.costs.max_cost(),
            "params_m": params_m,
            "mflops": mflops,
            "mmacs_conv_linear": mmacs,
            "test_acc": None,  # untrained: train arch.json with proxyless-train
            "candidates": n,
            "rejected_over_budget": self.pop.rejected,
            "duplicates": self.pop.duplicates,
            "steps": n,
            "epochs": 0,
            "cost_source": self.costs.source,
            "calibration": self.costs.calibration,
            "run_dir": str(self.rundir.path),
            "wall_s": wall,
            # this process' candidates (a resumed run: those after the resume) per minute of
            # the candidate loop (drawing, building, scoring; not costs, data or the summary)
            "candidates_per_min": (n - self.started) / max(self.scoring_s, 1e-9) * 60,
        }
        self.reporter.close()
        write_json(self.rundir.path / "summary.json", metrics)
        print(summary_table(metrics), flush=True)
        return metrics, arch


def finished(cfg: SearchConfig, summary: dict[str, Any]) -> bool:
    """Whether `summary` is that of a zero-shot run with all of `cfg`'s candidates."""
    z = cfg.zeroshot
    return summary.get("strategy") == "zeroshot" and summary.get("candidates") == (
        z.population + z.iterations
    )
