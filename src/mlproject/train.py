"""The training loop and evaluation: plain PyTorch, no tracking inside.

    device = select_device(cfg.device)
    history = fit(model, data, cfg, device, on_epoch=lambda stats: ...)   # on_epoch may raise to stop
    result = evaluate(model, data.test, device)

    fit(..., on_checkpoint=lambda ckpt: ckpt.save(path), checkpoint_every_s=600)   # on SIGTERM too
    fit(..., resume=Checkpoint.load(path, cfg))   # continues where it stopped, bit for bit on the CPU

Batches arrive as uint8 and are preprocessed (and augmented) on the device. On CUDA, splits that
fit are moved to the device once per fit (`resident`), and training runs in bf16 autocast with
channels_last and cudnn.benchmark; `--compile` compiles the network. Losses and correct counts
accumulate on the device and are read once per epoch, so there is no host sync per step. On the
CPU, evaluation runs a channels_last copy of a convolutional model (_inference_model), in batches
whose largest activations fit in the CPU's cache (_inference_batch_size).
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import random
import sys
import time
import weakref
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from functools import lru_cache
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .errors import first_line
from .config import NOT_TRAINING_OPTIONS, TrainConfig
from .data import Split, Splits, fold_splits, refit_splits
from .metrics import curves
from .models import Classifier
from .signals import Interrupted, pending, stop_point, stop_points


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class EpochStats:
    epoch: int  # 1-based
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    lr: float
    epoch_time_s: float  # training steps only (validation excluded)
    val_time_s: float = 0.0  # the validation pass after them (0 without a validation split)


@dataclass
class History:
    epochs: list[EpochStats] = field(default_factory=list)
    train_time_s: float = 0.0
    train_images: int = 0  # images processed by training steps, over all epochs

    def series(self) -> dict[str, list[float]]:
        """{metric name: [its value in each epoch]} for every EpochStats field but the epoch."""
        rows = [asdict(e) for e in self.epochs]
        return {k: [r[k] for r in rows] for k in (rows[0] if rows else {}) if k != "epoch"}


@dataclass
class FoldStats:
    """A cross-validation fold's result (its last epoch): what a study reports after each fold."""

    fold: int  # 1-based
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float


@dataclass
class CrossValidation:
    """`cross_validate`'s result: each fold's history, their per-epoch mean, and the refit's."""

    folds: list[History]
    mean: History  # per epoch, the folds' mean; times and images summed over folds and refit
    refit: History  # trained on all of train + validation (no validation: its val metrics are nan)

    def fold_metrics(self) -> dict[str, float]:
        """cv_folds, cv_<metric>_mean and cv_<metric>_std (population std, as numpy's and
        scikit-learn's) of the folds' last-epoch metrics, and refit_time_s."""
        out = {"cv_folds": float(len(self.folds)), "refit_time_s": self.refit.train_time_s}
        for name in curves():
            values = np.array([getattr(h.epochs[-1], name) for h in self.folds], dtype=np.float64)
            out[f"cv_{name}_mean"] = float(values.mean())
            out[f"cv_{name}_std"] = float(values.std())
        return out


@dataclass
class Evaluation:
    loss: float
    accuracy: float
    y_true: np.ndarray
    y_pred: np.ndarray
    probs: np.ndarray  # (N, classes) softmax probabilities
    time_s: float

    @property
    def throughput(self) -> float:
        return len(self.y_true) / self.time_s if self.time_s > 0 else float("nan")


# config.NOT_TRAINING_OPTIONS: the options that do not change a run's arithmetic. A checkpoint written
# under other values of these resumes; any other field that differs refuses it. cache_features among
# them: a run on cached features trains a head-only model, whose weights do not load into the whole
# model (CheckpointError from fit), and the other way round.
CHECKPOINT_VERSION = 1  # Checkpoint's on-disk layout; another version is refused, not guessed at


def training_options(cfg: TrainConfig) -> dict[str, Any]:
    """The TrainConfig fields that decide the training (all but NOT_TRAINING_OPTIONS), by name."""
    return {k: v for k, v in asdict(cfg).items() if k not in NOT_TRAINING_OPTIONS}


class CheckpointError(ValueError):
    """A checkpoint that cannot resume this run (unreadable, another format version, other
    options); one line naming the file and why. The caller starts from epoch 0 instead."""


@dataclass
class Checkpoint:
    """The whole state of a training run between two batches: `fit(..., resume=ckpt)` goes on from
    it as if never stopped. Plain torch and Python objects, on the CPU (copies: the run goes on
    without changing them), so `save` / `load` round-trip it through torch.save / torch.load."""

    epoch: int  # 1-based, the epoch in progress (cfg.epochs + 1: every epoch done)
    batch: int  # batches of that epoch already trained on
    model: dict[str, torch.Tensor]  # state_dict
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None
    python_rng: tuple  # random.getstate()
    numpy_rng: tuple  # np.random.get_state()
    torch_rng: torch.Tensor  # torch.get_rng_state(): dropout, and anything else drawing from it
    cuda_rng: list[torch.Tensor] | None  # per device, where CUDA was in use
    # the shuffle generator's state at the start of `epoch`: it draws that epoch's permutation again
    shuffle_rng: torch.Tensor
    augment_rng: torch.Tensor | None  # the augmentation generator's state now (None: no --augment)
    # the epoch's running sums, as the loop holds them (exact: float32 and int64 tensors)
    loss_sum: torch.Tensor
    correct: torch.Tensor
    seen: int
    epoch_time_s: float  # training time of the epoch so far
    history: History  # the epochs done
    options: dict[str, Any]  # training_options(cfg) of the run that wrote it
    # cross_validate: the fold in progress (0: plain fit; 1..k folds; k + 1 the refit), the histories
    # of the folds done and the weights every fold and the refit start from
    fold: int = 0
    folds_done: list[History] = field(default_factory=list)
    initial_state: dict[str, torch.Tensor] | None = None
    version: int = CHECKPOINT_VERSION

    def refusal(self, cfg: TrainConfig) -> str | None:
        """Why this checkpoint cannot resume a run of `cfg` (its first differing training option,
        with both values), or None."""
        now = training_options(cfg)
        for name in dict.fromkeys([*now, *self.options]):  # cfg's field order, then fields cfg lacks
            if name not in now or name not in self.options or now[name] != self.options[name]:
                was = repr(self.options[name]) if name in self.options else "(no such option)"
                is_ = repr(now[name]) if name in now else "(no such option)"
                return f"written with {name}={was}, this run has {name}={is_}"
        return None

    def save(self, path: str | os.PathLike) -> None:
        """Write to `path`: to a temporary file beside it, then renamed over it, so a process
        killed while writing leaves the previous checkpoint whole."""
        path = Path(path)
        state = {f.name: getattr(self, f.name) for f in fields(self)}
        # histories as dicts: a file stays readable when these classes change (version decides)
        state["history"] = asdict(self.history)
        state["folds_done"] = [asdict(h) for h in self.folds_done]
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            torch.save(state, tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: str | os.PathLike, cfg: TrainConfig) -> Checkpoint:
        """The checkpoint at `path`, for resuming a run of `cfg`. CheckpointError, one line naming
        the file and why: unreadable or truncated, not a checkpoint, another format version,
        written with other training options (the first that differs, both values). A pickle, as
        torch.save writes any object: load only checkpoints this project wrote."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # OSError, EOFError, pickle's and the zip reader's errors: unreadable all
            first = first_line(e, "no detail")
            raise CheckpointError(f"checkpoint {path}: cannot be read ({type(e).__name__}: {first})") from None
        if not isinstance(state, dict) or "version" not in state:
            raise CheckpointError(f"checkpoint {path}: not a training checkpoint (holds a {type(state).__name__})")
        if state["version"] != CHECKPOINT_VERSION:
            raise CheckpointError(f"checkpoint {path}: format version {state['version']!r}; this mlproject "
                                  f"reads version {CHECKPOINT_VERSION}")
        try:
            state["history"] = _history(state["history"])
            state["folds_done"] = [_history(h) for h in state["folds_done"]]
            ckpt = cls(**state)
        except (KeyError, TypeError) as e:
            raise CheckpointError(f"checkpoint {path}: not a training checkpoint of version "
                                  f"{CHECKPOINT_VERSION} ({type(e).__name__}: {e})") from None
        problem = ckpt.refusal(cfg)
        if problem:
            raise CheckpointError(f"checkpoint {path}: {problem}")
        return ckpt


def _history(d: dict) -> History:
    return History([EpochStats(**e) for e in d["epochs"]], d["train_time_s"], d["train_images"])


def _cpu(obj):
    """`obj` (a state_dict, nested dicts, lists and tuples of tensors) with every tensor copied to
    the CPU: a checkpoint's own copy, which training on does not change."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if type(obj) in (list, tuple):
        return type(obj)(_cpu(v) for v in obj)
    return copy.deepcopy(obj)


def _rng_states() -> dict[str, Any]:
    """The global generators' states, as Checkpoint's fields. CUDA's only where CUDA is initialised:
    asking would initialise it (seconds, and memory on every GPU) in a CPU run, which draws nothing
    from it."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return {"python_rng": random.getstate(), "numpy_rng": np.random.get_state(),
            "torch_rng": torch.get_rng_state(), "cuda_rng": cuda}


def _restore_rng_states(ckpt: Checkpoint) -> None:
    random.setstate(ckpt.python_rng)
    np.random.set_state(ckpt.numpy_rng)
    torch.set_rng_state(ckpt.torch_rng)
    if ckpt.cuda_rng is not None and torch.cuda.is_available():
        for i, state in enumerate(ckpt.cuda_rng[:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state, i)


def select_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA if available, else MPS, else CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device is available")
    return torch.device(name)


def resident(split: Split, device: torch.device, max_share: float = 0.5) -> Split:
    """`split` moved to a CUDA device when it takes at most `max_share` of the device's free
    memory, so batches are sliced there (no per-step host-to-device copy); else `split` itself.
    The rest of the free memory is for the model, its activations and cuDNN's workspaces."""
    if device.type != "cuda" or split.images is None or split.images.device.type == "cuda":
        return split
    free, _ = torch.cuda.mem_get_info(device)
    return split.to(device) if split.nbytes <= max_share * free else split


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    # --momentum is Adam's beta1, so one search dimension serves every optimizer
    return cls(params, lr=cfg.lr, betas=(cfg.momentum, 0.999), weight_decay=cfg.weight_decay)


def make_scheduler(cfg: TrainConfig, optimizer):
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    if cfg.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, cfg.epochs // 3), gamma=0.1)
    return None


# --augment affine, per sample: rotation up to AFFINE_DEGREES either way, scale within 1 +- AFFINE_SCALE,
# translation up to AFFINE_SHIFT of the half-size either way (0.15: 7.5 % of the size, 2.4 px at 32 px).
# Why these: lenet5 on digits (refit on train + validation, 40 epochs, AdamW, cosine, 3 seeds) made
# 2, 1 and 1 test errors of 360 with them, against 2, 3 and 2 with crop and 9, 7 and 10 with none
# (probe, 2026-12-02); rotation 10 / scale 0.1 / shift 0.125 made 1, 2 and 2.
AFFINE_DEGREES, AFFINE_SCALE, AFFINE_SHIFT = 15.0, 0.15, 0.15


def augment(x: torch.Tensor, generator: torch.Generator | None = None, crop: bool = True,
            flip: bool = True, affine: bool = False) -> torch.Tensor:
    """Per sample, vectorised on x's device: a random crop (zero padding of size/8 px, 4 px at
    32 px, then a window of the input's size: a translation by up to that many pixels) or a random
    affine map (AFFINE_*: rotation, scale, translation; bilinear, zeros outside), and/or a
    horizontal flip with probability 1/2. `crop`, `affine` and `flip` say which
    (TrainConfig.augmentation)."""
    n, c, h, w = x.shape
    if crop:
        pad = max(1, h // 8)
        padded = F.pad(x, (pad, pad, pad, pad))
        oy = torch.randint(0, 2 * pad + 1, (n, 1), device=x.device, generator=generator)
        ox = torch.randint(0, 2 * pad + 1, (n, 1), device=x.device, generator=generator)
        rows = (oy + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (ox + torch.arange(w, device=x.device))[:, None, None, :]
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        chans = torch.arange(c, device=x.device)[None, :, None, None]
        x = padded[batch, chans, rows, cols]
    if affine:
        # one sampling grid per image: torchvision's RandomAffine draws one set of parameters per
        # call, so a batch would share them (or need a Python loop over its images)
        def uniform():  # in [-1, 1), one per image
            return torch.rand(n, device=x.device, generator=generator) * 2 - 1

        angle = uniform() * math.radians(AFFINE_DEGREES)
        scale = 1 + uniform() * AFFINE_SCALE
        shift_x, shift_y = uniform() * AFFINE_SHIFT, uniform() * AFFINE_SHIFT
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale  # the grid maps output to input
        theta = torch.stack([torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1)
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if flip:
        flipped = torch.rand(n, device=x.device, generator=generator) < 0.5
        x = torch.where(flipped[:, None, None, None], x.flip(3), x)
    return x


def autocast(device: torch.device):
    # bf16 on CUDA: no loss scaling needed, and Ampere+ tensor cores run it at full rate
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _progress(iterable=None, **kw):
    # bars only on a terminal: under `mlflow run`, CI or a log file they would be noise
    return tqdm(iterable, disable=not sys.stderr.isatty(), leave=False, dynamic_ncols=True, **kw)


def fit(model: Classifier, data: Splits, cfg: TrainConfig, device: torch.device,
        on_epoch: Callable[[EpochStats], None] | None = None, *, resume: Checkpoint | None = None,
        on_checkpoint: Callable[[Checkpoint], None] | None = None,
        checkpoint_every_s: float | None = None) -> History:
    """Train `model` on data.train for cfg.epochs, validating on data.val after every epoch.

    `on_epoch(stats)` runs after each epoch (logging, Optuna pruning); an exception it raises
    stops training. Raises TrainingDiverged when an epoch's mean loss is not finite. SIGTERM and
    SIGINT stop it after the current batch (mlproject.signals.stop_points).

    `on_checkpoint(ckpt)` gets the whole training state (a Checkpoint, the run's own copy) at a
    batch boundary: when a SIGTERM or SIGINT is pending, before Interrupted is raised, and every
    `checkpoint_every_s` seconds of wall time. `resume`: a checkpoint of a run with the same
    training options (CheckpointError otherwise); training goes on at its epoch and batch with
    every weight, optimizer and scheduler state, generator and running sum restored: on the CPU
    the result is the uninterrupted run's, bit for bit (epoch times aside; on CUDA, as far as the
    run is deterministic at all: cudnn.benchmark picks kernels by timing).
    """
    with stop_points():
        return _fit(model, data, cfg, device, on_epoch, resume, on_checkpoint, checkpoint_every_s)


def _fit(model: Classifier, data: Splits, cfg: TrainConfig, device: torch.device,
         on_epoch: Callable[[EpochStats], None] | None, resume: Checkpoint | None = None,
         on_checkpoint: Callable[[Checkpoint], None] | None = None,
         checkpoint_every_s: float | None = None) -> History:
    seed_everything(cfg.seed)
    if resume is not None and (problem := resume.refusal(cfg)):
        raise CheckpointError(f"checkpoint: {problem}")
    model.to(device)
    channels_last = device.type == "cuda"
    if channels_last:
        model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    # compiled once per fit; the compiled module shares the model's parameters
    net = torch.compile(model.net) if cfg.compile else model.net
    train, val_split = resident(data.train, device), resident(data.val, device)
    optimizer = make_optimizer(cfg, model.parameters())
    scheduler = make_scheduler(cfg, optimizer)
    shuffle_gen = torch.Generator().manual_seed(cfg.seed)
    applied = cfg.augmentation()  # one of config.AUGMENTS: --augment resolved for the dataset
    crop, flip, affine = "crop" in applied, "flip" in applied, "affine" in applied
    aug_gen = torch.Generator(device=device).manual_seed(cfg.seed) if applied != "none" else None
    history = History()
    if resume is not None:
        try:  # copies: the optimizer's and scheduler's load_state_dict keep the tensors and lists given
            model.load_state_dict(resume.model)  # copied into the parameters (device, layout kept)
            optimizer.load_state_dict(copy.deepcopy(resume.optimizer))
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"checkpoint: its weights do not fit this model "
                                  f"({first_line(e)})") from None
        if scheduler is not None:
            scheduler.load_state_dict(copy.deepcopy(resume.scheduler))
        history = copy.deepcopy(resume.history)
        shuffle_gen.set_state(resume.shuffle_rng)
        if aug_gen is not None:
            aug_gen.set_state(resume.augment_rng)
        _restore_rng_states(resume)  # last: nothing from here to the first batch draws from them
    # Without on_checkpoint the loop is the plain one: per batch, one counter and one test of this
    # flag; nothing is copied, synchronised or timed.
    watch = on_checkpoint is not None
    due = math.inf

    def checkpoint(epoch: int, done: int, shuffle_rng: torch.Tensor, loss_sum: torch.Tensor,
                   correct: torch.Tensor, seen: int, elapsed: float) -> float:
        """Hand on_checkpoint the state now; the seconds it took (not the epoch's training time)."""
        nonlocal due
        began = time.perf_counter()
        on_checkpoint(Checkpoint(
            epoch, done, _cpu(model.state_dict()), _cpu(optimizer.state_dict()),
            _cpu(scheduler.state_dict()) if scheduler is not None else None, **_rng_states(),
            shuffle_rng=shuffle_rng, augment_rng=aug_gen.get_state() if aug_gen is not None else None,
            loss_sum=_cpu(loss_sum), correct=_cpu(correct), seen=seen, epoch_time_s=elapsed,
            history=copy.deepcopy(history), options=training_options(cfg)))
        if checkpoint_every_s is not None:
            due = time.monotonic() + checkpoint_every_s
        return time.perf_counter() - began

    if watch and checkpoint_every_s is not None:
        due = time.monotonic() + checkpoint_every_s
    first = resume.epoch if resume is not None else 1
    epochs = _progress(range(first, cfg.epochs + 1), initial=first - 1, total=cfg.epochs, desc="epochs", unit="epoch")
    for epoch in epochs:
        model.train()
        lr = optimizer.param_groups[0]["lr"]
        shuffle_rng = shuffle_gen.get_state() if watch else None  # before this epoch's permutation
        if resume is not None and epoch == resume.epoch:  # the epoch the checkpoint stopped in
            loss_sum, correct = resume.loss_sum.to(device, copy=True), resume.correct.to(device, copy=True)
            seen, done, elapsed = resume.seen, resume.batch, resume.epoch_time_s
        else:
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            seen, done, elapsed = 0, 0, 0.0
        if watch and pending():  # a signal during the previous epoch's on_epoch, or before the first batch
            checkpoint(epoch, done, shuffle_rng, loss_sum, correct, seen, elapsed)
        stop_point()
        start = time.perf_counter() - elapsed
        batches = _progress(train.batches(cfg.batch_size, shuffle=True, generator=shuffle_gen,
                                          num_workers=cfg.num_workers, skip=done),
                            desc=f"epoch {epoch}", total=math.ceil(len(train) / cfg.batch_size), initial=done,
                            unit="batch")
        for images, labels in batches:
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            with autocast(device):
                x = model.preprocess(images)
                if aug_gen is not None:
                    x = augment(x, aug_gen, crop=crop, flip=flip, affine=affine)
                if channels_last:  # the layout the model's weights were given: no conversion per conv
                    x = x.contiguous(memory_format=torch.channels_last)
                logits = net(x)
                loss = F.cross_entropy(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(labels)
            correct += (logits.argmax(1) == labels).sum()
            seen += len(labels)
            done += 1
            if watch and (pending() or time.monotonic() >= due):
                start += checkpoint(epoch, done, shuffle_rng, loss_sum, correct, seen, time.perf_counter() - start)
            stop_point()
        train_loss = loss_sum.item() / seen  # the one host sync of the epoch
        epoch_time = time.perf_counter() - start
        if not math.isfinite(train_loss):
            raise TrainingDiverged(f"training loss became {train_loss} in epoch {epoch} "
                                   f"(lr={cfg.lr}, optimizer={cfg.optimizer}); lower the learning rate")
        try:
            val = evaluate(model, val_split, device, cfg.batch_size) if len(val_split) else None
        except Interrupted:  # at one of evaluate's stop points: the epoch's training is kept
            if watch:  # (evaluation changes no state: on resume it runs again, after no batch)
                checkpoint(epoch, done, shuffle_rng, loss_sum, correct, seen, epoch_time)
            raise
        history.train_time_s += epoch_time  # after validation: a checkpoint taken in it has the epoch undone
        history.train_images += seen
        stats = EpochStats(epoch, train_loss, correct.item() / seen, val.loss if val else float("nan"),
                           val.accuracy if val else float("nan"), lr, epoch_time, val.time_s if val else 0.0)
        history.epochs.append(stats)
        epochs.set_postfix(loss=f"{train_loss:.3f}", val_acc=f"{stats.val_accuracy:.3f}")
        if scheduler is not None:
            scheduler.step()
        if on_epoch is not None:
            on_epoch(stats)
    if watch and pending():  # a signal during the last on_epoch: a checkpoint of the finished run
        zero = torch.zeros(())
        checkpoint(cfg.epochs + 1, 0, shuffle_gen.get_state(), zero, zero.long(), 0, 0.0)
    return history


def cross_validate(model: Classifier, data: Splits, cfg: TrainConfig, device: torch.device,
                   on_fold_epoch: Callable[[int, EpochStats], None] | None = None,
                   on_fold: Callable[[FoldStats], None] | None = None,
                   on_refit_epoch: Callable[[EpochStats], None] | None = None, *,
                   resume: Checkpoint | None = None, on_checkpoint: Callable[[Checkpoint], None] | None = None,
                   checkpoint_every_s: float | None = None) -> CrossValidation:
    """cfg.cv-fold stratified cross-validation over data.train + data.val, then a refit on all of
    them: `model` ends with the refit's weights (test it on data.test).

    Every fold and the refit start from `model`'s weights as given (the same initial model and
    the same seed), so folds differ only in their data. `on_fold_epoch(fold, stats)` runs after
    each epoch of a fold, `on_fold(stats)` after each fold (a study reports and prunes there; an
    exception stops everything), `on_refit_epoch(stats)` after each refit epoch. `data` may be
    cached features (the same rows as the images: the folds are the same index sets).

    `on_checkpoint`, `checkpoint_every_s` and `resume` as fit's; the checkpoint also holds the
    fold in progress, the folds done and the initial weights, so a resumed cross-validation
    skips the folds done (their callbacks are not run again) and goes on inside the fold it
    stopped in.
    """
    if resume is not None and (problem := resume.refusal(cfg)):  # before any fold is skipped
        raise CheckpointError(f"checkpoint: {problem}")
    if resume is not None and not 1 <= resume.fold <= cfg.cv + 1:
        raise CheckpointError(f"checkpoint: fold {resume.fold} is not one of a --cv {cfg.cv} run's "
                              f"(1..{cfg.cv} and {cfg.cv + 1}, the refit)")
    if resume is not None:
        initial = resume.initial_state
        folds = copy.deepcopy(resume.folds_done)
    else:
        initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
        folds = []
    begin = resume.fold if resume is not None else 1
    saved_initial = initial if resume is not None else None  # the CPU copy, made at the first checkpoint

    def tagged(i: int) -> Callable[[Checkpoint], None] | None:
        if on_checkpoint is None:
            return None

        def hook(ckpt: Checkpoint) -> None:
            nonlocal saved_initial
            if saved_initial is None:
                saved_initial = _cpu(initial)
            ckpt.fold, ckpt.folds_done, ckpt.initial_state = i, copy.deepcopy(folds), saved_initial
            on_checkpoint(ckpt)
        return hook

    for i, fold in enumerate(fold_splits(data, cfg.cv, cfg.seed), start=1):
        if i < begin:
            continue  # done before the checkpoint: its history is in `folds`
        model.load_state_dict(initial)
        epoch_hook = (lambda stats, i=i: on_fold_epoch(i, stats)) if on_fold_epoch else None
        history = fit(model, fold, cfg, device, on_epoch=epoch_hook, resume=resume if i == begin else None,
                      on_checkpoint=tagged(i), checkpoint_every_s=checkpoint_every_s)
        folds.append(history)
        last = history.epochs[-1]
        if on_fold is not None:
            on_fold(FoldStats(i, last.train_loss, last.train_accuracy, last.val_loss, last.val_accuracy))
    model.load_state_dict(initial)
    refit = fit(model, refit_splits(data), cfg, device, on_epoch=on_refit_epoch,
                resume=resume if begin == cfg.cv + 1 else None, on_checkpoint=tagged(cfg.cv + 1),
                checkpoint_every_s=checkpoint_every_s)
    mean = History(train_time_s=sum(h.train_time_s for h in folds) + refit.train_time_s,
                   train_images=sum(h.train_images for h in folds) + refit.train_images)
    for e in range(cfg.epochs):
        rows = [h.epochs[e] for h in folds]
        avg = {n: float(np.mean([getattr(r, n) for r in rows]))
               for n in (*curves(), "epoch_time_s", "val_time_s")}
        mean.epochs.append(EpochStats(e + 1, lr=rows[0].lr, **avg))
    return CrossValidation(folds, mean, refit)


# A convolution with more weights than this keeps the contiguous layout when evaluate runs on
# the CPU (see _inference_model): the largest in resnet50 has 2.4M, timm's VGG head 102.8M.
DENSE_CONV_WEIGHTS = 2**24


def _inference_model(model: Classifier, device: torch.device) -> Classifier:
    """What `evaluate` runs: on the CPU, a channels_last copy of a convolutional model; otherwise
    the model (on CUDA, fit has already put its weights in channels_last).

    Why: the CPU's convolutions (oneDNN) run on channels-last data, and reorder NCHW weights and
    activations around every call. Evaluating 256 digits (2 cores, inference, 2026-12-03), the
    channels_last copy took 0.66-0.73x the time on basecnn, 0.46-0.54x on resnet18, 0.29x on
    mobilenetv3_small_100, 0.25x on efficientnet_b0, 0.56x on squeezenet1_0, 0.75x on
    convnext_atto, 0.83x on lenet5 (the whole training split of the digits on basecnn: 0.61 ->
    0.37 s). The exception is timm's VGG, whose head is a 7x7 convolution of 102.8M weights over
    the padded 1x1 map of a small image (a dense layer written as a convolution): 1.2-1.28x slower
    in channels_last, so a model with a convolution over DENSE_CONV_WEIGHTS keeps its layout.
    Training was mixed (0.8-1.24x), so fit keeps its layout on the CPU.

    A copy, not the model itself: the caller goes on training the model in its own layout, and the
    training split's pass runs in a thread while the main thread may save the model
    (app.experiment). The copy takes 1 ms on basecnn, 22 ms on resnet18 (40 ms after training: its
    gradients are copied too), against 0.19-0.29 s saved on a resnet18 pass of 256 images. Its
    logits differ from the NCHW ones by ~1e-7 (the same sums in another order)."""
    if device.type != "cpu":
        return model
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    if not convs or any(m.weight.numel() > DENSE_CONV_WEIGHTS for m in convs):
        return model
    return copy.deepcopy(model).to(memory_format=torch.channels_last)


# The most images evaluate puts in one batch: inference holds no activations for backward, so it
# goes past small training batches up to this (on the CPU, the cache may cap it lower:
# _inference_batch_size).
INFERENCE_BATCH = 256
# On the CPU, the share of the last-level cache that one batch's largest layer (its input and
# output) may take; the rest is for the weights, the other threads and other processes.
CACHE_SHARE = 0.5
# Per model evaluated on the CPU, its batch (_inference_batch_size), measured once: a trial
# evaluates its model 5 times or more.
_CPU_BATCH: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@lru_cache(maxsize=1)
def last_level_cache_bytes() -> int:
    """The size of the CPU's largest data cache (L3, else L2) from Linux's sysfs; 16 MiB where
    that cannot be read (another OS: a typical desktop L3)."""
    sizes = []
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            if (index / "type").read_text().strip() == "Instruction":
                continue
            text = (index / "size").read_text().strip()  # "32768K", "2048K", "1M"
        except OSError:
            continue
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:].upper(), 1)
        digits = text[:-1] if scale > 1 else text
        if digits.isdigit():
            sizes.append(int(digits) * scale)
    return max(sizes, default=16 * 2**20)


def _activation_bytes(net: torch.nn.Module, image: torch.Tensor) -> int:
    """The most bytes one module's input and output take in `net`'s pass over one image (forward
    hooks on every module; eval mode, no gradients, no random numbers: nothing changes)."""
    most = 0

    def tensors(x) -> list[torch.Tensor]:
        items = x if isinstance(x, (tuple, list)) else (x,)
        return [t for t in items if isinstance(t, torch.Tensor)]

    def hook(module, inputs, output) -> None:
        nonlocal most
        most = max(most, sum(t.nbytes for t in tensors(inputs) + tensors(output)))

    handles = [m.register_forward_hook(hook) for m in net.modules()]
    try:
        net(image)
    finally:
        for h in handles:
            h.remove()
    return most


def _inference_batch_size(model: Classifier, net: Classifier, split: Split, device: torch.device,
                          batch_size: int) -> int:
    """How many images evaluate runs at once: the training batch or INFERENCE_BATCH, the larger;
    on the CPU, for a model whose weights fit in CACHE_SHARE of the last-level cache, as many as
    keep its largest layer's input and output in that share (at most INFERENCE_BATCH), whatever
    the training batch.

    Why: past the cache, a layer's output goes to memory and back. basecnn's second convolution
    takes 32 x 28 x 28 floats in and gives 64 x 28 x 28 out, 0.30 MB per image: its pass over the
    digits' training split (1,257 images; 2 cores, a 32 MiB L3; 2026-12-04) took 0.18-0.26 s in
    batches of 256 (77 MB), 0.105-0.25 s in batches of 128 (the cache is shared with other work),
    0.105-0.123 s in batches of 32 to 96, and 0.115 s in the 55 this gives. Weights are read
    again for every batch, so a model whose weights do not fit keeps the larger batch, which reads
    them fewer times: resnet18 (45 MB) 0.25 s in batches of 256, 0.28 s of 128, 0.37 s of 55;
    timm's vgg11 (0.5 GB) 3.3 s of 256, 9.1 s of 32. The batch changes no result: each image's
    logits are its own."""
    batch = max(batch_size, INFERENCE_BATCH)
    if device.type != "cpu" or not len(split):
        return batch
    if model not in _CPU_BATCH:
        budget = CACHE_SHARE * last_level_cache_bytes()
        weights = sum(t.nbytes for t in (*net.parameters(), *net.buffers()))
        if weights <= budget:
            per_image = max(_activation_bytes(net, split.first_images(1).to(device)), 1)
            batch = int(max(1, min(batch, budget // per_image)))
        _CPU_BATCH[model] = batch
    return _CPU_BATCH[model]


@torch.no_grad()
def evaluate(model: Classifier, split: Split, device: torch.device, batch_size: int = INFERENCE_BATCH) -> Evaluation:
    """Loss, accuracy, predictions and probabilities of `model` on `split` (eval mode); `batch_size`
    is the training batch, which the evaluation batch is at least on CUDA (_inference_batch_size)."""
    model.eval()
    model.to(device)
    net = _inference_model(model, device)
    split = resident(split, device)
    batch_size = _inference_batch_size(model, net, split, device, batch_size)
    losses, probs, labels_all = [], [], []
    start = time.perf_counter()
    for images, labels in split.batches(batch_size):
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with autocast(device):
            logits = net(images).float()
        losses.append(F.cross_entropy(logits, labels, reduction="sum"))
        probs.append(torch.softmax(logits, 1))
        labels_all.append(labels)
        stop_point()  # a signal during a validation pass (inside fit's stop_points)
    p = torch.cat(probs).cpu().numpy()  # one sync, after the last batch
    elapsed = time.perf_counter() - start
    y_true = torch.cat(labels_all).cpu().numpy()
    y_pred = p.argmax(1)
    n = max(len(y_true), 1)
    return Evaluation(float(torch.stack(losses).sum().item()) / n, float((y_pred == y_true).mean()),
                      y_true, y_pred, p, elapsed)
