"""Profiling: resumable (only missing keys are built), header contents, backends."""

from __future__ import annotations

import pytest
import torch

from latency.backends import get_backend
from latency.profile import measure_networks, profile
from latency.protocol import Protocol
from latency.table import LatencyTable, TableError


def counting(items: dict) -> tuple[dict, dict]:
    calls = {k: 0 for k in items}

    def wrap(k):
        def build():
            calls[k] += 1
            return items[k]()

        return build

    return {k: wrap(k) for k in items}, calls


def test_profile_is_resumable(items, fast, make_conv, tmp_path) -> None:
    keys = list(items)
    first, calls = counting({k: items[k] for k in keys[:2]})
    table = profile(first, "torch-cpu", protocol=fast, progress=False, profile_command="cmd X")
    assert sorted(table.entries) == sorted(keys[:2]) and all(calls[k] == 1 for k in keys[:2])
    for e in table.entries.values():
        assert e.ms > 0 and e.calls_p10_ms <= e.calls_p90_ms and e.n >= fast.rounds * fast.repeats
    h = table.header
    assert (h.backend, h.batch, h.dtype, h.threads) == ("torch-cpu", 1, "float32", 1)
    assert h.protocol["rounds"] == 3 and h.profile_command == "cmd X" and "torch" in h.versions

    all_items, calls = counting(items)
    path = tmp_path / "t.json"
    done = profile(all_items, "torch-cpu", table, progress=False, save_to=path)
    assert calls == {keys[0]: 0, keys[1]: 0, keys[2]: 1}  # only the missing key was built
    assert done.entries[keys[0]] == table.entries[keys[0]]
    assert LatencyTable.load(path).entries.keys() == set(keys)

    again, calls = counting(items)
    profile(again, "torch-cpu", done, progress=False)
    assert sum(calls.values()) == 0


def test_profile_refuses_mixed_setups(items, fast) -> None:
    table = profile(dict(list(items.items())[:1]), "torch-cpu", protocol=fast, progress=False)
    with pytest.raises(TableError, match="protocol"):
        profile(items, "torch-cpu", table, protocol=Protocol(rounds=9), progress=False)
    with pytest.raises(TableError, match="backend"):
        profile(items, "ort-cpu", table, progress=False)
    forced = profile(items, "ort-cpu", table, progress=False, force=True)
    assert set(forced.entries) == set(items) and forced.header.backend == "torch-cpu"
    big = {"conv_big": lambda: (torch.nn.Identity(), torch.randn(4, 2, 8, 8))}
    with pytest.raises(TableError, match="batch"):
        profile(big, "torch-cpu", table, progress=False)


def test_ort_cpu_backend_and_chunks(items, fast) -> None:
    table = profile(items, "ort-cpu", protocol=fast, progress=False, chunk=2)
    assert set(table.entries) == set(items) and "onnxruntime" in table.header.versions


def test_measure_networks(items, fast) -> None:
    got = measure_networks(items, get_backend("torch-cpu"), fast, progress=False)
    assert set(got) == set(items) and all(e.ms > 0 for e in got.values())


def test_cuda_backends_fail_clearly_without_cuda() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(RuntimeError, match="torch-cpu"):
        get_backend("torch-cuda")
    with pytest.raises(RuntimeError, match="ort-cpu"):
        get_backend("ort-cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_torch_cuda_profile(items, fast) -> None:
    table = profile(items, "torch-cuda", protocol=fast, progress=False)
    assert set(table.entries) == set(items) and table.header.device == torch.cuda.get_device_name()
