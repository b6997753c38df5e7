"""The application layer: the `mlproject` and `tune` commands and what they orchestrate (a
tracked training run, a study, a report, an outlier test). It sits on top of the training core
(`mlproject`), `tracking` (every MLflow call) and `tuning` (every Optuna call); nothing imports
it, and a logged model does not ship it.

    from mlproject.app import run_training
    run = run_training(TrainConfig(model="lenet5", epochs=3))   # an MLflow run, everything recorded

`prepare` and `run_training` are imported on first use (PEP 562): `mlproject.app.experiment`
imports torch and MLflow (seconds), which `mlproject --help` and `tune --help` do not need.
"""
import importlib

_FROM = {"prepare": "experiment", "run_training": "experiment"}
__all__ = sorted(_FROM)


def __getattr__(name: str):
    if name not in _FROM:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_FROM[name]}"), name)
    globals()[name] = value  # once: later lookups find it without calling __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
