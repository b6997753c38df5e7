"""Datasets: the named ones of the registry (datasets.py: embedded, torchvision downloads) and
ImageFolder directories.

Two steps, so that bad input fails before anything heavy runs:

    shape = peek_dataset(cfg)              # cheap: checks name/path/classes, no download, no decode
    data = create_dataset(cfg, size=32)    # loads: train/val/test Splits + DatasetInfo

Every split holds images as uint8 (N, C, H, W) tensors and int64 labels (a split of cached
backbone features, mlproject.features, holds float (N, D) rows instead). Datasets that fit in
memory (all the named ones, and ImageFolders under MAX_IN_MEMORY_BYTES) are held as tensors and
batched by indexing, with no per-sample PIL work; larger ImageFolders stream through a DataLoader
with `num_workers` decoding processes. Validation always comes from the training data.
"""
from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image

from .config import ConfigError, TrainConfig, check_dataset
from .datasets import NamedDataset, is_path  # noqa: F401 (is_path: data.is_path, as before the registry)

# ImageFolders whose decoded uint8 pixels (at the model's input size) exceed this stream from disk
# instead. 4 GiB keeps CIFAR-10-sized sets (150 MB) and CINIC-10 at 32 px (810 MB) in memory on a
# 24 GiB machine with room for the model and a copy.
MAX_IN_MEMORY_BYTES = 4 << 30
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
VAL_DIRS = ("val", "valid", "validation")


class DataError(ConfigError):
    """The dataset cannot be used as given (missing, empty, undecodable, not downloadable)."""


@dataclass
class DatasetShape:
    """What a model needs to know before the data is loaded."""

    channels: int
    height: int
    width: int
    num_classes: int


@dataclass
class Split:
    """One split: uint8 images (N, C, H, W) in memory, or image files decoded on the fly."""

    labels: torch.Tensor
    images: torch.Tensor | None = None
    files: list[str] | None = None
    size: tuple[int, int] = (0, 0)  # streaming only: (height, width) decoded images are resized to
    mode: str = "RGB"

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
                num_workers: int = 0, skip: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (images, labels) batches on the split's device: the CPU, or the GPU for a split
        made resident there (train.resident); the trainer moves CPU batches to its device.

        `skip`: leave out the first `skip` batches, after the permutation is drawn (a resumed
        epoch: the same generator state draws the same order, and the batches already trained on
        are not read). Streamed files are skipped by their indices, so none of them is decoded."""
        if self.images is not None:
            n = len(self.labels)
            # the permutation comes from the CPU generator (same order on every device for a
            # seed) and moves to the images' device once per epoch, not once per batch
            order = torch.randperm(n, generator=generator).to(self.images.device) if shuffle else None
            for start in range(skip * batch_size, n, batch_size):
                if order is None:
                    yield self.images[start:start + batch_size], self.labels[start:start + batch_size]
                else:
                    idx = order[start:start + batch_size]
                    yield self.images[idx], self.labels[idx]
            return
        from itertools import islice

        files = ImageFiles(self.files, self.labels.tolist(), self.size, self.mode)
        # the samplers DataLoader(shuffle=shuffle, generator=generator) builds itself (the same
        # draws from `generator`: the loader's base seed, then the permutation), without the first
        # `skip` index lists: drawn, never handed to a worker. The loader is iterated once, so a
        # one-pass iterator serves as its batch sampler.
        sampler = (torch.utils.data.RandomSampler(files, generator=generator) if shuffle
                   else torch.utils.data.SequentialSampler(files))
        index_lists = islice(torch.utils.data.BatchSampler(sampler, batch_size, drop_last=False), skip, None)
        loader = torch.utils.data.DataLoader(files, batch_sampler=index_lists, generator=generator,
                                             num_workers=num_workers, persistent_workers=False,
                                             collate_fn=_collate_ok)
        for images, labels, _ in loader:
            yield images, labels

    def take(self, idx) -> "Split":
        """A sub-split of the rows `idx` (numpy int array)."""
        idx_t = torch.as_tensor(idx, dtype=torch.long)
        if self.images is not None:
            return Split(self.labels[idx_t], images=self.images[idx_t])
        return Split(self.labels[idx_t], files=[self.files[i] for i in idx], size=self.size, mode=self.mode)

    def concat(self, other: "Split") -> "Split":
        """This split's rows, then `other`'s (both in memory, or both streamed)."""
        labels = torch.cat([self.labels, other.labels])
        if self.images is not None and other.images is not None:
            return Split(labels, images=torch.cat([self.images, other.images.to(self.images.device)]))
        if self.files is not None and other.files is not None:
            return Split(labels, files=self.files + other.files, size=self.size, mode=self.mode)
        raise ValueError("cannot join an in-memory split and a streamed one")

    def to(self, device: torch.device) -> "Split":
        """This split with its images and labels on `device` (in-memory splits; others as they are)."""
        if self.images is None or self.images.device == torch.device(device):
            return self
        return Split(self.labels.to(device, non_blocking=True), images=self.images.to(device, non_blocking=True))

    @property
    def nbytes(self) -> int:
        """Bytes of the in-memory images and labels (0 for streamed splits)."""
        if self.images is None:
            return 0
        return self.images.element_size() * self.images.nelement() + self.labels.element_size() * self.labels.nelement()

    def first_images(self, n: int) -> torch.Tensor:
        """The first n images as a uint8 tensor on the CPU (for sample grids and input examples)."""
        if self.images is not None:
            return self.images[:n].cpu()
        return next(Split(self.labels[:n], files=self.files[:n], size=self.size, mode=self.mode).batches(n))[0]


@dataclass
class DatasetInfo:
    """What the seeds' 'input analysis' reported, plus what tracking needs to log the dataset."""

    name: str
    source: str
    class_names: list[str]
    channels: int
    height: int
    width: int
    split_sizes: dict[str, int]
    class_counts: dict[str, int]  # training split, by class name
    mean: list[float]  # training-set per-channel statistics in [0, 1] (seed 002)
    std: list[float]
    digest: str = ""
    in_memory: bool = True
    notes: list[str] = field(default_factory=list)
    empty_classes: list[str] = field(default_factory=list)  # class folders skipped (--allow-empty-classes)

    @property
    def num_images(self) -> int:
        return sum(self.split_sizes.values())

    @property
    def bytes_per_image(self) -> int:
        """Uncompressed uint8 bytes per stored image (seed 001: '~785B' for MNIST)."""
        return self.channels * self.height * self.width

    @property
    def total_bytes(self) -> int:
        return self.bytes_per_image * self.num_images


@dataclass
class Splits:
    train: Split
    val: Split
    test: Split
    info: DatasetInfo

    def analysis_sample(self, n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
        """The first `n` training images (uint8, N x C x H x W) and their labels, as numpy: what
        the input analysis (class counts, samples per class) is drawn from."""
        images = self.train.first_images(min(len(self.train), n))
        return images.numpy(), self.train.labels[: len(images)].numpy()


# ---------------------------------------------------------------------------------------------
# peek: cheap checks before any heavy work

def peek_dataset(cfg: TrainConfig) -> DatasetShape:
    """Check the dataset name or folder and return its image shape and class count (no download):
    a named dataset's from its registry entry."""
    entry = check_dataset(cfg.dataset)
    if entry is not None:
        return DatasetShape(*entry.shape)
    layout = _scan_folder(Path(cfg.dataset))
    _checked_classes(Path(cfg.dataset), layout, cfg.allow_empty_classes)
    if cfg.cv and "val" in layout:
        folder = next(p for p in Path(cfg.dataset).iterdir() if p.is_dir() and p.name.lower() in VAL_DIRS)
        raise DataError(f"--cv {cfg.cv}: {cfg.dataset} has a fixed validation folder ({folder.name}/), which "
                        "cross-validation would mix into its folds; leave out --cv to validate on that folder, "
                        f"or move its class folders into {cfg.dataset}/train to cross-validate over both")
    first = next(iter(layout.values()))[0][0]
    mode, (w, h) = _image_mode_size(first)
    return DatasetShape(1 if mode == "L" else 3, h, w, len(_classes_of(layout)))


def _image_mode_size(path: str) -> tuple[str, tuple[int, int]]:
    try:
        with Image.open(path) as im:
            return ("L" if im.mode in ("L", "1", "I", "I;16", "F") else "RGB"), im.size
    except Exception as e:  # PIL raises several types for undecodable files
        raise DataError(f"cannot decode image {path}: {e}") from None


def _scan_folder(root: Path) -> dict[str, list[tuple[str, str]]]:
    """{split name or 'all': [(file, class name), ...]} for an ImageFolder directory.

    With train/ (and val/ or valid/, test/) subfolders those are the splits (CINIC-10 layout);
    otherwise the class folders directly under root form one pool to be split.
    """
    if not root.is_dir():
        raise DataError(f"ImageFolder directory not found: {root}")
    subdirs = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    if "train" in subdirs:
        # split -> folder; a val/ or test/ folder without images counts as absent (the split is
        # then taken from train/, as when the folder is missing)
        folders = {"train": subdirs["train"]}
        folders.update({"val": subdirs[n] for n in reversed(VAL_DIRS) if n in subdirs})
        if "test" in subdirs:
            folders["test"] = subdirs["test"]
        layout = {split: _scan_classes(folder) for split, folder in folders.items()}
        layout = {split: items for split, items in layout.items() if items or split == "train"}
        classes = _classes_of({"train": layout["train"]})
        for split, items in layout.items():
            extra = sorted({c for _, c in items} - set(classes))
            if extra:
                raise DataError(f"{folders[split]}: classes {extra} are not in {folders['train']}")
    else:
        layout = {"all": _scan_classes(root)}
    _classes_of(layout, root)
    return layout


def _checked_classes(root: Path, layout: dict, allow_empty: bool) -> list[str]:
    """The class folders of an ImageFolder (under train/ where there is one) that hold no image
    file, as paths relative to `root`, from `_scan_folder`'s `layout` (no second walk of the
    files); DataError naming them unless `allow_empty`: torchvision's ImageFolder refuses them,
    and skipping them silently would train a model with fewer classes than the folders show."""
    folder = next((p for p in root.iterdir() if p.is_dir() and p.name.lower() == "train"), root)
    have = {c for _, c in layout.get("train") or layout.get("all") or []}
    empty = [p.relative_to(root).as_posix() for p in sorted(folder.iterdir()) if p.is_dir() and p.name not in have]
    if empty and not allow_empty:
        raise DataError(f"{len(empty)} class folder(s) in {root} hold no images: {', '.join(empty)}; "
                        "add images, remove the folders, or pass --allow-empty-classes to train without them")
    return empty


def _scan_classes(folder: Path) -> list[tuple[str, str]]:
    items = []
    for cls in sorted(p for p in folder.iterdir() if p.is_dir()):
        for dirpath, _, filenames in sorted(os.walk(cls)):
            items += [(os.path.join(dirpath, f), cls.name) for f in sorted(filenames)
                      if f.lower().endswith(IMG_EXTENSIONS)]
    return items


def _classes_of(layout, root: Path | None = None) -> list[str]:
    pool = layout.get("train") or layout.get("all") or []
    classes = sorted({c for _, c in pool})
    if root is not None:
        if not pool:
            raise DataError(f"no images found in {root} (expected class folders holding "
                            f"{', '.join(IMG_EXTENSIONS[:4])}, ... files)")
        if len(classes) < 2:
            raise DataError(f"{root} has {len(classes)} class folder(s) with images ({', '.join(classes)}); "
                            "a classifier needs at least 2")
    return classes


# ---------------------------------------------------------------------------------------------
# load

def create_dataset(cfg: TrainConfig, size: int | None = None) -> Splits:
    """Load cfg.dataset into train/val/test Splits.

    `size`: ImageFolder images are decoded and resized once to size x size (the model's input
    size), so batches need no per-sample work; None keeps the first image's resolution. Named
    datasets keep their native resolution (the model resizes on the device).
    """
    entry = check_dataset(cfg.dataset)
    if entry is None:
        return _load_folder(cfg, size)
    if entry.embedded:
        return _load_embedded(entry, cfg)
    return _load_torchvision(entry, cfg)


def _load_embedded(entry: NamedDataset, cfg: TrainConfig) -> Splits:
    """An embedded dataset: one pool, split into train / val / test (stratified, seeded)."""
    images, labels, names = entry.load()
    names = _checked_names(names, entry, entry.source)
    images = _checked_images(torch.from_numpy(np.ascontiguousarray(images)), "NCHW", entry, entry.source)
    pool = Split(_checked_labels(labels, len(images), entry, entry.source), images=images)
    train, val, test = _split_pool(pool, cfg, names)
    return _finish(entry.name, entry.source, names, train, val, test)


def _load_torchvision(entry: NamedDataset, cfg: TrainConfig) -> Splits:
    """A torchvision dataset: its train split (validation taken from it) and its test split,
    read as its registry entry declares (constructor arguments, `.data` axes, label attribute)."""
    import torchvision

    cls = getattr(torchvision.datasets, entry.torchvision)
    root = os.path.abspath(os.path.expanduser(cfg.data_dir))
    try:
        train_ds = cls(root, **entry.train_kwargs, download=True)
        test_ds = cls(root, **entry.test_kwargs, download=True)
    except Exception as e:  # URLError, RuntimeError, OSError: all mean "not here and not fetchable"
        raise DataError(
            f"could not fetch {entry.torchvision} from {urls_of(cls)} into {root} ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else 'no network?'}); download it elsewhere and point "
            f"--data-dir at the folder that holds {entry.files}") from None

    def as_split(ds, what: str) -> Split:
        images = _checked_images(torch.as_tensor(np.asarray(ds.data)), entry.layout, entry, what)
        labels = getattr(ds, entry.labels, None)
        if labels is None:
            raise DataError(f"{what} has no .{entry.labels} attribute (the labels its registry entry names)")
        return Split(_checked_labels(labels, len(images), entry, what), images=images)

    def called(kwargs: dict) -> str:
        return f"torchvision.datasets.{entry.torchvision}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"

    names = _checked_names(list(entry.classes or getattr(train_ds, "classes", None) or ()), entry,
                           f"torchvision.datasets.{entry.torchvision}")
    train, val = _split_off(as_split(train_ds, called(entry.train_kwargs)), cfg.val_fraction, cfg.seed)
    test = as_split(test_ds, called(entry.test_kwargs))
    return _finish(entry.name, urls_of(cls), names, train, val, test)


def _checked_images(data: torch.Tensor, layout: str, entry: NamedDataset, what: str) -> torch.Tensor:
    """`data` (axes `layout`) as uint8 N x C x H x W, or DataError naming the shape found: an array
    whose axes are not the declared ones would otherwise be permuted into noise, silently."""
    c, h, w = entry.channels, entry.height, entry.width
    expected = {"NHW": (h, w), "NHWC": (h, w, c), "NCHW": (c, h, w)}[layout]
    if data.dtype != torch.uint8 or tuple(data.shape[1:]) != expected:
        raise DataError(f"{what} holds {str(data.dtype).replace('torch.', '')} images of shape "
                        f"{tuple(data.shape)}; dataset {entry.name}'s registry entry expects uint8 "
                        f"(N, {', '.join(map(str, expected))}) (layout {layout})")
    if layout == "NHW":
        data = data.unsqueeze(1)
    elif layout == "NHWC":
        data = data.permute(0, 3, 1, 2)
    return data.contiguous()


def _checked_labels(labels, n: int, entry: NamedDataset, what: str) -> torch.Tensor:
    """`labels` as int64, or DataError unless there is one per image, each a class index."""
    num_classes = entry.num_classes
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if labels.shape != (n,) or (n and not (0 <= int(labels.min()) and int(labels.max()) < num_classes)):
        span = f"{int(labels.min())}..{int(labels.max())}" if labels.numel() else "none"
        raise DataError(f"{what} has {tuple(labels.shape)} labels ({span}) for {n} images; dataset "
                        f"{entry.name} needs one label in 0..{num_classes - 1} per image")
    return labels


def _checked_names(names, entry: NamedDataset, what: str) -> list[str]:
    """The class names as text, or DataError unless there is one per class of the entry."""
    names = [str(n) for n in names]
    if len(names) != entry.num_classes:
        raise DataError(f"{what} names {len(names)} classes, dataset {entry.name}'s registry entry "
                        f"{entry.num_classes}: give the entry its `classes`")
    return names


def urls_of(cls) -> str:
    """Where a torchvision dataset class downloads from: its first mirror (MNIST), its url (CIFAR)
    or its train split's url (SVHN's split_list), else its name."""
    mirrors = getattr(cls, "mirrors", None)
    if mirrors:
        return mirrors[0]
    if isinstance(getattr(cls, "url", None), str):
        return cls.url
    split_list = getattr(cls, "split_list", None)
    if isinstance(split_list, dict) and split_list:
        return next(iter(split_list.values()))[0]
    return cls.__name__


def _load_folder(cfg: TrainConfig, size: int | None) -> Splits:
    root = Path(cfg.dataset)
    layout = _scan_folder(root)
    empty = _checked_classes(root, layout, cfg.allow_empty_classes)
    classes = _classes_of(layout)
    index = {c: i for i, c in enumerate(classes)}
    first = next(iter(layout.values()))[0][0]
    mode, (w, h) = _image_mode_size(first)
    channels = 1 if mode == "L" else 3
    if size:
        h = w = size
    n_total = sum(len(v) for v in layout.values())
    in_memory = n_total * channels * h * w <= MAX_IN_MEMORY_BYTES

    def make(items) -> Split:
        labels = torch.tensor([index[c] for _, c in items], dtype=torch.long)
        files = [f for f, _ in items]
        split = Split(labels, files=files, size=(h, w), mode=mode)
        return _decode_all(split, cfg.num_workers) if in_memory else _check_headers(split)

    if "all" in layout:
        train, val, test = _split_pool(make(layout["all"]), cfg, classes)
    else:
        train = make(layout["train"])
        if cfg.balance:
            train = _balance(train, cfg.seed)
        if "val" in layout:
            val = make(layout["val"])
        else:
            train, val = _split_off(train, cfg.val_fraction, cfg.seed)
        if "test" in layout:
            test = make(layout["test"])
        else:
            train, test = _split_off(train, cfg.test_fraction / (1 - cfg.val_fraction), cfg.seed)
    splits = _finish(root.name, str(root.resolve()), classes, train, val, test, in_memory=in_memory,
                     channels=channels, height=h, width=w)
    splits.info.empty_classes = empty
    return splits


class ImageFiles(torch.utils.data.Dataset):
    """Decodes one image file to uint8 (C, H, W) at a fixed size; flags files that fail to decode."""

    def __init__(self, files, labels, size, mode):
        self.files, self.labels, self.size, self.mode = files, labels, size, mode

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        h, w = self.size
        try:
            with Image.open(self.files[i]) as im:
                im = im.convert(self.mode)
                if im.size != (w, h):
                    im = im.resize((w, h), Image.BILINEAR)
                arr = np.asarray(im, dtype=np.uint8)
            ok = True
        except Exception:  # reported by name in _decode_all
            arr, ok = np.zeros((h, w) if self.mode == "L" else (h, w, 3), np.uint8), False
        t = torch.from_numpy(arr.copy())
        t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)
        return t, self.labels[i], ok


def _collate_ok(batch):
    images, labels, ok = zip(*batch)
    return torch.stack(images), torch.tensor(labels, dtype=torch.long), torch.tensor(ok)


def _decode_all(split: Split, num_workers: int) -> Split:
    """Decode every file once (in worker processes) into one uint8 tensor; stop on a bad file."""
    loader = torch.utils.data.DataLoader(ImageFiles(split.files, split.labels.tolist(), split.size, split.mode),
                                         batch_size=256, num_workers=num_workers, collate_fn=_collate_ok)
    images, oks = [], []
    for x, _, ok in loader:
        images.append(x)
        oks.append(ok)
    ok = torch.cat(oks)
    if not bool(ok.all()):
        bad = [split.files[i] for i in torch.nonzero(~ok).flatten().tolist()]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise DataError(f"cannot decode image {bad[0]}{more}: remove or replace it")
    return Split(split.labels, images=torch.cat(images))


def _check_headers(split: Split) -> Split:
    """Streaming ImageFolders: open every header (cheap) so non-images fail before training."""
    for f in split.files:
        _image_mode_size(f)
    return split


def _balance(split: Split, seed: int) -> Split:
    """Seed 004: cut every class to the size of the smallest one (random members, fixed seed)."""
    labels = split.labels.numpy()
    rng = np.random.default_rng(seed)
    counts = np.bincount(labels)
    n = counts[counts > 0].min()
    keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:n]
                                   for c in np.flatnonzero(counts)]))
    return split.take(keep)


def _split_off(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """(rest, held out): a stratified random share `fraction` of `split`."""
    if fraction <= 0:
        return split, split.take(np.array([], dtype=np.int64))
    idx = np.arange(len(split))
    labels = split.labels.numpy()
    counts = np.bincount(labels)
    present = int((counts > 0).sum())
    held_n = int(np.ceil(fraction * len(split)))
    # stratify where every class can give one image to each side; tiny sets split at random
    stratify = labels if counts[counts > 0].min() >= 2 and present <= held_n <= len(split) - present else None
    # scikit-learn is imported where it splits: it takes seconds, which `mlproject models` and bad input
    # (this module checks datasets) need not wait for
    from sklearn.model_selection import train_test_split

    try:
        rest, held = train_test_split(idx, test_size=fraction, random_state=seed, stratify=stratify)
    except ValueError as e:  # too few images for the requested shares
        raise DataError(f"cannot split {len(split)} images with fraction {fraction}: {e}") from None
    return split.take(np.sort(rest)), split.take(np.sort(held))


def _split_pool(pool: Split, cfg: TrainConfig, names) -> tuple[Split, Split, Split]:
    if cfg.balance:
        pool = _balance(pool, cfg.seed)
    rest, test = _split_off(pool, cfg.test_fraction, cfg.seed)
    # val is a share of the whole pool, taken from what remains for training (never from test)
    train, val = _split_off(rest, cfg.val_fraction / (1 - cfg.test_fraction), cfg.seed)
    return train, val, test


def _finish(name, source, class_names, train: Split, val: Split, test: Split, in_memory=True,
            channels=None, height=None, width=None) -> Splits:
    if len(train) == 0 or len(test) == 0:
        raise DataError(f"dataset {name} leaves {len(train)} training and {len(test)} test images; need both")
    if train.images is not None:
        _, channels, height, width = train.images.shape
        stats_images = train.images
    else:  # streaming: statistics from up to 2,048 training images
        stats_images = train.first_images(min(2048, len(train)))
    x = stats_images.float().div_(255)
    mean = x.mean(dim=(0, 2, 3)).tolist()
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()
    counts = Counter(train.labels.tolist())
    digest = hashlib.sha256()
    for s in (train, val, test):
        digest.update(s.labels.numpy().tobytes())
        digest.update(str(len(s)).encode())
    digest.update(stats_images[: 256].numpy().tobytes())
    info = DatasetInfo(
        name=name, source=source, class_names=list(class_names), channels=channels, height=height,
        width=width, split_sizes={"train": len(train), "val": len(val), "test": len(test)},
        class_counts={class_names[k]: counts.get(k, 0) for k in range(len(class_names))},
        mean=mean, std=std, digest=digest.hexdigest()[:16], in_memory=in_memory)
    return Splits(train, val, test, info)


# ---------------------------------------------------------------------------------------------
# K-fold cross-validation over train + validation (--cv K); the test split is never in a fold

def cv_pool(data: Splits) -> Split:
    """Train + validation as one split: the training rows, then the validation rows (the order
    `cv_folds`' indices refer to)."""
    return data.train.concat(data.val)


def check_cv(data: Splits, k: int) -> None:
    """DataError unless every class has at least `k` images in train + validation (a stratified
    fold needs one of each)."""
    labels = torch.cat([data.train.labels, data.val.labels]).numpy()
    counts = np.bincount(labels, minlength=len(data.info.class_names))
    present = np.flatnonzero(counts)
    smallest = present[np.argmin(counts[present])]
    if counts[smallest] < k:
        raise DataError(f"--cv {k}: class {data.info.class_names[smallest]!r} has {counts[smallest]} image(s) in "
                        f"train + validation, fewer than the {k} folds (each fold needs one of every class); "
                        f"use --cv {max(int(counts[smallest]), 2)} or fewer" if counts[smallest] >= 2 else
                        f"--cv {k}: class {data.info.class_names[smallest]!r} has {counts[smallest]} image in "
                        "train + validation; cross-validation needs at least 2 of every class")


def cv_folds(labels, k: int, seed: int) -> list[np.ndarray]:
    """The validation rows of each of `k` stratified folds of `labels` (train + validation, as
    `cv_pool` orders them), sorted: disjoint, together every row once; shuffled with `seed`, so a
    study's trials (one seed) see the same folds."""
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels)
    kfold = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [np.sort(val) for _, val in kfold.split(np.zeros(len(labels)), labels)]


def fold_splits(data: Splits, k: int, seed: int) -> list[Splits]:
    """One Splits per fold: train = the other folds, val = this fold, test unchanged. Works on
    any Splits whose train/val rows are the images' (cached features included: same rows)."""
    pool = cv_pool(data)
    folds = cv_folds(pool.labels.numpy(), k, seed)
    out = []
    for val in folds:
        train = np.setdiff1d(np.arange(len(pool)), val)
        out.append(Splits(pool.take(train), pool.take(val), data.test, data.info))
    return out


def refit_splits(data: Splits) -> Splits:
    """All of train + validation for training (no validation split), test unchanged: where the
    model chosen by cross-validation is trained once more (scikit-learn's `refit`)."""
    pool = cv_pool(data)
    return Splits(pool, pool.take(np.array([], dtype=np.int64)), data.test, data.info)
