"""Log a trained classifier as an MLflow model, and load one back.

    info = log_model(prob_model, example_images, class_names)   # inside an active run
    probs = mlflow.pyfunc.load_model(info.model_uri).predict(images_float32)

The logged module maps float32 images in [0, 1], shaped (N, C, H, W) like the training data, to
class probabilities (N, K); the signature says so, and `class_names` travel in its metadata.
"""
from __future__ import annotations

import os
from importlib import metadata

import mlflow
import numpy as np
import torch
from mlflow.models import infer_signature


def _requirements() -> list[str]:
    # Explicit requirements: MLflow's inference of them imports and scans the environment,
    # which costs seconds per logged model (DEVELOPERS.md: ~6 s for resnet18 here).
    reqs = []
    for dist in ("torch", "torchvision", "timm", "numpy"):
        try:
            reqs.append(f"{dist}=={metadata.version(dist).split('+')[0]}")
        except metadata.PackageNotFoundError:
            pass
    return reqs


def log_model(model: torch.nn.Module, example: np.ndarray, class_names: list[str], name: str = "model",
              registered_model_name: str | None = None):
    """Log `model` (images -> probabilities) with a tensor signature inferred from `example`.

    `example`: a few float32 images in [0, 1], (n, C, H, W). Returns MLflow's ModelInfo.
    The model is pickled (MLflow's 'pickle' format) with this package's code beside it
    (code_paths), so it loads where mlproject is not installed; the 'pt2' export would
    trace the preprocessing's data-dependent branches. No input example is stored: MLflow
    then reloads the model to validate it, 0.35 s of the ~1 s log_model takes here
    (bench_train), and the signature already tells a server the input's dtype and shape.
    """
    import mlproject

    model = model.cpu().eval()
    with torch.no_grad():
        out = model(torch.from_numpy(example)).numpy()
    signature = infer_signature(example, out)
    return mlflow.pytorch.log_model(
        model, name=name, signature=signature,
        pip_requirements=_requirements(), code_paths=[os.path.dirname(mlproject.__file__)],
        metadata={"class_names": list(class_names)}, serialization_format="pickle",
        registered_model_name=registered_model_name)


def load_model(model_uri: str):
    """The pyfunc model at `model_uri` (runs:/ID/model, models:/NAME/VERSION, ...)."""
    return mlflow.pyfunc.load_model(model_uri)
