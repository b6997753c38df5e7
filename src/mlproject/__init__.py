"""mlproject's training core: data, models, the training loop, cached features and figures.
It imports no MLflow, Optuna or click (tests/test_layers.py holds it there).

    from mlproject import TrainConfig, create_dataset, create_model, fit
    cfg = TrainConfig(model="lenet5", epochs=3)

A tracked run (MLflow) is the application's: `from mlproject.app import run_training`.
"""
from .config import ConfigError, TrainConfig
from .data import create_dataset, peek_dataset
from .models import create_model, list_models
from .train import evaluate, fit

__version__ = "0.1.0"

__all__ = ["ConfigError", "TrainConfig", "create_dataset", "create_model", "evaluate", "fit",
           "list_models", "peek_dataset"]
