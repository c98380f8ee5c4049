"""Train/eval transforms per dataset family (torchvision, standard recipes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
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


class RandomShift(torch.nn.Module):
    """Translate each image by up to `shift` pixels each way, edges replicated (a same-size
    random crop of the edge-padded image), on one image (C, H, W) or a batch (N, C, H, W):
    one offset per image, drawn from torch's RNG in one call per batch."""

    def __init__(self, shift: int) -> None:
        super().__init__()
        self.shift = shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x if x.dim() == 4 else x.unsqueeze(0)
        n, _, h, w = batch.shape
        s = self.shift
        padded = F.pad(batch, (s, s, s, s), mode="replicate")
        dy, dx = torch.randint(0, 2 * s + 1, (2, n, 1))
        rows = (dy + torch.arange(h))[:, :, None]  # (n, h, 1)
        cols = (dx + torch.arange(w))[:, None, :]  # (n, 1, w)
        # advanced indices around a slice put their dims first: (n, h, w, C)
        out = padded[torch.arange(n)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
        out = out.contiguous()
        return out if x.dim() == 4 else out[0]

    def extra_repr(self) -> str:
        return f"shift={self.shift}"


class BatchableCompose(T.Compose):
    """Tensor transforms that take one image or a whole batch alike: `SplitView` applies
    them to a batch of in-memory images at once (one call per batch, not per image)."""

    batchable = True


def tensor_transforms(
    size: int, augment: bool, mean: tuple[float, ...], std: tuple[float, ...]
) -> tuple[Transform, Transform]:
    """For in-memory [0, 1] tensors (digits, clutter): small random translation, no flip;
    batchable."""
    normalize = BatchableCompose([T.Normalize(mean, std)])
    if not augment:
        return normalize, normalize
    train_tf = BatchableCompose([RandomShift(max(1, size // 16)), *normalize.transforms])
    return train_tf, normalize
