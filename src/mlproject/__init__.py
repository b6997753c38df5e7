"""mlproject's training core: data, models, the training loop, cached features and figures.
It imports no MLflow, Optuna or click (tests/test_layers.py holds it there).

    from mlproject import TrainConfig, create_dataset, create_model, fit
    cfg = TrainConfig(model="lenet5", epochs=3)

A tracked run (MLflow) is the application's: `from mlproject.app import run_training`.

The names below are imported from their modules on first use (PEP 562): importing torch and
scikit-learn takes seconds, and `import mlproject.config` (what `--help` needs) must not wait for them.
"""
from .lazy import lazy_exports

__version__ = "0.1.0"

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "config": ("ConfigError", "TrainConfig"), "data": ("create_dataset", "peek_dataset"),
    "models": ("create_model", "list_models"), "train": ("evaluate", "fit")})
