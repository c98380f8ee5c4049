"""Streamed validation (issue 12): whole networks are saved once and measured from disk in
chunks of `stream_live`, each loaded once per pass, so memory does not grow with their
number. Counted two ways: live prepared networks (weak references to modules / ORT
sessions), and peak RSS in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import torch
from torch import nn

from latency.backends import OrtCPU, TorchCPU
from latency.protocol import Protocol
from latency.table import Entry, LatencyTable, TableHeader
from latency.validate import Network, validate

REPO = Path(__file__).resolve().parents[2]
FAST = Protocol(warmup=1, rounds=2, repeats=2, window_ms=0.1)


class Live:
    """Weak references to every prepared heavy object; `most` = the most alive at once."""

    def __init__(self) -> None:
        self.refs: list[weakref.ref] = []
        self.most = 0

    def saw(self, obj: object) -> None:
        self.refs.append(weakref.ref(obj))
        self.most = max(self.most, sum(r() is not None for r in self.refs))


def counting(base: type) -> tuple[object, Live, list[int]]:
    """A backend of class `base` counting live modules (torch) or sessions (ORT) and saves."""
    live, saves = Live(), [0]

    class Counting(base):  # type: ignore[misc, valid-type]
        def prepare(self, module, example_input):
            if base is TorchCPU:
                live.saw(module)
            return super().prepare(module, example_input)

        def _run(self, sess, x):
            live.saw(sess)
            return super()._run(sess, x)

        def save(self, module, example_input, stem):
            saves[0] += 1
            return super().save(module, example_input, stem)

    return Counting(), live, saves


def conv_nets(n: int) -> tuple[LatencyTable, list[Network]]:
    """n small conv networks of growing depth, one table key per layer."""
    table = LatencyTable(TableHeader("cpu", "torch-cpu", 1, "float32"))
    table.add("conv", Entry(0.1, 0.1, 0.1, 1))

    def net(i: int) -> Network:
        def build() -> tuple[nn.Module, torch.Tensor]:
            layers = [nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()) for _ in range(i)]
            return nn.Sequential(*layers), torch.randn(1, 4, 8, 8)

        return Network(f"n{i}", build, ["conv"] * i)

    return table, [net(i) for i in range(1, n + 1)]


@pytest.mark.parametrize("chunk", [1, 4])
@pytest.mark.parametrize("base", [TorchCPU, OrtCPU], ids=["torch-cpu", "ort-cpu"])
def test_streamed_validation_keeps_a_chunk_live(base: type, chunk: int, tmp_path: Path) -> None:
    n = 6
    table, nets = conv_nets(n)
    table.header.backend = base.name
    backend, live, saves = counting(base)
    s = validate(table, nets, backend, FAST, out_dir=tmp_path, progress=False, stream_live=chunk)
    assert s["streamed"] and s["stream_live"] == chunk
    assert s["n"] == n and s["noise_floor"]["n"] == n
    assert saves[0] == n  # one save (ONNX export) per network, for both passes
    if base is TorchCPU:
        assert len(live.refs) == 2 * n  # each network loaded once per pass, not per window
    assert live.most <= chunk + 1  # the chunk being timed and the speed reference
    assert sorted(p.name for p in tmp_path.iterdir()) == ["validation.json", "validation.png"]

    backend, live, saves = counting(base)  # the counter sees what stream=False keeps
    validate(table, nets, backend, FAST, progress=False, stream=False)
    assert live.most == n and saves[0] == 0


RSS_SCRIPT = """
import json, resource, sys
import torch
from torch import nn
from latency.protocol import Protocol
from latency.table import Entry, LatencyTable, TableHeader
from latency.validate import Network, validate

torch.set_num_threads(1)
backend, n, stream = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
table = LatencyTable(TableHeader("cpu", backend, 1, "float32"))
table.add("k", Entry(1.0, 1.0, 1.0, 1))
fast = Protocol(warmup=1, rounds=1, repeats=1, window_ms=0.1)

def nets(n):  # 16 MiB of weights each
    build = lambda: (nn.Sequential(nn.Linear(2048, 2048), nn.ReLU()), torch.randn(1, 2048))
    return [Network(f"n{i}", build, ["k"]) for i in range(n)]

def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

validate(table, nets(2), backend, fast, progress=False, stream=stream)  # imports, 2 live
base = peak_mib()
validate(table, nets(n), backend, fast, progress=False, stream=stream, stream_live=2)
print(json.dumps({"growth_mib": peak_mib() - base}))
"""


@pytest.mark.parametrize("backend", [pytest.param("torch-cpu", marks=pytest.mark.slow), "ort-cpu"])
def test_streamed_validation_peak_rss_does_not_grow_with_networks(backend: str) -> None:
    """32 networks of 16 MiB: all live would add >= 30 x 16 MiB of peak RSS (ORT: more);
    streamed in chunks of 2, the peak stays that of a few networks (measured: 30-144 MiB,
    glibc keeping freed blocks; with stream=False at 16 networks: 224 MiB on torch-cpu,
    833 MiB on ort-cpu)."""
    n, size_mib = 32, 16
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, backend, str(n), "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    growth = json.loads(r.stdout.strip().splitlines()[-1])["growth_mib"]
    assert growth < n * size_mib * 0.4, growth


@pytest.mark.parametrize("base", [TorchCPU, OrtCPU], ids=["torch-cpu", "ort-cpu"])
def test_stash_saves_many_items_in_parallel_and_loads_them_back(base: type, tmp_path: Path) -> None:
    """add_all forks savers (ONNX exports of hundreds of networks are the slow part of a
    validation); every item loads back from what the children wrote and computes the same."""
    from latency.stash import Stash

    _, nets = conv_nets(12)
    builders = {n.name: n.build for n in nets}
    files = 12 * (2 if base is OrtCPU else 1)  # ONNX + input, or weights with input
    with Stash(base(), tmp_path / "stash") as stash:
        stash.add_all(builders, workers=2)
        assert len(stash) == 12 and len(list((tmp_path / "stash").iterdir())) == files
        stash.add_all(builders, workers=2)  # nothing saved twice
        assert len(list((tmp_path / "stash").iterdir())) == files
        for name in ("n1", "n7", "n12"):
            out = stash.load(name)()
            out = out[0] if isinstance(out, list) else out
            assert tuple(torch.as_tensor(out).shape) == (1, 4, 8, 8)
