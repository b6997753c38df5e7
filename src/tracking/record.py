"""What a training run records in MLflow besides params and per-epoch metrics.

Names are stable (the README lists them); every function logs into the active run:

    log_dataset(info, sample_images, sample_labels)
    log_evaluation(cm, class_names, y_true, y_pred, images, report)
    log_figures(history_series, first_layer_weight, in_shape)
"""
from __future__ import annotations

import re
import warnings

import mlflow
import numpy as np
from mlflow.data.meta_dataset import MetaDataset
from mlflow.exceptions import MlflowException
from mlflow.types import Schema, TensorSpec

from . import artifacts


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


def log_dataset(info, sample_images: np.ndarray, sample_labels: np.ndarray) -> None:
    """The dataset as MLflow inputs (one per split, context train/validation/test) and the
    reports' input analysis: image count, resolution, bytes per image, dataset size, class
    counts, and a grid of 5 training images per class.

    `info`: mlproject.data.DatasetInfo; `sample_images`: uint8 (N, C, H, W) training images.
    """
    schema = Schema([TensorSpec(np.dtype(np.uint8), (-1, info.channels, info.height, info.width), "image"),
                     TensorSpec(np.dtype(np.int64), (-1,), "label")])
    shape = f"{info.channels}x{info.height}x{info.width}"
    for split, context in (("train", "train"), ("val", "validation"), ("test", "test")):
        ds = MetaDataset(_source(info.source), name=info.name, digest=f"{info.digest}-{split}"[:36], schema=schema)
        tags = {"split_size": str(info.split_sizes[split]), "image_shape": shape,
                "num_classes": str(len(info.class_names)), "classes": ",".join(info.class_names)[:1000]}
        try:
            mlflow.log_input(ds, context=context, tags=tags)
        except MlflowException as e:
            # MLflow checks, then inserts, the experiment's dataset row: two workers logging the
            # same dataset at once can both insert (UNIQUE constraint); the retry finds the row
            if "UNIQUE" not in str(e) and "IntegrityError" not in str(e):
                raise
            mlflow.log_input(ds, context=context, tags=tags)
    mlflow.log_metrics({
        "data_images": info.num_images, "data_train_images": info.split_sizes["train"],
        "data_val_images": info.split_sizes["val"], "data_test_images": info.split_sizes["test"],
        "data_bytes_per_image": info.bytes_per_image, "data_size_mb": info.total_bytes / 1e6,
        "data_num_classes": len(info.class_names)})
    mlflow.set_tags({"data.name": info.name, "data.resolution": shape, "data.in_memory": str(info.in_memory)})
    mlflow.log_dict({
        "name": info.name, "source": info.source, "resolution": shape, "channels": info.channels,
        "height": info.height, "width": info.width, "split_sizes": info.split_sizes,
        "bytes_per_image": info.bytes_per_image, "size_bytes": info.total_bytes,
        "class_names": info.class_names, "train_class_counts": info.class_counts,
        "train_mean": info.mean, "train_std": info.std, "digest": info.digest}, "data/input_analysis.json")
    mlflow.log_figure(artifacts.samples_per_class_figure(sample_images, sample_labels, info.class_names),
                      "data/samples_per_class.png")


def log_evaluation(cm: np.ndarray, class_names: list[str], y_true: np.ndarray, y_pred: np.ndarray,
                   images: np.ndarray, report: str, prefix: str = "test") -> None:
    """Confusion matrix (PNG, JSON, CSV), per-class accuracy (metrics `{prefix}_class_accuracy/<class>`
    and a table), classification report, and a grid of misclassified images."""
    mlflow.log_figure(artifacts.confusion_matrix_figure(cm, class_names), f"{prefix}/confusion_matrix.png")
    mlflow.log_dict(artifacts.confusion_matrix_data(cm, class_names), f"{prefix}/confusion_matrix.json")
    mlflow.log_text(artifacts.confusion_matrix_csv(cm, class_names), f"{prefix}/confusion_matrix.csv")
    per_class = artifacts.per_class_accuracy(cm)
    mlflow.log_metrics({f"{prefix}_class_accuracy/{metric_key(n)}": float(a) for n, a in zip(class_names, per_class)})
    mlflow.log_table({"class": list(class_names), "accuracy": [float(a) for a in per_class],
                      "support": [int(s) for s in cm.sum(1)]}, f"{prefix}/per_class_accuracy.json")
    mlflow.log_text(report, f"{prefix}/classification_report.txt")
    mlflow.log_figure(artifacts.misclassified_figure(images, y_true, y_pred, class_names),
                      f"{prefix}/misclassified.png")


def log_figures(series: dict[str, list[float]], first_layer_weight: np.ndarray | None,
                in_shape: tuple[int, int, int] | None) -> None:
    """Loss/accuracy curves and, where the first layer reads the image, its weights (seed 003)."""
    mlflow.log_figure(artifacts.loss_curves_figure(series), "figures/loss_accuracy.png")
    if first_layer_weight is not None:
        fig = artifacts.first_layer_figure(first_layer_weight, in_shape)
        if fig is not None:
            mlflow.log_figure(fig, "figures/first_layer_weights.png")
