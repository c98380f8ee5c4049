"""DataLoaders with resumable, seeded order, and an endless held-out stream for arch steps."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from latency.threads import free_cores

from .config import DataConfig, DataError, DataSplits

log = logging.getLogger(__name__)


class ResumableSampler(DistributedSampler):
    """DistributedSampler whose position can be saved and restored.

    Order is a pure function of (seed, epoch), sharded over ranks as in DDP; a single
    process is simply rank 0 of 1. Two additions: `start` skips the first samples of the
    shard (resume mid-epoch without decoding skipped images), and the epoch advances by
    itself after a complete pass, so a loop that forgets `set_epoch` still reshuffles.
    Calling `set_epoch` every epoch, as DDP code does, gives the same order.
    """

    def __init__(
        self, dataset: Dataset, *, shuffle: bool, seed: int, num_replicas: int = 1, rank: int = 0
    ) -> None:
        super().__init__(
            dataset,
            num_replicas=num_replicas,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=False,
        )
        self.start = 0

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        start, self.start = self.start, 0
        yield from indices[start:]
        self.epoch += 1

    def __len__(self) -> int:
        return self.num_samples - self.start

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "start": self.start}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.start = int(state["epoch"]), int(state["start"])


class InfiniteLoader:
    """Endless batches from a finite loader, reshuffled each pass from (seed, pass).

    Arch steps draw "the next held-out batch" at their own pace. `state_dict()` counts
    consumed batches (not prefetched ones), so after `load_state_dict` the next batch is
    exactly the one an uninterrupted run would have drawn.

    >>> stream = InfiniteLoader(loaders.heldout)  # doctest: +SKIP
    >>> x, y = next(stream); ckpt["heldout"] = stream.state_dict()  # doctest: +SKIP
    """

    def __init__(self, loader: DataLoader) -> None:
        if not isinstance(loader.sampler, ResumableSampler):
            raise TypeError(
                "InfiniteLoader needs a loader built by build_loaders "
                "(its sampler must be a ResumableSampler)"
            )
        self.loader = loader
        self.epoch = 0  # completed passes
        self.batch = 0  # batches consumed in the current pass
        self._it: Iterator[Any] | None = None

    def __iter__(self) -> InfiniteLoader:
        return self

    def __next__(self) -> Any:
        for _ in range(2):
            if self._it is None:
                sampler = self.loader.sampler
                assert isinstance(sampler, ResumableSampler)
                sampler.set_epoch(self.epoch)
                sampler.start = self.batch * (self.loader.batch_size or 1)
                self._it = iter(self.loader)
            try:
                batch = next(self._it)
            except StopIteration:
                self._it, self.epoch, self.batch = None, self.epoch + 1, 0
                continue
            self.batch += 1
            return batch
        raise DataError(
            "the loader given to InfiniteLoader yields no batches: its dataset is empty"
        )

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
        self._it = None


@dataclass
class Loaders:
    """Loaders for the three splits; `heldout` is None when the splits have no held-out set."""

    train: DataLoader
    heldout: DataLoader | None
    test: DataLoader


def _rank_world(distributed: bool) -> tuple[int, int]:
    if not distributed:
        return 0, 1
    if not (dist.is_available() and dist.is_initialized()):
        raise DataError(
            "build_loaders(distributed=True) needs torch.distributed initialised: "
            "launch with torchrun and call init_process_group first"
        )
    return dist.get_rank(), dist.get_world_size()


def build_loaders(splits: DataSplits, cfg: DataConfig, distributed: bool = False) -> Loaders:
    """Seeded loaders; with `distributed`, each rank reads its own shard (batch per rank).

    Train and held-out use different seeds so their orders are unrelated.
    """
    rank, world = _rank_world(distributed)
    pin = torch.cuda.is_available() if cfg.pin_memory is None else cfg.pin_memory
    workers = min(cfg.num_workers, free_cores())  # more workers than free cores only thrash
    if workers < cfg.num_workers:
        log.info("data.num_workers=%d capped at %d (free cores)", cfg.num_workers, workers)
    eval_batch = cfg.eval_batch_size or cfg.batch_size

    def make(ds: Dataset, batch: int, shuffle: bool, seed: int, drop_last: bool) -> DataLoader:
        sampler = ResumableSampler(ds, shuffle=shuffle, seed=seed, num_replicas=world, rank=rank)
        return DataLoader(
            ds,
            batch_size=batch,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=workers,
            pin_memory=pin,
            persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(seed),
        )

    shard = -(-len(splits.train) // world)
    if cfg.drop_last and shard < cfg.batch_size:
        raise DataError(
            f"the training split has {shard} samples per process, fewer than "
            f"data.batch_size={cfg.batch_size}: lower data.batch_size (or set "
            "data.drop_last=false)"
        )
    heldout = None
    if splits.heldout is not None:
        heldout = make(splits.heldout, cfg.batch_size, True, cfg.seed + 1, False)
    return Loaders(
        train=make(splits.train, cfg.batch_size, True, cfg.seed, cfg.drop_last),
        heldout=heldout,
        test=make(splits.test, eval_batch, False, cfg.seed, False),
    )
