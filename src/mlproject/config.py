"""TrainConfig: every training option, its default and its validation, in one place.

The same dataclass is the `mlproject train` CLI's options (cli.py generates them from the fields),
the `main` entry point's parameters in `MLproject` (tests/test_config.py checks they match one to
one) and the params logged to MLflow (`asdict(cfg)`, logged whole).

    cfg = TrainConfig(model="lenet5", epochs=3)
    cfg.validate()          # raises ConfigError("... valid choices ...") on bad input
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from typing import Any

from .datasets import REGISTRY, NamedDataset, dataset_help, is_path
from .errors import ConfigError, did_you_mean, listed, unknown  # noqa: F401 (re-exported: callers import them from here)
from .model_names import check_cached

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("none", "cosine", "step")
FREEZE = ("none", "backbone")
HEADS = ("linear", "mlp")
DEVICES = ("auto", "cpu", "cuda", "mps")
# how booleans are written where they are text (MLproject parameters, `tune --pretrained true,false`)
BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
# what --augment can apply to training batches: random crop (zero padding of 1/8 of the input
# size), random affine (rotation, scale and translation: train.AFFINE_*), random horizontal flip.
# `+` combines (`crop+flip`, `affine+flip`; crop and affine both translate, so not both);
# `mlproject train` also takes `crop,flip`, but in `tune` a comma separates choices
# (`--augment none,crop,affine`).
AUGMENTS = ("none", "crop", "flip", "crop+flip", "affine", "affine+flip")
AUGMENT_PARTS = ("crop", "affine", "flip")  # the order a combination is written in
# `--augment true` (also `--augment` alone, yes, 1): the dataset's default, its registry entry's
# `augment` (datasets.py). Flips are left out where they change what an image shows: a mirrored 2,
# 3, 4, 5, 7 or 9 (and most letters) is another symbol or none, so the digit datasets get crops
# only. A mirrored shirt, bag or shoe is still a shirt, bag or shoe, and CIFAR's photos are
# mirror-symmetric as classes, so Fashion-MNIST and CIFAR get both; so do ImageFolders (mostly
# photos: pass `--augment crop` for text, digits or signs).
IMAGE_FOLDER_AUGMENT = "crop+flip"
# weights are float32: torch refuses larger hyperparameters mid-run ("cannot be converted to type
# float without overflow"), so they are refused up front, with the other bad input
FLOAT32_MAX = 3.4028234663852886e38
CHECKPOINT_EVERY_S = 600.0  # --checkpoint-every's default (TrainConfig.checkpoint_every: why)
# TrainConfig fields that do not change a run's arithmetic: where it is recorded, how files are read,
# which device, where checkpoints go. A run resumed (`mlproject train --resume RUN_ID`) may be given
# other values of these than it was started with, and a checkpoint written under other values of them
# resumes (mlproject.train); every other option must be the run's. Here, not in train.py, so that
# `--resume` is checked before torch loads.
NOT_TRAINING_OPTIONS = ("experiment", "run_name", "log_model", "num_workers", "device", "data_dir",
                        "cache_features", "checkpoint_every", "checkpoint_dir", "keep_checkpoints")




def check_dataset(name: str) -> NamedDataset | None:
    """The registry's entry for `--dataset name`, or None for an ImageFolder path (checked when it
    is read). ConfigError for an unknown name (close matches, the valid choices) and for a dataset
    whose optional package is missing (what to install). Imports nothing heavy."""
    entry = REGISTRY.get(name)
    if entry is None:
        if is_path(name):
            return None
        raise unknown("dataset", name, [*REGISTRY, "<path to an ImageFolder directory>"])
    missing = entry.missing()
    if missing:
        raise ConfigError(missing)
    return entry


def resolve_augment(value, dataset: str) -> str:
    """What `--augment value` applies on `dataset`: one of AUGMENTS.

    Accepts AUGMENTS, their parts in either order (`flip+crop`) or joined by a comma (`crop,flip`),
    `true`/`yes`/`1` (or a bool True) for the dataset's default (its registry entry's `augment`;
    IMAGE_FOLDER_AUGMENT for a path) and `false`/`no`/`0` (or False) for none, in any case. Raises
    ConfigError naming an unknown value, with close matches and the valid choices, and for an
    unknown dataset (whose default is not known: never guessed)."""
    text = str(value).strip().lower()
    entry = check_dataset(dataset)
    default = entry.augment if entry else IMAGE_FOLDER_AUGMENT
    if text in BOOL_WORDS:
        return default if BOOL_WORDS[text] else "none"
    if text in AUGMENTS:
        return text
    parts = [p.strip() for p in text.replace(",", "+").split("+")]
    if len(parts) == len(set(parts)) and set(parts) <= set(AUGMENT_PARTS):
        if {"crop", "affine"} <= set(parts):
            raise ConfigError(f"--augment {value}: crop and affine both translate the image; use one of them "
                              "(affine+flip, crop+flip)")
        return "+".join(p for p in AUGMENT_PARTS if p in parts)
    error = unknown("augment", str(value), AUGMENTS + ("true",))
    raise ConfigError(f"{error} (the dataset's default: {default}); + combines, as in crop+flip")


def _augment_defaults_help() -> str:
    """'crop for digits, mnist5k, ...; crop+flip for ... and ImageFolders': `--augment true` by dataset."""
    by_default: dict[str, list[str]] = {}
    for name, entry in REGISTRY.items():
        by_default.setdefault(entry.augment, []).append(name)
    by_default.setdefault(IMAGE_FOLDER_AUGMENT, []).append("ImageFolders")
    return "; ".join(f"{augment} for {', '.join(names)}" for augment, names in by_default.items())


def logged_value(f: dataclasses.Field, text: str):
    """A TrainConfig field's value from its text as MLflow keeps params (str(value), or what
    `mlflow run -P` was given: `false`, `0.010`); the text itself where it does not parse."""
    kind = f.type if isinstance(f.type, str) else f.type.__name__
    try:
        if kind == "bool":
            return BOOL_WORDS.get(text.strip().lower(), text)
        return {"int": int, "float": float}.get(kind, str)(text)
    except ValueError:
        return text


def differing_option(cfg: TrainConfig, params: dict[str, str], ignore=NOT_TRAINING_OPTIONS) -> str | None:
    """The first option (TrainConfig's order, all but `ignore`) whose value in `cfg` is not the one
    a run logged in `params` (its MLflow params, text), as one phrase naming both; None if all agree."""
    for f in fields(cfg):
        if f.name in ignore:
            continue
        flag = "--" + f.name.replace("_", "-")
        now = getattr(cfg, f.name)
        if f.name not in params:
            return f"the run has no param {f.name} (an older mlproject's run), this command has {flag} {now}"
        if logged_value(f, params[f.name]) != now:
            return f"the run has {flag} {params[f.name]}, this command has {flag} {now}"
    return None


def _opt(default, help: str, choices: tuple | None = None, **extra):
    return field(default=default, metadata={"help": help, "choices": choices, **extra})


@dataclass
class TrainConfig:
    """All options of one training run. Field order is the CLI's and MLproject's order."""

    # what to train on and with
    model: str = _opt("resnet18", "timm or torchvision model name (prefix timm: / tv: to choose), "
                      "or a built-in: basecnn, lenet5, smallcnn, softmax, mlp. `mlproject models` lists them.")
    dataset: str = _opt("digits", dataset_help())
    data_dir: str = _opt("data", "where torchvision datasets are downloaded to / read from")
    pretrained: bool = _opt(False, "load ImageNet weights (timm / torchvision models)")
    freeze: str = _opt("none", "none: fine-tune everything; backbone: train only the new head "
                       "(BatchNorm statistics frozen too)", FREEZE)
    head: str = _opt("linear", "classifier head that replaces the model's own", HEADS)
    head_hidden: int = _opt(256, "hidden units of the mlp head")
    head_dropout: float = _opt(0.0, "dropout before the head's last layer")
    image_size: int = _opt(0, "input size in pixels; 0 = the model's (pretrained: its native size, "
                           "built-in: its design size, else the data's, at least 32)")
    augment: str = _opt("none", "training batches only: none, crop (random crop, zero padding 1/8 of the "
                        "input size: 4 px at 32 px), affine (random rotation up to 15 degrees, scale 0.85-1.15, "
                        "shift up to 7.5% of the size), flip (random horizontal flip), crop+flip or affine+flip (+ combines), "
                        "or true (also --augment alone): the dataset's default, which flips only where a mirror "
                        f"image shows the same class: {_augment_defaults_help()}; --no-augment, false: none",
                        flag_value="true", off_value="none")
    val_fraction: float = _opt(0.1, "share of the training data held out for validation")
    test_fraction: float = _opt(0.2, "share held out for test when the dataset has no test split")
    cv: int = _opt(0, "K-fold cross-validation (stratified) over train + validation, K >= 2: the run's val "
                   "metrics are the folds' mean, then the model is refit on all of train + validation and "
                   "tested; 0 = the hold-out validation split. The test split is never part of a fold")
    balance: bool = _opt(False, "cut every class to the smallest class's size before splitting "
                         f"(ImageFolders and the embedded datasets: {', '.join(n for n, d in REGISTRY.items() if d.embedded)})")
    allow_empty_classes: bool = _opt(False, "ImageFolder: train without class folders that hold no "
                                     "images (one warning line; tag data.empty_classes) instead of stopping")
    # how to train
    optimizer: str = _opt("sgd", "optimizer", OPTIMIZERS)
    lr: float = _opt(0.01, "learning rate (> 0)")
    momentum: float = _opt(0.9, "SGD momentum in [0, 1); Adam/AdamW use it as beta1")
    nesterov: bool = _opt(False, "Nesterov momentum (sgd)")
    weight_decay: float = _opt(0.0, "weight decay (>= 0)")
    batch_size: int = _opt(64, "training batch size (>= 1)")
    epochs: int = _opt(5, "training epochs (>= 1)")
    scheduler: str = _opt("none", "learning-rate schedule per epoch: cosine to 0, or step "
                          "(x0.1 every third of the epochs)", SCHEDULERS)
    seed: int = _opt(0, "random seed: same seed on CPU gives the same metrics")
    device: str = _opt("auto", "auto picks CUDA, then MPS, then CPU", DEVICES)
    num_workers: int = _opt(2, "DataLoader workers for ImageFolders too large to hold in memory")
    cache_features: bool = _opt(True, "with --freeze backbone and --augment none: compute the backbone's "
                                "features once, cache them on disk ($MLPROJECT_CACHE_DIR, default "
                                "~/.cache/mlproject/features) and train only the head on them")
    compile: bool = _opt(False, "torch.compile the network for training (repays its compile time "
                         "on long runs and studies, mostly on GPUs)")
    # what to record
    experiment: str = _opt("mlproject", "MLflow experiment (standalone runs; under `mlflow run` "
                           "the run MLflow created is used)")
    run_name: str = _opt("", "MLflow run name (default: MODEL-DATASET-N, unique in the experiment)")
    log_model: bool = _opt(True, "log the trained model (an MLflow pyfunc model: labels and class probabilities)")
    # checkpoints (`mlproject train --resume RUN_ID` goes on from one): written on SIGTERM/SIGINT and every
    # CHECKPOINT_EVERY_S seconds. Why 600: a preemption without warning (SIGKILL, a lost machine) then costs
    # at most 10 minutes of one run, while writing costs little: resnet18 with SGD is 90 MB, ~0.2 s to write
    # locally (lenet5 0.5 MB, 2 ms; torch.save, measured), i.e. 0.03 % of the run, plus the upload to a
    # tracking server. A run (or trial) shorter than that writes none unless signalled.
    checkpoint_every: float = _opt(CHECKPOINT_EVERY_S, "seconds between periodic checkpoints of the training state "
                                   "(one is also written on SIGTERM/SIGINT); a run shorter than this writes none "
                                   "unless stopped; `--resume RUN_ID` goes on from the last one")
    checkpoint_dir: str = _opt("", "where checkpoints go: empty = the run's own MLflow artifacts "
                               "(checkpoint/checkpoint.pt, through the tracking server where there is one); "
                               "else a folder (shared file system): DIR/RUN_ID/checkpoint.pt")
    keep_checkpoints: bool = _opt(False, "keep the checkpoint of a run that ends FINISHED (by default it is deleted; "
                                  "a KILLED or FAILED run always keeps its own, for --resume)")

    def to_params(self) -> dict[str, Any]:
        """The whole config, as MLflow params."""
        return dataclasses.asdict(self)

    def augmentation(self) -> str:
        """What --augment applies on this dataset: one of AUGMENTS (ConfigError if unknown)."""
        return resolve_augment(self.augment, self.dataset)

    def validate(self) -> "TrainConfig":
        """Check every value that can be checked without touching data or models.

        Dataset names (and the optional package a dataset needs) are checked here against the
        dataset registry (datasets.py); model names against the names an earlier command cached
        (model_names; without them `models.resolve_model` checks them, importing timm), and
        ImageFolders by `data.peek_dataset`, which needs the files. This checks choices and ranges.
        Returns self.
        """
        for f in fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise unknown(f.name.replace("_", " "), getattr(self, f.name), choices)
        check_dataset(self.dataset)
        check_cached(self.model)  # the model names cached by an earlier command, if any (no torch, no timm)
        self.augmentation()
        checks = [
            (0 < self.lr <= FLOAT32_MAX, f"lr must be > 0 and a finite float32 (<= {FLOAT32_MAX:.3g}), got {self.lr}"),
            (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
            (0 <= self.weight_decay <= FLOAT32_MAX,
             f"weight decay must be >= 0 and a finite float32 (<= {FLOAT32_MAX:.3g}), got {self.weight_decay}"),
            (0 <= self.val_fraction < 1, f"val fraction must be in [0, 1), got {self.val_fraction}"),
            (0 < self.test_fraction < 1, f"test fraction must be in (0, 1), got {self.test_fraction}"),
            (self.cv == 0 or self.cv >= 2, f"cv must be 0 (off) or >= 2 folds, got {self.cv}"),
            (self.val_fraction + self.test_fraction < 1,
             f"val fraction + test fraction must be < 1, got {self.val_fraction + self.test_fraction}"),
            (self.image_size == 0 or self.image_size >= 8, f"image size must be 0 (auto) or >= 8, got {self.image_size}"),
            (self.head_hidden >= 1, f"head hidden must be >= 1, got {self.head_hidden}"),
            (0 <= self.head_dropout < 1, f"head dropout must be in [0, 1), got {self.head_dropout}"),
            (self.num_workers >= 0, f"num workers must be >= 0, got {self.num_workers}"),
            (not (self.nesterov and self.optimizer == "sgd" and self.momentum == 0),
             "nesterov needs momentum > 0"),
            (self.checkpoint_every > 0, f"checkpoint every must be > 0 seconds, got {self.checkpoint_every}"),
            (not (self.checkpoint_dir and os.path.exists(self.checkpoint_dir) and not os.path.isdir(self.checkpoint_dir)),
             f"checkpoint dir {self.checkpoint_dir} is a file, not a folder"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        return self
