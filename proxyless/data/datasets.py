"""Build the train / held-out / test datasets for every supported source.

Each source returns an untransformed base for the training split and one for the test
split; `build_datasets` then carves the class-balanced held-out set out of the training
split and attaches transforms, so the same logic serves every dataset.
"""

from __future__ import annotations

import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .config import DataConfig, DataError, DataSplits
from .split import SplitView, class_balanced_split, seeded_subset, targets_of
from .transforms import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Transform,
    cifar_transforms,
    imagenet_transforms,
    tensor_transforms,
)

log = logging.getLogger(__name__)


class TensorImages(Dataset):
    """uint8 images kept in memory (N, 1 or 3, H, W), served as 3-channel float in [0, 1].

    uint8 and a lazy channel expand keep digits at 224 px under 100 MB.
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor) -> None:
        self.images = images  # (N, 1 | 3, H, W) uint8
        self.targets = targets.to(torch.int64).numpy()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = self.images[i].to(torch.float32).div_(255.0).expand(3, -1, -1)
        return image, int(self.targets[i])

    def batch(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows `rows` at once: (N, 3, H, W) float in [0, 1] and their targets."""
        images = self.images[torch.as_tensor(rows)].to(torch.float32).div_(255.0)
        return images.expand(-1, 3, -1, -1), torch.as_tensor(self.targets[rows])


class SyntheticImages(Dataset):
    """Gaussian images generated per index from a seed: shapes only, constant memory."""

    def __init__(self, n: int, num_classes: int, size: int, seed: int) -> None:
        self.size, self.seed = size, seed
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        self.targets = (perm % num_classes).numpy()  # balanced, so held-out splits work

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        return torch.randn(3, self.size, self.size, generator=g), int(self.targets[i])


@dataclass
class _Source:
    train: Dataset
    test: Dataset
    train_indices: np.ndarray  # rows of `train` that belong to the training split
    test_indices: np.ndarray
    classes: list[str]
    transforms: tuple[Transform | None, Transform | None]
    mean: tuple[float, ...]
    std: tuple[float, ...]


def _require_root(cfg: DataConfig, hint: str) -> Path:
    if cfg.root is None:
        raise DataError(f"data.root is not set for dataset {cfg.name!r}: {hint}")
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise DataError(f"data.root={str(root)!r} does not exist or is not a folder: {hint}")
    return root


def _all(ds: Any) -> np.ndarray:
    return np.arange(len(ds))


def _unchecked_cifar10() -> Any:
    """torchvision's CIFAR10 that checks that its files exist, not their MD5 (`check_md5`
    false: a re-packed or modified copy in the official layout)."""
    from torchvision.datasets import CIFAR10

    class UncheckedCIFAR10(CIFAR10):
        train_list = [[name, None] for name, _ in CIFAR10.train_list]
        test_list = [[name, None] for name, _ in CIFAR10.test_list]
        meta = {**CIFAR10.meta, "md5": None}

    return UncheckedCIFAR10


def _cifar10(cfg: DataConfig) -> _Source:
    from torchvision.datasets import CIFAR10

    hint = (
        "point data.root to the folder containing cifar-10-batches-py, or pass "
        "data.download=true to fetch it there"
    )
    if cfg.download:
        if cfg.root is None:
            raise DataError(f"data.download=true needs data.root (where to save CIFAR-10): {hint}")
        os.makedirs(cfg.root, exist_ok=True)
    root = _require_root(cfg, hint)
    cls = CIFAR10 if cfg.check_md5 else _unchecked_cifar10()
    try:
        train = cls(str(root), train=True, download=cfg.download)
        test = cls(str(root), train=False, download=False)
    except RuntimeError as err:  # torchvision: files missing or md5 mismatch
        folder = root / CIFAR10.base_folder
        names = [n for n, _ in CIFAR10.train_list + CIFAR10.test_list] + [CIFAR10.meta["filename"]]
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise DataError(
                f"CIFAR-10 files missing in {str(folder)!r}: {', '.join(missing)}; {hint}"
            ) from err
        raise DataError(
            f"the CIFAR-10 files in {str(folder)!r} ({', '.join(names)}) are all there, but "
            "their MD5 checksums differ from the official release's (torchvision checks "
            "them): replace them with the official files, or, if this copy is meant to "
            "differ, pass data.check_md5=false to load it unchecked"
        ) from err
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as err:  # unchecked, unreadable
        raise DataError(
            f"cannot read the CIFAR-10 files in {str(root / CIFAR10.base_folder)!r} "
            f"({type(err).__name__}: {err}): they are not in the python pickle format of "
            "cifar-10-batches-py"
        ) from err
    except OSError as err:  # download failed (offline)
        raise DataError(
            f"CIFAR-10 download into {str(root)!r} failed ({err}): "
            "copy cifar-10-batches-py there by hand"
        ) from err
    return _Source(
        train,
        test,
        _all(train),
        _all(test),
        list(train.classes),
        cifar_transforms(cfg.resolved_image_size, cfg.augment),
        CIFAR10_MEAN,
        CIFAR10_STD,
    )


def _load_image(path: str) -> Any:
    """ImageFolder's loader, naming the file when it cannot be read (one line, not a PIL
    traceback from inside a DataLoader worker)."""
    from PIL import Image

    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    except (OSError, SyntaxError, ValueError) as err:  # PIL: Unidentified/truncated image
        raise DataError(
            f"cannot read image {path!r} ({type(err).__name__}: {err}): remove or replace the file"
        ) from None


def check_images(paths: list[str]) -> None:
    """Open every image's header (cheap: no pixels are decoded) so that a file that is not
    an image stops the run before the first epoch, named, instead of mid-way through."""
    from PIL import Image

    if len(paths) > 10_000:
        log.info("checking %d image headers (data.check_images=false skips this)", len(paths))
    for path in paths:
        try:
            with Image.open(path) as im:
                im.size  # noqa: B018 - the header is parsed by open()
        except (OSError, SyntaxError, ValueError) as err:
            raise DataError(
                f"{path!r} is not a readable image ({type(err).__name__}: {err}): remove or "
                "replace it (data.check_images=false skips this check, done once before "
                "training)"
            ) from None


def _image_folder(path: Path, what: str, check: bool = True) -> Any:
    from torchvision.datasets import ImageFolder

    try:
        folder = ImageFolder(str(path), loader=_load_image)
    except FileNotFoundError as err:
        raise DataError(
            f"{what} {str(path)!r} holds no usable images ({err}): it must "
            "contain one sub-folder per class with image files inside"
        ) from err
    if check:
        check_images([p for p, _ in folder.samples])
    return folder


def _folder_pair(cfg: DataConfig, root: Path, eval_names: tuple[str, ...]) -> _Source:
    train_dir = root / "train"
    eval_dir = next((root / n for n in eval_names if (root / n).is_dir()), None)
    if not train_dir.is_dir() or eval_dir is None:
        missing = "train" if not train_dir.is_dir() else " or ".join(eval_names)
        raise DataError(
            f"{str(root)!r} has no {missing!r} folder: dataset {cfg.name!r} "
            f"expects {root}/train and {root}/{eval_names[0]} with one sub-folder "
            "per class"
        )
    train = _image_folder(train_dir, "training folder", cfg.check_images)
    test = _image_folder(eval_dir, "evaluation folder", cfg.check_images)
    if train.classes != test.classes:
        raise DataError(
            f"class folders of {str(train_dir)!r} and {str(eval_dir)!r} differ: "
            "both need the same class sub-folders"
        )
    return _Source(
        train,
        test,
        _all(train),
        _all(test),
        list(train.classes),
        _imagenet_tf(cfg),
        IMAGENET_MEAN,
        IMAGENET_STD,
    )


def _imagenet_tf(cfg: DataConfig) -> tuple[Transform, Transform]:
    return imagenet_transforms(cfg.resolved_image_size, cfg.augment, cfg.color_jitter, cfg.crop_pct)


def _imagenet(cfg: DataConfig) -> _Source:
    root = _require_root(cfg, "point data.root to the ImageNet folder holding train/ and val/")
    return _folder_pair(cfg, root, ("val",))


def _folder(cfg: DataConfig) -> _Source:
    """root/train + root/val|test, or one class-per-folder root split by test_fraction."""
    root = _require_root(
        cfg, "point data.root to a folder of class sub-folders (or one holding train/ and val/)"
    )
    if (root / "train").is_dir():
        return _folder_pair(cfg, root, ("val", "test"))
    full = _image_folder(root, "data.root", cfg.check_images)
    train_idx, test_idx = class_balanced_split(
        targets_of(full),
        lambda n: max(1, round(cfg.test_fraction * n)),
        cfg.split_seed,
        full.classes,
        what="data.test_fraction",
    )
    return _Source(
        full,
        full,
        train_idx,
        test_idx,
        list(full.classes),
        _imagenet_tf(cfg),
        IMAGENET_MEAN,
        IMAGENET_STD,
    )


def _digits(cfg: DataConfig) -> _Source:
    """scikit-learn's bundled 8x8 digits, upsampled: an offline dataset that learns fast."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    targets = torch.as_tensor(bunch.target)
    train_idx, test_idx = class_balanced_split(
        targets.numpy(),
        lambda n: max(1, round(cfg.test_fraction * n)),
        cfg.split_seed,
        what="data.test_fraction",
    )
    return _in_memory(
        cfg, images, targets, train_idx, test_idx, [str(c) for c in bunch.target_names]
    )


def _in_memory(
    cfg: DataConfig,
    images: torch.Tensor,
    targets: torch.Tensor,
    train_idx: np.ndarray,
    test_idx: np.ndarray,
    classes: list[str],
) -> _Source:
    """uint8 images in memory, resized once to `image_size`, normalised with statistics of
    the training rows only."""
    size = cfg.resolved_image_size
    if images.shape[-1] != size:
        resized = F.interpolate(images.float(), size=(size, size), mode="bilinear")
        images = resized.clamp(0, 255).round().to(torch.uint8)
    full = TensorImages(images, targets)
    train_px = images[torch.as_tensor(train_idx)].float() / 255.0
    if images.shape[1] == 1:
        mean, std = (float(train_px.mean()),) * 3, (float(train_px.std()),) * 3
    else:
        mean = tuple(train_px.mean(dim=(0, 2, 3)).tolist())
        std = tuple(train_px.std(dim=(0, 2, 3)).tolist())
    return _Source(
        full,
        full,
        train_idx,
        test_idx,
        classes,
        tensor_transforms(size, cfg.augment, mean, std),
        mean,
        std,
    )


def _clutter(cfg: DataConfig) -> _Source:
    """The procedural silhouette × texture task (`proxyless.data.clutter`), generated from
    `split_seed` (so the test set stays put when the search seed changes) and cached."""
    from . import clutter

    n_train, n_test = cfg.clutter_train_samples, cfg.clutter_test_samples
    images, targets = clutter.load(n_train + n_test, cfg.split_seed, cfg.root)
    return _in_memory(
        cfg,
        images,
        targets,
        np.arange(n_train),
        np.arange(n_train, n_train + n_test),
        list(clutter.CLASSES),
    )


def _synthetic(cfg: DataConfig) -> _Source:
    size, k = cfg.resolved_image_size, cfg.synthetic_num_classes
    train = SyntheticImages(cfg.synthetic_train_samples, k, size, cfg.seed)
    test = SyntheticImages(cfg.synthetic_test_samples, k, size, cfg.seed + 1)
    return _Source(
        train,
        test,
        _all(train),
        _all(test),
        [str(c) for c in range(k)],
        (None, None),
        (0.0, 0.0, 0.0),
        (1.0, 1.0, 1.0),
    )


_SOURCES = {
    "cifar10": _cifar10,
    "imagenet": _imagenet,
    "folder": _folder,
    "digits": _digits,
    "clutter": _clutter,
    "synthetic": _synthetic,
}


def build_datasets(cfg: DataConfig) -> DataSplits:
    """Load `cfg.name` and return disjoint train / held-out / test datasets.

    The held-out split takes `heldout_per_class` samples of every class out of the
    training split (seeded by `cfg.seed`); it uses eval transforms because arch steps
    should see the data distribution the derived model will be judged on.

    >>> splits = build_datasets(DataConfig(name="synthetic"))
    >>> splits.input_shape, splits.num_classes
    ((3, 32, 32), 10)
    """
    cfg.__post_init__()  # re-validate: fields may have been changed after construction
    src = _SOURCES[cfg.name](cfg)
    if len(src.classes) < 2:
        where = f" in data.root={cfg.root!r}" if cfg.root else ""
        raise DataError(
            f"dataset {cfg.name!r} has {len(src.classes)} class(es){where} "
            f"({', '.join(map(str, src.classes)) or 'none'}): classification needs at least "
            "2 (one sub-folder per class)"
        )
    train_tf, eval_tf = src.transforms
    train_idx = src.train_indices
    heldout: Dataset | None = None
    per_class = cfg.resolved_heldout_per_class
    if per_class > 0:
        train_targets = targets_of(src.train)[train_idx]
        rest, taken = class_balanced_split(train_targets, per_class, cfg.seed, src.classes)
        train_idx, heldout_idx = train_idx[rest], train_idx[taken]
        heldout = SplitView(src.train, heldout_idx, eval_tf)
    train_idx = seeded_subset(train_idx, cfg.train_subset, cfg.seed)
    test_idx = seeded_subset(src.test_indices, cfg.test_subset, cfg.seed)
    return DataSplits(
        train=SplitView(src.train, train_idx, train_tf),
        heldout=heldout,
        test=SplitView(src.test, test_idx, eval_tf),
        num_classes=len(src.classes),
        input_size=cfg.resolved_image_size,
        classes=src.classes,
        mean=tuple(src.mean),
        std=tuple(src.std),
    )
