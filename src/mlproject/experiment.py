"""One tracked training run, start to end: what `mlproject train` and every tuning trial call.

    prepared = prepare(cfg)                 # every check and all loading; raises ConfigError
    result = run_training(cfg, prepared)    # MLflow run: params, epochs, results, artifacts, model

`prepare` does all that can fail on bad input before any MLflow run exists; `run_training` wraps
the work in `tracking.training_run`, so a failure ends the run FAILED with its reason.
"""
from __future__ import annotations

import dataclasses
import functools
import platform
from dataclasses import dataclass
from importlib import metadata
from typing import Callable

import numpy as np
import torch
from sklearn.metrics import classification_report, confusion_matrix

import tracking

from .config import TrainConfig
from .data import Splits, create_dataset, is_path, peek_dataset
from .features import CachedFeatures, cached_features
from .features import applies as features_apply
from .models import Classifier, ModelInfo, Probabilities, count_parameters, create_model, model_size_mb, set_normalisation
from .train import EpochStats, Evaluation, History, evaluate, fit, seed_everything, select_device


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
class Result:
    run_id: str
    experiment_id: str
    history: History
    test: Evaluation
    metrics: dict[str, float]
    model_uri: str | None


def prepare(cfg: TrainConfig, data: Splits | None = None) -> Prepared:
    """Validate cfg, build the model and load the data; ConfigError on any bad input.

    `data`: splits loaded earlier for the same dataset options (tuning trials share them).
    """
    cfg.validate()
    shape = peek_dataset(cfg)
    seed_everything(cfg.seed)  # initial weights from the seed, whatever ran before in this process
    model, minfo = create_model(cfg, shape)
    if data is None:
        data = create_dataset(cfg, size=minfo.input_size if is_path(cfg.dataset) else None)
    if minfo.mean is None:  # trained from scratch: normalise with the training set's statistics
        set_normalisation(model, data.info.mean, data.info.std)
    device = select_device(cfg.device)
    return Prepared(model, minfo, data, device, cached_features(model, data, cfg, device))


@functools.lru_cache(maxsize=1)
def _versions() -> dict[str, str]:
    tags = {"python_version": platform.python_version()}
    for dist in ("mlproject", "torch", "torchvision", "timm", "mlflow", "optuna"):
        try:
            tags[f"{dist}_version"] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return tags


def run_training(cfg: TrainConfig, prepared: Prepared | None = None, parent_run_id: str | None = None,
                 on_epoch: Callable[[EpochStats], None] | None = None, extra_tags: dict | None = None,
                 on_run_start: Callable[[str], None] | None = None, lean: bool = False,
                 extra_params: dict | None = None) -> Result:
    """Train cfg in an MLflow run and record everything (README, 'What a run records').

    `parent_run_id` nests the run (tuning trials); `on_epoch` runs after the epoch is logged
    (pruning); `on_run_start(run_id)` runs once the run exists; `extra_tags` and `extra_params`
    go with cfg's. Standalone the run is created in
    cfg.experiment; under `mlflow run` the run MLflow created is used. `lean` (tuning trials):
    params, metrics, the dataset inputs, the confusion matrix, per-class accuracy and the
    classification report only; the study's parent run holds the dataset analysis, and the
    best trial's run gets the figures (`log_figures`) when its model is stored.
    """
    p = prepared or prepare(cfg)
    model, minfo, data, device = p.model, p.model_info, p.data, p.device
    info = data.info
    trained_model, trained_data = p.trained
    tags = {"model_source": minfo.source, "model_name": minfo.name, "device": str(device),
            "feature_cache": p.features.status if p.features else "unsupported" if features_apply(cfg) else "off",
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            **_versions(), **(extra_tags or {})}
    with tracking.training_run(cfg.experiment, cfg.run_name, tags=tags, parent_run_id=parent_run_id) as run:
        if on_run_start is not None:
            on_run_start(run.info.run_id)
        tracking.log_params({**cfg.to_params(), "input_size": minfo.input_size,
                             "input_channels": minfo.in_channels, "num_classes": len(info.class_names),
                             **(extra_params or {})})
        log_dataset(data, analysis=not lean)

        epochs_log = tracking.MetricBuffer(run.info.run_id)

        def log_and_forward(stats: EpochStats) -> None:
            epochs_log.log({"train_loss": stats.train_loss, "train_accuracy": stats.train_accuracy,
                            "val_loss": stats.val_loss, "val_accuracy": stats.val_accuracy,
                            "lr": stats.lr, "epoch_time_s": stats.epoch_time_s}, step=stats.epoch)
            if on_epoch is not None:
                on_epoch(stats)

        try:
            history = fit(trained_model, trained_data, cfg, device, on_epoch=log_and_forward)
        finally:  # a pruned or failed run keeps the epochs it ran
            epochs_log.flush()
        test = evaluate(trained_model, trained_data.test, device, cfg.batch_size)
        if p.features:  # the whole model's inference time: the backbone's part was measured once
            test = dataclasses.replace(test, time_s=test.time_s + p.features.backbone_s["test"])
        train_eval = evaluate(trained_model, trained_data.train, device, cfg.batch_size)
        total, trainable = count_parameters(model.net)
        metrics = {
            "train_time_s": history.train_time_s,
            "train_throughput_ips": history.train_images / history.train_time_s,
            "test_time_s": test.time_s,
            "test_throughput_ips": test.throughput,
            "final_train_accuracy": train_eval.accuracy,
            "final_val_accuracy": history.epochs[-1].val_accuracy,
            "test_accuracy": test.accuracy,
            "test_loss": test.loss,
            "model_size_mb": model_size_mb(model),
            "params_total": total,
            "params_trainable": trainable,
        }
        if p.features:
            metrics["feature_cache_time_s"] = p.features.time_s
        tracking.log_metrics(metrics)
        k = len(info.class_names)
        cm = confusion_matrix(test.y_true, test.y_pred, labels=list(range(k)))
        report = classification_report(test.y_true, test.y_pred, labels=list(range(k)),
                                       target_names=info.class_names, digits=4, zero_division=0)
        tracking.log_evaluation(cm, info.class_names, report, table=not lean)
        if not lean:
            log_figures(p, history, test)
        model_uri = None
        if cfg.log_model:
            example = data.test.head_images(2).numpy().astype(np.float32) / 255.0
            model_uri = tracking.log_model(Probabilities(model), example, info.class_names).model_uri
            model.to(device)
    return Result(run.info.run_id, run.info.experiment_id, history, test, metrics, model_uri)


def log_dataset(data: Splits, analysis: bool = True, run_id: str | None = None) -> None:
    """The dataset as the run's inputs and, with `analysis`, the input analysis drawn from up to
    2,000 training images (tracking.log_dataset); `run_id`: default the active run."""
    if not analysis:
        tracking.log_dataset(data.info, run_id=run_id)
        return
    samples = data.train.head_images(min(len(data.train), 2000))
    tracking.log_dataset(data.info, samples.numpy(), data.train.labels[: len(samples)].numpy(), run_id=run_id)


def log_figures(p: Prepared, history: History, test: Evaluation) -> None:
    """Into the active run: loss curves, misclassified test images (up to 64), first-layer weights."""
    info, minfo = p.data.info, p.model_info
    wrong = np.flatnonzero(test.y_true != test.y_pred)[:64]
    wrong_images = p.data.test.take(wrong).head_images(len(wrong)).numpy() if len(wrong) else \
        np.zeros((0, info.channels, info.height, info.width), np.uint8)
    first = p.model.net.get_submodule(minfo.first_layer).weight.detach().cpu().numpy() if minfo.first_layer else None
    tracking.log_figures(history.series(), first, (minfo.in_channels, minfo.input_size, minfo.input_size),
                         info.class_names, test.y_true[wrong], test.y_pred[wrong], wrong_images)
