"""mlproject's training core: data, models, the training loop, cached features and figures.
It imports no MLflow, Optuna or click (tests/test_layers.py holds it there).

    from mlproject import TrainConfig, create_dataset, create_model, fit
    cfg = TrainConfig(model="lenet5", epochs=3)

A tracked run (MLflow) is the application's: `from mlproject.app import run_training`.

The names below are imported from their modules on first use (PEP 562): importing torch and
scikit-learn takes seconds, and `import mlproject.config` (what `--help` needs) must not wait for them.
"""
import importlib

__version__ = "0.1.0"

_FROM = {"ConfigError": "config", "TrainConfig": "config", "create_dataset": "data", "peek_dataset": "data",
         "create_model": "models", "list_models": "models", "evaluate": "train", "fit": "train"}
__all__ = sorted(_FROM)


def __getattr__(name: str):
    if name not in _FROM:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_FROM[name]}"), name)
    globals()[name] = value  # once: later lookups find it without calling __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
