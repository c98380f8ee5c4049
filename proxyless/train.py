"""Train a derived architecture from scratch, or from weights inherited from a search.

The loop reads top to bottom: build the model, data, optimizer; optionally resume; then per
epoch train, evaluate on the test split, write `last.pt` (and `best.pt`), `metrics.json`
and TensorBoard scalars. The learning rate is a pure function of the step (warmup + cosine),
so a resumed run follows exactly the schedule of an uninterrupted one, and a new
`optim.lr` given on resume takes effect instead of being overridden by the checkpoint.

Checkpoints describe themselves (`kind: "train"`, arch, config, position, best metric,
optimizer, EMA and RNG state) and load with ``torch.load(weights_only=True)``. With
``data.num_workers=0`` a resumed run is bit-identical to an uninterrupted one.

>>> cfg = TrainConfig(arch="arch.json", out_dir="runs/x", epochs=1)  # doctest: +SKIP
>>> train(cfg)["best"]["value"]  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .arch import Arch
from .data import DataConfig, build_datasets, build_loaders
from .distributed import (
    DistContext,
    autocast_context,
    barrier,
    broadcast_parameters,
    init_distributed,
    make_grad_scaler,
    reduce_mean,
    sync_buffers,
    wrap_ddp,
)
from .io import CheckpointError, load_checkpoint, run_info, save_checkpoint, write_json_atomic

log = logging.getLogger(__name__)

TRAIN_KIND = "train"
CHECKPOINT_VERSION = 1


class TrainError(RuntimeError):
    """Training cannot go on; the message says why and what to do."""


@dataclass
class OptimConfig:
    """SGD Nesterov + cosine: the ProxylessNAS / MobileNetV2 recipe (lr for batch 256-ish)."""

    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 4e-5
    decay_norm_and_bias: bool = False  # False: no weight decay on BN and biases (official)
    warmup_epochs: float = 0.0
    min_lr: float = 0.0
    grad_clip: float | None = None  # max global grad norm; None disables


@dataclass
class EmaConfig:
    """timm's ModelEmaV3; evaluated beside the raw model and used for the best metric."""

    enabled: bool = False
    decay: float = 0.9998
    warmup: bool = False  # timm's decay warmup: useful for short runs


@dataclass
class InitConfig:
    """`from_search`: a search checkpoint whose supernet weights the chosen ops inherit."""

    from_search: str | None = None


@dataclass
class TrainConfig:
    arch: str = ""
    out_dir: str = "runs/train"
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    init: InitConfig = field(default_factory=InitConfig)
    epochs: int = 300
    label_smoothing: float = 0.1
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "fp32"  # fp32 | bf16 | fp16 autocast on CUDA (fp16 with loss scaling)
    seed: int = 0
    resume: bool = False  # continue from out_dir/last.pt
    max_steps: int | None = None  # stop (with a checkpoint) after this many steps in total
    checkpoint_every: int = 0  # extra mid-epoch checkpoints every N steps; 0: epoch ends only
    log_every: int = 50
    tensorboard: bool = True

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Nested plain dict (e.g. a resolved Hydra config) -> TrainConfig; unknown keys fail."""
        return config_from_dict(cls, d)


def config_from_dict(cls: Any, d: Any, prefix: str = "") -> Any:
    """Build dataclass `cls` from nested dicts, refusing unknown keys by their full name."""
    if not isinstance(d, dict):
        raise TrainError(f"config {prefix.rstrip('.') or 'root'} must be a mapping, got {d!r}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise TrainError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; "
            f"valid keys: {', '.join(prefix + k for k in known)}"
        )
    kwargs = {}
    for name, value in d.items():
        if dataclasses.is_dataclass(hints[name]):
            value = config_from_dict(hints[name], value or {}, f"{prefix}{name}.")
        kwargs[name] = value
    return cls(**kwargs)


# --- building blocks ------------------------------------------------------------------------
def build_model(arch: Arch, from_search: str | Path | None = None) -> nn.Module:
    """The standalone net; with `from_search`, chosen ops inherit the supernet's weights."""
    if from_search is None:
        return arch.build()
    from .search_state import CKPT_KIND
    from .supernet import SuperNet

    state = load_checkpoint(from_search, kind=CKPT_KIND)
    if "net" not in state:
        raise CheckpointError(f"search checkpoint {from_search} holds no 'net' state dict")
    supernet = SuperNet(arch.space)
    try:
        supernet.load_state_dict(state["net"])
    except RuntimeError as e:
        raise CheckpointError(
            f"search checkpoint {from_search} does not match the arch's space "
            f"{arch.space.name!r} ({str(e).splitlines()[0]}); pass the checkpoint of the search "
            "that derived this arch"
        ) from e
    return supernet.extract(arch)


def param_groups(model: nn.Module, weight_decay: float, decay_all: bool) -> list[dict[str, Any]]:
    """Weight decay on conv/linear weights only (unless `decay_all`): BN and biases are 1-D."""
    if decay_all:
        return [{"params": list(model.parameters()), "weight_decay": weight_decay}]
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def lr_at(step: int, total: int, cfg: OptimConfig, warmup_steps: int) -> float:
    """Linear warmup from 0, then cosine from `lr` to `min_lr` at step `total`."""
    if step < warmup_steps:
        return cfg.lr * (step + 1) / warmup_steps
    t = (step - warmup_steps) / max(1, total - warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(t, 1.0)))


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: Any, device: torch.device, ctx: DistContext | None = None
) -> dict[str, float]:
    """Mean cross-entropy, top-1 and top-5 (%) over a whole loader; with a distributed
    `ctx`, over all ranks' shards (DistributedSampler pads them to equal length)."""
    model.eval()
    loss = correct1 = correct5 = count = 0.0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = model(x).float()
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top == y[:, None]
        correct1 += float(hits[:, 0].sum())
        correct5 += float(hits.any(dim=1).sum())
        count += len(y)
    if ctx is not None and ctx.is_distributed:
        sums = torch.tensor([loss, correct1, correct5, count], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(sums)
        loss, correct1, correct5, count = sums.tolist()
    n = max(count, 1.0)
    return {"loss": loss / n, "top1": 100 * correct1 / n, "top5": 100 * correct5 / n}


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))


def _check_data(arch: Arch, num_classes: int, input_size: int) -> None:
    if num_classes != arch.space.num_classes:
        raise TrainError(
            f"the data has {num_classes} classes but the arch's head has "
            f"{arch.space.num_classes}: train on the dataset the arch was searched for, or "
            "search a space with the right num_classes"
        )
    if input_size != arch.space.input_size:
        log.warning(
            "data image size %d differs from the arch's input size %d; the network runs, "
            "but its latency and accuracy differ from what the search assumed",
            input_size,
            arch.space.input_size,
        )


# --- the loop ---------------------------------------------------------------------------------
def train(cfg: TrainConfig, ctx: DistContext | None = None) -> dict[str, Any]:
    """Train `cfg.arch`; returns the metrics also written to `out_dir/metrics.json`.

    Under torchrun (or with a distributed `ctx`) every rank runs this: the model is wrapped
    in DDP, each rank trains on its shard (`data.batch_size` is per rank), and rank 0 alone
    logs and writes files. Every rank loads `last.pt` on resume."""
    if cfg.precision not in ("fp32", "bf16", "fp16"):
        raise TrainError(f"precision={cfg.precision!r}: use fp32, bf16 or fp16")
    ctx = ctx or init_distributed(cfg.device)  # joins a torchrun job, else one process
    main = ctx.is_main
    arch = Arch.load(cfg.arch)
    out = Path(cfg.out_dir)
    last_path, best_path = out / "last.pt", out / "best.pt"
    if not cfg.resume and last_path.exists():
        raise TrainError(
            f"{out} already holds a training run ({last_path.name}); pass resume=true to "
            "continue it, or choose another out_dir"
        )
    resume_state = None
    if cfg.resume:
        if last_path.exists():
            resume_state = load_checkpoint(last_path, kind=TRAIN_KIND)
            if resume_state["arch"] != arch.to_dict():
                raise TrainError(
                    f"{last_path} was trained with a different arch than {cfg.arch}; resume "
                    "with the run's own arch.json, or start a new out_dir"
                )
        else:
            log.info("resume=true but %s does not exist yet: starting a new run", last_path)

    barrier(ctx)  # every rank checked out_dir before rank 0 writes into it
    device = ctx.device
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    model = build_model(arch, cfg.init.from_search).to(device)

    # A derived arch trains on the whole training split: no held-out set unless asked.
    data_cfg = cfg.data
    if data_cfg.heldout_per_class is None:
        data_cfg = dataclasses.replace(data_cfg, heldout_per_class=0)
    splits = build_datasets(data_cfg)
    _check_data(arch, splits.num_classes, splits.input_size)
    loaders = build_loaders(splits, data_cfg, distributed=ctx.is_distributed)
    steps_per_epoch = len(loaders.train)
    total_steps = cfg.epochs * steps_per_epoch
    warmup_steps = round(cfg.optim.warmup_epochs * steps_per_epoch)

    o = cfg.optim
    groups = param_groups(model, o.weight_decay, o.decay_norm_and_bias)
    optimizer = torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov)
    precision = cfg.precision
    if precision != "fp32" and device.type != "cuda":
        log.warning("precision=%s applies on CUDA only; training fp32 on %s", precision, device)
        precision = "fp32"
    scaler = make_grad_scaler(precision, device)  # type: ignore[arg-type]
    ema = None
    if cfg.ema.enabled:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=cfg.ema.decay, use_warmup=cfg.ema.warmup)

    epoch = batch = step = 0
    best: dict[str, Any] = {"metric": "top1", "source": "ema" if ema else "model"}
    best.update(value=None, epoch=None)
    history: list[dict[str, Any]] = []
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
        try:
            optimizer.load_state_dict(resume_state["optimizer"])
        except ValueError as e:
            raise TrainError(
                f"{last_path}: the saved optimizer state does not fit ({e}); resume with the "
                "run's optim.decay_norm_and_bias, or start a new out_dir"
            ) from e
        for group, fresh in zip(optimizer.param_groups, groups, strict=True):
            group.update(weight_decay=fresh["weight_decay"], momentum=o.momentum)  # cfg wins
            group["nesterov"] = o.nesterov
        if ema is not None:
            if resume_state["ema"] is None:
                log.warning("ema.enabled=true on resume, but the run had none: EMA starts now")
            else:
                ema.load_state_dict(resume_state["ema"])
        epoch, batch, step = resume_state["epoch"], resume_state["batch"], resume_state["step"]
        best, history = resume_state["best"], resume_state["history"]
        if resume_state.get("scaler"):
            scaler.load_state_dict(resume_state["scaler"])
        _set_rng_state(resume_state["rng"])
        loaders.train.generator.set_state(resume_state["loader_generator"])
        if main:
            log.info(
                "resumed from %s at epoch %d, batch %d (step %d)", last_path, epoch, batch, step
            )
    broadcast_parameters(model, ctx)  # ranks start equal (same seed or checkpoint)
    net = wrap_ddp(model, ctx)  # trains; `model` (the plain module) is saved and evaluated

    info = {k: v if v is None else str(v) for k, v in run_info().items()}  # plain str: weights_only
    if main:
        out.mkdir(parents=True, exist_ok=True)
        arch.save(out / "arch.json")
        write_json_atomic(out / "config.json", asdict(cfg))
        write_json_atomic(out / "run_info.json", info)
    writer = None
    if cfg.tensorboard and main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"), purge_step=step or None)

    def checkpoint(path: Path) -> None:
        if not main:
            return
        save_checkpoint(
            path,
            {
                "kind": TRAIN_KIND,
                "version": CHECKPOINT_VERSION,
                "arch": arch.to_dict(),
                "config": asdict(cfg),
                "epoch": epoch,  # epochs completed when batch == 0, else the current one
                "batch": batch,  # batches of `epoch` already trained
                "step": step,
                "best": best,
                "history": history,
                "model": model.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "scheduler": {"name": "warmup_cosine", "step": step, "total": total_steps},
                "rng": _rng_state(),
                "loader_generator": loaders.train.generator.get_state(),
                "epoch_loss_sum": float(loss_sum),  # this epoch's batches so far
                "run_info": info,
            },
        )

    def check_finite(loss_sum: torch.Tensor, n: int) -> float:
        """The mean loss so far over all ranks (a collective: every rank calls it at the
        same steps, and all stop together on a non-finite loss)."""
        value = float(reduce_mean(loss_sum, ctx)) / max(n, 1)
        if not math.isfinite(value):
            kept = (
                f"the last good checkpoint is {last_path}"
                if last_path.exists()
                else ("no checkpoint was written yet")
            )
            raise TrainError(
                f"training loss became {value} by step {step} (epoch {epoch}); stopped without "
                f"saving, {kept}: lower optim.lr, set optim.grad_clip, or check the data, then "
                "resume=true"
            )
        return value

    stopped = False
    t_start = time.perf_counter()
    while epoch < cfg.epochs and not stopped:
        net.train()
        sampler = loaders.train.sampler
        sampler.set_epoch(epoch)  # type: ignore[attr-defined]
        sampler.start = batch * data_cfg.batch_size  # type: ignore[attr-defined]
        loss_sum, loss_n = torch.zeros((), device=device), batch
        if resume_state is not None and batch > 0:  # the epoch's loss so far, mid-epoch resume
            loss_sum += resume_state["epoch_loss_sum"]
        t_epoch = time.perf_counter()
        for x, y in loaders.train:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            lr = lr_at(step, total_steps, o, warmup_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast_context(precision, device):  # type: ignore[arg-type]
                loss = F.cross_entropy(net(x), y, label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # DDP averages the gradients over ranks here
            if o.grad_clip is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                ema.update(model, step=step)
            step, batch = step + 1, batch + 1
            loss_sum += loss.detach().float()
            loss_n += 1
            if step % cfg.log_every == 0:
                value = check_finite(loss_sum, loss_n)
                if main:
                    log.info("epoch %d step %d loss %.4f lr %.5f", epoch, step, value, lr)
                if writer is not None:
                    writer.add_scalar("train/loss", value, step)
                    writer.add_scalar("train/lr", lr, step)
            stopped = cfg.max_steps is not None and step >= cfg.max_steps
            if stopped or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
                check_finite(loss_sum, loss_n)
                checkpoint(last_path)
            if stopped:
                if main:
                    log.info("stopped at max_steps=%d (checkpoint %s)", cfg.max_steps, last_path)
                break
        if stopped and batch < steps_per_epoch:
            break
        train_loss = check_finite(loss_sum, loss_n)
        epoch, batch = epoch + 1, 0
        sync_buffers(model, ctx)  # BN stats: the mean over ranks (DDP left each its own)
        record: dict[str, Any] = {
            "epoch": epoch,
            "step": step,
            "train_loss": train_loss,
            "lr": lr_at(step - 1, total_steps, o, warmup_steps),
            "epoch_seconds": time.perf_counter() - t_epoch,
            "test": evaluate(model, loaders.test, device, ctx),
        }
        if ema is not None:
            record["test_ema"] = evaluate(ema.module, loaders.test, device, ctx)
        history.append(record)
        value = record["test_ema" if ema is not None else "test"]["top1"]
        improved = best["value"] is None or value > best["value"]
        if improved:
            best.update(value=value, epoch=epoch)
        (log.info if main else log.debug)(
            "epoch %d/%d: train loss %.4f, test top1 %.2f%% (best %.2f%% @ %d)",
            epoch,
            cfg.epochs,
            train_loss,
            value,
            best["value"],
            best["epoch"],
        )
        if writer is not None:
            for split in ("test", "test_ema"):
                for k, v in record.get(split, {}).items():
                    writer.add_scalar(f"{split}/{k}", v, step)
            writer.add_scalar("train/epoch_loss", train_loss, step)
            writer.flush()
        checkpoint(last_path)
        if improved:
            checkpoint(best_path)
        metrics = _metrics(arch, model, splits.input_shape, best, history, step, epoch, cfg)
        metrics["train_seconds"] = time.perf_counter() - t_start
        if main:
            write_json_atomic(out / "metrics.json", metrics)
    if writer is not None:
        writer.close()
    metrics = _metrics(arch, model, splits.input_shape, best, history, step, epoch, cfg)
    metrics.update(train_seconds=time.perf_counter() - t_start, finished=epoch >= cfg.epochs)
    metrics["checkpoint"] = str(last_path)
    if main:
        write_json_atomic(out / "metrics.json", metrics)
    barrier(ctx)  # the run's files are written when any rank returns
    return metrics


def _metrics(
    arch: Arch,
    model: nn.Module,
    input_shape: tuple[int, int, int],
    best: dict[str, Any],
    history: list[dict[str, Any]],
    step: int,
    epoch: int,
    cfg: TrainConfig,
) -> dict[str, Any]:
    return {
        "arch": arch.block_strings(),
        "params": sum(p.numel() for p in model.parameters()),
        "input_shape": list(input_shape),
        "epochs": cfg.epochs,
        "epoch": epoch,
        "step": step,
        "best": best,
        "final": history[-1] if history else None,
        "history": history,
    }
