"""Everything MLflow: runs, params, metrics, artifacts and models. `mlproject` and `tuning` talk
to MLflow only through these functions."""
import mlflow

from .models import load_model, log_model
from .record import log_dataset, log_evaluation, log_figures, metric_key
from .runs import FAILURE_TAG, fail_env_run, log_epoch, log_params, run_id_from_env, training_run


def set_tags(tags: dict) -> None:
    """Tags on the active run."""
    mlflow.set_tags(tags)


def set_run_tags(run_id: str | None, tags: dict) -> None:
    """Tags on any run (also a finished one); nothing if run_id is None."""
    if run_id:
        client = mlflow.MlflowClient()
        for k, v in tags.items():
            client.set_tag(run_id, k, str(v))


def log_run_metrics(run_id: str, metrics: dict) -> None:
    """Metrics on any run, in one batch."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    mlflow.MlflowClient().log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])


def log_metrics(metrics: dict, step: int | None = None) -> None:
    """Log a dict of metrics to the active run in one call."""
    mlflow.log_metrics(metrics, step=step)


__all__ = ["FAILURE_TAG", "fail_env_run", "load_model", "log_dataset", "log_epoch", "log_evaluation",
           "log_figures", "log_metrics", "log_run_metrics", "set_run_tags", "set_tags", "log_model", "log_params", "metric_key", "run_id_from_env",
           "training_run"]
