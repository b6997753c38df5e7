"""Shared fixtures: ImageFolders of real PNG files, and a machine with no network."""

from __future__ import annotations

import contextlib
import gc
import os
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlproject.signals import collect_old_objects_rarely

if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    # Several test processes share the cores: one torch thread each (and in the processes they
    # start), set before torch is imported. Two threads per process on 2 busy cores make the small
    # models' epochs 10-30x slower (thread hand-offs; tests/test_models.py, test_tune_resume.py).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")


collect_old_objects_rarely()  # as the commands do: 6 s -> 2.9 s of full collections per test process


def pytest_collection_finish(session):
    """Everything collected is imported (torch, MLflow, Optuna, every test module): those objects
    live as long as the process, so the full collections to come need not scan them (2.9 s -> 1.8 s
    of full collections per test process in `-m "not slow"`; gc.callbacks, 2026-12-04)."""
    gc.freeze()


def pytest_collection_modifyitems(config, items):
    """The slow tests first (a stable sort: each keeps its place among its kind): the test
    processes start the longest work first and end together, instead of one of them running the
    last long scenario alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)

# distinct class colours (RGB); grey images use a distinct grey level per class instead
PALETTE = [(220, 40, 40), (40, 200, 60), (50, 70, 230), (230, 210, 40), (200, 60, 210), (40, 210, 220)]


def class_image(k: int, size: tuple[int, int], mode: str, rng: np.random.Generator) -> Image.Image:
    """An image of class `k`: a class colour (or grey level), horizontal stripes whose period depends
    on the class, and noise, so a model can tell the classes apart. size is PIL's (width, height)."""
    w, h = size
    stripes = ((np.arange(h) // (k + 1)) % 2).astype(np.float32)[:, None] * 40.0  # (h, 1)
    noise = rng.normal(0, 12, size=(h, w, 3))
    base = np.array(PALETTE[k % len(PALETTE)], dtype=np.float32)
    if mode == "L":
        base = np.full(3, 30.0 + (170.0 * k / 5.0) % 200.0, dtype=np.float32)
    rgb = np.clip(base[None, None, :] * 0.8 + stripes[..., None] + noise, 0, 255).astype(np.uint8)
    im = Image.fromarray(rgb, "RGB")
    return im.convert("L") if mode == "L" else im


def build_image_folder(root, classes=("cat", "dog", "fish"), per_class=12, size=(20, 16), mode="RGB",
                      layout="flat", splits=None, ext=".png", seed=0) -> Path:
    """Write an ImageFolder of real image files under `root` and return root.

    layout="flat": root/<class>/<i>.png; per_class is an int or {class: count} (for imbalanced sets).
    layout="splits": root/<split>/<class>/<i>.png for every split in `splits` ({folder: per-class
    count}, default {"train": 10, "valid": 3, "test": 4}: CINIC-10's folder names).
    size is (width, height) as PIL counts it; mode "RGB" or "L".
    """
    root = Path(root)
    rng = np.random.default_rng(seed)

    def write(folder: Path, counts):
        for k, cls in enumerate(classes):
            n = counts[cls] if isinstance(counts, dict) else counts
            d = folder / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                class_image(k, size, mode, rng).save(d / f"{i:03d}{ext}")

    if layout == "flat":
        write(root, per_class)
    elif layout == "splits":
        for split, n in (splits or {"train": 10, "valid": 3, "test": 4}).items():
            write(root / split, n)
    else:
        raise ValueError(f"layout must be 'flat' or 'splits', got {layout!r}")
    return root


@pytest.fixture
def make_image_folder():
    """The factory `make_image_folder(root, classes=..., per_class=..., size=..., mode=..., layout=...)`:
    see build_image_folder."""
    return build_image_folder


@pytest.fixture
def no_network(monkeypatch):
    """Every host name lookup fails, as on a machine without network: code that tries to download
    takes its real offline path, here or anywhere. Returns the list of hosts that were looked up."""
    looked_up = []

    def getaddrinfo(host, *args, **kwargs):
        looked_up.append(host)
        raise socket.gaierror(socket.EAI_NONAME, f"no network in tests (looked up {host!r})")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return looked_up


_TEMPLATE: list[Path] = []  # this test process's MLflow store with its tables made (one entry)


def new_mlflow_store(directory: Path) -> str:
    """The sqlite URI of a new, empty MLflow store in `directory` (directory/mlflow.db): a copy of
    one whose tables this test process created once. MLflow creates a new store's tables through
    its migrations: 2-5 s per store on 2 cores, against 0.1 s for a copy; 130 tests use a store."""
    import shutil
    import tempfile

    from mlflow.tracking import MlflowClient

    if not _TEMPLATE:
        template = Path(tempfile.mkdtemp(prefix="mlflow-template-")) / "mlflow.db"
        MlflowClient(f"sqlite:///{template}").search_experiments()  # runs the migrations
        _TEMPLATE.append(template)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(_TEMPLATE[0], directory / "mlflow.db")
    return f"sqlite:///{directory}/mlflow.db"


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A real MLflow store (sqlite) in a tmp dir, which is also the working directory; a client on it."""
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = new_mlflow_store(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(uri)
    yield MlflowClient(uri)
    mlflow.set_tracking_uri(None)


@contextlib.contextmanager
def module_store(tmp_path_factory, name: str):
    """For module-scoped fixtures: a real MLflow store (sqlite) in a new tmp dir, which is also
    the working directory meanwhile; yields its URI."""
    import mlflow

    tmp = tmp_path_factory.mktemp(name)
    uri = new_mlflow_store(tmp)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        mp.chdir(tmp)
        mlflow.set_tracking_uri(uri)
        try:
            yield uri
        finally:
            mlflow.set_tracking_uri(None)


@pytest.fixture(autouse=True, scope="session")
def feature_cache_dir(tmp_path_factory):
    """Cached backbone features go to a temp dir, not the user's ~/.cache (subprocesses inherit it)."""
    import os

    old = os.environ.get("MLPROJECT_CACHE_DIR")
    os.environ["MLPROJECT_CACHE_DIR"] = str(tmp_path_factory.mktemp("feature-cache"))
    yield Path(os.environ["MLPROJECT_CACHE_DIR"])
    if old is None:
        os.environ.pop("MLPROJECT_CACHE_DIR", None)
    else:
        os.environ["MLPROJECT_CACHE_DIR"] = old


@pytest.fixture(autouse=True, scope="session")
def drop_mlflow_store_template():
    """new_mlflow_store's template goes with the test process."""
    yield
    import shutil

    for template in _TEMPLATE:
        shutil.rmtree(template.parent, ignore_errors=True)


def check_declared(recorded: dict, options: tuple[str, ...] = ()) -> None:
    """A run recorded every metric the catalogue (mlproject.metrics) declares for a run with
    `options` ("cv", "features", "analysis"), and nothing it does not declare."""
    from mlproject.metrics import METRICS, PREFIXES

    expected = {n for n, m in METRICS.items() if m.only_with in ("", *options)}
    assert sorted(expected - set(recorded)) == []
    assert sorted(k for k in recorded if k not in expected and not k.startswith(tuple(PREFIXES))) == []
