"""The run `mlflow run` created for this process, which it names in MLFLOW_RUN_ID: read without
importing MLflow (seconds), so that bad input is answered at once where there is no such run."""
from __future__ import annotations

import os


def run_id_from_env() -> str | None:
    """The run `mlflow run` created for this process (it exports MLFLOW_RUN_ID), if any."""
    return os.environ.get("MLFLOW_RUN_ID") or None


def detach_env_run() -> str | None:
    """Take MLFLOW_RUN_ID out of the environment and return it: the runs this process starts
    (a study's trials, in worker processes too) must not join the run `mlflow run` created."""
    return os.environ.pop("MLFLOW_RUN_ID", None) or None
