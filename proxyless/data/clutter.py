"""`clutter`: a seeded procedural image task on which the architecture matters, offline.

Why this design. Digits (8×8, 1.8k images) saturate in a few epochs, so architecture
differences drown in seed noise. Here a class is a *silhouette* (10 of them: disc, ring,
square, frame, triangle, plus, tee, ell, half disc, two bars) drawn at a random position,
scale (10–24 px across on a 32 px image), rotation and colour, filled with a random texture
(stripes or dots), on a textured background, among distractor fragments carrying the same
textures. To be right a network must

- see the whole silhouette — a ring and a disc, a tee and an ell, a square and a frame
  differ only in how parts are arranged across the object — so receptive field (kernel size,
  depth) matters;
- separate the object's texture from background and distractor textures of the same kinds
  right beside it, which needs capacity (width / expansion), not one edge detector.

Texture, colour and the distractors are never informative. Images are rendered 2×
supersampled and box-filtered (anti-aliased edges), with pixel noise; generation is
vectorised numpy (seconds for the default 14k images), deterministic from the seed, and
cached as uint8.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
import torch

from latency.atomic import atomic_write_bytes

CLASSES = (
    "disc",
    "ring",
    "square",
    "frame",
    "triangle",
    "plus",
    "tee",
    "ell",
    "half_disc",
    "two_bars",
)
GENERATOR_VERSION = 2  # bump when the rendering changes: the cache key includes it

_SIZE = 32
_SUPER = 2  # supersampling factor
_CHUNK = 2000  # images rendered at once; part of the definition of the data (seeds)


def _texture(kind: np.ndarray, u: np.ndarray, v: np.ndarray, period: np.ndarray) -> np.ndarray:
    """Binary texture in {0, 1}: kind 0 = stripes along u, 1 = a grid of dots (radius 0.4
    period). Each image computes only its own kind."""
    out = np.empty(u.shape, dtype=np.float32)
    p = period.astype(np.float32)[:, None, None]
    for k in (0, 1):
        rows = np.flatnonzero(kind == k)
        if not len(rows):
            continue
        tu = u[rows] / p[rows]
        if k == 0:
            out[rows] = (tu - np.floor(tu)) < 0.5
        else:
            tv = v[rows] / p[rows]
            du, dv = tu - np.round(tu), tv - np.round(tv)
            out[rows] = (du * du + dv * dv) < 0.16
    return out


def _shape(name: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Mask of a unit-size silhouette in object coordinates (u, v in [-1, 1])."""
    au, av = np.abs(u), np.abs(v)
    r2 = u * u + v * v
    box = np.maximum(au, av)
    if name == "disc":
        return r2 < 0.9
    if name == "ring":
        return (r2 < 0.9) & (r2 > 0.3)
    if name == "square":
        return box < 0.75
    if name == "frame":
        return (box < 0.8) & (box > 0.42)
    if name == "triangle":
        return (v < 0.6) & (v > -0.95 + 1.6 * au)
    if name == "plus":
        return ((au < 0.28) & (av < 0.95)) | ((av < 0.28) & (au < 0.95))
    if name == "tee":
        return ((au < 0.95) & (v > 0.45) & (v < 0.95)) | ((au < 0.25) & (av < 0.95))
    if name == "ell":
        return ((u > -0.8) & (u < -0.3) & (av < 0.95)) | ((au < 0.8) & (v < -0.45) & (v > -0.95))
    if name == "half_disc":
        return (r2 < 0.9) & (v > -0.1)
    if name == "two_bars":
        return (au < 0.95) & (np.abs(av - 0.6) < 0.25)
    raise ValueError(f"unknown silhouette {name!r}")


def _silhouette(label: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Per-image silhouette masks; each image evaluates only its own class's shape."""
    out = np.zeros(u.shape, dtype=bool)
    for k, name in enumerate(CLASSES):
        rows = np.flatnonzero(label == k)
        if len(rows):
            out[rows] = _shape(name, u[rows], v[rows])
    return out


def _render(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N,) class labels → (N, 3, 32, 32) uint8 images."""
    n = len(labels)
    side = _SIZE * _SUPER
    grid = (np.arange(side, dtype=np.float32) + 0.5) / _SUPER  # pixel units, 0..32
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    xx, yy = xx[None], yy[None]

    def rotated(cx, cy, angle):
        cx, cy, angle = (np.asarray(a, dtype=np.float32) for a in (cx, cy, angle))
        c, s = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
        dx, dy = xx - cx[:, None, None], yy - cy[:, None, None]
        return c * dx + s * dy, -s * dx + c * dy

    def colours() -> np.ndarray:
        return rng.uniform(0.0, 1.0, (n, 3)).astype(np.float32)

    # Background: a low-contrast texture of a random kind, orientation and period.
    bg_a, bg_b = colours(), colours()
    bg_b = bg_a + 0.35 * (bg_b - bg_a)  # low contrast
    bu, bv = rotated(np.zeros(n), np.zeros(n), rng.uniform(0, np.pi, n))
    bg_tex = _texture(rng.integers(0, 2, n), bu, bv, rng.uniform(2.5, 6.0, n))
    img = bg_a[:, :, None, None] + (bg_b - bg_a)[:, :, None, None] * bg_tex[:, None]

    # Distractors: 2 fragments (short thick bars), each filled with a random texture.
    for _ in range(2):
        cx, cy = rng.uniform(2, 30, n), rng.uniform(2, 30, n)
        fu, fv = rotated(cx, cy, rng.uniform(0, np.pi, n))
        length = rng.uniform(2.0, 4.5, n).astype(np.float32)[:, None, None]
        width = rng.uniform(1.2, 2.5, n).astype(np.float32)[:, None, None]
        mask = (np.abs(fu) < length) & (np.abs(fv) < width)
        tex = _texture(rng.integers(0, 2, n), fu, fv, rng.uniform(2.5, 5.0, n))
        ca, cb = colours(), colours()
        frag = ca[:, :, None, None] + (cb - ca)[:, :, None, None] * tex[:, None]
        np.copyto(img, frag, where=mask[:, None])

    # The object: a silhouette with a random texture, scale, position, rotation, colours.
    radius = rng.uniform(5.0, 12.0, n).astype(np.float32)
    cx = rng.uniform(radius, _SIZE - radius)
    cy = rng.uniform(radius, _SIZE - radius)
    ou, ov = rotated(cx, cy, rng.uniform(0, 2 * np.pi, n))
    mask = _silhouette(labels, ou / radius[:, None, None], ov / radius[:, None, None])
    tex = _texture(rng.integers(0, 2, n), ou, ov, rng.uniform(3.0, 6.0, n))
    fa, fb = colours(), colours()
    # The object's base colour stands out from the background (so its silhouette is
    # visible) and its texture colour from its base (so the texture is).
    fa = np.where(np.abs(fa - bg_a).sum(1, keepdims=True) < 0.75, 1.0 - fa, fa)
    fb = fa + 0.5 * (fb - fa)
    obj = fa[:, :, None, None] + (fb - fa)[:, :, None, None] * tex[:, None]
    np.copyto(img, obj, where=mask[:, None])

    img = img.reshape(n, 3, _SIZE, _SUPER, _SIZE, _SUPER).mean(axis=(3, 5))  # anti-alias
    img += rng.normal(0.0, 0.04, img.shape).astype(np.float32)
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def generate(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` images, classes balanced and shuffled; the same (n, seed) gives the same bytes.

    Rendered in fixed chunks (bounded memory), each from its own seeded generator."""
    rng = np.random.default_rng([GENERATOR_VERSION, seed])
    labels = rng.permutation(np.arange(n) % len(CLASSES)).astype(np.int64)
    images = np.empty((n, 3, _SIZE, _SIZE), dtype=np.uint8)
    for start in range(0, n, _CHUNK):
        part = labels[start : start + _CHUNK]
        images[start : start + len(part)] = _render(part, np.random.default_rng([seed, start]))
    return images, labels


def cache_dir(root: str | None) -> Path:
    """`data.root` if given, else $PROXYLESS_CACHE or ~/.cache/proxyless."""
    if root:
        return Path(root).expanduser()
    env = os.environ.get("PROXYLESS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "proxyless"


def load(n: int, seed: int, root: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (uint8, N×3×32×32) and labels, generated once and cached per (n, seed, version)."""
    key = hashlib.sha256(f"clutter-v{GENERATOR_VERSION}-{n}-{seed}".encode()).hexdigest()[:16]
    path = cache_dir(root) / f"clutter-{n}-{seed}-{key}.npz"
    if path.is_file():
        try:
            with np.load(path) as f:
                images, labels = f["images"], f["labels"]
            if images.shape == (n, 3, _SIZE, _SIZE) and labels.shape == (n,):
                return torch.from_numpy(images), torch.from_numpy(labels)
        except (OSError, ValueError, KeyError):
            pass  # unreadable cache: regenerate and overwrite
    images, labels = generate(n, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, images=images, labels=labels)
    atomic_write_bytes(path, buf.getvalue())
    return torch.from_numpy(images), torch.from_numpy(labels)
