"""The search loop: warmup (weights on uniformly sampled paths, or by cost bin with
`warmup.sampler=shift`; α frozen), then epochs in which every training batch is a weight step
and every `arch_every`-th batch also an arch step on the next held-out batch. Reads top to
bottom; the moves themselves live in `proxyless.steps`, checkpoint contents in `search_state`,
reporting in `search_report`, the run machinery shared with training in `proxyless.run`.

>>> cfg = SearchConfig(run_dir="/tmp/run")  # doctest: +SKIP
>>> search(cfg).metrics["test_acc"]  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm

from latency.threads import resolve_threads, torch_threads

from . import search_state as ckpt
from .arch import Arch
from .brief_training import brief_optim, brief_training_accuracy
from .distributed import (
    DistContext,
    barrier,
    broadcast_parameters,
    init_distributed,
    reduce_mean,
    step_generator,
    sync_buffers,
    synced,
)
from .gm_search import GMSearch
from .hardware import measured_latency
from .ranking import BN_CALIB_BATCHES, bn_recalibrated
from .run import (
    Precision,
    RunDir,
    check_finite,
    deterministic,
    evaluate,
    forked_rng,
    frozen_setup_objects,
    host_memory,
    lr_at,
    match_state_layout,
    peak_memory_mb,
    set_lr,
    write_json,
    write_run_files,
)
from .search_config import SearchConfig
from .search_report import Reporter, derived_stats, epoch_scalars, epoch_stats, summary_table
from .search_setup import Parts, build_parts
from .search_state import SearchError
from .shift_sampler import ShiftSampler
from .steps import arch_step, weight_step
from .supernet import SuperNet
from .zeroshot_search import finished as zeroshot_finished
from .zeroshot_search import zeroshot_search

__all__ = ["SearchConfig", "SearchError", "SearchResult", "search"]

log = logging.getLogger("proxyless.search")
NAN_HINT = "Lower optim.lr / optim.arch_lr, or check the data"


@dataclass
class SearchResult:
    metrics: dict[str, Any]
    arch: Arch
    net: SuperNet | None  # None: a zero-shot search (no supernet)
    run_dir: Path


def search(cfg: SearchConfig, ctx: DistContext | None = None) -> SearchResult:
    """Run (or resume) a search; writes config.yaml, run_info.json, arch.json, costs.json,
    checkpoints, TensorBoard events and summary.json into `cfg.run_dir` and returns the
    final metrics. Torch's thread count, deterministic mode and the host-memory setting
    (`host_memory`) are restored on return.

    Under torchrun (or with a distributed `ctx`) every rank runs this: each trains on its
    shard of the train and held-out splits, all ranks sample the same paths (the per-step
    generator), weight and α gradients are averaged before each optimizer step, and only
    rank 0 logs and writes files. `data.batch_size` is per rank."""
    if cfg.strategy == "zeroshot":
        return zeroshot_search(cfg, ctx)  # type: ignore[no-any-return]
    t0 = time.time()
    ctx = ctx or init_distributed(cfg.device)  # joins a torchrun job, else one process
    hint = "run directory (hydra.run.dir=...)"
    run = RunDir.open(cfg.run_dir, "checkpoints/last.pt", cfg.resume, ctx, SearchError, hint)
    if (summary := finished_summary(cfg)) is not None:  # nothing to do: its files stay as they are
        log.info("%s holds a finished search (summary.json): nothing to do", run.path)
        return _finished_result(summary, run)
    state = ckpt.load(run.checkpoint) if run.resuming else None
    if state is not None:
        ckpt.check_same_run(state["config"], cfg.to_dict(), run.checkpoint)
    if ctx.is_main:
        write_run_files(run.path, cfg.to_dict(), run.resuming)
    with (
        torch_threads(resolve_threads(cfg.threads)) as threads,
        deterministic(cfg.deterministic),
        host_memory(cfg.host_memory),
    ):
        log.debug("torch threads: %d", threads)
        torch.manual_seed(cfg.seed)
        parts = build_parts(cfg, ctx, state["costs"] if state is not None else None)
        if state is None and cfg.init.alpha != "normal":
            _warm_start(cfg, parts, run.path if ctx.is_main else None)
        loop = _Search(cfg, ctx, parts, run, state)
        with frozen_setup_objects():
            loop.run()
        return loop.result(t0)


def finished_summary(cfg: SearchConfig) -> dict[str, Any] | None:
    """The summary.json of the finished run that `cfg` (with resume) would continue, else None.

    Cheap (reads summary.json and config.yaml, not the checkpoint), so the CLI asks before
    Hydra writes anything into the run directory. A run is finished when its summary.json
    counts all the epochs of the config and its config.yaml has the same result-relevant
    settings; a changed config is left to the resume check, which names the differences."""
    run_dir = Path(cfg.run_dir)
    paths = [run_dir / n for n in ("summary.json", "config.yaml", "checkpoints/last.pt")]
    if not cfg.resume or not all(p.is_file() for p in paths):
        return None
    try:
        summary = json.loads(paths[0].read_text())
        saved = yaml.safe_load(paths[1].read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return None
    total = cfg.schedule.warmup_epochs + cfg.schedule.epochs
    if not isinstance(summary, dict):
        return None
    if cfg.strategy == "zeroshot":
        if not zeroshot_finished(cfg, summary):
            return None
    elif (
        summary.get("strategy", "differentiable") != "differentiable"
        or summary.get("epochs") != total
    ):
        return None
    if ckpt.config_diffs(saved, cfg.to_dict()):
        return None
    return summary


def _finished_result(summary: dict[str, Any], run: RunDir) -> SearchResult:
    """The finished run's result, read back (nothing is measured, evaluated or written)."""
    arch = Arch.load(run.path / "arch.json")
    if summary.get("strategy") == "zeroshot":
        return SearchResult(summary, arch, None, run.path)
    state = ckpt.load(run.checkpoint)
    net = SuperNet(arch.space, weight_sharing=SuperNet.weight_sharing_of(state["net"]))
    net.load_state_dict(state["net"])
    costs = state["costs"]
    net.set_costs(costs["per_layer"], costs["fixed"])
    return SearchResult(summary, arch, net, run.path)


class _Search:
    """One search run's state and moves; `search()` builds it and runs it."""

    def __init__(
        self,
        cfg: SearchConfig,
        ctx: DistContext,
        parts: Parts,
        run: RunDir,
        state: dict[str, Any] | None,
    ) -> None:
        self.cfg, self.ctx, self.parts, self.rundir = cfg, ctx, parts, run
        self.net, self.hw, self.main = parts.net, parts.hardware, ctx.is_main
        # Distributed: gradients are averaged over ranks inside `step()`.
        self.weight_opt = synced(parts.weight_opt, self.net.weight_parameters(), ctx)
        self.arch_opt = synced(parts.arch_opt, self.net.arch_parameters(), ctx)
        self.precision = Precision.resolve(cfg.precision, ctx.device, log)
        if self.precision.name == "fp16":
            log.warning("precision=fp16 has no loss scaling in the search; prefer bf16")
        self.fmt = parts.memory_format  # of the batches: the net's (`run.resolve_memory_format`)
        # The first non-finite weight-step loss (its step, 0: none, and value), kept on the
        # device so that a step needs no host sync; `guard()` reads it before anything is
        # written, before every arch step and at log steps.
        self.bad_step = torch.zeros((), dtype=torch.long, device=ctx.device)
        self.bad_loss = torch.zeros((), device=ctx.device)
        self.history: dict[str, Any] = {"epochs": []}
        self.heldout_sums: list[float] = [0.0, 0]  # this epoch's arch steps: acc sum, count
        self.progress = ckpt.Progress()
        self.shift: ShiftSampler | None = None
        if state is not None:
            self._restore(state)
        self.shift = self._shift_sampler(state)  # after the restore: a pruned net's members
        # gm.splits: the split tree (None: one supernet, the plain search)
        self.gm = GMSearch(self, state and state.get("gm")) if cfg.gm.splits else None
        broadcast_parameters(self.net, ctx)  # ranks start equal (same seed; this makes sure)
        purge = self.progress.global_step if run.resuming else None
        self.reporter = Reporter(run.path, cfg.log.tensorboard and self.main, purge)
        show = cfg.log.progress if cfg.log.progress is not None else sys.stderr.isatty()
        self.show = show and self.main
        self.last_line = time.monotonic()  # without bars: when the last progress line went out
        self.last_heatmap = time.monotonic()  # when the last heatmap was drawn (or the start)

    def _restore(self, state: dict[str, Any]) -> None:
        self.load(state)
        if self.main:
            g = self.progress
            log.info(
                "resumed %s after %d epoch(s), at step %d",
                self.rundir.checkpoint,
                g.epoch,
                g.global_step,
            )

    def load(self, state: dict[str, Any]) -> None:
        """Put a checkpoint's search state into the net, optimisers, estimator and loaders
        (a resume, or a GM sub-supernet taking its turn)."""
        p = self.parts
        self.progress = ckpt.restore(
            state,
            net=p.net,
            weight_opt=p.weight_opt,
            arch_opt=p.arch_opt,
            estimator=p.estimator,
            heldout=p.heldout,
        )
        match_state_layout(p.weight_opt)
        self.history = state["history"]
        if self.shift is not None and state.get("shift") is not None:
            self.shift.load_state_dict(state["shift"])  # a GM child: its parent's sampler

    @property
    def per_epoch(self) -> int:
        """Weight steps per epoch: all batches, or a GM sub-supernet's share of them."""
        per_epoch = self.parts.per_epoch
        return per_epoch if self.gm is None else self.gm.node.share(per_epoch)

    def lr_step(self) -> int:
        """The step of the plain schedule whose learning rate the next weight step takes."""
        step = self.progress.global_step
        return step if self.gm is None else self.gm.node.lr_step(step)

    def _shift_sampler(self, state: dict[str, Any] | None) -> ShiftSampler | None:
        """warmup.sampler=shift: bins of this search's costs over the layers' members; a
        resumed run takes its saved bins, probabilities and window."""
        w = self.cfg.warmup
        if w.sampler != "shift":
            return None
        costs = self.hw.costs
        shift = ShiftSampler(
            costs.per_layer,
            costs.fixed,
            [layer.members() for layer in self.net.layers],
            bins=w.bins,
            ema=w.ema,
            temperature=w.temperature,
            epsilon=w.epsilon,
            seed=self.cfg.seed,
            device=self.ctx.device,
            unit=costs.unit,
        )
        if state is not None and state.get("shift") is not None:
            shift.load_state_dict(state["shift"])
        return shift

    def guard(self, epoch: int) -> None:
        """Stop (raise) if a weight step since the last check had a non-finite loss: one host
        sync. Called before anything is written, so no file holds post-NaN state."""
        bad_step = int(self.bad_step)
        if bad_step:
            check_finite(
                float(self.bad_loss),
                "weight-step",
                bad_step,
                epoch + 1,
                self.rundir.checkpoint,
                NAN_HINT,
                SearchError,
            )

    def state(self) -> dict[str, Any]:
        """The checkpoint of this moment (tensors are the live ones: save or copy it)."""
        p = self.parts
        state = ckpt.make_checkpoint(
            config=self.cfg.to_dict(),
            progress=self.progress,
            net=p.net,
            weight_opt=p.weight_opt,
            arch_opt=p.arch_opt,
            estimator=p.estimator,
            heldout=p.heldout,
            history=self.history,
            costs=self.hw.to_dict(),
            total_steps=p.total_steps,
            shift=self.shift.state_dict() if self.shift is not None else None,
        )
        if self.gm is not None:
            state["gm"] = self.gm.state()
        return state

    def checkpoint(self) -> None:
        sync_buffers(self.net, self.ctx)  # BN running stats: the average over ranks
        if self.shift is not None:
            self.shift.sync_window(self.ctx)
        if not self.main:
            return
        state = self.state()
        ckpt.save(self.rundir.checkpoint, state)
        g = self.progress
        at_warmup_end = g.epoch == self.cfg.schedule.warmup_epochs and g.step_in_epoch == 0
        at_warmup_end &= self.gm is None or self.gm.node.id == "root"  # not a GM child's start
        if self.cfg.checkpoint.keep_warmup and at_warmup_end:  # before any arch step
            ckpt.save(self.rundir.checkpoint.with_name("warmup.pt"), state)

    # --- the loop ------------------------------------------------------------------------------
    def run(self) -> None:
        if self.main:
            write_json(self.rundir.path / "costs.json", self.hw.to_dict())
        (log.info if self.main else log.debug)(
            "space %s: %d searchable layers; %s",
            self.parts.space.name,
            len(self.net.layers),
            self.hw.describe(),
        )
        total = self.parts.total_epochs
        self.net.train()
        bar = tqdm(desc="search", disable=not self.show, initial=self.progress.epoch, total=total)
        try:
            while True:  # one supernet; with gm.splits, each of the tree's in turn
                stop = total if self.gm is None else self.gm.stop_epoch(total)
                for epoch in range(self.progress.epoch, stop):
                    stats = self.epoch(epoch)
                    bar.n = epoch + 1
                    bar.set_postfix(cost=f"{stats['expected_cost']:.4g}")
                if self.gm is None or not self.gm.advance():
                    break
        except BaseException:
            self.reporter.close()  # `result()` closes it after a run that ends normally
            raise
        finally:
            bar.close()

    def epoch(self, epoch: int) -> dict[str, Any]:
        """One epoch of weight steps (and arch steps after warmup); returns its stats."""
        cfg, g = self.cfg, self.progress
        warm = epoch < cfg.schedule.warmup_epochs
        sampler = self.parts.loaders.train.sampler
        sampler.set_epoch(epoch)  # type: ignore[attr-defined]
        sampler.start = g.step_in_epoch * cfg.data.batch_size  # type: ignore[attr-defined]
        zero = torch.zeros((), dtype=torch.float64, device=self.ctx.device)
        sums: dict[str, Any] = {"loss": zero.clone(), "acc": zero.clone(), "n": 0}  # on device
        per_epoch = self.per_epoch
        desc = f"{'warmup' if warm else 'search'} {epoch + 1}"
        if self.gm is not None:
            desc += f" ({self.gm.node.id})"
        bar = tqdm(total=per_epoch, initial=g.step_in_epoch, desc=desc, disable=not self.show)
        for x, y in self.parts.loaders.train:
            if g.step_in_epoch >= per_epoch:
                break
            loss, acc, logged = self.step(x, y, epoch, warm)
            sums["loss"] += loss
            sums["acc"] += acc
            sums["n"] += 1
            bar.update(1)
            if logged is not None:  # synced values of a log step; none read in between
                bar.set_postfix(loss=f"{logged[0]:.3f}", acc=f"{logged[1]:.2f}")
            self.progress_line(epoch, warm, loss)
        bar.close()
        self.guard(epoch)
        return self.end_epoch(epoch, warm, sums)

    def progress_line(self, epoch: int, warm: bool, loss: torch.Tensor) -> None:
        """Without progress bars (no terminal: a log file, a batch job), one line every
        `log.progress_every_s` seconds, so a long run shows it is alive and how far it is."""
        every = self.cfg.log.progress_every_s
        if self.show or not self.main or every is None:
            return
        now = time.monotonic()
        if now - self.last_line < every:
            return
        self.last_line = now
        g = self.progress
        log.info(
            "progress: epoch %d/%d (%s) step %d/%d, global step %d, loss %.4f",
            epoch + 1,
            self.parts.total_epochs,
            "warmup" if warm else "search",
            g.step_in_epoch,
            self.per_epoch,
            g.global_step,
            float(loss),  # a host sync, every `progress_every_s` only
        )

    def step(
        self, x: torch.Tensor, y: torch.Tensor, epoch: int, warm: bool
    ) -> tuple[torch.Tensor, torch.Tensor, list[float] | None]:
        """One weight step, and an arch step every `arch_every` batches after warmup.

        Returns the step's loss and accuracy as device tensors (float64; reading them would
        cost a host sync), and at log steps their synced means over ranks (else None)."""
        cfg, g, dev = self.cfg, self.progress, self.ctx.device
        step = g.global_step + 1
        gen = step_generator(cfg.seed, step)
        x = x.to(dev, non_blocking=True, memory_format=self.fmt)
        y = y.to(dev, non_blocking=True)
        if cfg.debug.inject_nan_at_step == step:
            x = torch.full_like(x, float("nan"))
        lr = lr_at(self.lr_step(), self.parts.total_steps, cfg.optim, self.parts.per_epoch)
        set_lr(self.parts.weight_opt, lr)
        # sandwich: an anchor path on every other step (for `sandwich_epochs` epochs), the
        # anchors in turn
        until = cfg.schedule.sandwich_epochs
        sandwich = cfg.schedule.sampler == "sandwich" and (until is None or epoch < until)
        anchored = sandwich and step % 2 == 1
        teacher = None
        if cfg.schedule.distill and sandwich and not anchored:
            teacher = self.teacher(x)
        shift_bin = None  # warmup.sampler=shift: the cost bin this step's path was drawn from
        if anchored:
            anchors = cfg.schedule.anchors
            self.net.set_paths(self.net.anchor_path(anchors[(step // 2) % len(anchors)], gen))
        elif warm and self.shift is not None:
            shift_bin, path = self.shift.draw(gen)
            self.net.set_paths(path)
        with self.precision.autocast():
            loss, logits = weight_step(
                self.net,
                x,
                y,
                self.weight_opt,
                gen,
                warm or cfg.schedule.search_paths == "uniform",
                cfg.optim.label_smoothing,
                resample=not anchored and shift_bin is None,
                teacher=teacher,
            )
        first_bad = (self.bad_step == 0) & ~torch.isfinite(loss)
        self.bad_step = torch.where(first_bad, step, self.bad_step)
        self.bad_loss = torch.where(first_bad, loss.float(), self.bad_loss)
        if shift_bin is not None:
            self.shift.record(shift_bin, loss)  # type: ignore[union-attr]
        if warm and self.shift is not None and step % cfg.warmup.update_every == 0:
            self.guard(epoch)  # a NaN loss must not reach p
            self.reporter.scalars(step, self.shift_update())
        scalars = {}
        if not warm and (g.step_in_epoch + 1) % cfg.schedule.arch_every == 0:
            self.guard(epoch)  # α must not learn from (or sample with) NaN weights
            scalars = self.arch(gen, step, epoch)
            self.heldout_sums[0] += scalars["heldout/acc"]
            self.heldout_sums[1] += 1
        g.global_step, g.step_in_epoch = step, g.step_in_epoch + 1
        loss = loss.double()
        acc = (logits.argmax(1) == y).double().mean()
        logged = None
        if step % cfg.log.every_steps == 0 or scalars:
            self.guard(epoch)
            # the same steps on every rank: all take part in the mean
            logged = reduce_mean(torch.stack([loss, acc]), self.ctx).tolist()
            scalars.update({"train/loss": logged[0], "train/acc": logged[1], "lr": lr})
            self.reporter.scalars(step, scalars)
        if cfg.checkpoint.every_steps and step % cfg.checkpoint.every_steps == 0:
            self.guard(epoch)
            self.checkpoint()
        if cfg.debug.step_delay_s:
            time.sleep(cfg.debug.step_delay_s)
        return loss, acc, logged

    def teacher(self, x: torch.Tensor) -> torch.Tensor:
        """The largest path's class probabilities for `x` (schedule.distill). BatchNorm runs
        on batch statistics as in every train step; the running statistics it updates are
        re-estimated wherever a path is evaluated."""
        self.net.set_paths(self.net.largest_path())
        with torch.no_grad(), self.precision.autocast():
            return self.net(x).float().softmax(1)

    def shift_update(self) -> dict[str, float]:
        """New bin probabilities from the window's losses (one host sync); their scalars."""
        assert self.shift is not None
        p = self.shift.update(self.ctx)
        scalars = {f"shift/p_{k}": v for k, v in enumerate(p)}
        if self.shift.hit_rate is not None:
            scalars["shift/hit_rate"] = self.shift.hit_rate
        return scalars

    def arch(self, gen: torch.Generator, step: int, epoch: int) -> dict[str, float]:
        """One arch step on the next held-out batch; returns its scalars."""
        dev = self.ctx.device
        hx, hy = next(self.parts.heldout)  # type: ignore[call-overload]
        hx = hx.to(dev, non_blocking=True, memory_format=self.fmt)
        hy = hy.to(dev, non_blocking=True)
        batch: dict[str, torch.Tensor] = {}
        with self.precision.autocast():
            task, loss = arch_step(
                self.net,
                self.parts.estimator,
                hx,
                hy,
                self.arch_opt,
                gen,
                self.hw.objective,
                stats=batch,
            )
        with torch.no_grad():
            expected = self.net.expected_cost().detach().reshape(())
        # one host sync for the step's four numbers
        mine = torch.stack([task.float(), loss.float(), batch["acc"], expected.float()])
        _, own_loss, _, expected_v = mine.tolist()
        check_finite(
            own_loss, "arch-step", step, epoch + 1, self.rundir.checkpoint, NAN_HINT, SearchError
        )
        task_v, loss_v, acc_v = reduce_mean(mine[:3], self.ctx).tolist()
        return {
            "arch/task_loss": task_v,
            "arch/loss": loss_v,
            "heldout/acc": acc_v,  # the sampled path on this held-out batch
            "cost/expected": expected_v,
        }

    def end_epoch(self, epoch: int, warm: bool, sums: dict[str, Any]) -> dict[str, Any]:
        """Epoch stats (over ranks), arch.json, a checkpoint, and the log line."""
        g, net = self.progress, self.net
        g.epoch, g.step_in_epoch = epoch + 1, 0
        device = self.ctx.device
        pair = torch.stack([sums["loss"], sums["acc"]]).to(device, torch.float64)
        mean = reduce_mean(pair, self.ctx)
        sums["loss"], sums["acc"] = mean.tolist()
        sync_buffers(net, self.ctx)
        stats = epoch_stats(net, epoch, warm, sums, self.hw.target, self.cfg.derive.tolerance)
        n_held = self.heldout_sums[1]
        stats["heldout_acc"] = self.heldout_sums[0] / n_held if n_held else None
        if self.gm is not None:
            stats["gm_node"] = self.gm.node.id
        self.heldout_sums = [0.0, 0]
        self.history["epochs"].append(stats)
        if warm and self.shift is not None and epoch + 1 == self.cfg.schedule.warmup_epochs:
            self.history["shift"] = self.shift.summary()
            (log.info if self.main else log.debug)("end of warmup: %s", self.shift.describe())
        self.reporter.scalars(g.global_step, epoch_scalars(stats))
        if self.cfg.log.heatmap and not warm and self.main and self.heatmap_due(epoch):
            title = f"p per layer after epoch {epoch + 1}/{self.parts.total_epochs}"
            self.reporter.heatmap(g.global_step, net, title, self.rundir.path / "heatmap.png")
        if self.main:
            self.derive().save(self.rundir.path / "arch.json")
        self.checkpoint()
        (log.info if self.main else log.debug)(
            "epoch %d/%d %s: loss %.4f acc %.3f E[cost] %.4g %s (target %.4g) entropy %.3f",
            epoch + 1,
            self.parts.total_epochs,
            stats["phase"],
            stats["train_loss"],
            stats["train_acc"],
            stats["expected_cost"],
            self.hw.costs.unit,
            self.hw.target if self.hw.target is not None else float("nan"),
            stats["entropy"],
        )
        return stats

    def heatmap_due(self, epoch: int) -> bool:
        """Whether this search epoch draws the heatmap: once `log.heatmap_every_s` has passed
        since the last drawing (or the start), and always at the last epoch. A drawing holds
        the GIL against the loop for ~0.1 s (0.5 s more the first time): drawn after every
        ~1.5-s quickstart epoch, it cost ~17% of the epoch's wall time (interleaved runs,
        `benchmarks/quickstart_epoch.py`), for pictures no one can follow at that rate."""
        now = time.monotonic()
        last = epoch + 1 == self.parts.total_epochs
        if last or now - self.last_heatmap >= self.cfg.log.heatmap_every_s:
            self.last_heatmap = now
            return True
        return False

    # --- result --------------------------------------------------------------------------------
    def derive(self) -> Arch:
        return self.net.derive(self.hw.target, self.cfg.derive.tolerance)

    def derive_rule(self) -> str:
        d = self.cfg.derive
        tol, n = d.tolerance, d.candidates
        if self.hw.target is None or tol is None:
            return "argmax per layer"
        if n > 1:
            how = (
                "inherited weights"
                if d.judge == "inherited"
                else f"each trained from scratch for {d.train_epochs} epochs"
            )
            return (
                f"best held-out accuracy ({how}) of the {n} most probable "
                f"within ±{tol:.0%} of the target"
            )
        return f"most probable within ±{tol:.0%} of the target"

    def heldout_accuracy(self, arch: Arch) -> float:
        """`arch`'s held-out top-1 (fraction) with the supernet's weights, BatchNorm
        re-estimated for its path on the same training batches whichever arch is scored
        (the first of the pass after the last epoch); the net's paths and statistics and the
        global RNGs come back unchanged. The judge of GM leaves and `derive.candidates`
        (`derive.judge=inherited`)."""
        net, dev, fmt = self.net, self.ctx.device, self.fmt
        if self.parts.loaders.heldout is None:
            raise SearchError(
                "scoring archs needs a held-out split: set data.heldout_per_class > 0"
            )
        sync_buffers(net, self.ctx)
        saved = net.active_paths()
        net.set_paths(net.arch_indices(arch))
        sampler = self.parts.loaders.train.sampler
        try:
            with forked_rng(dev):
                sampler.set_epoch(self.parts.total_epochs)  # type: ignore[attr-defined]
                sampler.start = 0  # type: ignore[attr-defined]
                calib = itertools.islice(
                    (x.to(memory_format=fmt) for x, _ in self.parts.loaders.train),
                    BN_CALIB_BATCHES,
                )
                with bn_recalibrated(net, calib, dev):
                    return evaluate(net, self.parts.loaders.heldout, self.ctx, fmt)["top1"] / 100
        finally:
            net.set_paths(saved)

    def trained_accuracy(self, arch: Arch) -> float:
        """`arch`'s held-out top-1 (fraction) after `derive.train_epochs` of training from
        scratch on the search's training split (`derive.judge=train`); the search's state
        comes back unchanged."""
        d, o = self.cfg.derive, self.cfg.optim
        loaders = self.parts.loaders
        assert loaders.heldout is not None  # SearchConfig refuses candidates without one
        return brief_training_accuracy(
            arch,
            loaders.train,
            loaders.heldout,
            self.ctx,
            epochs=d.train_epochs,
            optim=brief_optim(o, d.train_lr),
            seed=self.cfg.seed,
            label_smoothing=o.label_smoothing,
            memory_format=self.fmt,
        )

    def final_arch(self) -> tuple[Arch, list[dict[str, Any]]]:
        """The arch the search returns, and the candidates it was picked from (none when α
        alone decides). With `derive.candidates` = M > 1, α proposes and the supernet
        disposes: the M most probable archs within the cost window are each scored by
        `heldout_accuracy` (`derive.judge=inherited`) or `trained_accuracy` (train), and the
        best wins (ties: the more probable). Why: at equal cost α separates its top archs by
        small margins that its gradients, averaged over a drifting supernet, need not have
        earned; the trained weights judge the few finalists directly, as one-shot methods
        judge archs — or short trainings from scratch do, which judge the standalone nets
        (on the clutter benchmark too short to rank them: README)."""
        d = self.cfg.derive
        archs = self.net.most_probable(self.hw.target, d.tolerance, d.candidates)
        if d.candidates > 1 and (self.hw.target is None or d.tolerance is None) and self.main:
            log.warning(
                "derive.candidates=%d is ignored: without a cost target and derive.tolerance "
                "the arch is argmax per layer (one arch)",
                d.candidates,
            )
        if d.candidates == 1 or len(archs) == 1:
            return archs[0], []
        with torch.no_grad():
            log_probs = [p.clamp_min(1e-30).log().tolist() for p in self.net.probabilities()]
        judge = self.heldout_accuracy if d.judge == "inherited" else self.trained_accuracy
        rows: list[dict[str, Any]] = []
        for rank, arch in enumerate(archs):
            idx = self.net.arch_indices(arch)
            rows.append(
                {
                    "arch": arch.block_strings(),
                    "cost": self.hw.costs.cost_of(idx),
                    "log_prob": sum(lp[i] for lp, i in zip(log_probs, idx, strict=True)),
                    "heldout_acc": judge(arch),
                }
            )
            (log.info if self.main else log.debug)(
                "derive: candidate %d/%d %s: cost %.4g %s, log p %.3f, held-out acc %.4f",
                rank + 1, len(archs), " ".join(rows[-1]["arch"]), rows[-1]["cost"],
                self.hw.costs.unit, rows[-1]["log_prob"], rows[-1]["heldout_acc"],
            )  # fmt: skip
        best = max(range(len(rows)), key=lambda i: (rows[i]["heldout_acc"], -i))
        rows[best]["chosen"] = True
        return archs[best], rows

    def result(self, t0: float) -> SearchResult:
        """Derive, evaluate the derived path, write summary.json (rank 0)."""
        net, costs, run_dir, main = self.net, self.hw.costs, self.rundir.path, self.main
        arch, candidates = self.final_arch()
        if main:
            arch.save(run_dir / "arch.json")
        paths = net.arch_indices(arch)
        sync_buffers(net, self.ctx)
        net.set_paths(paths)
        # The derived path's BatchNorms hold statistics of whatever paths ran through them
        # (with the sandwich rule mostly the largest path); re-estimate them for this path,
        # as one-shot methods do, or the accuracy reported here says little (digits: 0.75
        # without, like a plain network with).
        calib = itertools.islice(
            (x.to(memory_format=self.fmt) for x, _ in self.parts.loaders.train), BN_CALIB_BATCHES
        )
        with bn_recalibrated(net, calib, self.ctx.device):
            test = evaluate(net, self.parts.loaders.test, self.ctx, self.fmt)
        params_m, mflops, mmacs = derived_stats(arch)
        metrics = {
            "arch": arch.block_strings(),
            "expected_cost": float(net.expected_cost().detach()),
            "derived_cost": costs.cost_of(paths),
            "measured_latency": measured_latency(arch, self.cfg.hardware) if main else None,
            "target": self.hw.target,
            "derive": self.derive_rule(),
            "derive_candidates": candidates,  # empty: α alone picked the arch
            "unit": costs.unit,
            "min_cost": costs.min_cost(),
            "max_cost": costs.max_cost(),
            "params_m": params_m,
            "mflops": mflops,  # fvcore's total
            "mmacs_conv_linear": mmacs,  # the papers' FLOPs
            "test_acc": test["top1"] / 100,
            "steps": self.progress.global_step,
            "epochs": self.progress.epoch,
            "cost_source": costs.source,
            "calibration": costs.calibration,  # None: raw table sums (or not a latency table)
            "run_dir": str(run_dir),
            "wall_s": time.time() - t0,
            "peak_mem_mb": peak_memory_mb(self.ctx.device),
        }
        if self.shift is not None:  # warmup.sampler=shift: bins, final p, bin-hit rate
            metrics["shift"] = self.shift.summary()
        if self.gm is not None:
            metrics["gm"] = self.gm.summary()
        _dump_rank(self.cfg, self.ctx, net, arch, candidates, self.shift)
        self.reporter.scalars(self.progress.global_step, {"test/acc": metrics["test_acc"]})
        self.reporter.close()
        if main:
            write_json(run_dir / "summary.json", metrics)
            print(summary_table(metrics), flush=True)
        barrier(self.ctx)  # the run's files are written when any rank returns
        return SearchResult(metrics, arch, net, run_dir)


def _warm_start(cfg: SearchConfig, parts: Parts, run_dir: Path | None) -> None:
    """init.alpha=<proxy>: α from proxy scores (`proxyless.warm_start`); the global RNG is
    left as it was, so the run differs from a plain one only in its starting α. Writes
    init_alpha.json (scores, α) into the run directory."""
    from .warm_start import alpha_from_scores, candidate_scores, kept_candidates, set_alpha
    from .zeroshot import PROXIES
    from .zeroshot_search import proxy_batches

    t0 = time.time()
    dev = parts.net.layers[0].alpha.device
    with torch.random.fork_rng(devices=[]):
        batches = proxy_batches(cfg, parts.space, parts.loaders.train.dataset)
        batches = [(x.to(dev), y.to(dev)) for x, y in batches]
        gen = torch.Generator().manual_seed(cfg.seed)
        proxy = PROXIES.get(cfg.init.alpha)
        scores = candidate_scores(parts.net, proxy, batches, cfg.init.paths, gen)
    alphas = alpha_from_scores(scores, cfg.init.temperature)
    set_alpha(parts.net, alphas)
    kept = None
    if cfg.prune.keep is not None:  # the k best by score (α is monotone in it), target kept
        costs, target = parts.hardware.costs, parts.hardware.target
        per_layer = costs.per_layer
        keep, added = kept_candidates(alphas, cfg.prune.keep, per_layer, costs.fixed, target)
        kept = []
        for layer, top in zip(parts.net.layers, keep, strict=True):
            layer.restrict(top)
            kept.append([str(layer.spec.candidates[j]) for j in top])
        if added:
            log.info(
                "prune.keep=%d: the best per layer leave no arch within the target %.4g %s; "
                "kept the cheapest candidate of layer(s) %s too",
                cfg.prune.keep,
                target,
                costs.unit,
                ", ".join(map(str, sorted(set(added)))),
            )
        cheapest = costs.fixed + sum(
            min(c[j] for j in k) for c, k in zip(per_layer, keep, strict=True)
        )
        if target is not None and cheapest > target:
            log.warning(
                "prune.keep=%d: the cheapest arch of the space costs %.4g %s, over the target "
                "%.4g; the derived arch will miss it (raise the target)",
                cfg.prune.keep,
                cheapest,
                costs.unit,
                target,
            )
    log.info("init.alpha=%s: α from %d proxy scores in %.1f s", cfg.init.alpha,
             sum(map(len, scores)) * cfg.init.paths, time.time() - t0)  # fmt: skip
    if run_dir is not None:
        record = {
            "proxy": cfg.init.alpha,
            "scores": scores,
            "alpha": [a.tolist() for a in alphas],
            "kept": kept,  # prune.keep: the candidates left per layer (None: all)
        }
        write_json(run_dir / "init_alpha.json", record)


def _dump_rank(
    cfg: SearchConfig,
    ctx: DistContext,
    net: SuperNet,
    arch: Arch,
    candidates: list[dict[str, Any]],
    shift: ShiftSampler | None = None,
) -> None:
    """debug.rank_dump_dir: what each rank ended with, to check that ranks agree."""
    if not cfg.debug.rank_dump_dir:
        return
    alphas = [a.detach().cpu().double() for a in net.arch_parameters()]
    buffers = [b.detach().cpu() for b in net.buffers()]

    def digest(ts: list[torch.Tensor]) -> str:
        h = hashlib.sha256()
        for t in ts:
            h.update(t.contiguous().numpy().tobytes())
        return h.hexdigest()

    record = {
        "rank": ctx.rank,
        "world_size": ctx.world_size,
        "alpha_sha256": digest(alphas),
        "buffers_sha256": digest(buffers),
        "alpha": [a.tolist() for a in alphas],
        "shift_p": shift.p if shift is not None else None,  # warmup.sampler=shift
        "arch": arch.block_strings(),
        "candidate_heldout_acc": [c["heldout_acc"] for c in candidates],  # derive.candidates
    }
    write_json(Path(cfg.debug.rank_dump_dir) / f"rank{ctx.rank}.json", record)
