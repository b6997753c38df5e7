"""The application layer: the `mlproject` and `tune` commands and what they orchestrate (a
tracked training run, a study, a report, an outlier test). It sits on top of the training core
(`mlproject`), `tracking` (every MLflow call) and `tuning` (every Optuna call); nothing imports
it, and a logged model does not ship it.

    from mlproject.app import run_training
    run = run_training(TrainConfig(model="lenet5", epochs=3))   # an MLflow run, everything recorded

`prepare` and `run_training` are imported on first use (PEP 562): `mlproject.app.experiment`
imports torch and MLflow (seconds), which `mlproject --help` and `tune --help` do not need.
"""
from mlproject.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {"experiment": ("prepare", "run_training")})
