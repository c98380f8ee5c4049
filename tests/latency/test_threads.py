import pytest
import torch

from latency.threads import torch_threads


def test_torch_threads_sets_and_restores():
    before = torch.get_num_threads()
    with torch_threads(1) as n:
        assert n == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == before


def test_torch_threads_restores_after_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError), torch_threads(1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_torch_threads_none_leaves_count():
    before = torch.get_num_threads()
    with torch_threads(None) as n:
        assert n == before
