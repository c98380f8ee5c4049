"""Supernet weight steps on 2 gloo ranks: flat all-reduce of the active path vs DDP.

Side by side in one run, same data and paths: time per weight step (forward + backward +
gradient sync), elements with a gradient per step (what the flat all-reduce sends; DDP
reduces buckets of the whole supernet), and how many parameters *off* the sampled path end
up with a non-None gradient (must be 0: momentum/weight decay must not move them).
    PYTHONPATH=. python benchmarks/ddp_sync.py [space] [batch_per_rank] [steps]
"""

from __future__ import annotations

import os
import socket
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from proxyless.distributed import DistContext, average_gradients, step_generator
from proxyless.space import get_space
from proxyless.supernet import SuperNet

# DDP last: once a module is wrapped, *any* backward through its parameters (even one that
# bypasses the wrapper, like an arch step on the plain module) fires the DDP reducer's hooks
# and fails with "gradient which is undefined, but still allreduced by DDP reducer".
MODES = ("local", "flat", "ddp")
WARMUP = 2


def _worker(rank: int, port: int, space: str, batch: int, steps: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    ctx = DistContext(rank=rank, world_size=2)
    torch.manual_seed(0)
    net = SuperNet(get_space(space))
    size = net.space.input_size
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, net.space.num_classes, (batch,))
    results = {}
    for mode in MODES:
        if mode == "ddp":
            ddp = nn.parallel.DistributedDataParallel(net, find_unused_parameters=True)
        elapsed, reduced, touched = 0.0, 0, 0
        for step in range(-WARMUP, steps):
            net.sample_paths(step_generator(0, step), uniform=True)
            net.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            model = ddp if mode == "ddp" else net
            F.cross_entropy(model(x), y).backward()
            if mode == "flat":
                average_gradients(net.weight_parameters(), ctx)
            if step < 0:
                continue
            elapsed += time.perf_counter() - t0
            on_path = {id(p) for p in _path_params(net)}
            touched += sum(
                p.grad is not None and id(p) not in on_path for p in net.weight_parameters()
            )
            reduced += sum(p.numel() for p in net.parameters() if p.grad is not None)
        results[mode] = (elapsed / steps * 1e3, reduced // steps, touched / steps)
    if rank == 0:
        base = results["local"][0]
        total = sum(p.numel() for p in net.parameters())
        print(f"space={space} batch/rank={batch} steps={steps} (2 gloo ranks, 1 thread each)")
        print(f"supernet parameters: {total} (DDP all-reduces buckets of all of them)")
        print(f"{'mode':8} {'ms/step':>9} {'× local':>8} {'path elems':>14} {'off-path grads':>15}")
        for mode, (ms, elems, off) in results.items():
            red = 0 if mode == "local" else elems
            print(f"{mode:8} {ms:9.1f} {ms / base:8.2f} {red:14d} {off:15.1f}")
    dist.destroy_process_group()


def _path_params(net: SuperNet) -> list[nn.Parameter]:
    params = [*net.stem.parameters(), *net.first.parameters(), *net.head.parameters()]
    for layer in net.layers:
        params += list(layer.candidates[layer.active].parameters())
    return params


if __name__ == "__main__":
    space = sys.argv[1] if len(sys.argv) > 1 else "tiny"
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, space, batch, steps), nprocs=2)
