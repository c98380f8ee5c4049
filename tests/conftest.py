"""Shared data fixtures: tiny on-disk datasets written into tmp_path."""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

CIFAR_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_tiny_cifar10(root: Path, per_batch: int = 20, test: int = 20) -> Path:
    """Write CIFAR-10 in torchvision's on-disk layout (python pickles) with few images.

    Labels cycle through the 10 classes so every class is present in every batch.
    """
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def dump(name: str, n: int) -> None:
        entry = {
            "batch_label": name,
            "labels": [i % 10 for i in range(n)],
            "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            "filenames": [f"{name}_{i}.png" for i in range(n)],
        }
        (folder / name).write_bytes(pickle.dumps(entry))

    for k in range(1, 6):
        dump(f"data_batch_{k}", per_batch)
    dump("test_batch", test)
    meta = {"label_names": CIFAR_CLASSES, "num_cases_per_batch": per_batch, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return folder


@pytest.fixture
def tiny_cifar10(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Root of a tiny CIFAR-10 that torchvision's own CIFAR10 class accepts.

    torchvision verifies every file against the md5 of the real release (class attributes
    `train_list`, `test_list`, `meta`), which a tiny fake can never match. Rather than
    disabling the check, we point those attributes at the md5s of the files we wrote, so
    torchvision's integrity check and pickle loading run unchanged and a corrupted file
    would still be rejected. monkeypatch restores the real md5s after the test.
    """
    from torchvision.datasets import CIFAR10

    folder = write_tiny_cifar10(tmp_path / "cifar")
    monkeypatch.setattr(
        CIFAR10,
        "train_list",
        [[f"data_batch_{k}", _md5(folder / f"data_batch_{k}")] for k in range(1, 6)],
    )
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", _md5(folder / "test_batch")]])
    monkeypatch.setattr(
        CIFAR10,
        "meta",
        {"filename": "batches.meta", "key": "label_names", "md5": _md5(folder / "batches.meta")},
    )
    return folder.parent


def write_image_folder(root: Path, classes: list[str], per_class: int, size: int = 12) -> Path:
    """One sub-folder per class holding small random RGB PNGs (PIL)."""
    from PIL import Image

    rng = np.random.default_rng(len(classes) * 1000 + per_class)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=(size, size + 3, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


@pytest.fixture
def cifar10_writer() -> Callable[..., Path]:
    """Writes a tiny CIFAR-10 whose md5s are NOT patched (torchvision must reject it)."""
    return write_tiny_cifar10


@pytest.fixture
def make_image_folder() -> Callable[..., Path]:
    return write_image_folder


@pytest.fixture
def tiny_imagenet(tmp_path: Path) -> Path:
    """root/train (6 per class) and root/val (2 per class), 3 classes."""
    classes = ["n01", "n02", "n03"]
    write_image_folder(tmp_path / "imnet" / "train", classes, 6)
    write_image_folder(tmp_path / "imnet" / "val", classes, 2)
    return tmp_path / "imnet"


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny nets on a shared 2-core machine run fastest (and steadiest) on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def trained_paths(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """The path every weight step of a search trained, in order (the search's weight_step,
    recorded)."""
    import proxyless.search as search_mod

    trained: list[list[int]] = []
    real = search_mod.weight_step

    def recording(net, *args, **kwargs):  # type: ignore[no-untyped-def]
        out = real(net, *args, **kwargs)
        trained.append(net.active_paths())
        return out

    monkeypatch.setattr(search_mod, "weight_step", recording)
    return trained
