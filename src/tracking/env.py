"""MLflow's settings that live in the environment, read and set without importing MLflow
(seconds): the run `mlflow run` created for this process (MLFLOW_RUN_ID), so that bad input is
answered at once where there is no such run, and the artifact progress bars."""
from __future__ import annotations

import contextlib
import os


def run_id_from_env() -> str | None:
    """The run `mlflow run` created for this process (it exports MLFLOW_RUN_ID), if any."""
    return os.environ.get("MLFLOW_RUN_ID") or None


def detach_env_run() -> str | None:
    """Take MLFLOW_RUN_ID out of the environment and return it: the runs this process starts
    (a study's trials, in worker processes too) must not join the run `mlflow run` created."""
    return os.environ.pop("MLFLOW_RUN_ID", None) or None


@contextlib.contextmanager
def no_progress_bars():
    """MLflow draws a progress bar per artifact download (several per model load) on stderr."""
    key, old = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ[key] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old
