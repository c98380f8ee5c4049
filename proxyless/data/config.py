"""Typed data configuration and the containers handed to the search/train loops.

Plain dataclasses so the library works without Hydra; the CLI builds a `DataConfig`
from YAML with `DataConfig(**cfg.data)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch.utils.data import Dataset

DATASETS = ("cifar10", "imagenet", "folder", "digits", "clutter", "synthetic")

# Spatial side used when `image_size` is None and no space or arch says otherwise (the search
# and training set `image_size` to the space's / arch's input size when it is None).
DEFAULT_IMAGE_SIZE = {
    "cifar10": 32,
    "imagenet": 224,
    "folder": 224,
    "digits": 32,
    "clutter": 32,
    "synthetic": 32,
}

# Held-out images per class when `heldout_per_class` is None. ImageNet: 50 (the paper's
# 50k split). CIFAR-10: 500 (10% of each class; the arch gradient is less noisy and 4500
# per class remain for weights). The small offline sets keep most samples for weights.
DEFAULT_HELDOUT_PER_CLASS = {
    "cifar10": 500,
    "imagenet": 50,
    "folder": 50,
    "digits": 20,
    "clutter": 100,
    "synthetic": 8,
}


class DataError(ValueError):
    """A data problem the user can fix; the message says what is wrong and how to fix it."""


@dataclass
class DataConfig:
    """Where the data is, how it is split, augmented and batched.

    `seed` drives the held-out split and shuffling; `split_seed` fixes the train/test split
    of datasets that ship without one (digits, single-root folder), so the test set does
    not move when the search seed changes.
    """

    name: str = "digits"
    root: str | None = None
    download: bool = False  # cifar10 only; nothing is ever fetched unless asked
    check_md5: bool = True  # cifar10: files must match the official release's checksums
    check_images: bool = True  # folder/imagenet: open every image's header once, up front
    image_size: int | None = None  # None: DEFAULT_IMAGE_SIZE[name]
    batch_size: int = 64  # per process
    eval_batch_size: int | None = None  # None: batch_size
    heldout_per_class: int | None = None  # None: DEFAULT_HELDOUT_PER_CLASS; 0: no held-out
    test_fraction: float = 0.2  # digits and single-root folder
    split_seed: int = 0
    train_subset: int | None = None  # cap on training samples (after held-out) for quick runs
    test_subset: int | None = None
    augment: bool = True
    color_jitter: float = 0.0  # imagenet/folder; 0 disables
    crop_pct: float = 0.875  # eval resize = image_size / crop_pct, then center crop
    drop_last: bool = True  # train loader only; keeps BatchNorm away from tiny last batches
    num_workers: int = 0  # capped by the free cores (latency.threads.free_cores)
    pin_memory: bool | None = None  # None: True when CUDA is available
    seed: int = 0
    clutter_train_samples: int = 12000  # before the held-out split
    clutter_test_samples: int = 2000
    synthetic_num_classes: int = 10
    synthetic_train_samples: int = 512
    synthetic_test_samples: int = 128

    def __post_init__(self) -> None:
        if self.name not in DATASETS:
            raise DataError(
                f"unknown dataset {self.name!r}: set data.name to one of {', '.join(DATASETS)}"
            )
        positive = {
            "batch_size": self.batch_size,
            "image_size": self.image_size,
            "eval_batch_size": self.eval_batch_size,
            "train_subset": self.train_subset,
            "test_subset": self.test_subset,
            "clutter_train_samples": self.clutter_train_samples,
            "clutter_test_samples": self.clutter_test_samples,
        }
        for key, value in positive.items():
            if value is not None and value < 1:
                raise DataError(f"data.{key}={value} must be a positive integer")
        if self.heldout_per_class is not None and self.heldout_per_class < 0:
            raise DataError(f"data.heldout_per_class={self.heldout_per_class} must be >= 0")
        if not 0.0 < self.test_fraction < 1.0:
            raise DataError(f"data.test_fraction={self.test_fraction} must be in (0, 1)")
        if not 0.0 < self.crop_pct <= 1.0:
            raise DataError(f"data.crop_pct={self.crop_pct} must be in (0, 1]")
        if self.num_workers < 0:
            raise DataError(f"data.num_workers={self.num_workers} must be >= 0")

    @property
    def resolved_image_size(self) -> int:
        return self.image_size or DEFAULT_IMAGE_SIZE[self.name]

    @property
    def resolved_heldout_per_class(self) -> int:
        if self.heldout_per_class is None:
            return DEFAULT_HELDOUT_PER_CLASS[self.name]
        return self.heldout_per_class


@dataclass
class DataSplits:
    """The three disjoint roles of the data.

    `train` feeds weight steps, `heldout` (carved out of the training set, eval transforms)
    feeds arch steps, `test` is never touched by the search. `heldout` is None when
    `heldout_per_class` is 0 (training a derived arch uses the whole training set).
    `input_size` is the square spatial side; `input_shape` is (C, H, W).
    """

    train: Dataset
    heldout: Dataset | None
    test: Dataset
    num_classes: int
    input_size: int
    in_channels: int = 3
    classes: list[str] = field(default_factory=list)
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.input_size, self.input_size)
