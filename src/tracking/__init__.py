"""Everything MLflow: runs, params, metrics, artifacts and models. `mlproject` and `tuning` talk
to MLflow only through these functions."""
import mlflow

from .models import load_model, log_model
from .record import log_dataset, log_evaluation, log_figures, metric_key
from .runs import FAILURE_TAG, fail_env_run, log_epoch, log_params, run_id_from_env, training_run


def log_metrics(metrics: dict, step: int | None = None) -> None:
    """Log a dict of metrics to the active run in one call."""
    mlflow.log_metrics(metrics, step=step)


__all__ = ["FAILURE_TAG", "fail_env_run", "load_model", "log_dataset", "log_epoch", "log_evaluation",
           "log_figures", "log_metrics", "log_model", "log_params", "metric_key", "run_id_from_env",
           "training_run"]
