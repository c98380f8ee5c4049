"""Train/eval transforms per dataset family (torchvision, standard recipes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torchvision import transforms as T

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Transform = Callable[[Any], Any]


def cifar_transforms(size: int, augment: bool) -> tuple[Transform, Transform]:
    """Random crop with 4-pixel padding + flip (scaled with the size) for training."""
    resize = [T.Resize(size)] if size != 32 else []
    tail = [T.ToTensor(), T.Normalize(CIFAR10_MEAN, CIFAR10_STD)]
    eval_tf = T.Compose([*resize, *tail])
    if not augment:
        return eval_tf, eval_tf
    pad = max(1, size // 8)
    train_tf = T.Compose(
        [*resize, T.RandomCrop(size, padding=pad), T.RandomHorizontalFlip(), *tail]
    )
    return train_tf, eval_tf


def imagenet_transforms(
    size: int, augment: bool, color_jitter: float = 0.0, crop_pct: float = 0.875
) -> tuple[Transform, Transform]:
    """RandomResizedCrop + flip (+ jitter) for training; resize size/crop_pct + center crop."""
    tail = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    eval_tf = T.Compose([T.Resize(int(round(size / crop_pct))), T.CenterCrop(size), *tail])
    if not augment:
        return eval_tf, eval_tf
    jitter = [T.ColorJitter(color_jitter, color_jitter, color_jitter)] if color_jitter > 0 else []
    train_tf = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), *jitter, *tail])
    return train_tf, eval_tf


def tensor_transforms(
    size: int, augment: bool, mean: tuple[float, ...], std: tuple[float, ...]
) -> tuple[Transform, Transform]:
    """For in-memory [0, 1] tensors (digits): small random translation, no flip."""
    normalize = T.Normalize(mean, std)
    if not augment:
        return normalize, normalize
    shift = max(1, size // 16)
    train_tf = T.Compose([T.RandomCrop(size, padding=shift, padding_mode="edge"), normalize])
    return train_tf, normalize
