"""Latency backends: how to run a module on one runtime/device, and how to time it.

A backend turns `(module, example_input)` into a zero-argument `run()` so that the
protocol (latency.protocol) can time many calls without knowing the runtime. Backends are
a real extension point, hence a registry:

>>> sorted(BACKENDS.names())
['ort-cpu', 'ort-cuda', 'torch-cpu', 'torch-cuda']
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from latency.device import cpu_name, gpu_name, package_versions
from latency.registry import Registry
from latency.threads import torch_threads

Run = Callable[[], object]


class Backend:
    """Base: a fixed thread count, wall-clock timing, header fields. Subclasses `prepare`."""

    name: ClassVar[str] = ""

    def __init__(self, threads: int = 1) -> None:
        # One thread by default: the most reproducible number on a shared machine.
        self.threads = int(threads)

    def prepare(self, module: nn.Module, example_input: torch.Tensor) -> Run:
        raise NotImplementedError

    def save(self, module: nn.Module, example_input: torch.Tensor, stem: Path) -> None:
        """Write what `load` needs to prepare the item again (files named `stem.*`), so a
        streamed measurement keeps only the item it times in memory. Here: weights, input."""
        state = {"state": module.state_dict(), "input": example_input.detach().cpu()}
        torch.save(state, stem.with_suffix(".pt"))

    def load(self, stem: Path, build: Callable[[], tuple[nn.Module, torch.Tensor]]) -> Run:
        """A fresh run of an item `save`d at `stem`; `build` makes the module to load into."""
        module, _ = build()
        saved = torch.load(stem.with_suffix(".pt"), weights_only=True)
        module.load_state_dict(saved["state"])
        return self.prepare(module, saved["input"])

    def time_calls(self, run: Run, repeats: int) -> list[float]:
        """Per-call wall-clock times (ms) of `repeats` back-to-back calls."""
        clock = time.perf_counter_ns
        out = []
        for _ in range(repeats):
            t0 = clock()
            run()
            out.append((clock() - t0) / 1e6)
        return out

    def device_name(self) -> str:
        return cpu_name()

    def versions(self) -> dict[str, str]:
        return package_versions("torch")

    def header_fields(self) -> dict[str, Any]:
        """What a table header needs from the backend (see latency.header.TableHeader)."""
        return {
            "device": self.device_name(),
            "backend": self.name,
            "threads": self.threads,
            "versions": self.versions(),
        }


BACKENDS: Registry[type[Backend]] = Registry("latency backend")


def get_backend(name: str, **kwargs: Any) -> Backend:
    """Instantiate a registered backend, e.g. `get_backend("ort-cpu", threads=2)`."""
    return BACKENDS.get(name)(**kwargs)


@BACKENDS.register("torch-cpu")
class TorchCPU(Backend):
    """Eager PyTorch on CPU with `threads` intra-op threads while it times (the caller's
    thread count is restored afterwards: profiling inside a search must not change it)."""

    name = "torch-cpu"

    def prepare(self, module: nn.Module, example_input: torch.Tensor) -> Run:
        module, x = module.eval().cpu(), example_input.cpu()

        def run() -> object:
            with torch.inference_mode():
                return module(x)

        return run

    def time_calls(self, run: Run, repeats: int) -> list[float]:
        with torch_threads(self.threads):
            return super().time_calls(run, repeats)


@BACKENDS.register("torch-cuda")
class TorchCUDA(Backend):
    """Eager PyTorch on one GPU, timed with CUDA events (host clocks miss async kernels)."""

    name = "torch-cuda"

    def __init__(self, threads: int = 1, device: int = 0) -> None:
        if not torch.cuda.is_available():
            raise RuntimeError(
                "backend 'torch-cuda' needs a CUDA device, but torch.cuda.is_available() is "
                "False; use 'torch-cpu' / 'ort-cpu' or run on a GPU machine"
            )
        super().__init__(threads)
        self.device = torch.device("cuda", device)

    def prepare(self, module: nn.Module, example_input: torch.Tensor) -> Run:
        module, x = module.eval().to(self.device), example_input.to(self.device)

        def run() -> object:
            with torch.inference_mode():
                return module(x)

        return run

    def time_calls(self, run: Run, repeats: int) -> list[float]:
        events = [torch.cuda.Event(enable_timing=True) for _ in range(repeats + 1)]
        events[0].record()
        for i in range(repeats):
            run()
            events[i + 1].record()
        torch.cuda.synchronize(self.device)
        return [events[i].elapsed_time(events[i + 1]) for i in range(repeats)]

    def device_name(self) -> str:
        return gpu_name(self.device.index or 0)

    def versions(self) -> dict[str, str]:
        return {
            **package_versions("torch"),
            "cuda": str(torch.version.cuda),
            "cudnn": str(torch.backends.cudnn.version()),
        }


def ort_session(model: bytes | str, threads: int, providers: list[str] | None = None) -> Any:
    """The one way an ONNX Runtime session is made (from the model's bytes or file path):
    `threads` intra-op threads, sequential, all graph optimisations, quiet; `providers`
    default to the CPU."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    providers = providers or ["CPUExecutionProvider"]
    return ort.InferenceSession(model, sess_options=opts, providers=providers)


class _ORT(Backend):
    """ONNX Runtime: the module is exported to ONNX (static shape) and run by a session."""

    providers: ClassVar[list[str]] = ["CPUExecutionProvider"]

    def _session(self, module: nn.Module, example_input: torch.Tensor) -> Any:
        from latency.onnx_export import export_onnx

        model = export_onnx(module.cpu(), example_input.cpu())
        return ort_session(model, self.threads, self.providers)

    def prepare(self, module: nn.Module, example_input: torch.Tensor) -> Run:
        x = example_input.detach().cpu().numpy()
        return self._run(self._session(module, example_input), x)

    def save(self, module: nn.Module, example_input: torch.Tensor, stem: Path) -> None:
        """The ONNX file (the one export of the item) and its input."""
        from latency.onnx_export import export_onnx

        export_onnx(module.cpu(), example_input.cpu(), stem.with_suffix(".onnx"))
        np.save(stem.with_suffix(".npy"), example_input.detach().cpu().numpy())

    def load(self, stem: Path, build: Callable[[], tuple[nn.Module, torch.Tensor]]) -> Run:
        sess = ort_session(str(stem.with_suffix(".onnx")), self.threads, self.providers)
        return self._run(sess, np.load(stem.with_suffix(".npy")))

    def _run(self, sess: Any, x: np.ndarray) -> Run:
        raise NotImplementedError

    def versions(self) -> dict[str, str]:
        return package_versions("onnxruntime", "onnx", "torch")


@BACKENDS.register("ort-cpu")
class OrtCPU(_ORT):
    name = "ort-cpu"

    def _run(self, sess: Any, x: np.ndarray) -> Run:
        feed = {sess.get_inputs()[0].name: x}
        return lambda: sess.run(None, feed)


@BACKENDS.register("ort-cuda")
class OrtCUDA(_ORT):
    """ORT's CUDA EP with inputs/outputs bound on the GPU (no host copies in the timing)."""

    name = "ort-cuda"
    providers: ClassVar[list[str]] = ["CUDAExecutionProvider"]

    def __init__(self, threads: int = 1) -> None:
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise RuntimeError(
                "backend 'ort-cuda' needs onnxruntime's CUDAExecutionProvider (available: "
                f"{ort.get_available_providers()}); install onnxruntime-gpu on a CUDA machine "
                "or use 'ort-cpu'"
            )
        super().__init__(threads)

    def _run(self, sess: Any, x: np.ndarray) -> Run:
        import onnxruntime as ort

        binding = sess.io_binding()
        on_gpu = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
        binding.bind_ortvalue_input(sess.get_inputs()[0].name, on_gpu)
        for out in sess.get_outputs():
            binding.bind_output(out.name, "cuda")
        return lambda: sess.run_with_iobinding(binding)

    def device_name(self) -> str:
        return gpu_name(0)
