"""mlproject: tracked, reproducible image-classification experiments.

    from mlproject import TrainConfig, run_training
    result = run_training(TrainConfig(model="lenet5", epochs=3))
"""
from .config import ConfigError, TrainConfig
from .data import create_dataset, peek_dataset
from .models import create_model, list_models
from .train import evaluate, fit

__version__ = "0.1.0"


def run_training(*args, **kwargs):
    """See mlproject.experiment.run_training (imported lazily: it pulls in MLflow)."""
    from .experiment import run_training as _run

    return _run(*args, **kwargs)


__all__ = ["ConfigError", "TrainConfig", "create_dataset", "create_model", "evaluate", "fit",
           "list_models", "peek_dataset", "run_training"]
