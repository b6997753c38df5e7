"""`tune` end to end on digits, in process: parent/child runs, grid, pruning, failures, bad input."""
import itertools
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from mlproject.app.cli import bool_flags_from_values
from mlproject.config import TrainConfig
from mlproject.data import create_dataset
import tracking
from mlproject.app.tune import tune

ROOT = Path(__file__).resolve().parents[1]
CHEAP = ["--model", "softmax", "--num-workers", "0", "--epochs", "2"]


def run_tune(*args):
    return CliRunner().invoke(tune, bool_flags_from_values([*CHEAP, *args]))


def load(name):
    return optuna.load_study(study_name=name, storage="sqlite:///optuna.db")


def runs_of(client, experiment="mlproject"):
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id]) if exp else []


def split(runs):
    parents = [r for r in runs if r.data.tags.get("mlproject.role") == "study"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def test_small_study_parent_children_summary_and_registered_model(store):
    result = run_tune("--trials", "4", "--pruner", "none", "--sampler", "random", "--lr", "0.02:0.5",
                      "--study-name", "s1")
    assert result.exit_code == 0, result.output + str(result.exception)
    study = load("s1")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    (parent,), children = split(runs_of(store))
    assert parent.info.status == "FINISHED"
    tags = parent.data.tags
    assert (tags["optuna.study"], tags["optuna.sampler"], tags["optuna.pruner"]) == ("s1", "random", "none")
    assert tags["optuna.storage"] == "sqlite:///optuna.db"
    assert parent.data.params["space.lr"] == "0.02:0.5 (log)" and parent.data.params["model"] == "softmax"
    assert parent.data.metrics["trials_complete"] == 4 and parent.data.metrics["best_value"] == study.best_value
    assert tags["best.trial"] == str(study.best_trial.number)
    arts = {a.path for a in store.list_artifacts(parent.info.run_id, "study")}
    assert {"study/trials.csv", "study/optimization_history.png", "study/parallel_coordinate.png",
            "study/slice.png", "study/param_importances.png"} <= arts
    # one child per trial, with the trial's number, state, sampled values and full train records
    assert sorted(int(c.data.tags["optuna.trial_number"]) for c in children) == [0, 1, 2, 3]
    for c in children:
        t = study.trials[int(c.data.tags["optuna.trial_number"])]
        assert c.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert c.info.status == "FINISHED" and c.data.tags["optuna.state"] == "COMPLETE"
        assert float(c.data.params["sampled.lr"]) == pytest.approx(t.params["lr"])
        assert float(c.data.params["lr"]) == pytest.approx(t.params["lr"])
        assert c.data.metrics["val_accuracy"] == pytest.approx(t.value)
        assert "test_accuracy" in c.data.metrics and t.user_attrs["mlflow_run_id"] == c.info.run_id
    # only the best trial's run holds a model, registered under the study name, and it predicts
    # exactly as the trial did (retrained with the same seed on CPU)
    best_run = next(c for c in children if c.data.tags["optuna.trial_number"] == str(study.best_trial.number))
    models = mlflow.search_logged_models(experiment_ids=[parent.info.experiment_id], output_format="list")
    with_model = [c for c in children if any(m.source_run_id == c.info.run_id for m in models)]
    assert len(models) == 1
    assert [c.info.run_id for c in with_model] == [best_run.info.run_id]
    assert store.get_run(best_run.info.run_id).info.status == "FINISHED"
    # lean trials: the dataset analysis once on the parent, figures only in the best trial's run
    def files(run_id, folder):
        return {a.path for a in store.list_artifacts(run_id, folder)}

    assert {"data/input_analysis.json", "data/samples_per_class.png"} <= files(parent.info.run_id, "data")
    assert parent.data.metrics["data_images"] == 1797
    for c in children:
        assert {"test/confusion_matrix.png", "test/confusion_matrix.json"} <= files(c.info.run_id, "test")
        assert files(c.info.run_id, "data") == set() and c.data.tags["feature_cache"] == "off"
        assert {i.dataset.name for i in c.inputs.dataset_inputs} == {"digits"}
        has_figures = "figures/loss_accuracy.png" in files(c.info.run_id, "figures")
        assert has_figures == (c.info.run_id == best_run.info.run_id), c.data.tags["optuna.trial_number"]
    assert "test/misclassified.png" in files(best_run.info.run_id, "test")
    (version,) = store.search_model_versions("name='s1'")
    assert version.run_id == best_run.info.run_id
    model = mlflow.pyfunc.load_model(f"models:/s1/{version.version}")
    test = create_dataset(TrainConfig(model="softmax")).test
    probs = tracking.probabilities(model.predict(test.images.numpy().astype(np.float32) / 255.0))
    accuracy = float((probs.argmax(1) == test.labels.numpy()).mean())
    assert accuracy == pytest.approx(best_run.data.metrics["test_accuracy"])
    assert "study s1: 4 complete, 0 pruned, 0 failed" in result.output
    assert "registered as 's1'" in result.output
    # a saved view of the runs table with the study's columns, and its link printed
    import json

    exp = store.get_experiment(parent.info.experiment_id)
    view = json.loads(exp.tags["mlflow.sharedViewState.study-s1"])
    columns = json.loads(view["state"])["selectedColumns"]
    assert view["name"] == "study s1" and {"metrics.`best_value`", "metrics.`val_accuracy`", "params.`lr`"} <= set(columns)
    assert (f"http://127.0.0.1:5000/#/experiments/{exp.experiment_id}/runs?viewStateShareKey=study-s1"
            "&workflowType=machine_learning") in result.output


def test_grid_runs_exactly_its_combinations(store):
    # seed 000's study, shrunk: 3 batch sizes x 2 learning rates; --trials above the grid is capped
    result = run_tune("--sampler", "grid", "--batch-size", "16,32,128", "--lr", "0.0002,0.00005",
                      "--weight-decay", "0", "--momentum", "0.9", "--trials", "40", "--study-name", "grid",
                      "--pruner", "none", "--epochs", "1")
    assert result.exit_code == 0, result.output + str(result.exception)
    study = load("grid")
    combos = sorted((t.params["batch_size"], t.params["lr"]) for t in study.trials)
    assert combos == sorted(itertools.product([16, 32, 128], [0.0002, 0.00005]))
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    (parent,), children = split(runs_of(store))
    assert len(children) == 6 and parent.data.params["space.weight_decay"] == "0"


def test_grid_with_a_failing_point_does_not_repeat_points(store):
    # lr 1e30 diverges (FAIL); the grid is then exhausted: no trial re-runs a point that completed
    result = run_tune("--model", "mlp", "--sampler", "grid", "--batch-size", "64", "--lr", "0.05,1e30", "--weight-decay", "0",
                      "--momentum", "0.9", "--trials", "2", "--study-name", "gridfail", "--pruner", "none",
                      "--epochs", "1")
    assert result.exit_code == 0, result.output + str(result.exception)
    study = load("gridfail")
    states = sorted((t.params["lr"], t.state.name) for t in study.trials)
    assert states == [(0.05, "COMPLETE"), (1e30, "FAIL")]


def test_pruning_stops_trials_early(store):
    result = run_tune("--trials", "9", "--epochs", "6", "--pruner", "median", "--sampler", "random",
                      "--lr", "1e-5:0.5", "--study-name", "pr", "--seed", "3")
    assert result.exit_code == 0, result.output + str(result.exception)
    study = load("pr")
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned, "no trial was pruned"
    _, children = split(runs_of(store))
    by_number = {int(c.data.tags["optuna.trial_number"]): c for c in children}
    for t in pruned:
        run = by_number[t.number]
        epochs = store.get_metric_history(run.info.run_id, "val_accuracy")
        assert len(epochs) == t.user_attrs["pruned_epoch"] < 6
        assert run.info.status == "KILLED" and run.data.tags["optuna.state"] == "PRUNED"
        assert "test_accuracy" not in run.data.metrics  # stopped at once: no test evaluation
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 9


def test_failing_trials_are_recorded_and_the_study_goes_on(store, monkeypatch):
    import mlproject.app.experiment as experiment
    import mlproject.train as train_mod

    real_fit, calls = experiment.fit, []

    def flaky_fit(model, data, cfg, device, on_epoch=None):
        calls.append(1)
        if len(calls) == 1:  # an injected non-finite loss
            monkeypatch.setattr(train_mod.F, "cross_entropy", lambda *a, **k: real_ce(*a, **k) * float("nan"))
            try:
                return real_fit(model, data, cfg, device, on_epoch)
            finally:
                monkeypatch.setattr(train_mod.F, "cross_entropy", real_ce)
        if len(calls) == 2:
            raise RuntimeError("injected failure")
        return real_fit(model, data, cfg, device, on_epoch)

    real_ce = train_mod.F.cross_entropy
    monkeypatch.setattr(experiment, "fit", flaky_fit)
    result = run_tune("--trials", "3", "--pruner", "none", "--study-name", "flaky")
    assert result.exit_code == 0, result.output + str(result.exception)
    study = load("flaky")
    states = [t.state for t in study.trials]
    assert states.count(TrialState.FAIL) == 2 and states.count(TrialState.COMPLETE) == 3
    reasons = [t.user_attrs["fail_reason"] for t in study.trials if t.state == TrialState.FAIL]
    assert "TrainingDiverged: training loss became nan" in reasons[0]
    assert reasons[1] == "RuntimeError: injected failure"
    _, children = split(runs_of(store))
    failed = [c for c in children if c.info.status == "FAILED"]
    assert len(failed) == 2 and all(c.data.tags["optuna.state"] == "FAIL" for c in failed)
    assert any("injected failure" in c.data.tags["mlproject.failure"] for c in failed)


def test_trials_failing_in_a_row_stop_the_study(store, monkeypatch):
    import mlproject.app.experiment as experiment

    def broken(*a, **k):
        raise RuntimeError("always broken")

    monkeypatch.setattr(experiment, "fit", broken)
    result = run_tune("--trials", "10", "--max-failures", "3", "--study-name", "broken")
    assert result.exit_code == 1
    assert "3 trials failed in a row; last: RuntimeError: always broken" in result.stderr
    assert len(load("broken").trials) == 3
    (parent,), _ = split(runs_of(store))
    assert parent.info.status == "FAILED"


@pytest.mark.parametrize("args, message", [
    (["--lr", "1e-1:1e-4"], "--lr '1e-1:1e-4': empty or inverted range"),
    (["--weight-decay", "0:1e-2"], "--weight-decay '0:1e-2': a log-scale range needs low > 0"),
    (["--sampler", "grid"], "--sampler grid needs explicit values, but --lr is the range"),
    (["--sampler", "tpx"], "unknown sampler 'tpx' (did you mean: tpe?)"),
    (["--pruner", "medain"], "unknown pruner 'medain' (did you mean: median?)"),
    (["--trials", "0"], "--trials must be >= 1, got 0"),
    (["--batch-size", "0,32"], "batch size must be >= 1, got 0"),
    (["--momentum", "0.5:1.5"], "momentum must be in [0, 1), got 1.5"),
    (["--model", "resnet181"], "unknown model 'resnet181'"),
    (["--storage", "postgresql://tuner:topsecret@127.0.0.1:9/db"], "cannot open Optuna storage 'postgresql://tuner:***@127.0.0.1:9/db'"),
])
def test_bad_input_exits_2_and_creates_nothing(store, args, message):
    result = run_tune("--trials", "2", *args) if "--trials" not in args else run_tune(*args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.stderr
    assert "topsecret" not in result.output
    assert runs_of(store) == []
    if Path("optuna.db").exists():
        assert optuna.get_all_study_names("sqlite:///optuna.db") == []


def test_resuming_with_another_search_space_is_refused(store):
    assert run_tune("--trials", "1", "--lr", "0.01:0.1", "--study-name", "same", "--pruner", "none").exit_code == 0
    before = len(runs_of(store))
    result = run_tune("--trials", "2", "--lr", "0.001:0.1", "--study-name", "same")
    assert result.exit_code == 2
    assert "study 'same' exists with another search space or fixed options" in result.stderr
    assert "space.lr" in result.stderr and "0.01:0.1 (log)" in result.stderr
    assert len(runs_of(store)) == before and len(load("same").trials) == 1


@pytest.mark.slow
def test_mlflow_run_tune_entry_point(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path}/mlflow.db"
    proc = subprocess.run(
        [sys.executable, "-m", "mlflow", "run", str(ROOT), "-e", "tune", "--env-manager", "local",
         "--experiment-name", "tuned", "-P", "trials=2", "-P", "model=softmax", "-P", "epochs=2",
         "-P", "num_workers=0", "-P", f"storage=sqlite:///{tmp_path}/optuna.db", "-P", "study_name=mr"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("tuned").experiment_id])
    parents, children = split(runs)
    assert len(parents) == 1 and len(children) == 2  # the `mlflow run` run is the parent
    assert all(c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for c in children)
    assert all(r.info.status == "FINISHED" for r in runs)


@pytest.mark.parametrize("sampler", ["tpe", "cmaes"])
def test_every_sampler_runs_a_study(store, sampler):
    result = run_tune("--trials", "2", "--sampler", sampler, "--pruner", "hyperband", "--study-name", sampler,
                      "--epochs", "1")
    assert result.exit_code == 0, result.output + str(result.exception)
    assert len(load(sampler).get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 2
    (parent,), children = split(runs_of(store))
    assert parent.data.tags["optuna.sampler"] == sampler and len(children) == 2


def test_frozen_backbone_study_computes_features_once(store, monkeypatch, tmp_path):
    """Every trial of a --freeze backbone study trains its head on one set of cached features,
    and the stored best model is the trial's (retrained on the same features)."""
    import mlproject.features as features

    monkeypatch.setenv(features.ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(features, "_memo", {})
    result = run_tune("--model", "lenet5", "--freeze", "backbone", "--trials", "3", "--pruner", "none",
                      "--sampler", "random", "--lr", "0.05:0.5", "--study-name", "frozen")
    assert result.exit_code == 0, result.output + str(result.exception)
    _, children = split(runs_of(store))
    by_number = {int(c.data.tags["optuna.trial_number"]): c for c in children}
    # computed while the study is planned (its checks prepare the model and data), then read by every trial
    assert [by_number[n].data.tags["feature_cache"] for n in (0, 1, 2)] == ["hit", "hit", "hit"]
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1
    study = load("frozen")
    best = by_number[study.best_trial.number]
    model = mlflow.pyfunc.load_model(study.user_attrs["best_model_uri"])
    test = create_dataset(TrainConfig(model="lenet5")).test
    probs = tracking.probabilities(model.predict(test.images.numpy().astype(np.float32) / 255.0))
    assert float((probs.argmax(1) == test.labels.numpy()).mean()) == pytest.approx(best.data.metrics["test_accuracy"])
