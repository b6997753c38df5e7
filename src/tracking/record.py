"""What a training run records in MLflow besides params and per-epoch metrics.

Names are stable (docs/tracking.md lists them); every function logs into the active run (log_dataset
into `run_id` where given: a study's parent run, which is not active):

    log_dataset(info, sample_images, sample_labels)       # or log_dataset(info): the inputs alone
    log_evaluation(cm, per_class, class_names, report)
    log_figures(history_series, first_layer_weight, in_shape, class_names, y_true, y_pred, images)
"""
from __future__ import annotations

import re
import time
import warnings

import mlflow
import numpy as np
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, RunTag
from mlflow.data.meta_dataset import MetaDataset
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.types import Schema, TensorSpec

from mlproject import figures

from .runs import PNG


def metric_key(name: str) -> str:
    """A class name as an MLflow metric-name part (letters, digits, _ - . / and space only)."""
    return re.sub(r"[^\w\-./ ]", "_", str(name))


def _source(source: str):
    if source.startswith(("http://", "https://")):
        from mlflow.data.http_dataset_source import HTTPDatasetSource

        return HTTPDatasetSource(source)
    if source.startswith("/"):
        from mlflow.data.dataset_source_registry import resolve_dataset_source

        with warnings.catch_warnings():  # MLflow registers its local source class twice and warns
            warnings.simplefilter("ignore", UserWarning)
            return resolve_dataset_source(source)
    from mlflow.data.code_dataset_source import CodeDatasetSource

    return CodeDatasetSource(tags={"loader": source})


def _dataset_entity(info, split: str) -> Dataset:
    """One split as MLflow's dataset entity, from MetaDataset's public `to_dict` (the fields its
    private _to_mlflow_entity uses): MlflowClient.log_inputs takes entities, and a study's parent
    run is not the active run, so mlflow.log_inputs cannot log to it."""
    schema = Schema([TensorSpec(np.dtype(np.uint8), (-1, info.channels, info.height, info.width), "image"),
                     TensorSpec(np.dtype(np.int64), (-1,), "label")])
    d = MetaDataset(_source(info.source), name=info.name, digest=f"{info.digest}-{split}"[:36], schema=schema).to_dict()
    return Dataset(name=d["name"], digest=d["digest"], source_type=d["source_type"], source=d["source"],
                   schema=d.get("schema"), profile=d.get("profile"))


def _run_id(run_id: str | None) -> str:
    return run_id or mlflow.active_run().info.run_id


def log_dataset(info, sample_images: np.ndarray | None = None, sample_labels: np.ndarray | None = None,
                run_id: str | None = None) -> None:
    """The dataset as MLflow inputs (one per split, context train/validation/test, in one call) and,
    where sample images are given, the reports' input analysis: image count, resolution, bytes per
    image, dataset size, class counts, and a grid of 5 training images per class.

    `info`: mlproject.data.DatasetInfo; `sample_images`: uint8 (N, C, H, W) training images.
    Tuning trials log the inputs alone: their study's parent run holds the analysis, once.
    `run_id`: any run (default: the active one), so a study's running parent run works too.
    """
    run_id = _run_id(run_id)
    client = MlflowClient()
    shape = f"{info.channels}x{info.height}x{info.width}"
    inputs = [DatasetInput(_dataset_entity(info, split), [
        InputTag("mlflow.data.context", context), InputTag("split_size", str(info.split_sizes[split])),
        InputTag("image_shape", shape), InputTag("num_classes", str(len(info.class_names))),
        InputTag("classes", ",".join(info.class_names)[:1000])])
        for split, context in (("train", "train"), ("val", "validation"), ("test", "test"))]
    try:
        client.log_inputs(run_id, datasets=inputs)
    except MlflowException as e:
        # MLflow checks, then inserts, the experiment's dataset rows: two workers logging the
        # same dataset at once can both insert; the loser gets BAD_REQUEST (the database's
        # IntegrityError), and the retry finds the rows
        if e.error_code != "BAD_REQUEST":
            raise
        client.log_inputs(run_id, datasets=inputs)
    if sample_images is None:
        return
    now = int(time.time() * 1000)
    data_metrics = {  # declared in mlproject.metrics
        "data_images": info.num_images, "data_train_images": info.split_sizes["train"],
        "data_val_images": info.split_sizes["val"], "data_test_images": info.split_sizes["test"],
        "data_bytes_per_image": info.bytes_per_image, "data_size_mb": info.total_bytes / 1e6,
        "data_num_classes": len(info.class_names)}
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in data_metrics.items()],
                     tags=[RunTag(k, v) for k, v in {"data.name": info.name, "data.resolution": shape,
                                                     "data.in_memory": str(info.in_memory)}.items()])
    client.log_dict(run_id, {
        "name": info.name, "source": info.source, "resolution": shape, "channels": info.channels,
        "height": info.height, "width": info.width, "split_sizes": info.split_sizes,
        "bytes_per_image": info.bytes_per_image, "size_bytes": info.total_bytes,
        "class_names": info.class_names, "train_class_counts": info.class_counts,
        "train_mean": info.mean, "train_std": info.std, "digest": info.digest}, "data/input_analysis.json")
    client.log_figure(run_id, figures.samples_per_class_figure(sample_images, sample_labels, info.class_names),
                      "data/samples_per_class.png", save_kwargs=PNG)


def log_evaluation(cm: np.ndarray, per_class: np.ndarray, class_names: list[str], report: str, prefix: str = "test",
                   table: bool = True) -> None:
    """Confusion matrix (PNG, JSON, CSV), per-class accuracy (metrics `{prefix}_class_accuracy/<class>`
    and, with `table`, an MLflow table) and the classification report.

    Tuning trials pass table=False: mlflow.log_table costs ~20 ms (it rewrites a run tag), a tenth
    of a trial's tracking budget, and the metrics and the CSV hold the same numbers."""
    mlflow.log_figure(figures.confusion_matrix_figure(cm, class_names), f"{prefix}/confusion_matrix.png",
                      save_kwargs=PNG)
    mlflow.log_dict(figures.confusion_matrix_data(cm, class_names), f"{prefix}/confusion_matrix.json")
    mlflow.log_text(figures.confusion_matrix_csv(cm, class_names), f"{prefix}/confusion_matrix.csv")
    mlflow.log_metrics({f"{prefix}_class_accuracy/{metric_key(n)}": float(a) for n, a in zip(class_names, per_class)})
    if table:
        mlflow.log_table({"class": list(class_names), "accuracy": [float(a) for a in per_class],
                          "support": [int(s) for s in cm.sum(1)]}, f"{prefix}/per_class_accuracy.json")
    mlflow.log_text(report, f"{prefix}/classification_report.txt")


def log_figures(series: dict[str, list[float]], first_layer_weight: np.ndarray | None,
                in_shape: tuple[int, int, int] | None, class_names: list[str], y_true: np.ndarray,
                y_pred: np.ndarray, images: np.ndarray, prefix: str = "test") -> None:
    """Loss/accuracy curves, a grid of misclassified images (`images`, with their true and
    predicted labels) and, where the first layer reads the image, its weights (seed 003)."""
    mlflow.log_figure(figures.misclassified_figure(images, y_true, y_pred, class_names),
                      f"{prefix}/misclassified.png", save_kwargs=PNG)
    mlflow.log_figure(figures.loss_curves_figure(series), "figures/loss_accuracy.png", save_kwargs=PNG)
    if first_layer_weight is not None:
        fig = figures.first_layer_figure(first_layer_weight, in_shape)
        if fig is not None:
            mlflow.log_figure(fig, "figures/first_layer_weights.png", save_kwargs=PNG)
