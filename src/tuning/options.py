"""StudyOptions in a module of its own: importable without Optuna, so that `tune --help` (which
needs its fields' names) answers at once."""
from __future__ import annotations

from dataclasses import dataclass

from mlproject.config import ConfigError


@dataclass
class StudyOptions:
    """`tune`'s options that are not training options (None: the default runner.check resolves)."""

    trials: int = 40
    timeout: float | None = None  # seconds after which no trial starts
    sampler: str = "tpe"
    pruner: str | None = None  # default: median where the study can prune, else none
    objectives: tuple[str, ...] = ()  # --objective, repeatable ("model_size_mb:min"); default val_accuracy
    constraints: tuple[str, ...] = ()  # --constraint, repeatable ("model_size_mb<=5")
    study_name: str | None = None  # default MODEL-DATASET
    storage: str | None = None  # default studies.DEFAULT_STORAGE
    tracking_uri: str | None = None  # default MLFLOW_TRACKING_URI or MLflow's
    workers: int = 1
    register_name: str | None = None  # default the study name
    max_failures: int = 5
    grace_period: int | None = None  # seconds without heartbeat before a trial counts as dead
    verbose: bool = False  # Optuna's and MLflow's INFO lines, and a traceback for every failed trial
    system_metrics: bool = False  # every trial's run samples CPU/memory/GPU too (the parent always does)

    def validate(self) -> None:
        from . import study as studies  # Optuna: imported once a study is planned

        for name in ("trials", "workers", "max_failures"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigError(f"--timeout must be > 0 seconds, got {self.timeout}")
        if self.sampler not in studies.SAMPLERS:
            raise studies.unknown("sampler", self.sampler, studies.SAMPLERS)
        if self.pruner is not None and self.pruner not in studies.PRUNERS:
            raise studies.unknown("pruner", self.pruner, studies.PRUNERS)
