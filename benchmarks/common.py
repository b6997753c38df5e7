"""What every benchmark does at its end: its figures as JSON (--json PATH), then the exit; and
what the quick modes share: an MLflow store template and the model names kept across processes.

    if args.json:
        write_json(args.json, results)
    ...
    if __name__ == "__main__":
        run_main(main)
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from importlib import metadata
from typing import Callable

from mlproject import model_names

# the cache folder in effect when the benchmark started ($MLPROJECT_CACHE_DIR, else the user's),
# before a benchmark points MLPROJECT_CACHE_DIR at a temp dir of its own
CACHE_FOLDER = model_names.cache_file().parent


def write_json(path: str, figures: dict) -> None:
    """`figures` as indented JSON; values JSON has no type for (paths, numpy scalars) as str."""
    with open(path, "w") as f:
        json.dump(figures, f, indent=2, default=str)


def run_main(main: Callable[[], int]) -> None:
    """main() under the allocator setting that `mlproject` and `tune` make (mlproject.signals.
    reuse_freed_memory: what runs in this process trains as under the commands, and its loops'
    page faults do not hang on what ran before them), then exit with its code without Python's
    heap sweeps (~3 s with torch, MLflow, Optuna and matplotlib loaded;
    mlproject.signals.leave_heap_to_the_os): the figures are out."""
    from mlproject.signals import leave_heap_to_the_os, reuse_freed_memory

    reuse_freed_memory()
    code = main()
    leave_heap_to_the_os()
    sys.exit(code)


def kept_store_template() -> str:
    """The path of an empty MLflow sqlite store whose tables are made, for the installed MLflow,
    kept in CACHE_FOLDER across processes (where it cannot be written: in a temp dir, for this
    process). MLflow makes a new store's tables by running its migrations: a process's first
    store took 2.1 s on 2 idle cores, a copy of this one 1.0 s (2026-12-03; MLflow's imports for a
    store either way), and a quick mode that starts a process on a store must make it first; the
    first run makes it, the next ones copy it."""
    path = CACHE_FOLDER / f"mlflow-store-{metadata.version('mlflow')}.db"
    if path.is_file():
        return str(path)
    from mlflow.tracking import MlflowClient

    made = tempfile.mkdtemp(prefix="bench_mlflow_template_")
    MlflowClient(f"sqlite:///{made}/mlflow.db").search_experiments()  # runs the migrations
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        shutil.copy(os.path.join(made, "mlflow.db"), part)
        os.replace(part, path)  # whole or not at all: another process may be reading it
        shutil.rmtree(made, ignore_errors=True)
        return str(path)
    except OSError:
        return os.path.join(made, "mlflow.db")


def store_from_template(directory, template: str) -> str:
    """The sqlite URI of a new, empty MLflow store at DIRECTORY/mlflow.db, a copy of `template` (0.1 s)."""
    os.makedirs(directory, exist_ok=True)
    shutil.copy(template, os.path.join(directory, "mlflow.db"))
    return f"sqlite:///{os.path.join(directory, 'mlflow.db')}"


def use_cache_dir(folder, keep_model_names: bool = False) -> None:
    """FOLDER becomes the process's MLPROJECT_CACHE_DIR (and its subprocesses'). keep_model_names:
    the model names of the cache folder in effect go with it (mlproject.model_names), so that no
    process of the run imports timm to list them again (0.7 s a process on 2 idle cores,
    2026-12-03, beyond the torch._dynamo import it shares with a first optimizer; where none are
    cached yet, this lists them once, into the folder in effect, as any `mlproject` command does)."""
    names = model_names.known_names() if keep_model_names else None
    os.environ[model_names.CACHE_ENV] = str(folder)
    if names is not None:
        model_names.store_names(names)


def join_or_kill(waiter, proc, timeout_s: float) -> None:
    """Wait for `waiter` (the thread that waits for `proc`, a benchmark's background process);
    kill `proc` if it is still running after `timeout_s`."""
    waiter.join(timeout_s)
    if waiter.is_alive():
        proc.kill()
        waiter.join()
