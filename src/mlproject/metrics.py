"""Every metric a run records, and every tag and param prefix mlproject writes, declared once.

    METRICS["val_accuracy"].better       # "max": what --objective infers, report's best
    epoch_metrics()                      # the per-epoch series, in EpochStats' order
    usable("cv_val_accuracy_std", cv=0)  # ConfigError: recorded only with --cv
    Tags.STUDY                           # "optuna.study"

A metric is recorded either per epoch (an MLflow series, step = epoch; a trial's value is the last
epoch's) or once per run (mlproject.app.experiment's summary metrics). `better` is the direction
that is better ("max"/"min"; "" for a metric that is no goal, such as the learning rate): a metric
with one can be a study's --objective or --constraint and a report's sort. `only_with` names the
option a metric exists with ("cv": --cv K; "features": cached backbone features; "analysis": the
dataset analysis, on standalone runs and a study's parent, not on its trials).

Adding a metric usable as --objective, --constraint and report column is one entry here plus the
code that computes it (tests/test_experiment.py checks a real run records only declared names).
Names under PREFIXES are families (one metric per class, fold or system reading), never goals.
"""
from __future__ import annotations

from dataclasses import dataclass

from .config import ConfigError, unknown


@dataclass(frozen=True)
class Metric:
    name: str
    better: str  # "max" | "min" | "" (not a goal)
    per: str  # "epoch" | "run"
    doc: str
    label: str = ""  # a column of tune's trials table (beside the objectives), under this label
    column: str = ""  # `mlproject report`'s table column; the name when empty
    only_with: str = ""  # "" (every run) | "cv" | "features" | "analysis" (not on trial runs)
    in_report: bool = False  # one of report's stable columns (present in every table)
    grouped: int = 0  # its place (1, 2, ...) among the metrics report's grouped table summarises (best, mean)
    integer: bool = False  # a count: shown without decimals

    @property
    def short(self) -> str:
        return self.label or self.name

    @property
    def report_column(self) -> str:
        return self.column or self.name


_CURVES = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")  # what --cv summarises over folds

_DECLARED = (
    # per epoch (train.EpochStats' fields, in its order)
    Metric("train_loss", "min", "epoch", "mean training loss over the epoch's batches (augmented, train mode)"),
    Metric("train_accuracy", "max", "epoch", "training accuracy over the epoch's batches (augmented, train mode)"),
    Metric("val_loss", "min", "epoch", "validation loss after the epoch"),
    Metric("val_accuracy", "max", "epoch", "validation accuracy after the epoch", label="val_acc"),
    Metric("lr", "", "epoch", "the learning rate the epoch trained with"),
    Metric("epoch_time_s", "", "epoch", "seconds of the epoch's training steps (validation excluded)"),
    Metric("val_time_s", "", "epoch", "seconds of the validation pass after the epoch's training steps"),
    # once per run
    Metric("train_time_s", "min", "run", "seconds of training steps over all epochs", label="train_s",
           in_report=True, grouped=3),
    Metric("train_throughput_ips", "max", "run", "training images per second"),
    Metric("test_time_s", "min", "run", "seconds to predict the test split", in_report=True, grouped=4),
    Metric("test_throughput_ips", "max", "run", "test images predicted per second"),
    Metric("final_train_accuracy", "max", "run", "accuracy on the whole training split after training (eval mode)",
           column="train_accuracy", in_report=True),
    Metric("final_val_accuracy", "max", "run", "the last epoch's validation accuracy", column="val_accuracy",
           in_report=True, grouped=2),
    Metric("test_accuracy", "max", "run", "accuracy on the test split", label="test_acc", in_report=True,
           grouped=1),
    Metric("test_loss", "min", "run", "loss on the test split"),
    Metric("model_size_mb", "min", "run", "parameters and buffers, MB", label="size_mb", in_report=True,
           grouped=5),
    Metric("params_total", "min", "run", "parameters", in_report=True, integer=True),
    Metric("params_trainable", "min", "run", "parameters that training updates", integer=True),
    Metric("feature_cache_time_s", "", "run", "seconds to compute the frozen backbone's features (once)",
           only_with="features"),
    # the dataset analysis (tracking.log_dataset): on `mlproject train` runs and a study's parent run,
    # not on its trials (they log the dataset as inputs only)
    Metric("data_images", "", "run", "images in the dataset, all splits", only_with="analysis"),
    Metric("data_train_images", "", "run", "images in the training split", only_with="analysis"),
    Metric("data_val_images", "", "run", "images in the validation split", only_with="analysis"),
    Metric("data_test_images", "", "run", "images in the test split", only_with="analysis"),
    Metric("data_bytes_per_image", "", "run", "bytes of one image as stored (uint8)", only_with="analysis"),
    Metric("data_size_mb", "", "run", "the dataset's images, MB", only_with="analysis"),
    Metric("data_num_classes", "", "run", "classes", only_with="analysis"),
    # with --cv K: the folds' last epochs, and the refit on train + validation
    Metric("cv_folds", "", "run", "folds (K)", only_with="cv"),
    Metric("refit_time_s", "", "run", "seconds of the refit's training steps", only_with="cv"),
    *(Metric(f"cv_{n}_mean", better, "run", f"the folds' mean last-epoch {n}", only_with="cv")
      for n, better in zip(_CURVES, ("min", "max", "min", "max"))),
    *(Metric(f"cv_{n}_std", "min", "run", f"the folds' standard deviation of last-epoch {n} (population)",
             only_with="cv") for n in _CURVES),
)
METRICS: dict[str, Metric] = {m.name: m for m in _DECLARED}
DEFAULT_OBJECTIVE = "val_accuracy"  # a study's --objective, and the epoch metric its pruner judges, by default

# metric families: a name per class, fold or reading
PREFIXES = {
    "test_class_accuracy/": "per-class accuracy on the test split (the class's recall), one per class",
    "fold_": "fold_<i>/<epoch metric>: each --cv fold's epochs",
    "refit/": "refit/<epoch metric>: the --cv refit's epochs",
    "system/": "MLflow system metrics (CPU, memory, GPU), with --system-metrics",
}
CLASS_ACCURACY_PREFIX = "test_class_accuracy/"


def epoch_metrics() -> tuple[str, ...]:
    """The per-epoch series, in EpochStats' field order."""
    return tuple(m.name for m in _DECLARED if m.per == "epoch")


def curves() -> tuple[str, ...]:
    """The epoch metrics that are learning curves (losses and accuracies): what --cv averages."""
    return _CURVES


def trials_table() -> tuple[str, ...]:
    """The metrics `tune`'s end-of-study table shows beside the objectives (those with a label)."""
    return tuple(m.name for m in _DECLARED if m.label)


def goals(cv: int | None = None) -> dict[str, str]:
    """{metric: better} of the metrics a study can optimise or constrain; with `cv` given, only
    those a run with that --cv records."""
    return {m.name: m.better for m in _DECLARED
            if m.better and m.only_with in ("", *(("cv",) if cv or cv is None else ()))}


def usable(name: str, option: str, cv: int | None = None) -> str:
    """`name`, if a study can optimise it (with this --cv, when given); ConfigError naming the
    choices otherwise."""
    m = METRICS.get(name)
    if m is not None and m.better and m.only_with == "cv" and cv is not None and not cv:
        raise ConfigError(f"{option} {name}: recorded only with --cv K (cross-validation); "
                          f"add --cv 5, or use {name[3:].rsplit('_', 1)[0]}")
    if m is None or not m.better or m.only_with not in ("", "cv"):
        raise unknown(f"{option} metric", name, goals(cv), show=len(goals(cv)))
    return name


class Tags:
    """The tags mlproject writes on MLflow runs (and the registry's model versions)."""

    ROLE = "mlproject.role"  # "study" on a study's parent run
    PARENT_RUN = "mlproject.parent_run"
    FAILURE = "mlproject.failure"  # why a run ended FAILED/KILLED
    STUDY = "optuna.study"
    TRIAL_NUMBER = "optuna.trial_number"
    STATE = "optuna.state"  # the Optuna trial state: RUNNING, COMPLETE, PRUNED, FAIL
    WORKER = "mlproject.worker"  # on a trial's run: the process that ran it, "host:pid" (which node, in a cluster)
    TRIALS = "optuna.trials"
    SAMPLER = "optuna.sampler"
    PRUNER = "optuna.pruner"
    STORAGE = "optuna.storage"
    PARETO = "optuna.pareto"  # "true" on a multi-objective study's Pareto-front trials
    FEASIBLE = "optuna.feasible"  # under --constraint
    VIOLATED = "optuna.violated"
    PRUNED_AT = "optuna.pruned_"  # + "epoch" or "fold"
    CHECKPOINT = "mlproject.checkpoint"  # where the run's checkpoint is: runs:/ID/checkpoint/checkpoint.pt or a file
    CHECKPOINT_EPOCH = "mlproject.checkpoint_epoch"  # the position it holds (train.Checkpoint)
    CHECKPOINT_BATCH = "mlproject.checkpoint_batch"
    CHECKPOINT_FOLD = "mlproject.checkpoint_fold"  # with --cv: 1..K, K + 1 the refit
    RESUMED_AT = "mlproject.resumed_at"  # on a resumed run: "epoch E, batch B"
    RESUMED_RUN = "mlproject.resumed_run"  # on the run `mlflow run` made for a resume: the run it resumed
    RESUMED_TRIALS = "optuna.resumed_trials"  # on a trial's run that went on: the trials it was before, "3" or "3,7"


# param name prefixes: a trial's sampled values; the parent's best trial's (tags)
SAMPLED_PREFIX = "sampled."
BEST_PREFIX = "best."
