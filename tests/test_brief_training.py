"""`brief_training_accuracy`, the `derive.judge=train` judge: it learns, it is a function
of (arch, data, seed), and it leaves the caller's RNGs and sampler where they were."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from proxyless.arch import Arch
from proxyless.brief_training import brief_training_accuracy
from proxyless.data.loaders import ResumableSampler
from proxyless.distributed import DistContext
from proxyless.run import SGDConfig
from proxyless.space import get_space


def _two_colour_task(n: int = 64) -> TensorDataset:
    """Class 0: reddish images, class 1: bluish ones (of the space's 10 classes): a net
    that learns anything gets it right; chance is 0.5."""
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 2
    x = 0.3 * torch.randn(n, 3, 32, 32, generator=gen)
    x[:, 0] += torch.where(y == 0, 1.0, -1.0)[:, None, None]
    x[:, 2] += torch.where(y == 1, 1.0, -1.0)[:, None, None]
    return TensorDataset(x, y)


def _arch() -> Arch:
    space = get_space("tiny")
    return Arch(space, [layer.candidates[1] for layer in space.layers()])


def _loader(data: TensorDataset) -> DataLoader:
    return DataLoader(data, batch_size=16, sampler=ResumableSampler(data, shuffle=True, seed=0))


def _judge(train: DataLoader, epochs: int, seed: int = 0) -> float:
    heldout = DataLoader(train.dataset, batch_size=32)
    optim = SGDConfig(lr=0.1, lr_warmup_epochs=0.5)
    return brief_training_accuracy(_arch(), train, heldout, DistContext(), epochs, optim, seed)


def test_brief_training_learns_an_easy_task() -> None:
    # 40 steps: enough for the BatchNorm running statistics that evaluation uses (16 are not)
    assert _judge(_loader(_two_colour_task()), epochs=10) >= 0.9


def test_brief_training_is_a_function_of_its_seed_and_leaves_no_trace() -> None:
    train = _loader(_two_colour_task())
    sampler = train.sampler
    sampler.set_epoch(7)
    sampler.start = 16
    torch.manual_seed(123)
    rng = torch.random.get_rng_state()
    first = _judge(train, epochs=1)
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert sampler.state_dict() == {"epoch": 7, "start": 16}
    torch.manual_seed(456)  # another global RNG state: the same result
    assert _judge(train, epochs=1) == first


def test_brief_training_refuses_zero_epochs() -> None:
    with pytest.raises(ValueError, match="epochs=0 must be >= 1"):
        _judge(_loader(_two_colour_task()), epochs=0)
