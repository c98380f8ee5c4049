"""The procedural `clutter` task: deterministic, balanced, cached, a first-class data group."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from proxyless.data import DataConfig, build_datasets, build_loaders, clutter


def test_same_seed_same_bytes_other_seed_other_images() -> None:
    a_img, a_lab = clutter.generate(120, seed=3)
    b_img, b_lab = clutter.generate(120, seed=3)
    c_img, _ = clutter.generate(120, seed=4)
    assert a_img.dtype == np.uint8 and a_img.shape == (120, 3, 32, 32)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab)
    assert not np.array_equal(a_img, c_img)
    assert np.bincount(a_lab, minlength=10).tolist() == [12] * 10  # balanced


def test_images_use_the_colour_range() -> None:
    images, _ = clutter.generate(90, seed=1)
    assert 40 < images.mean() < 215 and images.std() > 30  # not blank, not saturated


def test_every_silhouette_is_distinct_and_nonempty() -> None:
    g = np.linspace(-1, 1, 64, dtype=np.float32)
    v, u = np.meshgrid(g, g, indexing="ij")
    masks = [clutter._shape(name, u, v) for name in clutter.CLASSES]
    for name, m in zip(clutter.CLASSES, masks):
        assert 0.05 < m.mean() < 0.8, name
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            differ = (masks[i] != masks[j]).mean()
            assert differ > 0.05, (clutter.CLASSES[i], clutter.CLASSES[j])


def test_cached_once_then_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images, labels = clutter.load(40, 0, str(tmp_path))
    files = list(tmp_path.glob("clutter-40-0-*.npz"))
    assert len(files) == 1

    def fail(*_a, **_k):
        raise AssertionError("regenerated although cached")

    monkeypatch.setattr(clutter, "generate", fail)
    again, again_labels = clutter.load(40, 0, str(tmp_path))
    assert torch.equal(images, again) and torch.equal(labels, again_labels)


def test_corrupted_cache_is_regenerated(tmp_path: Path) -> None:
    images, _ = clutter.load(30, 0, str(tmp_path))
    (path,) = tmp_path.glob("clutter-30-0-*.npz")
    path.write_bytes(b"not an npz")
    again, _ = clutter.load(30, 0, str(tmp_path))
    assert torch.equal(images, again)
    assert np.load(path)["images"].shape == (30, 3, 32, 32)


def _cfg(tmp_path: Path, **kw) -> DataConfig:
    base = dict(
        name="clutter",
        root=str(tmp_path),
        clutter_train_samples=200,
        clutter_test_samples=50,
        heldout_per_class=2,
        batch_size=16,
    )
    return DataConfig(**{**base, **kw})


def test_data_group(tmp_path: Path) -> None:
    splits = build_datasets(_cfg(tmp_path))
    assert (len(splits.train), len(splits.heldout), len(splits.test)) == (180, 20, 50)
    assert splits.num_classes == 10 and splits.classes[0] == "disc"
    assert splits.input_shape == (3, 32, 32)
    assert len(set(splits.mean)) == 3  # per-channel statistics of a colour task
    x, y = next(iter(build_loaders(splits, _cfg(tmp_path)).train))
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32
    assert abs(float(x.mean())) < 0.5  # normalised


def test_test_set_does_not_move_with_the_search_seed(tmp_path: Path) -> None:
    a = build_datasets(_cfg(tmp_path, seed=0))
    b = build_datasets(_cfg(tmp_path, seed=1))
    assert torch.equal(a.test[7][0], b.test[7][0])
    assert a.heldout is not None and b.heldout is not None
    assert a.heldout.indices.tolist() != b.heldout.indices.tolist()


def test_other_image_size(tmp_path: Path) -> None:
    splits = build_datasets(_cfg(tmp_path, image_size=48))
    assert splits.train[0][0].shape == (3, 48, 48)


def test_bad_sample_count(tmp_path: Path) -> None:
    from proxyless.data import DataError

    with pytest.raises(DataError, match="clutter_train_samples"):
        _cfg(tmp_path, clutter_train_samples=0)
