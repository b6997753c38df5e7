"""Log a trained classifier as an MLflow model, find logged ones again, and load them.

    info = log_model(prob_model, example_images, class_names)   # inside an active run
    frame = mlflow.pyfunc.load_model(info.model_uri).predict(images_float32)
    probs = probabilities(frame)                                 # (N, K) array

    found = find_model("3f2a...")      # a run id, runs:/ or models:/ URI, NAME or NAME/VERSION

The logged model is an MLflow pyfunc model (models from code: `pyfunc_classifier.py`) around the
pickled torch module: float32 images in [0, 1], shaped (N, C, H, W) like the training data as
stored, -> a DataFrame with `label`, `label_index`, `confidence` and one `p_<class>` probability
column per class. The signature says so; `class_names` travel in its metadata as well.
`mlflow models serve` answers with the same columns, one JSON record per image.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from importlib import metadata

import mlflow
import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature, infer_signature
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, Schema

from .env import no_progress_bars

MODEL_CODE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pyfunc_classifier.py")
PROB_PREFIX = "p_"
RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def _requirements() -> list[str]:
    # Explicit requirements, pinned to the installed versions: MLflow's inference of them imports
    # the model's code and scans the environment, which costs seconds per logged model.
    reqs = []
    for dist in ("mlflow", "torch", "torchvision", "timm", "numpy", "pandas", "cloudpickle", "scikit-learn",
                 "pillow"):
        try:
            reqs.append(f"{dist}=={metadata.version(dist).split('+')[0]}")
        except metadata.PackageNotFoundError:
            pass
    return reqs


def output_schema(class_names: list[str]) -> Schema:
    """What the logged model's predict returns: one row per image."""
    return Schema([ColSpec("string", "label"), ColSpec("long", "label_index"), ColSpec("float", "confidence"),
                   *[ColSpec("float", f"{PROB_PREFIX}{c}") for c in class_names]])


def log_model(model: torch.nn.Module, example: np.ndarray, class_names: list[str], name: str = "model",
              registered_model_name: str | None = None):
    """Log `model` (images -> probabilities) as a pyfunc model into the active run; its tensor
    input signature is inferred from `example`, its output is `output_schema(class_names)`.

    `example`: a few float32 images in [0, 1], (n, C, H, W). Returns MLflow's ModelInfo.
    The torch module is pickled (cloudpickle, as MLflow's pytorch 'pickle' format) with the
    training core beside it (code_paths: `core_package`), so it loads where mlproject is not
    installed; the 'pt2' export would trace the preprocessing's data-dependent branches. No input
    example is stored: MLflow would reload the model to validate it (0.35 s, bench_train), and the
    signature already tells a server the input's dtype and shape.
    """
    import cloudpickle

    class_names = [str(c) for c in class_names]
    model = model.cpu().eval()
    with torch.no_grad():
        out = model(torch.from_numpy(example))
    if out.ndim != 2 or out.shape[1] != len(class_names):
        raise ValueError(f"the model gives {tuple(out.shape)} outputs for {len(class_names)} class names")
    signature = ModelSignature(inputs=infer_signature(example).inputs, outputs=output_schema(class_names))
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), no_progress_bars():
        # no input example on purpose (see above): MLflow's reminder is noise here
        warnings.filterwarnings("ignore", message=".*input example was not provided", category=UserWarning)
        path = os.path.join(tmp, "module.pt")
        torch.save(model, path, pickle_module=cloudpickle)
        return mlflow.pyfunc.log_model(
            name=name, python_model=MODEL_CODE, artifacts={"module": path},
            model_config={"class_names": class_names}, signature=signature,
            pip_requirements=_requirements(), code_paths=[core_package(tmp)],
            metadata={"class_names": class_names}, registered_model_name=registered_model_name)


def register_model(model_uri: str, name: str, tags: dict | None = None) -> str:
    """Register a logged model as a new version of registered model `name`; its version. MLflow
    prints 'Successfully registered model' and 'Created version' to stderr (eprint, not a logger):
    the study's summary says it once, in its own words."""
    import io

    with no_progress_bars(), contextlib.redirect_stderr(io.StringIO()):
        version = mlflow.register_model(model_uri, name, tags={k: str(v) for k, v in (tags or {}).items()})
    return str(version.version)


def set_model_alias(name: str, alias: str, version: str) -> None:
    """Point registered model `name`'s alias (e.g. `champion`) at `version`: `models:/NAME@champion`
    then loads it (aliases replace the deprecated stages)."""
    MlflowClient().set_registered_model_alias(name, alias, version)


def set_model_version_tags(name: str, version: str, tags: dict) -> None:
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))


def core_package(tmp: str) -> str:
    """A copy of the `mlproject` package without its application layer (`mlproject.app`: the
    commands, which a loaded model never runs) under `tmp`: what a logged model ships."""
    import mlproject

    dest = os.path.join(tmp, "mlproject")
    shutil.copytree(os.path.dirname(mlproject.__file__), dest,
                    ignore=shutil.ignore_patterns("app", "__pycache__", "*.pyc"))
    return dest


def warm_model_logging() -> None:
    """Start, in a daemon thread, the environment scan MLflow makes once per process before it
    logs the first model, so that it overlaps training instead of following it.

    MLflow checks a model's pip requirements against the installed packages, and the check first
    maps every installed distribution's files to modules (importlib_metadata's
    packages_distributions): 1.6 s here, once per process; the check itself then takes ~10 ms.
    There is no public switch to skip or warm it, so this calls the private function that builds
    that map (tests/test_runs.py pins that it exists and fills the map). Without it, nothing
    breaks: the first log_model just takes the 1.6 s."""
    from mlflow.utils import requirements_utils

    warm = getattr(requirements_utils, "_init_packages_to_modules_map", None)
    if warm is not None and getattr(requirements_utils, "_MODULES_TO_PACKAGES", None) is None:
        threading.Thread(target=warm, name="mlflow-requirements-scan", daemon=True).start()


def load_model(model_uri: str):
    """The pyfunc model at `model_uri` (runs:/ID/model, models:/NAME/VERSION, ...)."""
    with no_progress_bars():
        return mlflow.pyfunc.load_model(model_uri)


def probabilities(output) -> np.ndarray:
    """(N, K) float32 class probabilities from a logged model's predict output: the DataFrame of
    this package's models (its p_<class> columns), or the array models logged with
    mlflow.pytorch (before the pyfunc model) return."""
    import pandas as pd

    if isinstance(output, pd.DataFrame):
        cols = [c for c in output.columns if str(c).startswith(PROB_PREFIX)]
        return output[cols].to_numpy(dtype=np.float32)
    return np.asarray(output, dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# finding logged models

class ModelNotFound(LookupError):
    """A model reference names no usable logged model; the message is one line saying why."""


@dataclass
class FoundModel:
    """A logged classifier, found but not loaded."""

    ref: str  # as the user gave it
    uri: str  # what load_model takes
    name: str  # short and unique enough for tables: 'lenet5-1a2b3c4d' or 'NAME/v3'
    input_shape: tuple[int, int, int]  # (C, H, W) of its training data as stored
    class_names: list[str]
    run_id: str | None = None
    params: dict = field(default_factory=dict)


def find_model(ref: str) -> FoundModel:
    """Find the logged model `ref` names: a run id (its model), `runs:/ID/PATH`, `models:/...`,
    a registered model `NAME` (latest version) or `NAME/VERSION`. ModelNotFound for a run that
    does not exist or has no logged model, an unknown registered model (close names suggested) or
    version, and a model whose input shape cannot be told."""
    client = MlflowClient()
    ref = ref.strip()
    if RUN_ID.match(ref) or ref.startswith("runs:/"):
        run_id, _, path = ref.removeprefix("runs:/").partition("/")
        run = _get_run(client, run_id)
        uri, name = _run_model_uri(client, run, path), f"{run.data.params.get('model', 'model')}-{run_id[:8]}"
    elif ref.startswith("models:/"):
        rest = ref.removeprefix("models:/")
        uri, name, run = ref, rest, None
        if not rest.startswith("m-"):  # a registered model (NAME/VERSION or NAME@alias), not a model id
            reg = re.split(r"[/@]", rest, maxsplit=1)[0]
            _registered(client, reg)
    else:
        uri, name, run = *_registered_version(client, ref), None
    try:
        with no_progress_bars():
            info = mlflow.models.get_model_info(uri)
    except (MlflowException, OSError) as e:
        raise ModelNotFound(f"cannot read the model {ref!r} ({uri}): {str(e).splitlines()[0][:300]}") from None
    if run is None and info.run_id:
        try:
            run = client.get_run(info.run_id)
        except MlflowException:
            run = None
    shape = _input_shape(info, run)
    if shape is None:
        raise ModelNotFound(f"model {ref!r} has no tensor input signature (C, H, W) and its run no "
                            "data.resolution tag: cannot tell what images it reads")
    classes = (info.metadata or {}).get("class_names")
    if not classes:
        outputs = info.signature.outputs.input_names() if info.signature and info.signature.outputs else []
        classes = [c[len(PROB_PREFIX):] for c in outputs if str(c).startswith(PROB_PREFIX)]
    if not classes:
        raise ModelNotFound(f"model {ref!r} has no class_names in its metadata")
    return FoundModel(ref, uri, name, shape, [str(c) for c in classes], run.info.run_id if run else None,
                      dict(run.data.params) if run else {})


def _registered_version(client, ref: str) -> tuple[str, str]:
    """(models:/NAME/VERSION, 'NAME/vVERSION') for `NAME` (its latest version) or `NAME/VERSION`."""
    reg, _, version = ref.partition("/")
    _registered(client, reg)
    versions = [int(v.version) for v in client.search_model_versions(f"name='{reg}'")]
    if version:
        if version.removeprefix("v") not in {str(v) for v in versions}:
            raise ModelNotFound(f"registered model {reg!r} has no version {version!r}; "
                                f"versions: {', '.join(str(v) for v in sorted(versions))}")
        version = version.removeprefix("v")
    elif not versions:
        raise ModelNotFound(f"registered model {reg!r} has no versions")
    else:
        version = str(max(versions))
    return f"models:/{reg}/{version}", f"{reg}/v{version}"


def _get_run(client, run_id: str):
    try:
        return client.get_run(run_id)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise ModelNotFound(f"run {run_id!r} does not exist in {mlflow.get_tracking_uri()}") from None
        raise


def _run_model_uri(client, run, path: str) -> str:
    """The URI of the model logged in `run` (named `path`, else 'model', else its only one)."""
    run_id = run.info.run_id
    models = client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'")
    names = sorted({m.name for m in models})
    if path:
        if path in names:
            return f"runs:/{run_id}/{path}"
        # a model stored as plain run artifacts (MLflow 2): an MLmodel file under `path`
        if any(a.path == f"{path}/MLmodel" for a in client.list_artifacts(run_id, path)):
            return f"runs:/{run_id}/{path}"
        raise ModelNotFound(f"run {run_id!r} has no logged model {path!r}"
                            + (f"; its models: {', '.join(names)}" if names else ""))
    if not names:
        raise ModelNotFound(f"run {run_id!r} has no logged model (was it trained with --no-log-model, "
                            "or is it a study's trial other than the best?)")
    if "model" not in names and len(names) > 1:
        raise ModelNotFound(f"run {run_id!r} has several logged models ({', '.join(names)}): "
                            f"give one as runs:/{run_id}/NAME")
    return f"runs:/{run_id}/{'model' if 'model' in names else names[0]}"


def _registered(client, name: str):
    from mlproject.config import did_you_mean, listed

    try:
        return client.get_registered_model(name)
    except MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    names = sorted(m.name for m in client.search_registered_models())
    raise ModelNotFound(f"no run or registered model {name!r}{did_you_mean(name, names)}; "
                        + (f"registered models: {listed(names)}" if names else "no model is registered")
                        + f" in {mlflow.get_tracking_uri()}")


def _input_shape(info, run) -> tuple[int, int, int] | None:
    """(C, H, W) from the tensor input signature, else from the run's data.resolution tag."""
    sig = info.signature
    if sig is not None and sig.inputs is not None and sig.inputs.is_tensor_spec():
        shape = tuple(sig.inputs.inputs[0].shape)
        if len(shape) == 4 and all(s > 0 for s in shape[1:]):
            return tuple(int(s) for s in shape[1:])
    res = run.data.tags.get("data.resolution", "") if run is not None else ""
    if re.fullmatch(r"\d+x\d+x\d+", res):
        c, h, w = (int(v) for v in res.split("x"))
        return c, h, w
    return None
