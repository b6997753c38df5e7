"""Everything MLflow: runs and their lifecycle, params, metrics, artifacts, models and run
queries. The rest of the project talks to MLflow only through these functions; this package
imports the training core (`mlproject` without `mlproject.app`) for the figures it logs, and
nothing of `tuning` or the application.

The names below are imported from their modules on first use (PEP 562): importing MLflow takes
seconds, which bad input (`tracking.run_id_from_env`: no run to mark FAILED) need not wait for."""
from mlproject.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "checkpoints": ("CHECKPOINT_BATCH_TAG", "CHECKPOINT_EPOCH_TAG", "CHECKPOINT_FOLD_TAG", "CHECKPOINT_TAG",
                    "CheckpointUnavailable", "RESUMED_AT_TAG", "RESUMED_RUN_TAG", "StoredRun", "checkpoint_file",
                    "delete_checkpoint", "fetch_checkpoint", "logged_steps", "store_checkpoint", "stored_run"),
    "env": ("detach_env_run", "run_id_from_env"),
    "logged_models": ("FoundModel", "ModelNotFound", "find_model", "load_model", "log_model", "probabilities",
                      "register_model", "set_model_alias", "set_model_version_tags", "warm_model_logging"),
    "query": ("RunsNotFound", "Selection", "confusion_matrices", "experiment_name", "select_runs"),
    "record": ("log_dataset", "log_evaluation", "log_figures", "metric_key"),
    "runs": ("FAILURE_TAG", "MetricBuffer", "child_runs", "end_run", "experiment_of", "fail_env_run",
             "give_up_on_server", "log_files_run", "log_metrics", "log_params", "log_run_figure", "log_run_metrics",
             "log_run_text", "reopened_run", "resume_run", "run_exists", "save_runs_view", "set_run_tags", "set_tags",
             "set_verbosity", "start_run", "start_system_metrics", "stop_system_metrics", "system_metrics",
             "system_metrics_recorded_elsewhere", "tracking_uri", "training_run", "ui_address", "unique_run_name",
             "unreachable", "use_tracking_uri"),
})
