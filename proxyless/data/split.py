"""Class-balanced, seeded index splits computed from targets alone (no image decoding)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .config import DataError


def class_balanced_split(
    targets: Sequence[int] | np.ndarray | torch.Tensor,
    take: int | Callable[[int], int],
    seed: int,
    classes: Sequence[str] | None = None,
    what: str = "data.heldout_per_class",
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (rest, taken) with `take` samples of every class in `taken`.

    `take` is a count or a function of the class size. Each class keeps at least one
    sample in `rest`, otherwise the split would silently drop a class from training.
    Both outputs are sorted so the result depends only on (targets, take, seed).
    """
    labels = np.asarray(targets, dtype=np.int64)
    rng = np.random.default_rng(seed)
    rest: list[np.ndarray] = []
    taken: list[np.ndarray] = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        k = take(len(members)) if callable(take) else take
        if k >= len(members):
            name = classes[label] if classes is not None and label < len(classes) else label
            raise DataError(
                f"class {name!r} has only {len(members)} training samples but {what} "
                f"needs {k} of them plus at least one left for training: lower {what} "
                f"or add samples to that class"
            )
        perm = rng.permutation(members)
        taken.append(perm[:k])
        rest.append(perm[k:])
    return np.sort(np.concatenate(rest)), np.sort(np.concatenate(taken))


def seeded_subset(indices: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """At most `limit` of `indices`, chosen at random but reproducibly (quick runs)."""
    if limit is None or limit >= len(indices):
        return indices
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(indices, size=limit, replace=False))


def targets_of(dataset: Any) -> np.ndarray:
    """Labels of a torchvision-style dataset without touching its images."""
    targets = getattr(dataset, "targets", None)
    if targets is None:
        raise DataError(f"{type(dataset).__name__} has no .targets; cannot split it by class")
    return np.asarray(targets, dtype=np.int64)


class SplitView(Dataset):
    """Rows `indices` of `base` with their own transform.

    Train and held-out share one loaded/scanned base dataset (CIFAR arrays, an ImageNet
    file list) but need different transforms, so the transform lives on the view.
    """

    def __init__(
        self, base: Dataset, indices: np.ndarray, transform: Callable[[Any], Any] | None = None
    ) -> None:
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        image, target = self.base[int(self.indices[i])]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(target)

    def __getitems__(self, rows: list[int]) -> list[tuple[Any, int]]:
        """A DataLoader batch. In-memory images with a batchable transform are gathered and
        transformed in one call each (per-image calls cost a tenth of a small search's
        epoch); anything else goes image by image."""
        gather = getattr(self.base, "batch", None)
        batchable = self.transform is None or getattr(self.transform, "batchable", False)
        if gather is None or not batchable:
            return [self[i] for i in rows]
        images, targets = gather(self.indices[rows])
        if self.transform is not None:
            images = self.transform(images)
        return list(zip(images.unbind(0), targets.tolist(), strict=True))

    @property
    def targets(self) -> np.ndarray:
        return targets_of(self.base)[self.indices]
