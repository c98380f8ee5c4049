"""The run kit: what a search and a training run both need, written once.

A run directory guarded against being started over, run files and checkpoints written
atomically, RNG state in one checkpoint-safe format, the precision policy (autocast, loss
scaling), the finite-loss guard, evaluation (loss, top-1, top-5), weight-decay groups and
the learning rate as a pure function of the step. Nothing here knows about supernets.
"""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import math
import platform
import random
import resource
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from latency.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text

from .distributed import DistContext, barrier, broadcast_object

log = logging.getLogger("proxyless")

SEARCH_KIND = "proxyless-search"
TRAIN_KIND = "train"

write_json = atomic_write_json  # strict JSON (NaN -> null), temp file + rename


# --- checkpoints and run files ----------------------------------------------------------------
class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or not of the expected kind."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Atomically: a crash (or SIGKILL) mid-write leaves the previous checkpoint intact."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path, kind: str | None = None) -> dict[str, Any]:
    """Load with weights_only=True; `kind` checks the checkpoint's self-description."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for corrupt files
        raise CheckpointError(f"checkpoint {path} cannot be read ({e}); it may be truncated") from e
    if kind is not None and (not isinstance(state, dict) or state.get("kind") != kind):
        found = state.get("kind") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path} is a {found!r} checkpoint, expected {kind!r}")
    return state


def _git_revision() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def run_info() -> dict[str, str | None]:
    """Versions, revision and command line recorded beside every run's outputs (plain
    strings, so the dict can also go into a weights_only checkpoint)."""
    import timm
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "timm": str(timm.__version__),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "platform": platform.platform(),
        "git_revision": _git_revision(),
        "argv": " ".join(sys.argv),
    }


def write_run_files(run_dir: Path, config: dict[str, Any], resumed: bool) -> dict[str, Any]:
    """`config.yaml` (the resolved config) and `run_info.json`; returns the run info.

    A resumed run keeps the original files and adds time-stamped ones beside them."""
    import yaml

    suffix = f".resumed-{time.strftime('%Y%m%d-%H%M%S')}" if resumed else ""
    text = yaml.safe_dump(_plain(config), sort_keys=False, default_flow_style=False)
    atomic_write_text(run_dir / f"config{suffix}.yaml", text)
    info = {**run_info(), "resumed": resumed}
    write_json(run_dir / f"run_info{suffix}.json", info)
    return info


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


@dataclass(frozen=True)
class RunDir:
    """A run's directory, its checkpoint, and whether this run continues one."""

    path: Path
    checkpoint: Path
    resuming: bool

    @classmethod
    def open(
        cls,
        path: str | Path,
        checkpoint: str,
        resume: bool,
        ctx: DistContext,
        error: type[Exception],
        hint: str,
    ) -> RunDir:
        """Rank 0's directory on every rank (a timestamped default may differ by a second
        between ranks), checked before anything is written: a directory holding a
        checkpoint is never started over (that would lose the run). `hint` names the
        option that picks another directory."""
        path = Path(broadcast_object(str(path), ctx))
        ckpt = path / checkpoint
        if ckpt.is_file() and not resume:
            raise error(
                f"{path} already holds a run ({ckpt}); pass resume=true to continue it, "
                f"or choose another {hint}"
            )
        resuming = resume and ckpt.is_file()
        if resume and not resuming and ctx.is_main:
            log.warning("resume=true but %s has no checkpoint yet: starting afresh", path)
        barrier(ctx)  # every rank has checked before rank 0 writes into it
        path.mkdir(parents=True, exist_ok=True)
        return cls(path, ckpt, resuming)


# --- global state: RNGs, determinism ----------------------------------------------------------
def seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def rng_state() -> dict[str, Any]:
    """torch, CUDA, Python and NumPy generators as tensors and plain values (weights_only)."""
    py_version, py_state, py_gauss = random.getstate()
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": list(py_state),
        "python_version": py_version,
        "python_gauss": py_gauss,
        "numpy": torch.from_numpy(keys.astype(np.int64)),
        "numpy_pos": int(pos),
        "numpy_gauss": (int(has_gauss), float(gauss)),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    has_gauss, gauss = state["numpy_gauss"]
    keys = state["numpy"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy_pos"], has_gauss, gauss))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def deterministic(enabled: bool) -> Iterator[None]:
    """`torch.use_deterministic_algorithms` for the block (warn only); restored on exit."""
    before = torch.are_deterministic_algorithms_enabled()
    before_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=before_warn)


# --- precision --------------------------------------------------------------------------------
PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """Autocast dtype of a run on its device: bf16/fp16 on CUDA only (fp32 elsewhere, with a
    warning); fp16 with loss scaling where the loop has a GradScaler."""

    name: str
    device: torch.device

    @classmethod
    def resolve(cls, name: str, device: torch.device, log: Any = None) -> Precision:
        if name not in PRECISIONS:
            raise ValueError(f"precision must be fp32, bf16 or fp16, got {name!r}")
        if name != "fp32" and device.type != "cuda":
            if log is not None:
                log.warning("precision=%s applies on CUDA only; running fp32 on %s", name, device)
            name = "fp32"
        return cls(name, device)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """`torch.autocast` for bf16/fp16; a no-op context for fp32."""
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=_DTYPES[self.name])

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Enabled only for fp16 (bf16 and fp32 need no loss scaling)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.name == "fp16")


# --- host memory -------------------------------------------------------------------------------
HOST_MEMORY = ("reuse", "release")
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters


def _glibc() -> Any:
    """The C library when it is glibc (it has mallopt and malloc_trim), else None."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


@contextlib.contextmanager
def host_memory(mode: str) -> Iterator[bool]:
    """Run the block with freed host memory kept for reuse (`reuse`) or glibc's defaults.

    glibc serves every block above its mmap threshold (at most 32 MiB) with a fresh mmap and
    unmaps it on free, so each step's large activations page-fault in again, zeroed by the
    kernel: ~310k faults per CIFAR-space arch step at batch 64, which `reuse` makes 0.68× as
    long (`benchmarks/host_memory.py`). `reuse` serves all blocks from the heap and never trims
    it: no faults after the first step; the process keeps its peak memory until the block
    ends (then it is given back). Yields whether reuse is in effect (glibc only)."""
    if mode not in HOST_MEMORY:
        raise ValueError(f"host_memory must be one of {', '.join(HOST_MEMORY)}, got {mode!r}")
    libc = _glibc() if mode == "reuse" else None
    if libc is None:
        yield False
        return
    libc.mallopt(_M_MMAP_MAX, 0)
    libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    try:
        yield True
    finally:  # glibc's defaults back (its mmap threshold stops adapting once any is set)
        libc.mallopt(_M_MMAP_MAX, 65536)
        libc.mallopt(_M_TRIM_THRESHOLD, 128 * 1024)
        libc.malloc_trim(0)


@contextlib.contextmanager
def frozen_setup_objects() -> Iterator[None]:
    """Run the block with every object alive at its start out of the cyclic GC's sight.

    Imports and set-up leave ~0.5M long-lived objects (torch, hydra, onnx …) that each full
    (generation-2) collection walks again: 20–320 ms a pass, growing with the run, about one per
    quickstart search epoch, ~3–5 % of its wall time and the spikes of its checkpoints
    (`gc.freeze`, as CPython's docs suggest for long-lived processes). The block's own
    garbage is collected as usual; afterwards the set-up objects are collectable again, so a
    process that runs many searches (the benchmarks) does not keep their cycles alive."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


# --- memory format ----------------------------------------------------------------------------
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")


def resolve_memory_format(
    name: str, device: torch.device, precision: str = "fp32"
) -> torch.memory_format:
    """The layout of a run's 4-d weights and activations.

    auto: channels_last (NHWC) on CPU, measured there (benchmarks/supernet_cost.py: oneDNN's
    depthwise and 1×1 convs, forward and backward, make a weight step 0.55–0.70× the NCHW
    one); on CUDA channels_last under bf16/fp16 autocast (cuDNN's NHWC kernels; not measured
    here, no GPU was lent) and contiguous in fp32; contiguous elsewhere. Same math either
    way: only the summation order, hence float rounding, differs.
    """
    if name not in MEMORY_FORMATS:
        raise ValueError(f"memory_format must be one of {', '.join(MEMORY_FORMATS)}, got {name!r}")
    if name == "auto":
        nhwc = device.type == "cpu" or (device.type == "cuda" and precision != "fp32")
        name = "channels_last" if nhwc else "contiguous"
    return torch.channels_last if name == "channels_last" else torch.contiguous_format


def match_state_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give loaded optimizer state (momentum buffers) its parameter's strides.

    `load_state_dict` keeps the saved layout; an uninterrupted run's buffers follow the
    gradients, which follow the parameters. Values are unchanged, so a resumed run stays
    bit-identical; the fused kernels just need not handle mixed strides."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            for k, v in optimizer.state.get(p, {}).items():
                if isinstance(v, torch.Tensor) and v.shape == p.shape and v.stride() != p.stride():
                    optimizer.state[p][k] = torch.empty_like(p).copy_(v)


# --- the finite-loss guard --------------------------------------------------------------------
def check_finite(
    value: float,
    what: str,
    step: int,
    epoch: int,
    checkpoint: Path,
    hint: str,
    error: type[Exception],
) -> float:
    """Stop on a non-finite loss before anything is saved, naming the checkpoint kept."""
    if math.isfinite(value):
        return value
    kept = (
        f"the last good checkpoint is {checkpoint} (resume=true continues from it)"
        if checkpoint.is_file()
        else "no checkpoint was written yet"
    )
    raise error(
        f"{what} loss became {value} at step {step} (epoch {epoch}); stopped without saving: "
        f"{kept}. {hint}"
    )


# --- evaluation -------------------------------------------------------------------------------
def forked_rng(device: torch.device) -> Any:
    """A context in which draws from the global RNGs (augmentation, loader seeds) leave the
    run's own streams untouched: for scoring and evaluation between or after training steps."""
    devices = [device.index or 0] if device.type == "cuda" else []
    return torch.random.fork_rng(devices=devices)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[Any],
    ctx: DistContext,
    memory_format: torch.memory_format = torch.preserve_format,
) -> dict[str, float]:
    """Mean cross-entropy, top-1 and top-5 (%) over a whole loader, in eval mode (the mode is
    restored). With a distributed `ctx` the loader is this rank's shard and the sums are over
    all ranks (DistributedSampler pads shards to equal length: a few samples count twice).
    Inputs are put in `memory_format`, the model's (`resolve_memory_format`)."""
    was_training = model.training
    model.eval()
    loss = correct1 = correct5 = count = 0.0
    for x, y in loader:
        x = x.to(ctx.device, non_blocking=True, memory_format=memory_format)
        y = y.to(ctx.device, non_blocking=True)
        logits = model(x).float()
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        hits = logits.topk(min(5, logits.shape[1]), dim=1).indices == y[:, None]
        correct1 += float(hits[:, 0].sum())
        correct5 += float(hits.any(dim=1).sum())
        count += len(y)
    model.train(was_training)
    if ctx.is_distributed:
        sums = torch.tensor([loss, correct1, correct5, count], dtype=torch.float64)
        sums = sums.to(ctx.device)
        torch.distributed.all_reduce(sums)
        loss, correct1, correct5, count = sums.tolist()
    n = max(count, 1.0)
    return {"loss": loss / n, "top1": 100 * correct1 / n, "top5": 100 * correct5 / n}


# --- SGD: weight-decay groups and the schedule of the step ------------------------------------
@dataclass
class SGDConfig:
    """SGD Nesterov with a per-step cosine from `lr` to `min_lr` (ProxylessNAS recipe), after
    an optional linear warmup of `lr_warmup_epochs`."""

    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 4e-5
    decay_norm_and_bias: bool = False  # False: no weight decay on BN and biases (official)
    min_lr: float = 0.0
    lr_warmup_epochs: float = 0.0  # linear LR warmup from 0; short runs at a high lr need it


def param_groups(
    params: Iterable[nn.Parameter], weight_decay: float, decay_norm_and_bias: bool
) -> list[dict[str, Any]]:
    """Weight decay on conv/linear weights only, unless `decay_norm_and_bias`: BN scale/shift
    and biases (1-D) normalise activations, decaying them only changes the effective LR."""
    params = list(params)
    if decay_norm_and_bias:
        return [{"params": params, "weight_decay": weight_decay}]
    return [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]


def sgd(params: Iterable[nn.Parameter], cfg: SGDConfig, fused: bool = False) -> torch.optim.SGD:
    """SGD over `param_groups`, updating all parameters with a few multi-tensor kernels
    instead of a Python loop over them (what torch picks by itself on CUDA, not on CPU).

    `fused`: one kernel per group, where the device has one (CPU, CUDA): ImageNet supernet,
    1 thread, 17 ms per update (loop) → 15 (foreach) → 5 (fused). Only for a network whose
    every parameter gets a gradient from the first step on (a standalone net): the fused
    kernel cannot mix parameters with and without a momentum buffer, which a supernet's
    weight step does (a candidate first sampled later has none yet); foreach can. The update
    is elementwise either way: the same to float rounding."""
    params = list(params)
    groups = param_groups(params, cfg.weight_decay, cfg.decay_norm_and_bias)
    kind = {"foreach": True}
    if fused and all(p.device.type in ("cpu", "cuda") for p in params):
        kind = {"fused": True}
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, **kind)


def lr_at(step: int, total: int, cfg: SGDConfig, steps_per_epoch: int) -> float:
    """Linear warmup from 0 over `lr_warmup_epochs`, then cosine from `lr` to `min_lr` at
    step `total`: a pure function of the step, so a resumed run follows the uninterrupted
    run's schedule."""
    warmup_steps = round(cfg.lr_warmup_epochs * steps_per_epoch)
    if step < warmup_steps:
        return cfg.lr * (step + 1) / warmup_steps
    t = (step - warmup_steps) / max(1, total - warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(t, 1.0)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process so far: allocated CUDA memory on a GPU, else the peak
    resident set size (MiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
