"""The application layer: the `mlproject` and `tune` commands and what they orchestrate (a
tracked training run, a study, a report, an outlier test). It sits on top of the training core
(`mlproject`), `tracking` (every MLflow call) and `tuning` (every Optuna call); nothing imports
it, and a logged model does not ship it.

    from mlproject.app import run_training
    run = run_training(TrainConfig(model="lenet5", epochs=3))   # an MLflow run, everything recorded
"""
from .experiment import prepare, run_training

__all__ = ["prepare", "run_training"]
