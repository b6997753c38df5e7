"""Tuning benchmarks, measured side by side in one run (absolute times here are noise).

    python benchmarks/bench_tune.py            # full: ~10 s trials, 40-trial pruning study, 1,000 sampler trials
    python benchmarks/bench_tune.py --quick    # seconds; what tests/test_benchmarks.py runs

1. Framework overhead per trial (Optuna + MLflow + artifacts + model set-up) as a share of a
   trial's wall time, for trials whose training lasts ~10 s: trial wall time minus the time
   inside `fit` (training + per-epoch validation), over the trial wall time. Target <= 5 %.
2. Pruned vs unpruned: the same 40-trial TPE study (same seed) on digits with the median pruner
   and without: epochs trained and best validation accuracy. Target: >= 40 % fewer epochs, at
   most 0.5 points lower.
3. Sampler time per trial at 1,000 trials of a cheap objective (TPE over our search space).

--quick is a smoke check of every part on the smallest inputs that exercise it: one tracked
softmax trial of ~0.1 s of training, a 6-trial x 2-epoch pruning study (the median pruner's 5
start-up trials, then one it may prune after its first epoch), 20 sampler trials (past TPE's 10
random start-up ones). Its figures are rough.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import mlflow
import optuna
from optuna.trial import TrialState

import mlproject.app.experiment as experiment
from mlproject.config import TrainConfig
from mlproject.train import fit
from tuning.objective import Pruned, Worker
from tuning.space import SearchSpace
from common import run_main, write_json  # the benchmarks' common ending

optuna.logging.set_verbosity(optuna.logging.WARNING)


def epochs_for(seconds: float, model: str) -> int:
    """Epochs of `model` on digits that take about `seconds` here (timed on 3 untracked epochs)."""
    cfg = TrainConfig(model=model, epochs=3, num_workers=0)
    p = experiment.prepare(cfg)
    fit(p.model, p.data, cfg, p.device)  # warm-up
    history = fit(p.model, p.data, cfg, p.device)
    per_epoch = history.train_time_s / 3 * 1.15  # + validation, about 15 % of an epoch on digits
    return max(1, round(seconds / per_epoch))


def overhead_share(trials: int, seconds: float, model: str) -> dict:
    """Run `trials` tracked trials of about `seconds` of training each (fixed lr/batch size so
    they last alike) and split each trial's wall time into time in fit() and everything else."""
    epochs = epochs_for(seconds, model)
    holder = tempfile.TemporaryDirectory(prefix="bench_tune_")  # the stores and artifacts, removed below
    tmp = holder.name
    mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
    in_fit: list[float] = []
    real_fit = experiment.fit

    def timed_fit(*a, **k):
        start = time.perf_counter()
        try:
            return real_fit(*a, **k)
        finally:
            in_fit.append(time.perf_counter() - start)

    experiment.fit = timed_fit
    try:
        base = TrainConfig(model=model, epochs=epochs, num_workers=0, experiment="bench-tune")
        space = SearchSpace.parse({"lr": "0.05", "batch_size": "64", "weight_decay": "1e-4", "momentum": "0.9"})
        client = mlflow.MlflowClient()  # artifacts in the temp dir too, not ./mlruns of the caller
        exp = client.create_experiment("bench-tune", artifact_location=f"{tmp}/artifacts")
        parent = client.create_run(exp).info.run_id
        study = optuna.create_study(direction="maximize", storage=f"sqlite:///{tmp}/optuna.db")
        data = experiment.prepare(base).data
        Worker(base, space, experiment.StudyTrainer(), parent, trials, data=[data]).run(study)
    finally:
        experiment.fit = real_fit
        mlflow.set_tracking_uri(None)
    walls = [t.duration.total_seconds() for t in study.trials if t.state == TrialState.COMPLETE]
    holder.cleanup()
    shares = [(w - f) / w for w, f in zip(walls, in_fit)]
    return {"epochs": epochs, "trial_wall_s": statistics.median(walls), "fit_s": statistics.median(in_fit),
            "overhead_s": statistics.median(w - f for w, f in zip(walls, in_fit)),
            "overhead_share": statistics.median(shares)}


def pruning(trials: int, epochs: int, model: str) -> dict:
    """The same TPE study with and without the median pruner, untracked (the pruner's effect)."""
    base = TrainConfig(model=model, epochs=epochs, num_workers=0)
    space = SearchSpace.parse({"lr": "1e-4:1", "momentum": "0.9"})
    data = experiment.prepare(base).data
    out = {}
    for name, pruner in (("unpruned", optuna.pruners.NopPruner()),
                         ("pruned", optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0))):
        epochs_trained = 0

        def objective(trial):
            cfg = TrainConfig(**{**base.to_params(), **space.suggest(trial)})
            p = experiment.prepare(cfg, data=data)

            def report(stats):
                nonlocal epochs_trained
                epochs_trained += 1
                trial.report(stats.val_accuracy, stats.epoch)
                if trial.should_prune():
                    raise Pruned()

            return fit(p.model, p.data, cfg, p.device, on_epoch=report).epochs[-1].val_accuracy

        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0), pruner=pruner)
        start = time.perf_counter()
        study.optimize(objective, n_trials=trials)
        out[name] = {"epochs": epochs_trained, "best_val_accuracy": study.best_value,
                     "wall_s": time.perf_counter() - start,
                     "pruned_trials": len(study.get_trials(states=(TrialState.PRUNED,)))}
    out["epoch_reduction"] = 1 - out["pruned"]["epochs"] / out["unpruned"]["epochs"]
    out["accuracy_drop_points"] = 100 * (out["unpruned"]["best_val_accuracy"] - out["pruned"]["best_val_accuracy"])
    return out


def sampler_time(trials: int) -> dict:
    """TPE's time per trial over our default space, with an objective that costs nothing."""
    space = SearchSpace.parse({})
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    start = time.perf_counter()
    study.optimize(lambda t: -sum((v if isinstance(v, float) else v / 256) for v in space.suggest(t).values()),
                   n_trials=trials)
    total = time.perf_counter() - start
    last = [t.duration.total_seconds() for t in study.trials[-100:]]
    return {"trials": len(study.trials), "ms_per_trial_mean": 1000 * total / trials,
            "ms_per_trial_last_100": 1000 * statistics.mean(last)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="seconds-long smoke mode (CI)")
    ap.add_argument("--model", default=None, help="the overhead part's model (default smallcnn; quick: softmax)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    model = args.model or ("softmax" if args.quick else "smallcnn")
    overhead_cfg = (1, 0.1) if args.quick else (3, 10.0)  # trials, seconds of training each
    # trials, epochs; quick: the median pruner's 5 start-up trials, then one it may prune after epoch 1
    prune_cfg = (6, 2) if args.quick else (40, 8)
    results = {
        "overhead": overhead_share(*overhead_cfg, model),
        "pruning": pruning(*prune_cfg, "softmax"),
        "sampler": sampler_time(20 if args.quick else 1000),  # quick: past TPE's 10 random start-up trials
        "torch_threads": __import__("torch").get_num_threads(), "cpus": os.cpu_count(), "quick": args.quick,
    }
    o, p, s = results["overhead"], results["pruning"], results["sampler"]
    print(f"tracked trial ({o['epochs']} epochs): {o['trial_wall_s']:.1f} s wall, {o['fit_s']:.1f} s in fit -> framework overhead "
          f"{o['overhead_s']:.2f} s = {100 * o['overhead_share']:.1f} % (target <= 5 %)")
    print(f"pruning ({prune_cfg[0]} trials x {prune_cfg[1]} epochs): {p['pruned']['epochs']} vs "
          f"{p['unpruned']['epochs']} epochs = {100 * p['epoch_reduction']:.0f} % fewer (target >= 40 %), "
          f"best val accuracy {p['pruned']['best_val_accuracy']:.4f} vs {p['unpruned']['best_val_accuracy']:.4f} "
          f"({p['accuracy_drop_points']:+.2f} points lower; target <= 0.5)")
    print(f"TPE sampler: {s['ms_per_trial_mean']:.1f} ms/trial over {s['trials']} trials "
          f"({s['ms_per_trial_last_100']:.1f} ms for the last 100)")
    if args.json:
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    run_main(main)
