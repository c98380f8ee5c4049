"""torchrun / DistributedDataParallel: joining the job, collectives, the synced optimizer.

Launch with ``torchrun --nproc_per_node N proxyless-search …``; `init_distributed` reads the
torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) and falls back to a
single process when it is absent. NCCL on CUDA, gloo on CPU, with a finite timeout.

Why the supernet is *not* wrapped in DDP (measured in ``benchmarks/ddp_sync.py``):

- All ranks sample the same path in a step (`step_generator(seed, step)` — the same
  `torch.Generator` on every rank, no communication), so the parameters that have a
  gradient are the same on every rank. Averaging exactly those, in one flat ``all_reduce``
  per dtype, is all that a weight step needs.
- DDP needs ``find_unused_parameters=True`` here (only one path of each layer runs): it walks
  the autograd graph every step and all-reduces buckets of the *whole* supernet (zeros for
  unused candidates). Measured on 2 gloo ranks, tiny space, batch 16/rank: weight step
  1.16× the unsynchronised time with the flat all-reduce, 1.41× with DDP (``.grad`` of
  off-path candidates stays None in both).
- Once a module is wrapped in DDP, every backward through its parameters fires the DDP
  reducer's hooks, also one that bypasses the wrapper: an arch step on the plain module
  (α are parameters) fails with "gradient which is undefined, but still allreduced by DDP
  reducer". Arch steps also toggle ``requires_grad`` (`SuperNet.frozen_weights`), which a
  reducer built at wrap time does not expect. So arch steps run on the plain module, and α
  gradients are averaged the same way before the arch optimizer step.

So the supernet uses `average_gradients` through `SyncedOptimizer` (the Horovod
``DistributedOptimizer`` pattern: average inside ``optimizer.step()``), which lets
`proxyless.steps.weight_step` / `arch_step` run unchanged. The standalone network in
training has a static graph and uses real DDP (`wrap_ddp`).

BatchNorm running statistics are per rank in the supernet (DDP would copy rank 0's at every
forward); `sync_buffers` averages them — call it before evaluating or saving.

>>> ctx = init_distributed("cpu")  # no torchrun variables: one process
>>> (ctx.rank, ctx.world_size, ctx.is_main, ctx.backend)
(0, 1, True, None)
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 600.0


class DistributedError(RuntimeError):
    """A distributed run cannot start or go on; the message says why."""


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the job. `backend` is None for a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """`auto|cpu|cuda|cuda:N` → a device; a torchrun rank without an index gets its local GPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DistributedError(f"device={device!r} but CUDA is not available; use device=cpu")
        dev = torch.device("cuda", local_rank if dev.index is None else dev.index)
        torch.cuda.set_device(dev)
    return dev


def init_distributed(device: str = "auto", timeout_s: float = DEFAULT_TIMEOUT_S) -> DistContext:
    """Join the torchrun job described by the environment, or run as one process.

    One GPU per local rank (``cuda:LOCAL_RANK``), NCCL there, gloo on CPU. The timeout bounds
    every collective, so a rank stuck or gone makes the others fail instead of hang.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    dev = resolve_device(device, local_rank)
    if world == 1 and not dist.is_initialized():
        return DistContext(device=dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise DistributedError(
                f"WORLD_SIZE={world} but {', '.join(missing)} unset: launch with torchrun"
            )
        # NCCL: a failed or timed-out collective tears the process down instead of hanging.
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        dist.init_process_group(
            backend, rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s)
        )
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, dev, backend)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.is_distributed:
        dist.barrier()


def broadcast_object(value: T, ctx: DistContext, src: int = 0) -> T:
    """Rank `src`'s `value` on every rank (a run dir, a cost table); `value` in one process."""
    if not ctx.is_distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator for global step `step`: identical on every rank, different per step."""
    digest = hashlib.blake2b(f"{seed}:{step}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)


# --- collectives on groups of tensors -------------------------------------------------------
def _by_dtype(tensors: Iterable[torch.Tensor]) -> Iterator[list[torch.Tensor]]:
    groups: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.dtype, t.device), []).append(t)
    yield from groups.values()


def _all_reduce_mean(tensors: list[torch.Tensor], world: int) -> None:
    """In place: one flat all_reduce per dtype, divided by the world size."""
    for group in _by_dtype(tensors):
        flat = _flatten_dense_tensors(group)
        dist.all_reduce(flat)
        flat.div_(world)
        for t, avg in zip(group, _unflatten_dense_tensors(flat, group), strict=True):
            t.copy_(avg)


@torch.no_grad()
def average_gradients(params: Iterable[torch.Tensor], ctx: DistContext) -> None:
    """Average the `.grad` of the parameters that have one; None stays None.

    Every rank must hold gradients for the same parameters (a shared path), which the
    per-step shared generator guarantees.
    """
    if ctx.is_distributed:
        _all_reduce_mean([p.grad for p in params if p.grad is not None], ctx.world_size)


@torch.no_grad()
def reduce_mean(value: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """The mean of `value` over ranks (for logging a loss); a copy, on every rank."""
    out = value.detach().clone()
    if ctx.is_distributed:
        dist.all_reduce(out)
        out.div_(ctx.world_size)
    return out


@torch.no_grad()
def broadcast_parameters(module: nn.Module, ctx: DistContext, src: int = 0) -> None:
    """Copy rank `src`'s parameters and buffers to every rank (start of a run, after resume)."""
    if not ctx.is_distributed:
        return
    tensors = [*module.parameters(), *module.buffers()]
    for group in _by_dtype(t.data for t in tensors):
        flat = _flatten_dense_tensors(group)
        dist.broadcast(flat, src)
        for t, value in zip(group, _unflatten_dense_tensors(flat, group), strict=True):
            t.copy_(value)


@torch.no_grad()
def sync_buffers(module: nn.Module, ctx: DistContext) -> None:
    """Average floating-point buffers (BatchNorm running stats) over ranks; others from rank 0."""
    if not ctx.is_distributed:
        return
    buffers = list(module.buffers())
    _all_reduce_mean([b for b in buffers if b.is_floating_point()], ctx.world_size)
    for group in _by_dtype(b for b in buffers if not b.is_floating_point()):
        flat = _flatten_dense_tensors(group)
        dist.broadcast(flat, 0)
        for t, value in zip(group, _unflatten_dense_tensors(flat, group), strict=True):
            t.copy_(value)


# --- optimizer steps ---------------------------------------------------------------------------
class SyncedOptimizer:
    """Averages the gradients of `params` over ranks inside `step()`, then steps `optimizer`.

    Exposes what `proxyless.steps` uses (`zero_grad`, `step`, `param_groups`).
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, params: Iterable[torch.Tensor], ctx: DistContext
    ) -> None:
        self.optimizer, self.params, self.ctx = optimizer, list(params), ctx
        self.param_groups = optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        average_gradients(self.params, self.ctx)
        self.optimizer.step()


def synced(
    optimizer: torch.optim.Optimizer, params: Iterable[torch.Tensor], ctx: DistContext
) -> Any:
    """`optimizer` itself in one process, else a `SyncedOptimizer` over `params`."""
    return SyncedOptimizer(optimizer, params, ctx) if ctx.is_distributed else optimizer


def wrap_ddp(model: nn.Module, ctx: DistContext, **kwargs: Any) -> nn.Module:
    """DDP for a network whose graph is the same every step (the standalone model in training).

    Returns `model` itself in a single process; unwrap with ``getattr(m, "module", m)``.
    """
    if not ctx.is_distributed:
        return model
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, **kwargs)


# --- failure handling ------------------------------------------------------------------------
def run_distributed(
    fn: Callable[[DistContext], T],
    device: str = "auto",
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> T:
    """Init, run ``fn(ctx)``, clean up. On any error print ``rank R failed: …`` and exit 1.

    The failing process exits at once without waiting on its peers, so their next collective
    fails (gloo: connection closed; NCCL: the watchdog after `timeout_s`) and they report and
    exit the same way — no rank hangs; torchrun then stops the job with a nonzero status.
    """
    rank = _env_int("RANK", 0)
    try:
        ctx = init_distributed(device, timeout_s)
        rank = ctx.rank
        if not ctx.is_main:  # one log for the job: other ranks report warnings only
            logging.getLogger("proxyless").setLevel(logging.WARNING)
        result = fn(ctx)
    except BaseException as exc:  # noqa: BLE001 - report every failure, then exit
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            raise
        world = _env_int("WORLD_SIZE", 1)
        print(
            f"rank {rank} failed: {type(exc).__name__}: {exc}\n{traceback.format_exc()}",
            file=sys.stderr,
            flush=True,
        )
        if world == 1:
            raise
        _abort()
        os._exit(1)  # not sys.exit: teardown could block on a broken process group
    cleanup()
    return result


def _abort() -> None:
    """Best effort: abort NCCL communicators so pending kernels stop; gloo needs nothing."""
    abort = getattr(dist.distributed_c10d, "_abort_process_group", None)
    with contextlib.suppress(Exception):
        if abort is not None and dist.is_initialized() and dist.get_backend() == "nccl":
            abort()
