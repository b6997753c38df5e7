"""One tracked training run, start to end: what `mlproject train` and every tuning trial call.

    prepared = prepare(cfg)                 # every check and all loading; raises ConfigError
    run = run_training(cfg, prepared)       # MLflow run: params, epochs, results, artifacts, model

    resume = load_resume(tracking.stored_run(run_id), cfg, prepared)   # CheckpointError: one line
    run = run_training(cfg, prepared, resume=resume)   # the stopped run goes on where it stopped

`prepare` does all that can fail on bad input before any MLflow run exists; `run_training` wraps
the work in `tracking.training_run`, so a failure ends the run FAILED with its reason.
`StudyTrainer` is the same path for a study's trials (what `tuning` is given).

A run, standalone or a trial, writes checkpoints (`--checkpoint-every` seconds, and on
SIGTERM/SIGINT) as its artifact `checkpoint/checkpoint.pt` or into `--checkpoint-dir`
(tracking.store_checkpoint); a run that ends FINISHED deletes its own unless `--keep-checkpoints`.
A trial interrupted so goes on in its own run when the study resumes (tuning.objective).
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import platform
import sys
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from typing import Callable, Sequence

import numpy as np
import torch

import tracking

from mlproject.errors import first_line
from mlproject.config import TrainConfig
from mlproject.data import Splits, check_cv, create_dataset, cv_pool, is_path, peek_dataset
from mlproject.features import CachedFeatures, cached_features
from mlproject.features import applies as features_apply
from mlproject.metrics import Tags, epoch_metrics
from mlproject.models import Classifier, ModelInfo, Probabilities, count_parameters, create_model, model_size_mb, set_normalisation
from mlproject.train import (Checkpoint, CheckpointError, CrossValidation, EpochStats, Evaluation, FoldStats, History,
                             cross_validate, evaluate, fit, seed_everything, select_device)


@dataclass
class Prepared:
    model: Classifier
    model_info: ModelInfo
    data: Splits
    device: torch.device
    features: CachedFeatures | None = None  # frozen backbone: train the head on these

    @property
    def trained(self) -> tuple[Classifier, Splits]:
        """What `fit` trains on: the head and cached features, or the whole model and the images."""
        return (self.features.model, self.features.data) if self.features else (self.model, self.data)


@dataclass
class ChildRun:
    """How a study's trial is recorded: nested under the study's parent run, and lean: params,
    metrics, the dataset inputs, the confusion matrix, per-class accuracy and the classification
    report; the model and the figures only where `keep_model` says so. The parent holds the
    dataset analysis."""

    parent_run_id: str
    tags: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    on_run_start: Callable[[str], None] | None = None  # called with the run id once the run exists
    # asked once trained, with the summary metrics and the history: log this trial's model (the
    # weights it trained, not a retrained copy) and the figures trials skip? (the study's best set)
    keep_model: Callable[[dict, History], bool] | None = None
    system_metrics: bool = False  # sample CPU/memory/GPU into the trial's run (tune --system-metrics)
    on_checkpoint: Callable[[str], None] | None = None  # called with where each checkpoint was stored


@dataclass
class Resume:
    """A stopped run to go on with (`mlproject train --resume RUN_ID`, an interrupted trial): its
    id, its checkpoint (loaded and checked against cfg and the prepared model), where that was read
    from, and the run's tags as they were."""

    run_id: str
    checkpoint: Checkpoint
    location: str  # tag mlproject.checkpoint: runs:/RUN_ID/checkpoint/checkpoint.pt or a file
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def position(self) -> str:
        c = self.checkpoint
        return f"epoch {c.epoch}, batch {c.batch}" + (f", fold {c.fold}" if c.fold else "")

    @property
    def first_step(self) -> int:
        """The first step the resumed run reports (an epoch; with --cv a fold, as `run_training`'s
        on_epoch gets them): the steps before it were reported before the run stopped."""
        return self.checkpoint.fold or self.checkpoint.epoch


@dataclass
class TrackedRun:
    """A finished training run: where it is in MLflow and what it recorded."""

    run_id: str
    experiment_id: str
    history: History
    test: Evaluation
    metrics: dict[str, float]
    model_uri: str | None


def prepare(cfg: TrainConfig, data: Splits | Sequence[Splits] = ()) -> Prepared:
    """Validate cfg, build the model and load the data; ConfigError on any bad input.

    `data`: splits loaded earlier for the same dataset options (a study's trials share them);
    the first that fits cfg's model is used (an ImageFolder is loaded at the model's input size,
    so models of other sizes need their own), else the data are loaded.
    """
    cfg.validate()
    shape = peek_dataset(cfg)
    seed_everything(cfg.seed)  # initial weights from the seed, whatever ran before in this process
    model, minfo = create_model(cfg, shape)
    size = minfo.input_size if is_path(cfg.dataset) else None
    loaded = [data] if isinstance(data, Splits) else list(data or ())
    data = next((d for d in loaded if size is None or (d.info.height, d.info.width) == (size, size)), None)
    if data is None:
        data = create_dataset(cfg, size=size)
        if data.info.empty_classes:  # allowed (--allow-empty-classes), never silent
            print(f"warning: training without the class folders that hold no images: "
                  f"{', '.join(data.info.empty_classes)}", file=sys.stderr)
    if cfg.cv:
        check_cv(data, cfg.cv)  # every class in every fold
    if minfo.mean is None:  # trained from scratch: normalise with the training set's statistics
        set_normalisation(model, data.info.mean, data.info.std)
    device = select_device(cfg.device)
    return Prepared(model, minfo, data, device, cached_features(model, data, cfg, device))


def load_resume(run: tracking.StoredRun, cfg: TrainConfig, prepared: Prepared) -> Resume:
    """`run`'s checkpoint (downloaded to a temporary folder where it is an artifact), read for cfg:
    CheckpointError, one line naming where it is (tag mlproject.checkpoint) and why, where it is
    unreadable, truncated, not there (deleted, not downloadable), of other training options or of
    weights that do not fit the prepared model. Nothing is changed in MLflow."""
    with tempfile.TemporaryDirectory(prefix="mlproject-resume-") as tmp:
        try:
            path = tracking.fetch_checkpoint(run, tmp)
        except tracking.CheckpointUnavailable as e:
            raise CheckpointError(str(e)) from None
        try:
            ckpt = Checkpoint.load(path, cfg)
        except CheckpointError as e:  # named by where the run keeps it, not the downloaded copy
            raise CheckpointError(str(e).replace(f"checkpoint {path}:", f"checkpoint {run.checkpoint}:", 1)) from None
    # fit loads them again; loaded here, a mismatch (a model of other classes, features cached or
    # not) is refused before the run is touched. The model is not trained before fit overwrites it.
    try:
        prepared.trained[0].load_state_dict(ckpt.model)
    except (RuntimeError, ValueError, KeyError) as e:
        first = first_line(e)
        raise CheckpointError(f"checkpoint {run.checkpoint}: its weights do not fit this model ({first})") from None
    return Resume(run.run_id, ckpt, run.checkpoint, dict(run.tags))


class _CheckpointWriter:
    """fit's on_checkpoint: each checkpoint stored where cfg says (tracking.store_checkpoint: the
    run's artifacts, or cfg.checkpoint_dir), then `on_stored(where)` (a trial keeps where in
    Optuna). One that cannot be written is a warning line and training goes on: it is insurance,
    the run is the work."""

    def __init__(self, cfg: TrainConfig, run_id: str, on_stored: Callable[[str], None] | None = None):
        self.cfg, self.run_id, self.on_stored, self.written = cfg, run_id, on_stored, 0

    def __call__(self, ckpt: Checkpoint) -> None:
        try:
            where = tracking.store_checkpoint(self.run_id, ckpt.save, self.cfg.checkpoint_dir,
                                              {"epoch": ckpt.epoch, "batch": ckpt.batch, "fold": ckpt.fold})
            self.written += 1
            if self.on_stored is not None:
                self.on_stored(where)
        except Exception as e:  # noqa: BLE001 (disk full, a server gone: the run goes on)
            first = first_line(e, "")
            print(f"warning: checkpoint of run {self.run_id} at epoch {ckpt.epoch}, batch {ckpt.batch} not written: "
                  f"{type(e).__name__}: {first}", file=sys.stderr)


@functools.lru_cache(maxsize=1)
def _versions() -> dict[str, str]:
    tags = {"python_version": platform.python_version()}
    for dist in ("mlproject", "torch", "torchvision", "timm", "mlflow", "optuna"):
        try:
            tags[f"{dist}_version"] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return tags


def run_training(cfg: TrainConfig, prepared: Prepared | None = None,
                 on_epoch: Callable[[EpochStats], None] | None = None, child: ChildRun | None = None,
                 resume: Resume | None = None) -> TrackedRun:
    """Train cfg in an MLflow run and record everything (docs/tracking.md, 'What a run records').

    Standalone the run is created in cfg.experiment; under `mlflow run` the run MLflow created is
    used; `child`: a study's trial (nested, lean). `on_epoch(stats)` runs after each epoch is
    logged and may raise to stop training (pruning); with cfg.cv it runs after each fold instead,
    with that fold's FoldStats (`_cv_logged`). A standalone run records system metrics (CPU,
    memory, GPU over time); a trial only where `child.system_metrics` says so.

    Every run writes checkpoints (_CheckpointWriter) and, once FINISHED, deletes its checkpoint
    unless cfg.keep_checkpoints. `resume`: the stopped run itself goes on, RUNNING again (under
    `mlflow run` the run MLflow created ends FINISHED, tagged mlproject.resumed_run), from its
    checkpoint; its params and dataset inputs are not logged again (they are there), its epochs
    continue the series it has (epochs it logged already are not logged twice), and it records
    what a fresh run records at the end. A trial's run that goes on is tagged with its new trial
    number and, in optuna.resumed_trials, the trials it was before.
    """
    prepared = prepared or prepare(cfg)
    info = prepared.data.info
    tags = _run_tags(cfg, prepared, child)
    if resume is not None:
        tags[Tags.RESUMED_AT] = resume.position
        was = resume.tags.get(Tags.TRIAL_NUMBER)
        if child is not None and was is not None and was != child.tags.get(Tags.TRIAL_NUMBER):
            tags[Tags.RESUMED_TRIALS] = ",".join(filter(None, [resume.tags.get(Tags.RESUMED_TRIALS), was]))
    with tracking.training_run(cfg.experiment, "" if resume else _run_name(cfg, child), tags=tags,
                               parent_run_id=child.parent_run_id if child else None,
                               system_metrics=child is None or child.system_metrics,
                               resume_run_id=resume.run_id if resume else None) as run:
        run_id = run.info.run_id
        if child and child.on_run_start:
            child.on_run_start(run_id)
        if resume is None:
            tracking.log_params({**cfg.to_params(), "input_size": prepared.model_info.input_size,
                                 "input_channels": prepared.model_info.in_channels,
                                 "num_classes": len(info.class_names), **(child.params if child else {})})
            if child:
                tracking.log_dataset(info)
            else:
                tracking.log_dataset(info, *prepared.data.analysis_sample())
        # MLflow's one-off environment scan (1.6 s of Python, tracking.warm_model_logging), while
        # training: torch ops release the GIL, the run's own logging above does not. Not for a trial
        # trained on the CPU: there torch's threads have every core, and the scan slowed the first
        # trial's training by 1.7-2.0 s where it saves ~1.0 s in its first log_model (digits, basecnn,
        # 3 trials of 3 epochs, 2 cores: the study 26.4-26.9 s with it, 23.5-24.3 s without, 2026-12-03).
        if cfg.log_model and (child is None or prepared.device.type != "cpu"):
            tracking.warm_model_logging()
        writer = _CheckpointWriter(cfg, run_id, child.on_checkpoint if child else None)
        go_on = _Continue(resume, writer, cfg.checkpoint_every, tracking.logged_steps(run_id) if resume else None)
        if cfg.cv:
            cv = _cv_logged(cfg, prepared, run_id, on_epoch, go_on)
            history = cv.mean
            test, metrics, train_pass = _results(cfg, prepared, history, cv)
        else:
            history = _fit_logged(cfg, prepared, run_id, on_epoch, go_on)
            test, metrics, train_pass = _results(cfg, prepared, history)
        _log_evaluation(test, info.class_names, table=child is None)  # while the training split's pass runs
        metrics["final_train_accuracy"] = train_pass.result().accuracy
        tracking.log_metrics(metrics)
        keep = child is None or (child.keep_model is not None and child.keep_model(metrics, history))
        if keep:
            log_run_figures(prepared, history, test)
        model_uri = log_trained_model(prepared) if cfg.log_model and keep else None
    # FINISHED: its checkpoint has served (where it was resumed from too, if it wrote elsewhere since)
    if ((writer is not None and writer.written) or resume is not None) and not cfg.keep_checkpoints:
        try:
            tracking.delete_checkpoint(run_id, also=(resume.location,) if resume else ())
        except Exception as e:  # noqa: BLE001 (the run is done; its checkpoint stays, its tags say where)
            print(f"warning: the checkpoint of run {run_id} was not deleted: {type(e).__name__}: "
                  f"{first_line(e, '')}", file=sys.stderr)
    return TrackedRun(run_id, run.info.experiment_id, history, test, metrics, model_uri)


def _run_name(cfg: TrainConfig, child: ChildRun | None) -> str:
    """--run-name, else MODEL-DATASET-N for a standalone run (unique in its experiment). A trial
    is named by its study (trial-N); under `mlflow run` the run MLflow created keeps its name."""
    if cfg.run_name or child or tracking.run_id_from_env():
        return cfg.run_name
    return tracking.unique_run_name(cfg.experiment, f"{cfg.model}-{os.path.basename(cfg.dataset.rstrip('/'))}")


def _run_tags(cfg: TrainConfig, prepared: Prepared, child: ChildRun | None) -> dict:
    device = prepared.device
    return {"model_source": prepared.model_info.source, "model_name": prepared.model_info.name, "device": str(device),
            "feature_cache": prepared.features.status if prepared.features else "unsupported" if features_apply(cfg) else "off",
            "augment.applied": cfg.augmentation(),  # --augment resolved for the dataset (true: its default)
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            **({"data.empty_classes": ",".join(prepared.data.info.empty_classes)} if prepared.data.info.empty_classes else {}),
            **_versions(), **(child.tags if child else {})}


def _epoch_metrics(stats: EpochStats) -> dict[str, float]:
    """An epoch's metrics (mlproject.metrics.epoch_metrics: EpochStats' fields) by name."""
    return {n: getattr(stats, n) for n in epoch_metrics()}


@dataclass
class _Continue:
    """What fit / cross_validate get for checkpoints: where to go on from, what to call with one
    and how often, and the steps a resumed run logged already."""

    resume: Resume | None
    writer: _CheckpointWriter | None
    every_s: float
    logged: dict[str, int] | None

    def kwargs(self) -> dict:
        return {"resume": self.resume.checkpoint if self.resume else None, "on_checkpoint": self.writer,
                "checkpoint_every_s": self.every_s}


def _fit_logged(cfg: TrainConfig, prepared: Prepared, run_id: str, on_epoch, go_on: _Continue) -> History:
    """fit, with every epoch's metrics sent to the run (batched), then `on_epoch`."""
    epochs_log = tracking.MetricBuffer(run_id, logged=go_on.logged)

    def log_and_forward(stats: EpochStats) -> None:
        epochs_log.log(_epoch_metrics(stats), step=stats.epoch)
        if on_epoch is not None:
            on_epoch(stats)

    try:
        return fit(*prepared.trained, cfg, prepared.device, on_epoch=log_and_forward, **go_on.kwargs())
    finally:  # a pruned or failed run keeps the epochs it ran
        epochs_log.flush()


def _cv_logged(cfg: TrainConfig, prepared: Prepared, run_id: str, on_fold, go_on: _Continue) -> CrossValidation:
    """cross_validate, with each fold's epochs logged as fold_<i>/<metric> (step = epoch), then
    `on_fold(FoldStats)` after each fold (a study reports and prunes there); once every fold ran,
    the folds' per-epoch mean as the run's own train_loss, train_accuracy, val_loss, val_accuracy,
    lr, epoch_time_s (so its last val_accuracy is the cross-validated one, a study's objective)
    (_results adds cv_<metric>_mean / _std); the refit's epochs as refit/<metric>."""
    log = tracking.MetricBuffer(run_id, logged=go_on.logged)

    def fold_epoch(fold: int, stats: EpochStats) -> None:
        log.log({f"fold_{fold}/{n}": v for n, v in _epoch_metrics(stats).items() if n != "lr"}, step=stats.epoch)

    def fold_done(stats: FoldStats) -> None:
        if on_fold is not None:
            on_fold(stats)

    def refit_epoch(stats: EpochStats) -> None:
        log.log({f"refit/{n}": v for n, v in _epoch_metrics(stats).items() if not n.startswith("val_")},
                step=stats.epoch)  # the refit has no validation split

    try:
        cv = cross_validate(*prepared.trained, cfg, prepared.device, fold_epoch, fold_done, refit_epoch,
                            **go_on.kwargs())
        for stats in cv.mean.epochs:
            log.log(_epoch_metrics(stats), step=stats.epoch)
    finally:  # a pruned or failed run keeps the folds it ran
        log.flush()
    return cv


def _results(cfg: TrainConfig, prepared: Prepared, history: History,
             cv: CrossValidation | None = None) -> tuple[Evaluation, dict[str, float], Future]:
    """The test evaluation, the run's summary metrics (README, 'What a run records') and the pass
    over the training split that gives final_train_accuracy (NaN in `metrics` until then), running
    in a thread: the caller records the test results meanwhile and takes its result() before the
    run ends. With `cv`, the model is the refit one: its training set is train + validation.

    Why a thread: that pass is the costliest thing a run does after training (digits, basecnn:
    0.37 s for 1,257 images, against 0.12 s for the 360 test images; 2 cores), and what follows it
    (the confusion-matrix PNG, artifacts, MLflow writes: 0.3-0.4 s) is Python holding the GIL
    while torch's kernels do not: side by side they take the longer of the two, not the sum. It
    starts after the test pass, so test_time_s is measured alone."""
    trained_model, trained_data = prepared.trained
    test = evaluate(trained_model, trained_data.test, prepared.device, cfg.batch_size)
    if prepared.features:  # the whole model's inference time: the backbone's part was measured once
        test = dataclasses.replace(test, time_s=test.time_s + prepared.features.backbone_s["test"])
    train_split = cv_pool(trained_data) if cv else trained_data.train
    train_pass = _in_thread(functools.partial(evaluate, trained_model, train_split, prepared.device, cfg.batch_size),
                           name="final-train-pass")
    total, trainable = count_parameters(prepared.model.net)
    metrics = {
        "train_time_s": history.train_time_s,
        "train_throughput_ips": history.train_images / history.train_time_s,
        "test_time_s": test.time_s,
        "test_throughput_ips": test.throughput,
        "final_train_accuracy": math.nan,  # train_pass's
        "final_val_accuracy": history.epochs[-1].val_accuracy,
        "test_accuracy": test.accuracy,
        "test_loss": test.loss,
        "model_size_mb": model_size_mb(prepared.model),
        "params_total": total,
        "params_trainable": trainable,
    }
    if prepared.features:
        metrics["feature_cache_time_s"] = prepared.features.time_s
    if cv:
        metrics.update(cv.fold_metrics())
    return test, metrics, train_pass


def _in_thread(fn: Callable[[], object], name: str) -> Future:
    """fn() in a thread started now (concurrent.futures'); the Future's result() waits for its
    value or raises its exception (a signal is the main thread's: stop_point() raises it there,
    never here)."""
    pool = ThreadPoolExecutor(1, thread_name_prefix=name)
    try:
        return pool.submit(fn)
    finally:
        pool.shutdown(wait=False)  # the thread ends with fn; nothing else is submitted


def _log_evaluation(test: Evaluation, class_names: list[str], table: bool) -> None:
    """Confusion matrix, per-class accuracy (each class's recall) and the classification report."""
    # here, not at the top: scikit-learn takes seconds to import, which bad input (`prepare`) need not wait for
    from sklearn.metrics import classification_report, confusion_matrix, recall_score

    labels = list(range(len(class_names)))
    cm = confusion_matrix(test.y_true, test.y_pred, labels=labels)
    per_class = recall_score(test.y_true, test.y_pred, labels=labels, average=None, zero_division=0)
    report = classification_report(test.y_true, test.y_pred, labels=labels, target_names=class_names, digits=4,
                                   zero_division=0)
    tracking.log_evaluation(cm, per_class, class_names, report, table=table)


def log_trained_model(prepared: Prepared, registered_name: str | None = None) -> str:
    """The whole model (backbone and trained head) as the active run's pyfunc model; its URI."""
    example = prepared.data.test.first_images(2).numpy().astype(np.float32) / 255.0
    uri = tracking.log_model(Probabilities(prepared.model), example, prepared.data.info.class_names,
                             registered_model_name=registered_name).model_uri
    prepared.model.to(prepared.device)  # log_model moved it to the CPU
    return uri


class StudyTrainer:
    """What `tune` gives a study (tuning.objective.Trainer): trials trained and recorded as
    `mlproject train` runs are, nested under the study's parent run."""

    def prepare(self, cfg: TrainConfig, data: Sequence[Splits] = ()) -> Prepared:
        return prepare(cfg, data)

    def train_trial(self, cfg: TrainConfig, prepared: Prepared, parent_run_id: str, tags: dict, params: dict,
                    on_epoch, on_run_start, keep_model, system_metrics: bool = False, resume: Resume | None = None,
                    on_checkpoint: Callable[[str], None] | None = None) -> TrackedRun:
        return run_training(cfg, prepared, on_epoch,
                            ChildRun(parent_run_id, tags, params, on_run_start, keep_model, system_metrics,
                                     on_checkpoint), resume=resume)

    def resume_point(self, run_id: str, cfg: TrainConfig, prepared: Prepared) -> Resume:
        """Where an interrupted trial's run `run_id` goes on from; CheckpointError (one line) where
        its checkpoint cannot be had or read, or the run is gone."""
        run = tracking.stored_run(run_id)
        if run is None:
            raise CheckpointError(f"run {run_id} is not in {tracking.tracking_uri()} (deleted?)")
        return load_resume(run, cfg, prepared)


def log_run_figures(prepared: Prepared, history: History, test: Evaluation) -> None:
    """Into the active run: loss curves, misclassified test images (up to 64), first-layer weights."""
    info, minfo = prepared.data.info, prepared.model_info
    wrong = np.flatnonzero(test.y_true != test.y_pred)[:64]
    wrong_images = prepared.data.test.take(wrong).first_images(len(wrong)).numpy() if len(wrong) else \
        np.zeros((0, info.channels, info.height, info.width), np.uint8)
    first = prepared.model.net.get_submodule(minfo.first_layer).weight.detach().cpu().numpy() if minfo.first_layer else None
    tracking.log_figures(history.series(), first, (minfo.in_channels, minfo.input_size, minfo.input_size),
                         info.class_names, test.y_true[wrong], test.y_pred[wrong], wrong_images)
