"""Everything MLflow: runs and their lifecycle, params, metrics, artifacts, models and run
queries. The rest of the project talks to MLflow only through these functions; this package
imports the training core (`mlproject` without `mlproject.app`) for the figures it logs, and
nothing of `tuning` or the application."""
from .logged_models import (FoundModel, ModelNotFound, find_model, load_model, log_model, probabilities,
                            register_model, set_model_alias, set_model_version_tags, warm_model_logging)
from .query import RunsNotFound, Selection, confusion_matrices, experiment_name, select_runs
from .record import log_dataset, log_evaluation, log_figures, metric_key
from .runs import (FAILURE_TAG, MetricBuffer, child_runs, detach_env_run, end_run, experiment_of, fail_env_run,
                   give_up_on_server, log_files_run,
                   log_metrics, log_params, log_run_figure, log_run_metrics, log_run_text, reopened_run, resume_run,
                   run_exists, run_id_from_env, save_runs_view, set_run_tags, set_tags, set_verbosity, start_run,
                   start_system_metrics, stop_system_metrics, system_metrics, system_metrics_recorded_elsewhere,
                   tracking_uri, training_run, unique_run_name, unreachable, use_tracking_uri)

__all__ = ["FAILURE_TAG", "FoundModel", "MetricBuffer", "ModelNotFound", "RunsNotFound", "Selection",
           "child_runs", "confusion_matrices", "detach_env_run", "end_run", "experiment_name", "experiment_of", "fail_env_run",
           "find_model", "give_up_on_server", "load_model", "log_dataset", "log_evaluation", "log_figures", "log_files_run",
           "log_metrics", "log_model", "log_params", "log_run_figure", "log_run_metrics", "log_run_text",
           "metric_key", "probabilities", "register_model", "reopened_run", "resume_run", "run_exists", "run_id_from_env",
           "save_runs_view", "select_runs", "set_model_alias", "set_model_version_tags", "set_run_tags", "set_tags", "set_verbosity", "start_run",
           "start_system_metrics", "stop_system_metrics", "system_metrics", "system_metrics_recorded_elsewhere", "tracking_uri",
           "training_run", "unique_run_name", "unreachable", "use_tracking_uri", "warm_model_logging"]
