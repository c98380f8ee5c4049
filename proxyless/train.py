"""Train a derived architecture from scratch, or from weights inherited from a search.

`train()` reads top to bottom: open the run directory, build the model, data and optimizer,
optionally resume, then per epoch train, evaluate on the test split, write `last.pt` (and
`best.pt`), `metrics.json` and TensorBoard scalars. The learning rate is a pure function of
the step (warmup + cosine, `run.lr_at`), so a resumed run follows exactly the schedule of an
uninterrupted one, and a new `optim.lr` given on resume takes effect instead of being
overridden by the checkpoint.

Checkpoints describe themselves (`kind: "train"`, arch, config, position, best metric,
optimizer, EMA and RNG state) and load with ``torch.load(weights_only=True)``. With
``data.num_workers=0`` a resumed run is bit-identical to an uninterrupted one.

>>> cfg = TrainConfig(arch="arch.json", out_dir="runs/x", epochs=1)  # doctest: +SKIP
>>> train(cfg)["best"]["value"]  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from latency.config_dict import ConfigError, from_dict
from latency.threads import resolve_threads, torch_threads

from .arch import Arch, resolve_arch
from .data import DataConfig, build_datasets, build_loaders
from .distributed import (
    DistContext,
    barrier,
    broadcast_parameters,
    init_distributed,
    reduce_mean,
    sync_buffers,
    wrap_ddp,
)
from .run import (
    HOST_MEMORY,
    MEMORY_FORMATS,
    PRECISIONS,
    SEARCH_KIND,
    TRAIN_KIND,
    CheckpointError,
    Precision,
    RunDir,
    SGDConfig,
    check_finite,
    evaluate,
    frozen_setup_objects,
    host_memory,
    load_checkpoint,
    lr_at,
    match_state_layout,
    param_groups,
    resolve_memory_format,
    rng_state,
    save_checkpoint,
    seed_all,
    set_lr,
    set_rng_state,
    sgd,
    write_json,
    write_run_files,
)

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 2  # 2: RNG state in `run.rng_state`'s format
NAN_HINT = "Lower optim.lr, set optim.grad_clip, or check the data, then resume=true"


class TrainError(RuntimeError):
    """Training cannot go on; the message says why and what to do."""


@dataclass
class TrainOptimConfig(SGDConfig):
    """SGD Nesterov + cosine (`SGDConfig`; lr for batch 256-ish), with linear LR warmup."""

    lr: float = 0.05
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
    arch: str = ""  # arch.json, net.config or preset name (`resolve_arch`)
    out_dir: str = "runs/train"
    data: DataConfig = field(default_factory=DataConfig)
    optim: TrainOptimConfig = field(default_factory=TrainOptimConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    init: InitConfig = field(default_factory=InitConfig)
    epochs: int = 300
    label_smoothing: float = 0.1
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = None  # torch CPU threads; None: the free cores (free_cores())
    precision: str = "fp32"  # fp32 | bf16 | fp16 autocast on CUDA (fp16 with loss scaling)
    # auto | channels_last | contiguous: layout of weights and batches (`run.resolve_memory_format`)
    memory_format: str = "auto"
    # reuse | release: keep freed host memory for the next step (`run.host_memory`)
    host_memory: str = "reuse"
    seed: int = 0
    resume: bool = False  # continue from out_dir/last.pt
    max_steps: int | None = None  # stop (with a checkpoint) after this many steps in total
    checkpoint_every: int = 0  # extra mid-epoch checkpoints every N steps; 0: epoch ends only
    log_every: int = 50
    tensorboard: bool = True

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision={self.precision!r}: use fp32, bf16 or fp16")
        if self.epochs < 1:
            raise ConfigError(f"epochs={self.epochs} must be >= 1 (the number of epochs to train)")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps={self.max_steps} must be >= 1 (or null: no cap)")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads={self.threads} must be >= 1 (or null: the free cores)")
        if self.memory_format not in MEMORY_FORMATS:
            raise ConfigError(
                f"memory_format={self.memory_format!r}: use {', '.join(MEMORY_FORMATS)}"
            )
        if self.host_memory not in HOST_MEMORY:
            raise ConfigError(f"host_memory={self.host_memory!r}: use {', '.join(HOST_MEMORY)}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Nested plain dict (e.g. a resolved Hydra config) -> TrainConfig; unknown keys fail."""
        return from_dict(cls, d)


# --- building blocks ------------------------------------------------------------------------
def build_model(arch: Arch, from_search: str | Path | None = None) -> nn.Module:
    """The standalone net; with `from_search`, chosen ops inherit the supernet's weights."""
    if from_search is None:
        return arch.build()
    from .supernet import SuperNet

    state = load_checkpoint(from_search, kind=SEARCH_KIND)
    if "net" not in state:
        raise CheckpointError(f"search checkpoint {from_search} holds no 'net' state dict")
    supernet = SuperNet(arch.space, weight_sharing=SuperNet.weight_sharing_of(state["net"]))
    try:
        supernet.load_state_dict(state["net"])
    except RuntimeError as e:
        raise CheckpointError(
            f"search checkpoint {from_search} does not match the arch's space "
            f"{arch.space.name!r} ({str(e).splitlines()[0]}); pass the checkpoint of the search "
            "that derived this arch"
        ) from e
    return supernet.extract(arch)


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


def _load_resume_state(path: Path, arch: Arch, arch_file: str) -> dict[str, Any]:
    state = load_checkpoint(path, kind=TRAIN_KIND)
    if state.get("version") != CHECKPOINT_VERSION:
        raise TrainError(
            f"{path} was written by another version of proxyless (checkpoint version "
            f"{state.get('version')}, this one reads {CHECKPOINT_VERSION}); start a new out_dir"
        )
    if state["arch"] != arch.to_dict():
        raise TrainError(
            f"{path} was trained with a different arch than {arch_file}; resume "
            "with the run's own arch.json, or start a new out_dir"
        )
    return state


# --- the loop ---------------------------------------------------------------------------------
def train(cfg: TrainConfig, ctx: DistContext | None = None) -> dict[str, Any]:
    """Train `cfg.arch`; returns the metrics also written to `out_dir/metrics.json`.

    Under torchrun (or with a distributed `ctx`) every rank runs this: the model is wrapped
    in DDP, each rank trains on its shard (`data.batch_size` is per rank), and rank 0 alone
    logs and writes files. Every rank loads `last.pt` on resume."""
    ctx = ctx or init_distributed(cfg.device)  # joins a torchrun job, else one process
    arch = resolve_arch(cfg.arch)
    run = RunDir.open(cfg.out_dir, "last.pt", cfg.resume, ctx, TrainError, "out_dir")
    if (done := finished_metrics(cfg)) is not None:  # nothing to do: its files stay as they are
        log.info("%s holds a finished training run (metrics.json): nothing to do", run.path)
        return done
    state = _load_resume_state(run.checkpoint, arch, cfg.arch) if run.resuming else None
    seed_all(cfg.seed)
    with torch_threads(resolve_threads(cfg.threads)), host_memory(cfg.host_memory):
        loop = _Train(cfg, ctx, arch, run)
        if state is not None:
            loop.restore(state)
        loop.start()
        with frozen_setup_objects():
            while loop.epoch < cfg.epochs and not loop.stopped:
                if not loop.train_epoch():
                    break  # stopped at max_steps mid-epoch
                loop.end_epoch()
        return loop.finish()


def finished_metrics(cfg: TrainConfig) -> dict[str, Any] | None:
    """metrics.json of the finished run that `cfg` (with resume) would continue, else None:
    all `cfg.epochs` trained, with the same arch. Cheap (no checkpoint is loaded), so the CLI
    asks before Hydra writes anything into out_dir. More epochs than the run had continue it."""
    out = Path(cfg.out_dir)
    if not cfg.resume or not (out / "last.pt").is_file() or not (out / "metrics.json").is_file():
        return None
    try:
        metrics = json.loads((out / "metrics.json").read_text())
        arch = Arch.load(cfg.arch).block_strings()
    except (OSError, ValueError):
        return None
    if not isinstance(metrics, dict) or not metrics.get("finished"):
        return None
    if metrics.get("epoch", 0) < cfg.epochs or metrics.get("arch") != arch:
        return None
    return {**metrics, "checkpoint": str(out / "last.pt")}


class _Train:
    """One training run's state and moves; `train()` drives it."""

    def __init__(self, cfg: TrainConfig, ctx: DistContext, arch: Arch, run: RunDir) -> None:
        self.cfg, self.ctx, self.arch, self.rundir, self.main = cfg, ctx, arch, run, ctx.is_main
        self.fmt = resolve_memory_format(cfg.memory_format, ctx.device, cfg.precision)
        model = build_model(arch, cfg.init.from_search)
        self.model = model.to(ctx.device, memory_format=self.fmt)
        # A derived arch trains on the whole training split: no held-out set unless asked.
        self.data_cfg = cfg.data
        if self.data_cfg.heldout_per_class is None:
            self.data_cfg = dataclasses.replace(self.data_cfg, heldout_per_class=0)
        if self.data_cfg.image_size is None:  # the size the arch was searched (and timed) at
            self.data_cfg = dataclasses.replace(self.data_cfg, image_size=arch.space.input_size)
        self.splits = build_datasets(self.data_cfg)
        _check_data(arch, self.splits.num_classes, self.splits.input_size)
        self.loaders = build_loaders(self.splits, self.data_cfg, distributed=ctx.is_distributed)
        self.steps_per_epoch = len(self.loaders.train)
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.optimizer = sgd(self.model.parameters(), cfg.optim, fused=True)
        self.precision = Precision.resolve(cfg.precision, ctx.device, log)
        self.scaler = self.precision.grad_scaler()
        self.ema = None
        if cfg.ema.enabled:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self.model, decay=cfg.ema.decay, use_warmup=cfg.ema.warmup)
        self.epoch = self.batch = self.step = 0
        self.best: dict[str, Any] = {"metric": "top1", "source": "ema" if self.ema else "model"}
        self.best.update(value=None, epoch=None)
        self.history: list[dict[str, Any]] = []
        self.loss_sum_before = 0.0  # a mid-epoch resume: the epoch's loss sum so far
        self.stopped = False
        self.writer: Any = None

    def restore(self, state: dict[str, Any]) -> None:
        """Everything back from `last.pt`; the config's optimizer settings win over it."""
        o = self.cfg.optim
        fresh = param_groups(self.model.parameters(), o.weight_decay, o.decay_norm_and_bias)
        self.model.load_state_dict(state["model"])
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except ValueError as e:
            raise TrainError(
                f"{self.rundir.checkpoint}: the saved optimizer state does not fit ({e}); resume "
                "with the run's optim.decay_norm_and_bias, or start a new out_dir"
            ) from e
        match_state_layout(self.optimizer)
        for group, new in zip(self.optimizer.param_groups, fresh, strict=True):
            group.update(weight_decay=new["weight_decay"], momentum=o.momentum, nesterov=o.nesterov)
        if self.ema is not None:
            if state["ema"] is None:
                log.warning("ema.enabled=true on resume, but the run had none: EMA starts now")
            else:
                self.ema.load_state_dict(state["ema"])
        self.epoch, self.batch, self.step = state["epoch"], state["batch"], state["step"]
        self.best, self.history = state["best"], state["history"]
        if state["scaler"]:  # {} from a run without loss scaling
            self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.loaders.train.generator.set_state(state["loader_generator"])
        self.loss_sum_before = state["epoch_loss_sum"] if self.batch > 0 else 0.0
        if self.main:
            log.info(
                "resumed from %s after %d epoch(s) and %d batch(es) (step %d)",
                self.rundir.checkpoint,
                self.epoch,
                self.batch,
                self.step,
            )

    def start(self) -> None:
        """Ranks start equal; the model is wrapped in DDP; run files and TensorBoard."""
        broadcast_parameters(self.model, self.ctx)  # same seed or checkpoint: makes sure
        self.net = wrap_ddp(self.model, self.ctx)  # trains; `model` is saved and evaluated
        self.t_start = time.perf_counter()
        if not self.main:
            self.info: dict[str, Any] = {}
            return
        self.arch.save(self.rundir.path / "arch.json")
        self.info = write_run_files(self.rundir.path, asdict(self.cfg), self.rundir.resuming)
        if self.cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.rundir.path / "tb"), purge_step=self.step or None)

    def checkpoint(self, path: Path, loss_sum: torch.Tensor) -> None:
        if not self.main:
            return
        state = {
            "kind": TRAIN_KIND,
            "version": CHECKPOINT_VERSION,
            "arch": self.arch.to_dict(),
            "config": asdict(self.cfg),
            "epoch": self.epoch,  # epochs completed when batch == 0, else the current one
            "batch": self.batch,  # batches of `epoch` already trained
            "step": self.step,
            "best": self.best,
            "history": self.history,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "scheduler": {"name": "warmup_cosine", "step": self.step, "total": self.total_steps},
            "rng": rng_state(),
            "loader_generator": self.loaders.train.generator.get_state(),
            "epoch_loss_sum": float(loss_sum),  # this epoch's batches so far
            "run_info": self.info,
        }
        save_checkpoint(path, state)

    def mean_loss(self, loss_sum: torch.Tensor, n: int) -> float:
        """The mean loss so far over all ranks (a collective: every rank calls it at the
        same steps, and all stop together on a non-finite loss)."""
        value = float(reduce_mean(loss_sum, self.ctx)) / max(n, 1)
        what, ckpt = "training", self.rundir.checkpoint
        # called before end_epoch counts the epoch: self.epoch + 1 is the 1-based current one
        return check_finite(value, what, self.step, self.epoch + 1, ckpt, NAN_HINT, TrainError)

    def lr(self, step: int) -> float:
        return lr_at(step, self.total_steps, self.cfg.optim, self.steps_per_epoch)

    def train_epoch(self) -> bool:
        """Train the rest of the current epoch; False when max_steps stopped it mid-way."""
        cfg = self.cfg
        self.net.train()
        sampler = self.loaders.train.sampler
        sampler.set_epoch(self.epoch)  # type: ignore[attr-defined]
        sampler.start = self.batch * self.data_cfg.batch_size  # type: ignore[attr-defined]
        self.loss_sum = torch.zeros((), device=self.ctx.device) + self.loss_sum_before
        self.loss_n, self.loss_sum_before = self.batch, 0.0
        self.t_epoch = time.perf_counter()
        for x, y in self.loaders.train:
            self.train_step(x, y)
            if cfg.log_every and self.step % cfg.log_every == 0:
                value = self.mean_loss(self.loss_sum, self.loss_n)
                lr = self.lr(self.step - 1)
                if self.main:
                    e = self.epoch + 1  # 1-based, as in "epoch 1/5"
                    log.info("epoch %d step %d loss %.4f lr %.5f", e, self.step, value, lr)
                if self.writer is not None:
                    self.writer.add_scalar("train/loss", value, self.step)
                    self.writer.add_scalar("train/lr", lr, self.step)
            self.stopped = cfg.max_steps is not None and self.step >= cfg.max_steps
            if self.stopped or (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0):
                self.mean_loss(self.loss_sum, self.loss_n)
                self.checkpoint(self.rundir.checkpoint, self.loss_sum)
            if self.stopped:
                if self.main:
                    log.info(
                        "stopped at max_steps=%d (checkpoint %s)",
                        cfg.max_steps,
                        self.rundir.checkpoint,
                    )
                break
        return not (self.stopped and self.batch < self.steps_per_epoch)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        dev, o = self.ctx.device, self.cfg.optim
        x = x.to(dev, non_blocking=True, memory_format=self.fmt)
        y = y.to(dev, non_blocking=True)
        set_lr(self.optimizer, self.lr(self.step))
        with self.precision.autocast():
            loss = F.cross_entropy(self.net(x), y, label_smoothing=self.cfg.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()  # DDP averages the gradients over ranks here
        if o.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), o.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.model, step=self.step)
        self.step, self.batch = self.step + 1, self.batch + 1
        self.loss_sum += loss.detach().float()
        self.loss_n += 1

    def end_epoch(self) -> None:
        """Evaluate, keep the best, log, checkpoint, metrics.json."""
        train_loss = self.mean_loss(self.loss_sum, self.loss_n)
        self.epoch, self.batch = self.epoch + 1, 0
        sync_buffers(self.model, self.ctx)  # BN stats: the mean over ranks (DDP left each its own)
        record: dict[str, Any] = {
            "epoch": self.epoch,
            "step": self.step,
            "train_loss": train_loss,
            "lr": self.lr(self.step - 1),
            "epoch_seconds": time.perf_counter() - self.t_epoch,
            "test": evaluate(self.model, self.loaders.test, self.ctx, self.fmt),
        }
        if self.ema is not None:
            record["test_ema"] = evaluate(self.ema.module, self.loaders.test, self.ctx, self.fmt)
        self.history.append(record)
        value = record["test_ema" if self.ema is not None else "test"]["top1"]
        improved = self.best["value"] is None or value > self.best["value"]
        if improved:
            self.best.update(value=value, epoch=self.epoch)
        (log.info if self.main else log.debug)(
            "epoch %d/%d: train loss %.4f, test top1 %.2f%% (best %.2f%% @ %d)",
            self.epoch,
            self.cfg.epochs,
            train_loss,
            value,
            self.best["value"],
            self.best["epoch"],
        )
        self.log_epoch(record, train_loss)
        self.checkpoint(self.rundir.checkpoint, self.loss_sum)
        if improved:
            self.checkpoint(self.rundir.path / "best.pt", self.loss_sum)
        if self.main:
            write_json(self.rundir.path / "metrics.json", self.metrics())

    def log_epoch(self, record: dict[str, Any], train_loss: float) -> None:
        if self.writer is None:
            return
        for split in ("test", "test_ema"):
            for k, v in record.get(split, {}).items():
                self.writer.add_scalar(f"{split}/{k}", v, self.step)
        self.writer.add_scalar("train/epoch_loss", train_loss, self.step)
        self.writer.flush()

    def metrics(self) -> dict[str, Any]:
        return {
            "arch": self.arch.block_strings(),
            "params": sum(p.numel() for p in self.model.parameters()),
            "input_shape": list(self.splits.input_shape),
            "epochs": self.cfg.epochs,
            "epoch": self.epoch,
            "step": self.step,
            "best": self.best,
            "final": self.history[-1] if self.history else None,
            "history": self.history,
            "train_seconds": time.perf_counter() - self.t_start,
        }

    def finish(self) -> dict[str, Any]:
        if self.writer is not None:
            self.writer.close()
        metrics = self.metrics()
        metrics.update(
            finished=self.epoch >= self.cfg.epochs, checkpoint=str(self.rundir.checkpoint)
        )
        if self.main:
            write_json(self.rundir.path / "metrics.json", metrics)
        barrier(self.ctx)  # the run's files are written when any rank returns
        return metrics
