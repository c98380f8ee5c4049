"""The search loop: warmup (weights on uniformly sampled paths, α frozen), then epochs in
which every training batch is a weight step and every `arch_every`-th batch also an arch
step on the next held-out batch. Reads top to bottom; the moves themselves live in
`proxyless.steps`, checkpoint contents in `search_state`, reporting in `search_report`.

>>> cfg = SearchConfig(run_dir="/tmp/run")  # doctest: +SKIP
>>> search(cfg).metrics["test_acc"]  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from . import search_state as ckpt
from .arch import Arch
from .costs import measured_latency
from .distributed import (
    DistContext,
    SyncedOptimizer,
    autocast_context,
    barrier,
    broadcast_parameters,
    init_distributed,
    reduce_mean,
    step_generator,
    sync_buffers,
)
from .io import write_json_atomic
from .search_config import SearchConfig
from .search_report import (
    Reporter,
    costs_dict,
    derived_stats,
    epoch_scalars,
    epoch_stats,
    evaluate,
    summary_table,
)
from .search_setup import (
    _prepare_run_dir,
    adopt_saved_costs,
    build_parts,
    prepare_run_dir,
)
from .search_state import SearchError
from .steps import arch_step, weight_step
from .supernet import SuperNet

__all__ = ["SearchConfig", "SearchError", "SearchResult", "prepare_run_dir", "search"]

log = logging.getLogger("proxyless.search")


@dataclass
class SearchResult:
    metrics: dict[str, Any]
    arch: Arch
    net: SuperNet
    run_dir: Path


def _dump_rank(cfg: SearchConfig, ctx: DistContext, net: SuperNet) -> None:
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

    out = Path(cfg.debug.rank_dump_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "rank": ctx.rank,
        "world_size": ctx.world_size,
        "alpha_sha256": digest(alphas),
        "buffers_sha256": digest(buffers),
        "alpha": [a.tolist() for a in alphas],
    }
    write_json_atomic(out / f"rank{ctx.rank}.json", record)


def search(cfg: SearchConfig, ctx: DistContext | None = None) -> SearchResult:
    """Run (or resume) a search; writes arch.json, checkpoints, TensorBoard events and
    summary.json into `cfg.run_dir` and returns the final metrics.

    Under torchrun (or with a distributed `ctx`) every rank runs this: each trains on its
    shard of the train and held-out splits, all ranks sample the same paths (the per-step
    generator), weight and α gradients are averaged before each optimizer step, and only
    rank 0 logs and writes files. `data.batch_size` is per rank."""
    t0 = time.time()
    ctx = ctx or init_distributed(cfg.device)  # joins a torchrun job, else one process
    main = ctx.is_main
    run_dir, last_path, resuming = _prepare_run_dir(cfg)
    config_dict = cfg.to_dict()
    state = ckpt.load(last_path) if resuming else None
    if state is not None:
        ckpt.check_same_run(state["config"], config_dict, last_path)

    device = ctx.device
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(cfg.seed)
    parts = build_parts(cfg, device, ctx)
    if state is not None:
        adopt_saved_costs(parts, state["costs"], cfg)
    net, estimator, costs, target = parts.net, parts.estimator, parts.costs, parts.target
    w_opt, a_opt, sched, heldout = parts.weight_opt, parts.arch_opt, parts.scheduler, parts.heldout
    loaders, train_sampler = parts.loaders, parts.loaders.train.sampler
    o, sch, objective = cfg.optim, cfg.schedule, parts.objective
    per_epoch, total_epochs, space = parts.per_epoch, parts.total_epochs, parts.space

    history: dict[str, Any] = {"epochs": []}
    progress = ckpt.Progress()
    if state is not None:
        progress = ckpt.restore(
            state,
            net=net,
            weight_opt=w_opt,
            arch_opt=a_opt,
            scheduler=sched,
            estimator=estimator,
            heldout=heldout,
        )
        history = state["history"]
        if main:
            log.info(
                "resumed %s: step %d, epoch %d", last_path, progress.global_step, progress.epoch
            )
    broadcast_parameters(net, ctx)  # ranks start equal (same seed; this only makes sure)

    # Distributed: gradients are averaged over ranks inside `step()` (no-op for one process).
    w_step_opt: Any = (
        SyncedOptimizer(w_opt, net.weight_parameters(), ctx) if ctx.is_distributed else w_opt
    )
    a_step_opt: Any = (
        SyncedOptimizer(a_opt, net.arch_parameters(), ctx) if ctx.is_distributed else a_opt
    )
    precision = cfg.precision
    if precision != "fp32" and device.type != "cuda":
        log.warning("precision=%s applies on CUDA only; running fp32 on %s", precision, device)
        precision = "fp32"
    if precision == "fp16":
        log.warning("precision=fp16 has no loss scaling in the search; prefer bf16")

    def amp() -> Any:
        return autocast_context(precision, device)  # type: ignore[arg-type]

    def checkpoint() -> None:
        sync_buffers(net, ctx)  # BN running stats: the average over ranks
        if not main:
            return
        ckpt.save(
            last_path,
            ckpt.make_checkpoint(
                config=config_dict,
                progress=progress,
                net=net,
                weight_opt=w_opt,
                arch_opt=a_opt,
                scheduler=sched,
                estimator=estimator,
                batch_size=cfg.data.batch_size,
                heldout=heldout,
                history=history,
                costs=costs_dict(costs, target),
            ),
        )

    if main:
        write_json_atomic(run_dir / "costs.json", costs_dict(costs, target))
    (log.info if main else log.debug)(
        "space %s: %d searchable layers; cost %s: %.4g … %.4g %s, target %s",
        space.name,
        len(net.layers),
        costs.source,
        costs.min_cost(),
        costs.max_cost(),
        costs.unit,
        target,
    )
    if main and target is not None and target >= costs.max_cost():
        log.warning("target %g ≥ the most expensive arch: it does not bind", target)

    # --- the loop --------------------------------------------------------------------------
    show = cfg.log.progress if cfg.log.progress is not None else sys.stderr.isatty()
    show = show and main
    reporter = Reporter(
        run_dir, cfg.log.tensorboard and main, progress.global_step if resuming else None
    )
    net.train()
    epochs_bar = tqdm(
        range(progress.epoch, total_epochs),
        desc="search",
        disable=not show,
        initial=progress.epoch,
        total=total_epochs,
    )
    try:
        for epoch in epochs_bar:
            warm = epoch < sch.warmup_epochs
            train_sampler.set_epoch(epoch)
            train_sampler.start = progress.step_in_epoch * cfg.data.batch_size
            sums = {"loss": 0.0, "acc": 0.0, "n": 0}
            steps_bar = tqdm(
                total=per_epoch,
                initial=progress.step_in_epoch,
                desc=f"{'warmup' if warm else 'search'} {epoch}",
                disable=not show,
                leave=False,
            )
            for x, y in loaders.train:
                if progress.step_in_epoch >= per_epoch:
                    break
                step = progress.global_step + 1
                gen = step_generator(cfg.seed, step)
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                if cfg.debug.inject_nan_at_step == step:
                    x = torch.full_like(x, float("nan"))
                with amp():
                    loss, logits = weight_step(
                        net, x, y, w_step_opt, gen, uniform=warm, label_smoothing=o.label_smoothing
                    )
                sched.step()
                ckpt.check_finite(loss, "weight-step", step, epoch, last_path)
                scalars = {}
                if not warm and (progress.step_in_epoch + 1) % sch.arch_every == 0:
                    hx, hy = next(heldout)  # type: ignore[arg-type]
                    hx, hy = hx.to(device, non_blocking=True), hy.to(device, non_blocking=True)
                    with amp():
                        task, aloss = arch_step(net, estimator, hx, hy, a_step_opt, gen, objective)
                    ckpt.check_finite(aloss, "arch-step", step, epoch, last_path)
                    with torch.no_grad():
                        expected = float(net.expected_cost())
                    if ctx.is_distributed:
                        task, aloss = reduce_mean(torch.stack([task, aloss]).float(), ctx)
                    scalars.update({"arch/task_loss": float(task), "arch/loss": float(aloss)})
                    scalars["cost/expected"] = expected
                progress.global_step, progress.step_in_epoch = step, progress.step_in_epoch + 1
                acc = float((logits.argmax(1) == y).float().mean())
                sums["loss"] += float(loss)
                sums["acc"] += acc
                sums["n"] += 1
                if step % cfg.log.every_steps == 0 or scalars:
                    log_loss, log_acc = float(loss), acc
                    if ctx.is_distributed:  # the same steps on every rank: all take part
                        both = torch.tensor([log_loss, log_acc], device=device)
                        log_loss, log_acc = reduce_mean(both, ctx).tolist()
                    scalars.update(
                        {"train/loss": log_loss, "train/acc": log_acc, "lr": sched.get_last_lr()[0]}
                    )
                    reporter.scalars(step, scalars)
                steps_bar.update(1)
                steps_bar.set_postfix(loss=f"{float(loss):.3f}", acc=f"{acc:.2f}")
                if cfg.checkpoint.every_steps and step % cfg.checkpoint.every_steps == 0:
                    checkpoint()
                if cfg.debug.step_delay_s:
                    time.sleep(cfg.debug.step_delay_s)
            steps_bar.close()
            progress.epoch, progress.step_in_epoch = epoch + 1, 0
            if ctx.is_distributed:
                mean = reduce_mean(torch.tensor([sums["loss"], sums["acc"]], device=device), ctx)
                sums["loss"], sums["acc"] = mean.tolist()
            sync_buffers(net, ctx)
            stats = epoch_stats(net, epoch, warm, sums, target)
            history["epochs"].append(stats)
            reporter.scalars(progress.global_step, epoch_scalars(stats))
            if cfg.log.heatmap and not warm:
                reporter.heatmap(progress.global_step, net, epoch)
            if main:
                net.derive().save(run_dir / "arch.json")
            checkpoint()
            if main and cfg.checkpoint.keep_warmup and progress.epoch == sch.warmup_epochs:
                shutil.copyfile(last_path, last_path.with_name("warmup.pt"))
            epochs_bar.set_postfix(cost=f"{stats['expected_cost']:.4g}")
            (log.info if main else log.debug)(
                "epoch %d/%d %s: loss %.4f acc %.3f E[cost] %.4g %s (target %s) entropy %.3f",
                epoch + 1,
                total_epochs,
                "warmup" if warm else "search",
                stats["train_loss"],
                stats["train_acc"],
                stats["expected_cost"],
                costs.unit,
                target,
                stats["entropy"],
            )
    finally:
        epochs_bar.close()
        reporter.close()

    # --- result ----------------------------------------------------------------------------
    arch = net.derive()
    if main:
        arch.save(run_dir / "arch.json")
    paths = net.arch_indices(arch)
    sync_buffers(net, ctx)
    test_acc = evaluate(net, loaders.test, device, paths, ctx)
    params_m, mflops = derived_stats(arch)
    measured = measured_latency(arch, cfg.hardware) if main else None
    metrics = {
        "arch": arch.block_strings(),
        "expected_cost": float(net.expected_cost().detach()),
        "derived_cost": costs.cost_of(paths),
        "measured_latency": measured,
        "target": target,
        "unit": costs.unit,
        "min_cost": costs.min_cost(),
        "max_cost": costs.max_cost(),
        "params_m": params_m,
        "mflops": mflops,
        "test_acc": test_acc,
        "steps": progress.global_step,
        "epochs": progress.epoch,
        "cost_source": costs.source,
        "run_dir": str(run_dir),
        "wall_s": time.time() - t0,
    }
    _dump_rank(cfg, ctx, net)
    if main:
        write_json_atomic(run_dir / "summary.json", metrics)
        print(summary_table(metrics), flush=True)
    barrier(ctx)  # the run's files are written when any rank returns
    return SearchResult(metrics, arch, net, run_dir)
