"""MLflow runs: start one or join the one `mlflow run` created, and always close it with a status.

    with training_run("my-experiment", run_name="", tags={...}) as run:
        log_params(cfg_dict)
        ...
    # FINISHED on success; FAILED with tag mlproject.failure on an exception; KILLED on Ctrl-C

`MLFLOW_TRACKING_URI` is respected (MLflow reads it); otherwise MLflow's default store is used
(sqlite:///mlflow.db in the working directory for MLflow 3), so `mlflow ui` there shows the runs.
"""
from __future__ import annotations

import contextlib
import os

import mlflow
from mlflow.entities import Param
from mlflow.tracking import MlflowClient

FAILURE_TAG = "mlproject.failure"
# MLflow rejects param values over 6,000 characters (MAX_PARAM_VAL_LENGTH in mlflow 3.x)
MAX_PARAM_LENGTH = 6000


def run_id_from_env() -> str | None:
    """The run `mlflow run` created for this process (it exports MLFLOW_RUN_ID), if any."""
    return os.environ.get("MLFLOW_RUN_ID") or None


@contextlib.contextmanager
def training_run(experiment: str, run_name: str = "", tags: dict | None = None, parent_run_id: str | None = None):
    """Start a run in `experiment` (or join MLFLOW_RUN_ID under `mlflow run`, or nest under
    `parent_run_id`); end it FINISHED, FAILED (reason in tag mlproject.failure) or KILLED."""
    joined = run_id_from_env() if parent_run_id is None else None
    if joined:
        run = mlflow.start_run(run_id=joined)
    elif parent_run_id:  # a child lives in its parent's experiment, whatever `experiment` says
        parent = MlflowClient().get_run(parent_run_id)
        run = mlflow.start_run(experiment_id=parent.info.experiment_id, run_name=run_name or None,
                               parent_run_id=parent_run_id, nested=True)
    else:
        mlflow.set_experiment(experiment)
        run = mlflow.start_run(run_name=run_name or None)
    if tags:
        mlflow.set_tags(tags)
    try:
        yield run
    except KeyboardInterrupt:
        mlflow.set_tag(FAILURE_TAG, "interrupted (Ctrl-C)")
        mlflow.end_run("KILLED")
        raise
    except BaseException as e:
        # an exception may say how its run ends (tuning's pruned trials end KILLED); default FAILED
        mlflow.set_tag(FAILURE_TAG, f"{type(e).__name__}: {e}"[:5000])
        mlflow.end_run(getattr(e, "mlflow_status", "FAILED"))
        raise
    else:
        mlflow.end_run("FINISHED")


def fail_env_run(message: str) -> None:
    """Bad input under `mlflow run`: mark the run MLflow created FAILED with the reason as a tag,
    so no run is left RUNNING. Does nothing for standalone runs (none was created yet)."""
    run_id = run_id_from_env()
    if not run_id:
        return
    client = MlflowClient()
    client.set_tag(run_id, FAILURE_TAG, message[:5000])
    client.set_terminated(run_id, "FAILED")


def log_params(params: dict) -> None:
    """Log all params of the active run in one batch, skipping keys already logged (`mlflow run`
    logs the -P values itself, as typed strings, and MLflow refuses to change a logged param)."""
    run = mlflow.active_run()
    client = MlflowClient()
    have = client.get_run(run.info.run_id).data.params
    new = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items() if k not in have]
    if new:
        client.log_batch(run.info.run_id, params=new, synchronous=True)


def log_epoch(metrics: dict, step: int) -> None:
    """All of one epoch's metrics in one call."""
    mlflow.log_metrics(metrics, step=step)
