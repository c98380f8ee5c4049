"""Datasets, the held-out arch split and loaders.

>>> cfg = DataConfig(name="synthetic")
>>> loaders = build_loaders(build_datasets(cfg), cfg)
>>> next(iter(loaders.train))[0].shape
torch.Size([64, 3, 32, 32])
"""

from .config import (
    DATASETS,
    DEFAULT_HELDOUT_PER_CLASS,
    DEFAULT_IMAGE_SIZE,
    DataConfig,
    DataError,
    DataSplits,
)
from .datasets import SyntheticImages, TensorImages, build_datasets
from .loaders import InfiniteLoader, Loaders, ResumableSampler, build_loaders
from .split import SplitView, class_balanced_split, seeded_subset, targets_of

__all__ = [
    "DATASETS",
    "DEFAULT_HELDOUT_PER_CLASS",
    "DEFAULT_IMAGE_SIZE",
    "DataConfig",
    "DataError",
    "DataSplits",
    "InfiniteLoader",
    "Loaders",
    "ResumableSampler",
    "SplitView",
    "SyntheticImages",
    "TensorImages",
    "build_datasets",
    "build_loaders",
    "class_balanced_split",
    "seeded_subset",
    "targets_of",
]
