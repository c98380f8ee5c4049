"""Issue 14's speed-ups compute what the plain NCHW steps compute: channels_last weights and
activations, multi-tensor SGD, and a search loop that reads no tensor on the host per step."""

from __future__ import annotations

import copy
import gc
import platform
import subprocess
import sys
import weakref
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from latency.config_dict import ConfigError
from proxyless.arch import Arch
from proxyless.estimators import ESTIMATORS
from proxyless.ops import Conv2d
from proxyless.run import (
    SGDConfig,
    frozen_setup_objects,
    host_memory,
    load_checkpoint,
    resolve_memory_format,
    sgd,
)
from proxyless.search import SearchError, search
from proxyless.space import get_space
from proxyless.steps import weight_step
from proxyless.supernet import SuperNet
from tests.test_search import fast_cfg

CL = torch.channels_last
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


def _setup(space: str = "cifar", batch: int = 8) -> tuple[SuperNet, list[int], Any, Any]:
    torch.manual_seed(0)
    net = SuperNet(get_space(space)).train()
    gen = torch.Generator().manual_seed(1)
    path = net.sample_paths(gen)
    s = net.space.input_size
    x = torch.randn(batch, 3, s, s, generator=gen)
    y = torch.randint(0, net.space.num_classes, (batch,), generator=gen)
    return net, path, x, y


def _weight_grads(net: SuperNet, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.0)
    weight_step(net, x, y, opt, resample=False)
    return {n: p.grad for n, p in net.named_parameters() if p.grad is not None}


def test_resolve_memory_format_defaults_per_device() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_memory_format("auto", cpu) == CL
    assert resolve_memory_format("auto", cuda, "fp32") == torch.contiguous_format
    assert resolve_memory_format("auto", cuda, "bf16") == CL
    assert resolve_memory_format("contiguous", cpu) == torch.contiguous_format
    assert resolve_memory_format("channels_last", cuda) == CL
    with pytest.raises(ValueError, match="memory_format"):
        resolve_memory_format("nhwc", cpu)


# Same math: in float64 channels_last and NCHW agree to rounding. In float32 train mode they
# do not agree to 1e-4 on a random-init deep net: PyTorch's CPU channels_last BatchNorm is
# 10-50x less accurate than its NCHW kernel, and the net amplifies any rounding (NCHW float32
# is itself ~1e-2 from float64 at CIFAR batch 64; benchmarks/supernet_cost.py --grad-f64).
# With running statistics (eval-mode BN) float32 agrees to ~1e-7.
@pytest.mark.parametrize(
    ("dtype", "train", "tol"), [(torch.float64, True, 1e-9), (torch.float32, False, 1e-4)]
)
def test_channels_last_weight_step_has_the_nchw_gradients(
    dtype: torch.dtype, train: bool, tol: float
) -> None:
    net, path, x, y = _setup("tiny", 16)
    net, x = net.to(dtype).train(train), x.to(dtype)
    fast = copy.deepcopy(net).to(memory_format=CL)
    fast.set_paths(path)
    net.set_paths(path)
    ref = _weight_grads(net, x, y)
    got = _weight_grads(fast, x.contiguous(memory_format=CL), y)
    assert ref.keys() == got.keys()  # the same (active) parameters get a gradient
    names = list(ref)
    assert (
        _rel(
            torch.cat([got[n].flatten() for n in names]),
            torch.cat([ref[n].flatten() for n in names]),
        )
        < tol
    )
    conv = fast.layers[0].candidates[path[0]]
    assert next(p for p in conv.parameters() if p.ndim == 4).is_contiguous(memory_format=CL)


def test_channels_last_standalone_net_has_the_nchw_gradients() -> None:
    net, path, x, y = _setup("tiny", 16)
    net, x = net.double(), x.double()
    arch = Arch(net.space, [la.spec.candidates[i] for la, i in zip(net.layers, path, strict=True)])
    ref_net = net.extract(arch).double().train()
    fast = copy.deepcopy(ref_net).to(memory_format=CL)
    F.cross_entropy(ref_net(x), y).backward()
    F.cross_entropy(fast(x.contiguous(memory_format=CL)), y).backward()
    got = dict(fast.named_parameters())
    ref = dict(ref_net.named_parameters())
    cat = lambda d: torch.cat([d[n].grad.flatten() for n in ref])  # noqa: E731
    assert _rel(cat(got), cat(ref)) < 1e-9


def test_channels_last_all_paths_alpha_gradient_matches_nchw() -> None:
    net, path, x, y = _setup("tiny", 16)
    net, x = net.double(), x.double()
    fast = copy.deepcopy(net).to(memory_format=CL)
    grads = []
    for model, xx in ((net, x), (fast, x.contiguous(memory_format=CL))):
        model.set_paths(path)
        with model.frozen_weights():
            F.cross_entropy(model(xx, ESTIMATORS.build("all_paths")), y).backward()
        grads.append(torch.cat([a.grad for a in model.arch_parameters()]))
    assert _rel(grads[1], grads[0]) < 1e-9


@pytest.mark.parametrize("fused", [False, True])
def test_multi_tensor_sgd_matches_the_loop(fused: bool) -> None:
    """foreach (search: some candidates have no momentum yet) and fused (train) updates equal
    torch's per-parameter loop to float rounding, and skip parameters without a gradient."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(4, 3, 3, 3)), torch.nn.Parameter(torch.randn(4))]
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    cfg = SGDConfig(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2)
    ours = sgd(params, cfg, fused=fused)
    assert ours.param_groups[0]["fused" if fused else "foreach"]
    ref = torch.optim.SGD(
        [{"params": [twins[0]], "weight_decay": 1e-2}, {"params": [twins[1]], "weight_decay": 0.0}],
        lr=0.1,
        momentum=0.9,
        nesterov=True,
        foreach=False,
    )
    for step in range(3):
        for ps, opt in ((params, ours), (twins, ref)):
            opt.zero_grad(set_to_none=True)
            torch.manual_seed(step)
            grads = [torch.randn_like(p) for p in ps]
            ps[0].grad = grads[0]
            if step > 0 or not fused:  # foreach: a parameter first trained at a later step
                ps[1].grad = grads[1]
            opt.step()
        for p, q in zip(params, twins, strict=True):
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    ("cin", "cout", "kernel", "stride", "groups", "batch"),
    [(16, 48, 1, 1, 1, 8), (48, 48, 5, 2, 48, 8), (24, 8, 1, 1, 1, 32), (8, 16, 3, 1, 1, 3)],
)
def test_onednn_conv_has_f_conv2d_values_and_gradients(
    cin: int, cout: int, kernel: int, stride: int, groups: int, batch: int
) -> None:
    """ops.Conv2d sends channels_last float32 CPU calls to oneDNN (the 1×1 small-batch case
    F.conv2d would give its slower native kernel): same outputs and bit-identical gradients."""
    torch.manual_seed(0)
    ref = torch.nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
    ref = ref.to(memory_format=CL)
    ours = Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
    ours.load_state_dict(ref.state_dict())
    ours = ours.to(memory_format=CL)
    x = torch.randn(batch, cin, 14, 14).contiguous(memory_format=CL)
    g = torch.randn_like(ref(x))
    outs = []
    for conv in (ref, ours):
        xx = x.clone().requires_grad_()
        y = conv(xx)
        y.backward(g)
        outs.append((y, xx.grad, conv.weight.grad))
    for a, b in zip(*outs, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    assert outs[1][0].is_contiguous(memory_format=CL)
    assert torch.equal(outs[0][2], outs[1][2])  # the same backward kernels


@pytest.mark.filterwarnings("ignore:`torch.jit.trace")
def test_onednn_conv_leaves_other_calls_to_f_conv2d() -> None:
    """NCHW, float64 and traced calls (fvcore, the ONNX export) keep F.conv2d's own op."""
    conv = Conv2d(8, 16, 1, bias=False)
    x = torch.randn(2, 8, 6, 6)
    nodes = lambda m, xx: {n.kind() for n in torch.jit.trace(m, xx).inlined_graph.nodes()}  # noqa: E731
    assert "aten::_convolution" in nodes(conv, x)
    cl, xcl = copy.deepcopy(conv).to(memory_format=CL), x.contiguous(memory_format=CL)
    assert "aten::mkldnn_convolution" not in nodes(cl, xcl)  # traced: the portable op
    torch.testing.assert_close(conv.double()(x.double()), F.conv2d(x.double(), conv.weight))


def _page_faults_per_step(mode: str, steps: int = 8) -> list[int]:
    """Minor page faults of each of `steps` identical "steps" (three 64 MiB tensors made and
    freed), in a fresh process."""
    code = f"""
import resource, torch
from proxyless.run import host_memory
faults = []
with host_memory({mode!r}) as reusing:
    for _ in range({steps}):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        a = torch.ones(16 << 20)
        b = a * 2
        c = a + b
        del a, b, c
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(reusing, *faults)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    reusing, *faults = out.stdout.split()
    assert reusing == str(mode == "reuse")
    return [int(f) for f in faults]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="host_memory acts on glibc")
def test_reused_host_memory_does_not_fault_in_again() -> None:
    """glibc's defaults unmap every freed large block, so each step faults its 3 × 16k pages
    in again; under `reuse` the heap keeps them, and once it has settled a step faults in
    nothing. Settling (small allocations splitting the freed blocks, the heap growing by a
    tensor or two) took up to 7 steps in repeated runs here, so only steps 9–16 are held to
    it — and even then a step now and then faults in one tensor (16k pages; seen in 3 of 6
    runs, and once in CI), so 6 of those 8 steps must fault in nothing, where under
    `release` every step faults in all three."""
    release = _page_faults_per_step("release")
    assert min(release[1:]) > 45_000
    reuse = _page_faults_per_step("reuse", steps=16)
    assert sum(f < 1_000 for f in reuse[-8:]) >= 6, reuse


def test_host_memory_is_checked() -> None:
    with (
        pytest.raises(ValueError, match="host_memory must be one of reuse, release"),
        host_memory("keep"),
    ):
        pass
    with pytest.raises(ConfigError, match="host_memory='keep': use reuse, release"):
        fast_cfg(Path("unused"), host_memory="keep")


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_frozen_setup_objects_spares_old_objects_and_collects_new_cycles() -> None:
    old = weakref.ref(_Cycle())  # garbage before the block: collected on entry
    setup = _Cycle()
    with frozen_setup_objects():
        assert old() is None
        assert gc.get_freeze_count() > 0 and not any(setup is o for o in gc.get_objects())
        new = weakref.ref(_Cycle())
        gc.collect()
        assert new() is None  # the block's own cycles go as usual
    assert gc.get_freeze_count() == 0
    assert any(setup is o for o in gc.get_objects())  # set-up objects are collectable again
    with pytest.raises(RuntimeError), frozen_setup_objects():
        raise RuntimeError("an epoch failed")
    assert gc.get_freeze_count() == 0


def test_search_runs_channels_last_and_contiguous(tmp_path: Path) -> None:
    auto = search(fast_cfg(tmp_path / "auto"))
    plain = search(fast_cfg(tmp_path / "plain", memory_format="contiguous"))
    w = auto.net.stem[0].weight
    assert w.is_contiguous(memory_format=CL) and not w.is_contiguous()
    assert plain.net.stem[0].weight.is_contiguous()
    assert auto.metrics["steps"] == plain.metrics["steps"]
    # warmup paths depend on the seed only: the same steps, the same losses up to rounding
    # (later, rounding differences in α can change which paths are sampled)
    losses = [
        load_checkpoint(d / "checkpoints" / "last.pt")["history"]["epochs"][0]["train_loss"]
        for d in (tmp_path / "auto", tmp_path / "plain")
    ]
    assert losses[0] == pytest.approx(losses[1], rel=1e-3)


def test_nan_is_caught_before_the_epoch_writes_anything(tmp_path: Path) -> None:
    """The finite check is deferred (no per-step sync), yet nothing is written after a NaN:
    not at the epoch's end (arch.json, checkpoint) and not at a later mid-epoch checkpoint."""
    cfg = fast_cfg(
        tmp_path,
        log={"every_steps": 1000},
        schedule={"warmup_epochs": 1, "epochs": 0},
        debug={"inject_nan_at_step": 2},
    )
    with pytest.raises(SearchError, match="weight-step loss became nan at step 2 .epoch 1"):
        search(cfg)
    assert not (tmp_path / "arch.json").exists()
    assert not (tmp_path / "checkpoints" / "last.pt").exists()
    cfg = fast_cfg(
        tmp_path / "mid",
        log={"every_steps": 1000},
        checkpoint={"every_steps": 3},
        debug={"inject_nan_at_step": 7},
    )
    with pytest.raises(SearchError, match="at step 7"):
        search(cfg)
    assert load_checkpoint(tmp_path / "mid" / "checkpoints" / "last.pt")["global_step"] == 6


def _host_reads(tmp_path: Path, steps: int, monkeypatch: pytest.MonkeyPatch) -> int:
    """How often a warmup-only search reads a tensor on the host (float/int/item/tolist/bool):
    on a GPU each such read of a device tensor waits for the device."""
    count = [0]
    for name in ("__float__", "__int__", "__bool__", "item", "tolist"):
        orig = getattr(torch.Tensor, name)

        def counted(self: torch.Tensor, *a: Any, _orig: Any = orig, **k: Any) -> Any:
            # path sampling reads its draw from CPU-side probabilities: no device sync
            if not sys._getframe(1).f_code.co_filename.endswith("mixed_op.py"):
                count[0] += 1
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    cfg = fast_cfg(
        tmp_path / str(steps),
        log={"every_steps": 1000, "tensorboard": False, "heatmap": False},
        schedule={"warmup_epochs": 1, "epochs": 0, "steps_per_epoch": steps},
    )
    before = count[0]
    search(cfg)
    monkeypatch.undo()
    return count[0] - before


def test_weight_steps_read_nothing_on_the_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More weight steps, no more host reads: the loop syncs per log step, not per step."""
    assert _host_reads(tmp_path, 2, monkeypatch) == _host_reads(tmp_path, 8, monkeypatch)


@pytest.mark.gpu
@CUDA
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_channels_last_weight_step_matches_nchw(precision: str) -> None:
    net, path, x, y = _setup()
    net, x, y = net.cuda(), x.cuda(), y.cuda()
    fast = copy.deepcopy(net).to(memory_format=CL)
    net.set_paths(path)
    fast.set_paths(path)
    ref = _weight_grads(net, x, y)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
        got = _weight_grads(fast, x.contiguous(memory_format=CL), y)
    tol = 0.1  # float32 train-mode BN rounding is amplified (see above); bf16: 8 mantissa bits
    names = list(ref)
    cat = lambda d: torch.cat([d[n].flatten() for n in names])  # noqa: E731
    assert _rel(cat(got), cat(ref)) < tol


@pytest.mark.gpu
@CUDA
def test_cuda_search_runs_channels_last_bf16(tmp_path: Path) -> None:
    result = search(fast_cfg(tmp_path, device="cuda", precision="bf16"))
    assert result.net.stem[0].weight.is_contiguous(memory_format=CL)
    assert result.metrics["steps"] == 12
