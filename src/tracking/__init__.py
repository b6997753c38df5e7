"""Everything MLflow: runs, params, metrics, artifacts and models. `mlproject` and `tuning` talk
to MLflow only through these functions."""
from .models import FoundModel, ModelNotFound, load_model, log_model, log_outliers, probabilities, resolve_model
from .record import log_dataset, log_evaluation, log_figures, metric_key
from .report import ARTIFACT_DIR as REPORT_ARTIFACTS
from .report import RunsNotFound, Selection, confusion_matrices, log_report, select_runs
from .runs import (FAILURE_TAG, MetricBuffer, fail_env_run, log_metrics, log_params, log_run_metrics, run_id_from_env,
                   save_runs_view, set_run_tags, set_tags, training_run)

__all__ = ["FAILURE_TAG", "FoundModel", "MetricBuffer", "ModelNotFound", "REPORT_ARTIFACTS", "RunsNotFound",
           "Selection", "confusion_matrices", "fail_env_run", "load_model", "log_dataset",
           "log_evaluation", "log_figures", "log_metrics", "log_model", "log_outliers", "log_params",
           "log_report", "log_run_metrics", "metric_key", "probabilities", "resolve_model", "run_id_from_env",
           "save_runs_view", "select_runs", "set_run_tags", "set_tags", "training_run"]
