"""Distributed search steps on two gloo processes (CPU), failure handling, mixed precision.

The two-rank workers are this file run as a script with torchrun's environment variables
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), so `init_distributed` is exercised
exactly as under torchrun.

Comparing with one process: BatchNorm in train mode normalises each rank's half batch with
that half's statistics, so two ranks are *not* the same computation as one process on the
full batch. With BN in eval mode (running statistics) every sample's loss depends on that
sample only, so the mean over the full batch equals the mean of the two half-batch means and
averaged gradients must match the single-process gradient up to float rounding. Train mode
is checked separately for what it must guarantee: identical weights on all ranks, and
identical BN statistics after `sync_buffers`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from proxyless import steps
from proxyless.distributed import (
    DistContext,
    DistributedError,
    SyncedOptimizer,
    average_gradients,
    broadcast_parameters,
    init_distributed,
    reduce_mean,
    run_distributed,
    step_generator,
    sync_buffers,
    wrap_ddp,
)
from proxyless.estimators import ESTIMATORS, Estimator, Objective
from proxyless.run import Precision
from proxyless.space import get_space
from proxyless.supernet import SuperNet

ROOT = Path(__file__).resolve().parents[1]
GLOBAL_BATCH, STEPS, SEED = 8, 3, 7


# --- test helpers: the search's steps with averaged gradients, a cross-rank check ----------
def autocast_context(precision: str, device: torch.device | str) -> Any:
    """Autocast without the run's CUDA-only policy (CPU bf16 is what these tests check)."""
    return Precision(precision, torch.device(device)).autocast()


def distributed_weight_step(
    net: SuperNet,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    ctx: DistContext,
    generator: torch.Generator | None = None,
    uniform: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`steps.weight_step` with weight gradients averaged over ranks before the update."""
    synced = SyncedOptimizer(optimizer, net.weight_parameters(), ctx)
    return steps.weight_step(net, x, y, synced, generator, uniform)  # type: ignore[arg-type]


def distributed_arch_step(
    net: SuperNet,
    estimator: Estimator,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    ctx: DistContext,
    generator: torch.Generator | None = None,
    objective: Objective | None = None,
    precision: str = "fp32",
) -> tuple[torch.Tensor, torch.Tensor]:
    """`steps.arch_step` on the plain module with α gradients averaged before the update."""
    synced = SyncedOptimizer(optimizer, net.arch_parameters(), ctx)
    with autocast_context(precision, ctx.device):
        return steps.arch_step(net, estimator, x, y, synced, generator, objective)  # type: ignore[arg-type]


def check_same_across_ranks(values: list[int], ctx: DistContext, what: str = "values") -> None:
    """Raise if `values` (e.g. `net.active_paths()`) differ between ranks. 1 all_reduce."""
    if not ctx.is_distributed:
        return
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    both = torch.cat([t, -t])
    torch.distributed.all_reduce(both, op=torch.distributed.ReduceOp.MAX)
    if not torch.equal(both[: len(values)], -both[len(values) :]):
        raise DistributedError(f"{what} differ between ranks on rank {ctx.rank}: {values}")


# --- the search steps both runs perform -------------------------------------------------------
def _data(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randn(GLOBAL_BATCH, 3, 32, 32, generator=g), torch.randint(
        0, 10, (GLOBAL_BATCH,), generator=g
    )


def _search(net: SuperNet, ctx: DistContext, steps: int) -> list[float]:
    """Alternating weight and arch steps on this rank's shard of a fixed global batch."""
    opt_w = torch.optim.SGD(
        net.weight_parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=4e-5
    )
    opt_a = torch.optim.Adam(net.arch_parameters(), lr=0.05, betas=(0.0, 0.999))
    per_rank = GLOBAL_BATCH // ctx.world_size
    shard = slice(ctx.rank * per_rank, (ctx.rank + 1) * per_rank)
    losses = []
    for step in range(steps):
        x, y = _data(2 * step)
        gen = step_generator(SEED, 2 * step)
        loss, _ = distributed_weight_step(net, x[shard], y[shard], opt_w, ctx, gen, uniform=True)
        check_same_across_ranks(net.active_paths(), ctx, "paths")
        losses.append(float(reduce_mean(loss, ctx)))
        x, y = _data(2 * step + 1)
        est = ESTIMATORS.build("two_path" if step == steps - 1 else "all_paths")
        gen = step_generator(SEED, 2 * step + 1)
        distributed_arch_step(net, est, x[shard], y[shard], opt_a, ctx, gen)
    return losses


def _net(seed: int) -> SuperNet:
    torch.manual_seed(seed)
    return SuperNet(get_space("tiny"), alpha_init_std=0.5)


# --- workers (run as `python tests/test_distributed.py <name> <out_dir>`) ---------------------
def worker_search(out: Path) -> None:
    torch.set_num_threads(1)
    ctx = init_distributed("cpu", timeout_s=60)
    assert (ctx.world_size, ctx.backend) == (2, "gloo")
    net = _net(100 + ctx.rank)  # different on purpose: broadcast_parameters must fix it
    broadcast_parameters(net, ctx)
    net.eval()
    losses = _search(net, ctx, STEPS)
    result = {
        "eval": {k: v.clone() for k, v in net.state_dict().items()},
        "losses": torch.tensor(losses),
    }

    net.train()  # BN batch statistics: per-rank running stats until synced
    _search(net, ctx, 1)
    result["train_params"] = {k: p.detach().clone() for k, p in net.named_parameters()}
    result["bn_before_sync"] = net.stem[1].running_mean.clone()
    sync_buffers(net, ctx)
    result["train_buffers"] = {k: b.clone() for k, b in net.named_buffers()}

    torch.manual_seed(ctx.rank)  # standalone network: plain DDP
    model = wrap_ddp(torch.nn.Sequential(torch.nn.Linear(4, 3)), ctx)
    broadcast_parameters(model, ctx)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(2):
        opt.zero_grad()
        F.mse_loss(model(torch.randn(5, 4) + ctx.rank), torch.zeros(5, 3)).backward()
        opt.step()
    result["ddp"] = model.module.state_dict()
    torch.save(result, out / f"rank{ctx.rank}.pt")


def worker_failure(out: Path) -> None:
    def body(ctx: DistContext) -> None:
        t = torch.ones(1)
        torch.distributed.all_reduce(t)
        if ctx.rank == 1:
            raise ValueError("boom on purpose")
        time.sleep(0.5)
        torch.distributed.all_reduce(t)  # the peer is gone: must raise, not hang

    run_distributed(body, device="cpu", timeout_s=30)


# --- launching ------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(worker: str, out: Path, world: int = 2, timeout: float = 120) -> list[tuple]:
    """Start `world` ranks like torchrun does; return (returncode, stderr) per rank."""
    port = _free_port()
    procs = []
    for rank in range(world):
        env = dict(
            os.environ,
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE=str(world),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            OMP_NUM_THREADS="1",
            PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        )
        cmd = [sys.executable, __file__, worker, str(out)]
        procs.append(subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True))
    results, deadline = [], time.monotonic() + timeout
    try:
        for p in procs:
            _, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results.append((p.returncode, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return results


# --- tests ----------------------------------------------------------------------------------
def test_single_process_context_without_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    ctx = init_distributed("cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.backend) == (0, 1, True, None)
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 2.0)
    average_gradients([p], ctx)  # no process group: a no-op
    assert torch.equal(p.grad, torch.full((3,), 2.0))


def test_step_generator_is_a_pure_function_of_seed_and_step() -> None:
    draw = [torch.rand(4, generator=step_generator(3, s)) for s in (5, 5, 6)]
    assert torch.equal(draw[0], draw[1])
    assert not torch.equal(draw[0], draw[2])
    assert not torch.equal(draw[0], torch.rand(4, generator=step_generator(4, 5)))


def test_two_ranks_match_each_other_and_one_process(tmp_path: Path) -> None:
    results = _launch("worker_search", tmp_path)
    for rank, (code, err) in enumerate(results):
        assert code == 0, f"rank {rank} exited {code}:\n{err}"
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))

    # all ranks hold the same weights and α, bit for bit
    for key in r0["eval"]:
        assert torch.equal(r0["eval"][key], r1["eval"][key]), key
    assert torch.equal(r0["losses"], r1["losses"])

    # ... and the same result as one process on the full batch (BN in eval mode, see top)
    net = _net(100)
    net.eval()
    losses = _search(net, DistContext(), STEPS)
    ref = net.state_dict()
    for key, value in ref.items():
        torch.testing.assert_close(r0["eval"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    torch.testing.assert_close(r0["losses"], torch.tensor(losses), rtol=1e-4, atol=1e-5)
    moved = [
        k for k in ref if k.endswith("alpha") and not torch.equal(ref[k], _net(100).state_dict()[k])
    ]
    assert moved, "arch steps must have moved α"

    # train mode: same parameters; BN statistics differ per rank until sync_buffers
    for key in r0["train_params"]:
        assert torch.equal(r0["train_params"][key], r1["train_params"][key]), key
    assert not torch.equal(r0["bn_before_sync"], r1["bn_before_sync"])
    for key in r0["train_buffers"]:
        assert torch.equal(r0["train_buffers"][key], r1["train_buffers"][key]), key

    for key in r0["ddp"]:  # the standalone network under DDP
        assert torch.equal(r0["ddp"][key], r1["ddp"][key]), key


def test_a_failing_rank_stops_the_other_with_a_clear_error(tmp_path: Path) -> None:
    results = _launch("worker_failure", tmp_path, timeout=60)  # a hang raises TimeoutExpired
    (code0, err0), (code1, err1) = results
    assert code1 != 0 and "rank 1 failed: ValueError: boom on purpose" in err1
    assert code0 != 0 and "rank 0 failed:" in err0, err0


# --- mixed precision ------------------------------------------------------------------------
def test_autocast_and_scaler_helpers() -> None:
    import contextlib

    cpu = torch.device("cpu")
    assert isinstance(autocast_context("fp32", "cpu"), contextlib.nullcontext)
    with autocast_context("bf16", "cpu"):
        out = torch.nn.functional.linear(torch.randn(2, 3), torch.randn(4, 3))
    assert out.dtype == torch.bfloat16
    assert not Precision("bf16", cpu).grad_scaler().is_enabled()
    assert Precision("fp16", cpu).grad_scaler().is_enabled()
    assert Precision.resolve("bf16", cpu).name == "fp32"  # autocast on CUDA only, in runs
    with pytest.raises(ValueError, match="precision"):
        Precision.resolve("fp8", cpu)


def _alpha_grad(
    device: str, precision: str, channels_last: bool, through_step: bool = True
) -> torch.Tensor:
    """∂L/∂α of one all_paths arch step (SGD lr=1: the α change is minus the gradient)."""
    net = _net(0).to(device).eval()  # running BN stats: isolates the estimator's precision
    x, y = _data(0)
    x, y = x.to(device), y.to(device)
    if channels_last:
        net, x = net.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    before = torch.cat([a.detach().clone() for a in net.arch_parameters()])
    opt = torch.optim.SGD(net.arch_parameters(), lr=1.0)
    est = ESTIMATORS.build("all_paths")
    gen = step_generator(SEED, 0)
    if through_step:
        distributed_arch_step(net, est, x, y, opt, DistContext(), gen, precision=precision)
        return before - torch.cat([a.detach() for a in net.arch_parameters()])
    # the usual AMP pattern: forward under autocast, backward outside
    with net.frozen_weights():
        est.sample(net.layers, gen)
        with autocast_context(precision, device):  # type: ignore[arg-type]
            loss = F.cross_entropy(net(x, est), y)
        loss.backward()
    return torch.cat([a.grad for a in net.arch_parameters()])


def _assert_close_direction(ref: torch.Tensor, got: torch.Tensor, min_cos: float) -> None:
    cos = F.cosine_similarity(ref.flatten().float(), got.flatten().float(), dim=0)
    assert cos > min_cos, f"cosine {float(cos):.4f}"
    assert torch.isfinite(got).all()


@pytest.mark.parametrize("channels_last", [False, True])
def test_all_paths_alpha_gradient_under_cpu_bf16_autocast(channels_last: bool) -> None:
    ref = _alpha_grad("cpu", "fp32", False)
    _assert_close_direction(ref, _alpha_grad("cpu", "bf16", channels_last), 0.98)


def test_all_paths_alpha_gradient_with_backward_outside_autocast() -> None:
    ref = _alpha_grad("cpu", "fp32", False)
    _assert_close_direction(ref, _alpha_grad("cpu", "bf16", False, through_step=False), 0.98)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_all_paths_alpha_gradient_under_cuda_autocast_channels_last(precision: str) -> None:
    ref = _alpha_grad("cuda", "fp32", False)
    _assert_close_direction(ref, _alpha_grad("cuda", precision, True), 0.98)


if __name__ == "__main__":
    globals()[sys.argv[1]](Path(sys.argv[2]))
