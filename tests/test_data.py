"""Datasets, held-out split, loaders and their errors, on tiny data written to tmp_path."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from proxyless.data import (
    DATASETS,
    DataConfig,
    DataError,
    InfiniteLoader,
    ResumableSampler,
    SplitView,
    build_datasets,
    build_loaders,
    class_balanced_split,
)


def _indices(view: object) -> set[int]:
    assert isinstance(view, SplitView)
    return set(view.indices.tolist())


# ---------------------------------------------------------------- CIFAR-10


def test_cifar10_through_torchvision(tiny_cifar10: Path) -> None:
    cfg = DataConfig(name="cifar10", root=str(tiny_cifar10), heldout_per_class=2)
    splits = build_datasets(cfg)
    assert (len(splits.train), len(splits.heldout), len(splits.test)) == (80, 20, 20)
    assert splits.num_classes == 10 and splits.classes[0] == "airplane"
    assert splits.input_shape == (3, 32, 32)
    x, y = splits.train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= y < 10
    # download=True is a no-op when the files are already there (no network touched).
    build_datasets(
        DataConfig(name="cifar10", root=str(tiny_cifar10), download=True, heldout_per_class=2)
    )


def test_cifar10_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data.download=true") as err:
        build_datasets(DataConfig(name="cifar10", root=str(tmp_path)))
    assert "cifar-10-batches-py" in str(err.value)


def test_cifar10_corrupted_files_rejected(tmp_path: Path, cifar10_writer) -> None:
    cifar10_writer(tmp_path)  # real md5s are not patched: torchvision must refuse
    with pytest.raises(DataError, match="MD5 checksums differ") as err:
        build_datasets(DataConfig(name="cifar10", root=str(tmp_path)))
    # Says what was checked and a way on that works offline (not data.download=true).
    assert "data_batch_1" in str(err.value) and "data.check_md5=false" in str(err.value)
    assert "download" not in str(err.value)


def test_cifar10_in_the_official_layout_loads_with_check_md5_false(
    tmp_path: Path, cifar10_writer
) -> None:
    cifar10_writer(tmp_path, per_batch=20, test=20)
    cfg = DataConfig(name="cifar10", root=str(tmp_path), check_md5=False, heldout_per_class=2)
    splits = build_datasets(cfg)
    assert splits.num_classes == 10 and len(splits.test) == 20


def test_cifar10_missing_one_file_names_it(tmp_path: Path, cifar10_writer) -> None:
    folder = cifar10_writer(tmp_path)
    (folder / "data_batch_3").unlink()
    for check in (True, False):
        with pytest.raises(DataError, match="missing .*: data_batch_3;"):
            build_datasets(DataConfig(name="cifar10", root=str(tmp_path), check_md5=check))


@pytest.mark.parametrize("name", ["cifar10", "imagenet", "folder"])
def test_missing_root(name: str, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data.root is not set"):
        build_datasets(DataConfig(name=name))
    with pytest.raises(DataError, match="does not exist"):
        build_datasets(DataConfig(name=name, root=str(tmp_path / "nope")))


# ---------------------------------------------------------------- image folders


def test_imagenet_layout(tiny_imagenet: Path) -> None:
    cfg = DataConfig(
        name="imagenet",
        root=str(tiny_imagenet),
        image_size=48,
        heldout_per_class=1,
        color_jitter=0.4,
    )
    splits = build_datasets(cfg)
    assert (len(splits.train), len(splits.heldout), len(splits.test)) == (15, 3, 6)
    assert splits.classes == ["n01", "n02", "n03"] and splits.num_classes == 3
    for ds in (splits.train, splits.heldout, splits.test):
        assert ds[0][0].shape == (3, 48, 48)


def test_imagenet_default_size(tiny_imagenet: Path) -> None:
    splits = build_datasets(
        DataConfig(name="imagenet", root=str(tiny_imagenet), heldout_per_class=1)
    )
    assert splits.input_size == 224 and splits.test[0][0].shape == (3, 224, 224)


def test_split_never_decodes_images(tiny_imagenet: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("an image was decoded while splitting")

    # Headers are read once up front (data.check_images); pixels are never decoded.
    monkeypatch.setattr(Image.Image, "load", refuse)
    build_datasets(DataConfig(name="imagenet", root=str(tiny_imagenet), heldout_per_class=2))


@pytest.mark.parametrize("missing", ["train", "val"])
def test_imagenet_missing_subfolder(tiny_imagenet: Path, missing: str) -> None:
    import shutil

    shutil.rmtree(tiny_imagenet / missing)
    with pytest.raises(DataError, match=f"no '{missing}' folder"):
        build_datasets(DataConfig(name="imagenet", root=str(tiny_imagenet)))


def test_imagenet_class_mismatch(tiny_imagenet: Path, make_image_folder) -> None:
    make_image_folder(tiny_imagenet / "val", ["n99"], 1)
    with pytest.raises(DataError, match="differ"):
        build_datasets(DataConfig(name="imagenet", root=str(tiny_imagenet), heldout_per_class=1))


def test_folder_without_classes(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="one sub-folder per class"):
        build_datasets(DataConfig(name="folder", root=str(tmp_path / "empty")))


def test_folder_train_test_layout(tmp_path: Path, make_image_folder) -> None:
    make_image_folder(tmp_path / "train", ["a", "b"], 4)
    make_image_folder(tmp_path / "test", ["a", "b"], 2)
    splits = build_datasets(
        DataConfig(name="folder", root=str(tmp_path), image_size=32, heldout_per_class=1)
    )
    assert (len(splits.train), len(splits.heldout), len(splits.test)) == (6, 2, 4)


def test_folder_single_root_split(tmp_path: Path, make_image_folder) -> None:
    make_image_folder(tmp_path, ["a", "b", "c"], 10)
    cfg = DataConfig(
        name="folder", root=str(tmp_path), image_size=32, heldout_per_class=2, test_fraction=0.2
    )
    splits = build_datasets(cfg)
    train, heldout, test = (_indices(s) for s in (splits.train, splits.heldout, splits.test))
    assert len(test) == 6 and len(heldout) == 6 and len(train) == 18
    assert not (train & test) and not (heldout & test) and not (train & heldout)
    assert Counter(splits.test.targets.tolist()) == {0: 2, 1: 2, 2: 2}
    # the test split is fixed by split_seed, not by the search seed
    other = build_datasets(
        DataConfig(name="folder", root=str(tmp_path), image_size=32, heldout_per_class=2, seed=5)
    )
    assert _indices(other.test) == test


# ---------------------------------------------------------------- held-out split


def test_heldout_balanced_disjoint_deterministic() -> None:
    cfg = DataConfig(name="digits", heldout_per_class=7)
    splits = build_datasets(cfg)
    train, heldout, test = (_indices(s) for s in (splits.train, splits.heldout, splits.test))
    assert Counter(splits.heldout.targets.tolist()) == {c: 7 for c in range(10)}
    assert not (train & heldout) and not (train & test) and not (heldout & test)
    assert len(train | heldout | test) == 1797
    again = build_datasets(DataConfig(name="digits", heldout_per_class=7))
    assert _indices(again.heldout) == heldout
    other = build_datasets(DataConfig(name="digits", heldout_per_class=7, seed=1))
    assert _indices(other.heldout) != heldout
    assert _indices(other.test) == test


def test_heldout_uses_eval_transforms() -> None:
    splits = build_datasets(DataConfig(name="digits", augment=True))
    assert torch.equal(splits.heldout[3][0], splits.heldout[3][0])  # no random augmentation
    torch.manual_seed(0)
    assert any(not torch.equal(splits.train[0][0], splits.train[0][0]) for _ in range(20))


def test_heldout_too_few_samples(tiny_imagenet: Path) -> None:
    with pytest.raises(DataError, match="class 'n01' has only 6") as err:
        build_datasets(DataConfig(name="imagenet", root=str(tiny_imagenet), heldout_per_class=6))
    assert "lower data.heldout_per_class" in str(err.value)


def test_heldout_zero_keeps_full_train() -> None:
    splits = build_datasets(DataConfig(name="digits", heldout_per_class=0))
    assert splits.heldout is None and len(splits.train) + len(splits.test) == 1797
    loaders = build_loaders(splits, DataConfig(name="digits", heldout_per_class=0))
    assert loaders.heldout is None


def test_class_balanced_split_function() -> None:
    targets = np.repeat(np.arange(4), 5)
    rest, taken = class_balanced_split(targets, 2, seed=3)
    assert Counter(targets[taken].tolist()) == {0: 2, 1: 2, 2: 2, 3: 2}
    assert sorted(np.concatenate([rest, taken]).tolist()) == list(range(20))


# ---------------------------------------------------------------- digits / synthetic / config


def test_digits_shapes() -> None:
    splits = build_datasets(DataConfig(name="digits", image_size=64))
    assert splits.num_classes == 10 and splits.input_shape == (3, 64, 64)
    assert len(splits.test) == 359 and len(splits.train) + len(splits.heldout) == 1438
    x, _ = splits.test[0]
    assert x.shape == (3, 64, 64) and torch.equal(x[0], x[2])


def test_random_shift_is_an_edge_padded_crop_per_image() -> None:
    from proxyless.data.transforms import RandomShift

    x = torch.rand(6, 3, 8, 8)
    torch.manual_seed(1)
    shifted = RandomShift(2)(x)
    torch.manual_seed(1)
    dy, dx = torch.randint(0, 5, (2, 6))  # the offsets it drew, one pair per image
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="replicate")
    for i in range(6):
        crop = padded[i, :, dy[i] : dy[i] + 8, dx[i] : dx[i] + 8]
        assert torch.equal(shifted[i], crop)
    assert len({(int(a), int(b)) for a, b in zip(dy, dx, strict=True)}) > 1
    assert RandomShift(2)(x[0]).shape == (3, 8, 8)  # one image as well as a batch


@pytest.mark.parametrize("name", ["digits", "clutter"])
def test_in_memory_batches_are_gathered_at_once(name: str, tmp_path: Path) -> None:
    """A loader batch of in-memory images: one gather + one transform call; eval batches
    equal the image-by-image path exactly, train batches are reproducible from the seed."""
    cfg = DataConfig(
        name=name,
        root=str(tmp_path),
        clutter_train_samples=300,
        clutter_test_samples=100,
        batch_size=16,
        heldout_per_class=5,
    )
    splits = build_datasets(cfg)
    rows = [5, 0, 17, 3]
    batch = splits.test.__getitems__(rows)
    for (image, target), row in zip(batch, rows, strict=True):
        one, one_target = splits.test[row]
        assert torch.equal(image, one) and target == one_target
    calls = []
    gather = splits.train.base.batch
    splits.train.base.batch = lambda idx: calls.append(len(idx)) or gather(idx)
    loader = build_loaders(splits, cfg).train
    torch.manual_seed(0)
    first = next(iter(loader))[0]
    torch.manual_seed(0)
    again = next(iter(loader))[0]
    assert calls == [16, 16] and torch.equal(first, again)
    assert first.shape == (16, 3, 32, 32)


def test_synthetic_and_subsets() -> None:
    cfg = DataConfig(
        name="synthetic",
        synthetic_num_classes=5,
        synthetic_train_samples=100,
        synthetic_test_samples=30,
        heldout_per_class=4,
        train_subset=50,
        test_subset=10,
        image_size=16,
    )
    splits = build_datasets(cfg)
    assert (len(splits.train), len(splits.heldout), len(splits.test)) == (50, 20, 10)
    assert splits.num_classes == 5 and splits.train[0][0].shape == (3, 16, 16)
    assert torch.equal(splits.train[1][0], build_datasets(cfg).train[1][0])


def test_unknown_dataset() -> None:
    with pytest.raises(DataError, match="unknown dataset 'mnist'") as err:
        DataConfig(name="mnist")
    assert all(name in str(err.value) for name in DATASETS)


@pytest.mark.parametrize(
    "field,value",
    [("batch_size", 0), ("heldout_per_class", -1), ("test_fraction", 1.0), ("image_size", 0)],
)
def test_config_validation(field: str, value: float) -> None:
    with pytest.raises(DataError, match=f"data.{field}"):
        DataConfig(**{field: value})


# ---------------------------------------------------------------- loaders


def test_loader_batches(tiny_cifar10: Path) -> None:
    cfg = DataConfig(
        name="cifar10",
        root=str(tiny_cifar10),
        heldout_per_class=2,
        batch_size=16,
        eval_batch_size=7,
        pin_memory=False,
    )
    loaders = build_loaders(build_datasets(cfg), cfg)
    batches = list(loaders.train)
    assert len(batches) == 5 and all(b[0].shape == (16, 3, 32, 32) for b in batches)
    x, y = next(iter(loaders.heldout))
    assert x.shape == (16, 3, 32, 32) and y.shape == (16,)
    assert [len(b[1]) for b in loaders.test] == [7, 7, 6]
    # test order is fixed; train order changes from pass to pass
    assert torch.equal(next(iter(loaders.test))[1], next(iter(loaders.test))[1])


def test_train_reshuffles_each_pass_and_set_epoch_reproduces() -> None:
    cfg = DataConfig(name="synthetic", batch_size=32)
    loader = build_loaders(build_datasets(cfg), cfg).train
    first = torch.cat([y for _, y in loader])
    second = torch.cat([y for _, y in loader])
    assert not torch.equal(first, second)
    loader.sampler.set_epoch(0)
    assert torch.equal(torch.cat([y for _, y in loader]), first)


def test_train_smaller_than_batch() -> None:
    cfg = DataConfig(
        name="synthetic", synthetic_train_samples=40, batch_size=64, heldout_per_class=1
    )
    with pytest.raises(DataError, match="lower data.batch_size"):
        build_loaders(build_datasets(cfg), cfg)


def test_infinite_loader_resume() -> None:
    cfg = DataConfig(name="digits", heldout_per_class=5, batch_size=16)  # 50 -> 4 batches/pass
    loaders = build_loaders(build_datasets(cfg), cfg)
    stream = InfiniteLoader(loaders.heldout)
    for _ in range(6):  # into the second pass
        next(stream)
    state = stream.state_dict()
    assert state == {"epoch": 1, "batch": 2}
    expected = [next(stream)[1] for _ in range(5)]  # crosses into the third pass

    fresh = build_loaders(build_datasets(cfg), cfg)
    resumed = InfiniteLoader(fresh.heldout)
    resumed.load_state_dict(state)
    for want in expected:
        assert torch.equal(next(resumed)[1], want)

    passes = InfiniteLoader(fresh.heldout)
    pass0 = torch.cat([next(passes)[1] for _ in range(4)])
    pass1 = torch.cat([next(passes)[1] for _ in range(4)])
    assert sorted(pass0.tolist()) == sorted(pass1.tolist()) and not torch.equal(pass0, pass1)


def test_infinite_loader_needs_resumable_sampler() -> None:
    with pytest.raises(TypeError, match="ResumableSampler"):
        InfiniteLoader(torch.utils.data.DataLoader(list(range(4))))


def test_sampler_shards_are_disjoint() -> None:
    data = list(range(10))
    shards = [
        list(ResumableSampler(data, shuffle=True, seed=0, num_replicas=2, rank=r)) for r in range(2)
    ]
    assert len(shards[0]) == len(shards[1]) == 5
    assert sorted(shards[0] + shards[1]) == data


def test_distributed_loaders(tmp_path: Path) -> None:
    import torch.distributed as dist

    cfg = DataConfig(name="synthetic", batch_size=16)
    splits = build_datasets(cfg)
    with pytest.raises(DataError, match="init_process_group"):
        build_loaders(splits, cfg, distributed=True)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        loaders = build_loaders(splits, cfg, distributed=True)
        assert isinstance(loaders.train.sampler, ResumableSampler)
        assert next(iter(loaders.train))[0].shape == (16, 3, 32, 32)
    finally:
        dist.destroy_process_group()
