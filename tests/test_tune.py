"""`tune` end to end on digits, in process: parent/child runs, grid, pruning, failures, bad input."""
import itertools
import os
import socket
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

from mlproject.config import TrainConfig
from mlproject.data import create_dataset
import tracking
from mlproject.app.tune import tune, tune_args
from tuning.goals import Objective
from tuning.study import PRUNERS, SAMPLERS, create_storage, redact

from conftest import new_mlflow_store
# the slow suite's PostgreSQL cluster (a module-scoped fixture, started only for the postgresql case)
from test_tune_distributed import postgres  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
CHEAP = ["--model", "softmax", "--num-workers", "0", "--epochs", "2"]
EPOCHS = 2  # CHEAP's
# a configuration that really diverges: SGD at lr 1e30 (momentum 0.9) takes the mlp's loss on
# digits to nan in epoch 1 (so does any lr from 1e6, for every seed tried; mlp is as quick as softmax)
DIVERGING = ["--model", "mlp", "--batch-size", "64", "--weight-decay", "0", "--momentum", "0.9"]
DIVERGED = "TrainingDiverged: training loss became nan in epoch 1 (lr=1e+30, optimizer=sgd)"


def run_tune(*args):
    return CliRunner().invoke(tune, tune_args([*CHEAP, *args]))


def load(name):
    return optuna.load_study(study_name=name, storage="sqlite:///optuna.db")


def runs_of(client, experiment="mlproject"):
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id]) if exp else []


def split(runs):
    parents = [r for r in runs if r.data.tags.get("mlproject.role") == "study"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def test_a_one_trial_study_logs_its_plots_without_warnings_between_the_lines(store, recwarn):
    """One trial is too few for importances and gives flat axes: Optuna and matplotlib warned about
    each (on stderr, amid the trial lines and the table); the plots are logged, nothing printed."""
    import warnings
    warnings.simplefilter("always")  # every warning raised reaches recwarn, none only once
    result = run_tune("--trials", "1", "--pruner", "none", "--study-name", "one")
    assert result.exit_code == 0, result.output + str(result.exception)
    (parent,), _ = split(runs_of(store))
    arts = {a.path for a in store.list_artifacts(parent.info.run_id, "study")}
    assert {"study/optimization_history.png", "study/param_importances.png"} <= arts
    noise = [f"{w.category.__name__}: {w.message} ({w.filename})" for w in recwarn
             if issubclass(w.category, UserWarning) and ("optuna" in w.filename or "matplotlib" in w.filename)]
    assert not noise


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
        assert c.data.tags["mlproject.worker"] == f"{socket.gethostname()}:{os.getpid()}"  # ran here, in-process
        assert float(c.data.params["sampled.lr"]) == pytest.approx(t.params["lr"])
        assert float(c.data.params["lr"]) == pytest.approx(t.params["lr"])
        assert c.data.metrics["val_accuracy"] == pytest.approx(t.value)
        assert "test_accuracy" in c.data.metrics and t.user_attrs["mlflow_run_id"] == c.info.run_id
    # a trial's run holds its own model (and the figures trials skip) only if the trial was a new
    # best when it finished (BEST_TIE_RULE): far fewer than one per trial, nothing retrained; the
    # best is registered under the study name, alias champion, and predicts as the trial did
    from tuning.goals import rank_key

    best_run = next(c for c in children if c.data.tags["optuna.trial_number"] == str(study.best_trial.number))
    records, best_key = [], None
    for t in study.trials:
        key = rank_key(Objective("val_accuracy", "max"), t.value, t.user_attrs["metrics"]["val_loss"], t.number)
        if best_key is None or key < best_key:
            records.append(t.user_attrs["mlflow_run_id"])
            best_key = key
    models = mlflow.search_logged_models(experiment_ids=[parent.info.experiment_id], output_format="list")
    assert sorted(m.source_run_id for m in models) == sorted(records)
    assert best_run.info.run_id == records[-1]
    assert store.get_run(best_run.info.run_id).info.status == "FINISHED"
    # lean trials: the dataset analysis once on the parent, figures only in the runs with a model
    def files(run_id, folder):
        return {a.path for a in store.list_artifacts(run_id, folder)}

    assert {"data/input_analysis.json", "data/samples_per_class.png"} <= files(parent.info.run_id, "data")
    assert parent.data.metrics["data_images"] == 1797
    for c in children:
        assert {"test/confusion_matrix.png", "test/confusion_matrix.json"} <= files(c.info.run_id, "test")
        assert files(c.info.run_id, "data") == set() and c.data.tags["feature_cache"] == "off"
        assert {i.dataset.name for i in c.inputs.dataset_inputs} == {"digits"}
        has_figures = "figures/loss_accuracy.png" in files(c.info.run_id, "figures")
        assert has_figures == (c.info.run_id in records), c.data.tags["optuna.trial_number"]
    assert "test/misclassified.png" in files(best_run.info.run_id, "test")
    (version,) = store.search_model_versions("name='s1'")
    assert version.run_id == best_run.info.run_id
    assert store.get_model_version_by_alias("s1", "champion").version == version.version
    model = mlflow.pyfunc.load_model("models:/s1@champion")
    test = create_dataset(TrainConfig(model="softmax")).test
    probs = tracking.probabilities(model.predict(test.images.numpy().astype(np.float32) / 255.0))
    accuracy = float((probs.argmax(1) == test.labels.numpy()).mean())
    assert accuracy == best_run.data.metrics["test_accuracy"]  # the trial's own weights: exactly
    assert "study s1: 4 complete, 0 pruned, 0 failed" in result.output
    assert "models:/s1@champion (registered 's1' version 1)" in result.output
    # the claims (parent run, best model) were marker studies, deleted: the user sees the study alone
    assert optuna.get_all_study_names("sqlite:///optuna.db") == ["s1"]
    # a saved view of the runs table with the study's columns, and its link printed
    import json

    exp = store.get_experiment(parent.info.experiment_id)
    view = json.loads(exp.tags["mlflow.sharedViewState.study-s1"])
    columns = json.loads(view["state"])["selectedColumns"]
    assert view["name"] == "study s1" and {"metrics.`best_value`", "metrics.`val_accuracy`", "params.`lr`"} <= set(columns)
    assert (f"http://127.0.0.1:5000/#/experiments/{exp.experiment_id}/runs?viewStateShareKey=study-s1"
            "&workflowType=machine_learning") in result.output


@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.parametrize("pruner", [p for p in PRUNERS if p != "wilcoxon"])  # wilcoxon: --cv only (test_cv.py)
def test_every_pruner_stops_the_trials_it_should(store, pruner):
    """7 trials over lr 1e-5:0.5 (seed 0): some learn little in their first epoch. 'median' stops
    such a trial once its 5 startup trials are done, 'hyperband' any trial behind the ones before
    it, 'none' nothing. A pruned trial's run ends KILLED after the epochs it ran, untested."""
    result = run_tune("--trials", "7", "--pruner", pruner, "--sampler", "random", "--lr", "1e-5:0.5",
                      "--batch-size", "64", "--weight-decay", "0", "--momentum", "0.9", "--study-name", "pr",
                      "--seed", "0")
    assert result.exit_code == 0, result.output + str(result.exception)
    study = load("pr")
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(pruned) + len(complete) == len(study.trials) == 7
    assert bool(pruned) == (pruner != "none"), [(t.number, t.state.name) for t in study.trials]
    if pruner == "median":
        assert min(t.number for t in pruned) >= 5  # never one of its 5 startup trials
    assert f"study pr: {len(complete)} complete, {len(pruned)} pruned, 0 failed" in result.output
    (parent,), children = split(runs_of(store))
    assert parent.data.tags["optuna.pruner"] == pruner and parent.data.params["pruner"] == pruner
    assert parent.data.metrics["trials_pruned"] == len(pruned)
    assert parent.data.metrics["trials_complete"] == len(complete)
    by_number = {int(c.data.tags["optuna.trial_number"]): c for c in children}
    assert sorted(by_number) == list(range(7))
    for t in study.trials:
        run = by_number[t.number]
        epochs = store.get_metric_history(run.info.run_id, "val_accuracy")
        if t.state == TrialState.PRUNED:
            assert 1 <= len(epochs) == t.user_attrs["pruned_epoch"] <= EPOCHS
            assert run.info.status == "KILLED" and run.data.tags["optuna.state"] == "PRUNED"
            assert run.data.tags["optuna.pruned_epoch"] == str(t.user_attrs["pruned_epoch"])
            assert "test_accuracy" not in run.data.metrics  # stopped at once: no test evaluation
            # Optuna stopped it on what it was told: the epochs' validation accuracy, as logged
            assert [m.value for m in sorted(epochs, key=lambda m: m.step)] == pytest.approx(
                [t.intermediate_values[e] for e in sorted(t.intermediate_values)])
        else:
            assert len(epochs) == EPOCHS and run.info.status == "FINISHED"
            assert run.data.tags["optuna.state"] == "COMPLETE" and "test_accuracy" in run.data.metrics


@pytest.mark.slow
def test_failing_trials_are_recorded_and_the_study_goes_on(store, monkeypatch):
    """A grid of 5 learning rates: 1e30 diverges for real (nan loss in epoch 1), 0.1 raises (a
    bug, injected); both trials fail with their reason, the other 3 complete."""
    import mlproject.app.experiment as experiment

    real_fit = experiment.fit

    def fit_failing_at_lr_0_1(model, data, cfg, device, on_epoch=None, **checkpointing):
        if cfg.lr == 0.1:
            raise RuntimeError("injected failure")
        return real_fit(model, data, cfg, device, on_epoch, **checkpointing)

    monkeypatch.setattr(experiment, "fit", fit_failing_at_lr_0_1)
    result = run_tune(*DIVERGING, "--sampler", "grid", "--lr", "0.02,0.05,0.1,0.2,1e30", "--trials", "5",
                      "--pruner", "none", "--study-name", "flaky")
    assert result.exit_code == 0, result.output + str(result.exception)
    study = load("flaky")
    assert sorted((t.params["lr"], t.state.name) for t in study.trials) == [
        (0.02, "COMPLETE"), (0.05, "COMPLETE"), (0.1, "FAIL"), (0.2, "COMPLETE"), (1e30, "FAIL")]
    failed = {t.params["lr"]: t for t in study.trials if t.state == TrialState.FAIL}
    assert failed[1e30].user_attrs["fail_reason"].startswith(DIVERGED)
    assert failed[0.1].user_attrs["fail_reason"] == "RuntimeError: injected failure"
    # the study went on after its first failure
    assert min(t.number for t in failed.values()) < max(t.number for t in study.trials)
    assert "study flaky: 3 complete, 0 pruned, 2 failed" in result.output
    (parent,), children = split(runs_of(store))
    assert parent.info.status == "FINISHED" and "mlproject.failure" not in parent.data.tags
    assert parent.data.metrics["trials_fail"] == 2 and parent.data.metrics["trials_complete"] == 3
    runs = {t.params["lr"]: store.get_run(t.user_attrs["mlflow_run_id"]) for t in study.trials}
    assert len(children) == 5 and {c.info.run_id for c in children} == {r.info.run_id for r in runs.values()}
    for lr, run in runs.items():
        if lr in failed:
            assert run.info.status == "FAILED" and run.data.tags["optuna.state"] == "FAIL"
        else:
            assert run.info.status == "FINISHED" and run.data.tags["optuna.state"] == "COMPLETE"
    assert runs[1e30].data.tags["mlproject.failure"].startswith(DIVERGED)
    assert "train_loss" not in runs[1e30].data.metrics  # it ended in its first epoch
    assert runs[0.1].data.tags["mlproject.failure"] == "RuntimeError: injected failure"
    assert study.best_trial.params["lr"] in (0.02, 0.05, 0.2)


def test_trials_failing_in_a_row_stop_the_study(store):
    """Every learning rate of 1e10:1e30 diverges for real: the study stops after --max-failures.
    Their checkpoints (one every batch) are deleted: a trial that failed so is not gone on with."""
    result = run_tune(*DIVERGING, "--sampler", "random", "--lr", "1e10:1e30", "--trials", "10",
                      "--max-failures", "3", "--study-name", "broken", "--checkpoint-every", "0.001")
    assert result.exit_code == 1, result.output + str(result.exception)
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("Error: 3 trials failed in a row; last: TrainingDiverged: training loss "
                                "became nan in epoch 1 (lr="), errors[0]
    study = load("broken")
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 3
    assert all(t.user_attrs["fail_reason"].startswith("TrainingDiverged: training loss became nan in epoch 1")
               for t in study.trials)
    assert "study broken: 0 complete, 0 pruned, 3 failed" in result.output
    (parent,), children = split(runs_of(store))
    assert parent.info.status == "FAILED"
    assert parent.data.tags["mlproject.failure"] == errors[0][len("Error: "):]
    assert parent.data.metrics["trials_fail"] == 3 and "best_value" not in parent.data.metrics
    assert sorted(c.info.run_id for c in children) == sorted(t.user_attrs["mlflow_run_id"] for t in study.trials)
    for t in study.trials:
        assert "checkpoint" in t.user_attrs and t.user_attrs["checkpoint"] is None  # written, then dropped
        assert store.list_artifacts(t.user_attrs["mlflow_run_id"], "checkpoint") == []
    for c in children:
        assert c.info.status == "FAILED" and c.data.tags["optuna.state"] == "FAIL"
        assert 1e10 <= float(c.data.params["lr"]) <= 1e30
        assert c.data.tags["mlproject.failure"].startswith(
            f"TrainingDiverged: training loss became nan in epoch 1 (lr={c.data.params['lr']}, optimizer=sgd)")
    assert store.search_registered_models() == []  # no best trial, no model


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
    (["--augment", "none,crops"], "unknown augment 'crops' (did you mean: crop?)"),
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
    first = run_tune("--trials", "1", "--lr", "0.01:0.1", "--study-name", "same", "--pruner", "none")
    assert first.exit_code == 0, first.output + str(first.exception)
    assert [t.state for t in load("same").trials] == [TrialState.COMPLETE]
    (parent,), children = split(runs_of(store))
    assert parent.data.params["space.lr"] == "0.01:0.1 (log)" and len(children) == 1
    before = len(runs_of(store))
    result = run_tune("--trials", "2", "--lr", "0.001:0.1", "--study-name", "same")
    assert result.exit_code == 2
    assert "study 'same' exists with another search space or fixed options" in result.stderr
    assert "space.lr" in result.stderr and "0.01:0.1 (log)" in result.stderr
    assert len(runs_of(store)) == before and len(load("same").trials) == 1
    assert load("same").user_attrs["signature"]["space"]["space.lr"] == "0.01:0.1 (log)"  # unchanged
    assert store.get_run(parent.info.run_id).info.status == "FINISHED"  # not reopened


@pytest.mark.slow
def test_mlflow_run_tune_entry_point(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = new_mlflow_store(tmp_path)
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


@pytest.mark.slow
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_runs_a_study(store, sampler):
    """lr and momentum searched (explicit values for grid, ranges otherwise: two continuous
    dimensions, so CMA-ES samples them itself), 2 trials each trained as a child run."""
    sep = "," if sampler == "grid" else ":"
    result = run_tune("--trials", "2", "--sampler", sampler, "--pruner", "none", "--study-name", sampler,
                      "--lr", f"0.05{sep}0.2", "--momentum", f"0.5{sep}0.9", "--batch-size", "64",
                      "--weight-decay", "0")
    assert result.exit_code == 0, result.output + str(result.exception)
    assert f"study {sampler}: 2 complete, 0 pruned, 0 failed" in result.output
    study = load(sampler)
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert study.user_attrs["signature"]["sampler"] == sampler
    for t in trials:
        assert set(t.params) == {"lr", "momentum"}
        if sampler == "grid":
            assert t.params["lr"] in (0.05, 0.2) and t.params["momentum"] in (0.5, 0.9)
        else:
            assert 0.05 <= t.params["lr"] <= 0.2 and 0.5 <= t.params["momentum"] <= 0.9
    assert trials[0].params != trials[1].params
    # the sampler named is the one that sampled: GridSampler and CmaEsSampler leave their marks
    assert ("grid_id" in trials[1].system_attrs) == (sampler == "grid")
    assert ("cma:generation" in trials[1].system_attrs) == (sampler == "cmaes")  # trial 0: a random start
    (parent,), children = split(runs_of(store))
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["optuna.sampler"] == sampler and parent.data.params["sampler"] == sampler
    assert sorted(c.info.run_id for c in children) == sorted(t.user_attrs["mlflow_run_id"] for t in trials)
    for c in children:
        t = trials[int(c.data.tags["optuna.trial_number"])]
        assert c.info.status == "FINISHED" and c.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert float(c.data.params["lr"]) == pytest.approx(t.params["lr"])
        assert float(c.data.params["momentum"]) == pytest.approx(t.params["momentum"])
        assert c.data.metrics["val_accuracy"] == pytest.approx(t.value)


@pytest.fixture(params=["sqlite", "journal", pytest.param("postgresql", marks=pytest.mark.slow)])
def storage_url(request, tmp_path):
    """An empty Optuna storage of each kind --storage takes: a SQLite file, a journal file, and
    (slow suite) a database in a real PostgreSQL 15."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/studies.db"
    if request.param == "journal":
        return f"journal:{tmp_path}/studies.log"
    database = "storage_" + request.function.__name__.removeprefix("test_")[:40]  # one per test
    return request.getfixturevalue("postgres").create_database(database)


# Two processes pop the one WAITING trial (an enqueued retry) of a round at the same instant
# (a barrier), ROUNDS times; prints the rounds in which both got it
POP_RACE = r"""
import multiprocessing as mp, sys, warnings
import optuna
from tuning.study import create_storage
warnings.simplefilter("ignore")
url, rounds = sys.argv[1], int(sys.argv[2])

def racer(start, done, out):
    study = optuna.load_study(study_name="race", storage=create_storage(url))
    for _ in range(rounds):
        start.wait()
        out.put(study.ask().number)  # a WAITING trial if there is one, else a new trial
        done.wait()

if __name__ == "__main__":
    study = optuna.create_study(study_name="race", storage=create_storage(url))
    start, done, out = mp.Barrier(3), mp.Barrier(3), mp.Queue()
    racers = [mp.Process(target=racer, args=(start, done, out)) for _ in range(2)]
    for p in racers:
        p.start()
    both = 0
    for _ in range(rounds):
        study.enqueue_trial({})
        start.wait()
        both += out.get() == out.get()
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        done.wait()
    for p in racers:
        p.join()
    print(both)
"""


def test_a_waiting_trial_popped_by_two_workers_at_once_starts_in_one(storage_url, tmp_path):
    """An enqueued trial (a retry of an interrupted or dead worker's trial) runs once, not in
    every worker that asks at that moment: on SQLite, Optuna's own pop let both workers have it
    in 25 of 100 rounds (tuning.study.StartOnceRDBStorage); the other kinds lock it themselves."""
    (tmp_path / "race.py").write_text(POP_RACE)
    rounds = 40  # at 25 % a round, the old pop passes 40 rounds with odds of 1 in 100,000
    done = subprocess.run([sys.executable, str(tmp_path / "race.py"), storage_url, str(rounds)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["0"]


@pytest.mark.slow
def test_a_study_on_every_storage_kind_runs_and_resumes(store, storage_url):
    args = ["--pruner", "none", "--sampler", "random", "--lr", "0.02:0.5", "--storage", storage_url,
            "--study-name", "kinds"]
    result = run_tune("--trials", "2", *args)
    assert result.exit_code == 0, result.output + str(result.exception)
    assert "study kinds: 2 complete, 0 pruned, 0 failed" in result.output
    storage = create_storage(storage_url)
    study = optuna.load_study(study_name="kinds", storage=storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    (parent,), children = split(runs_of(store))
    assert study.user_attrs["mlflow_parent_run_id"] == parent.info.run_id
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["optuna.storage"] == redact(storage_url) and "s3cret" not in redact(storage_url)
    assert sorted(c.info.run_id for c in children) == sorted(t.user_attrs["mlflow_run_id"] for t in study.trials)
    assert all(c.info.status == "FINISHED" for c in children)
    best_run = study.best_trial.user_attrs["mlflow_run_id"]
    assert study.user_attrs["best_model_trial"] == study.best_trial.number
    assert [v.run_id for v in store.search_model_versions("name='kinds'")] == [best_run]
    # only the study: the claims' marker studies were deleted, and the default storage is untouched
    assert optuna.get_all_study_names(storage) == ["kinds"]
    assert not Path("optuna.db").exists()

    # the same command with --trials 3: the stored study resumes, one more trial, same parent run
    result = run_tune("--trials", "3", *args)
    assert result.exit_code == 0, result.output + str(result.exception)
    study = optuna.load_study(study_name="kinds", storage=create_storage(storage_url))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    assert study.user_attrs["mlflow_parent_run_id"] == parent.info.run_id
    (again,), children = split(runs_of(store))
    assert again.info.run_id == parent.info.run_id and again.info.status == "FINISHED"
    assert again.data.metrics["trials_complete"] == 3
    assert sorted(c.info.run_id for c in children) == sorted(t.user_attrs["mlflow_run_id"] for t in study.trials)
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    assert optuna.get_all_study_names(storage) == ["kinds"]
    # the resumed invocation drew new values, not the first one's (seeded) sequence again
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 3

    # --trials is the study's total over invocations: the same command again runs nothing new
    result = run_tune("--trials", "3", *args)
    assert result.exit_code == 0, result.output + str(result.exception)
    study = optuna.load_study(study_name="kinds", storage=create_storage(storage_url))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    (again,), children = split(runs_of(store))
    assert again.info.run_id == parent.info.run_id and again.info.status == "FINISHED"
    assert len(children) == 3 and not [r for r in runs_of(store) if r.info.status == "RUNNING"]


@pytest.mark.slow
def test_frozen_backbone_study_computes_features_once(store, monkeypatch, tmp_path):
    """Every trial of a --freeze backbone study trains its head on one set of cached features,
    and the registered best model is the trial's own (backbone and trained head)."""
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
    assert float((probs.argmax(1) == test.labels.numpy()).mean()) == best.data.metrics["test_accuracy"]


# --- searching any option, several objectives, constraints (issue 11) ----------------------------

FIXED_SGD = ["--lr", "0.1", "--batch-size", "64", "--weight-decay", "0", "--momentum", "0.9"]


def _accuracy_of(model_uri, model_name="softmax"):
    model = mlflow.pyfunc.load_model(model_uri)
    test = create_dataset(TrainConfig(model=model_name)).test
    probs = tracking.probabilities(model.predict(test.images.numpy().astype(np.float32) / 255.0))
    return float((probs.argmax(1) == test.labels.numpy()).mean())


@pytest.mark.slow
def test_grid_over_models_and_freezing_runs_each_combination_once(store, monkeypatch, tmp_path):
    """Seed 004's table (backbones x frozen/fine-tuned) as one command, on three built-in models;
    the frozen-feature cache holds one entry per backbone."""
    import mlproject.features as features

    monkeypatch.setenv(features.ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(features, "_memo", {})
    result = run_tune("--model", "softmax,mlp,lenet5", "--freeze", "none,backbone", "--sampler", "grid",
                      *FIXED_SGD, "--epochs", "1", "--pruner", "none", "--study-name", "archs")
    assert result.exit_code == 0, result.output + str(result.exception)
    study = load("archs")
    combos = sorted((t.params["model"], t.params["freeze"]) for t in study.trials)
    assert combos == sorted(itertools.product(["softmax", "mlp", "lenet5"], ["none", "backbone"]))
    (parent,), children = split(runs_of(store))
    assert parent.data.params["space.model"] == "softmax,mlp,lenet5" and parent.data.params["space.freeze"] == "none,backbone"
    for c in children:
        t = study.trials[int(c.data.tags["optuna.trial_number"])]
        assert c.data.params["model"] == c.data.params["sampled.model"] == t.params["model"]
        assert c.data.params["freeze"] == t.params["freeze"]
        assert c.data.metrics["val_accuracy"] == pytest.approx(t.value)
        assert c.data.metrics["model_size_mb"] == pytest.approx(t.user_attrs["model_size_mb"])
        assert c.data.tags["model_name"] == t.params["model"]
    sizes = {c.data.params["model"]: c.data.metrics["model_size_mb"] for c in children}
    assert len(set(sizes.values())) == 3  # three different models really trained
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 3  # one feature cache per frozen backbone
    # the registered champion is the best trial's own model: it predicts the logged test accuracy
    best = next(c for c in children if c.info.run_id == study.best_trial.user_attrs["mlflow_run_id"])
    assert _accuracy_of("models:/archs@champion", best.data.params["model"]) == best.data.metrics["test_accuracy"]


@pytest.mark.slow
def test_two_objectives_tag_the_pareto_front_and_register_its_models(store):
    result = run_tune("--model", "softmax,mlp,lenet5", "--objective", "val_accuracy", "--objective", "model_size_mb",
                      "--sampler", "random", "--trials", "6", "--lr", "0.02:0.5", "--batch-size", "64",
                      "--weight-decay", "0", "--momentum", "0.9", "--epochs", "1", "--study-name", "front")
    assert result.exit_code == 0, result.output + str(result.exception)
    assert "note: trials run without pruning: Optuna cannot prune a study with 2 objectives" in result.stderr
    study = load("front")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    (parent,), children = split(runs_of(store))
    assert parent.data.params["objectives"] == "val_accuracy:max,model_size_mb:min"
    # the front from the runs' own logged metrics: no dominated trial tagged, none left out
    points = {c.info.run_id: (c.data.metrics["val_accuracy"], c.data.metrics["model_size_mb"]) for c in children}

    def dominated(p):
        return any(q[0] >= p[0] and q[1] <= p[1] and q != p for q in points.values())

    expected = {r for r, p in points.items() if not dominated(p)}
    tagged = {c.info.run_id for c in children if c.data.tags["optuna.pareto"] == "true"}
    assert tagged == expected and all(c.data.tags["optuna.pareto"] in ("true", "false") for c in children)
    assert parent.data.metrics["pareto_size"] == len(expected)
    arts = {a.path for a in store.list_artifacts(parent.info.run_id, "study")}
    assert {"study/pareto_front.csv", "study/pareto_front.png"} <= arts
    # every front trial's own model is registered, once; each predicts its trial's test accuracy
    versions = store.search_model_versions("name='front'")
    assert sorted(v.run_id for v in versions) == sorted(expected)
    assert all(v.tags["optuna.pareto"] == "true" for v in versions)
    models = mlflow.search_logged_models(experiment_ids=[parent.info.experiment_id], output_format="list")
    assert expected <= {m.source_run_id for m in models} and len(models) <= len(children)
    by_run = {c.info.run_id: c for c in children}
    for v in versions:
        run = by_run[v.run_id]
        assert _accuracy_of(f"models:/front/{v.version}", run.data.params["model"]) == run.data.metrics["test_accuracy"]
    # champion: the front's best by the first objective
    champion = store.get_model_version_by_alias("front", "champion")
    assert points[champion.run_id][0] == max(points[r][0] for r in expected)
    assert f"Pareto front of val_accuracy:max, model_size_mb:min: {len(expected)} trials" in result.output


def test_a_constraint_keeps_infeasible_trials_from_the_best(store):
    # softmax beats lenet5 after one epoch on digits (about 0.94 against 0.7), but is smaller than
    # the bound: the feasible lenet5 must be the best
    result = run_tune("--model", "softmax,lenet5", "--sampler", "grid", *FIXED_SGD, "--epochs", "1",
                      "--constraint", "model_size_mb>=0.1", "--study-name", "bound", "--pruner", "none")
    assert result.exit_code == 0, result.output + str(result.exception)
    study = load("bound")
    (parent,), children = split(runs_of(store))
    by_model = {c.data.params["model"]: c for c in children}
    soft, lenet = by_model["softmax"], by_model["lenet5"]
    assert soft.data.metrics["val_accuracy"] > lenet.data.metrics["val_accuracy"]  # else the test proves nothing
    assert soft.data.tags["optuna.feasible"] == "false" and lenet.data.tags["optuna.feasible"] == "true"
    assert soft.data.tags["optuna.violated"] == f"model_size_mb>=0.1 (got {soft.data.metrics['model_size_mb']:.4g})"
    assert parent.data.tags["best.trial"] == lenet.data.tags["optuna.trial_number"]
    assert parent.data.metrics["trials_infeasible"] == 1 and parent.data.params["constraints"] == "model_size_mb>=0.1"
    assert study.best_trial.user_attrs["mlflow_run_id"] == lenet.info.run_id  # Optuna agrees
    assert store.get_model_version_by_alias("bound", "champion").run_id == lenet.info.run_id
    assert "2 complete (1 infeasible)" in result.output


@pytest.mark.parametrize("args, message", [
    (["--objective", "val_acc"], "unknown --objective metric 'val_acc' (did you mean: val_accuracy"),
    (["--objective", "model_size_mb:smallest"], "direction 'smallest' must be min or max"),
    (["--objective", "val_accuracy", "--objective", "val_accuracy"], "--objective 'val_accuracy' given twice"),
    (["--constraint", "model_size_mb<5"], "--constraint 'model_size_mb<5': give METRIC<=VALUE or METRIC>=VALUE"),
    (["--constraint", "size<=5"], "unknown --constraint metric 'size'"),
    (["--objective", "cv_val_accuracy_std"],
     "--objective cv_val_accuracy_std: recorded only with --cv K (cross-validation); add --cv 5, or use val_accuracy"),
    (["--dataset", "digits,mnist"], "--dataset 'digits,mnist': cannot vary within one study"),
    (["--val-fraction", "0.1,0.2"], "--val-fraction '0.1,0.2': cannot vary within one study"),
    (["--model", "softmax,lenett5"], "unknown model 'lenett5' (did you mean: lenet5"),
    (["--head-hidden", "16,32"], "--head-hidden '16,32' is searched but applies only with head=mlp"),
    (["--objective", "val_accuracy,model_size_mb", "--pruner", "median"],
     "--pruner median: Optuna cannot prune a study with 2 objectives"),
    (["--objective", "model_size_mb", "--pruner", "hyperband"], "--pruner hyperband: the objective model_size_mb is known only once a trial ends"),
    (["--objective", "val_accuracy,model_size_mb", "--sampler", "cmaes"], "--sampler cmaes optimises one objective"),
])
def test_bad_search_input_exits_2_and_creates_nothing(store, args, message):
    result = run_tune("--trials", "2", *args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("note: ")]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.stderr
    assert runs_of(store) == []
    if Path("optuna.db").exists():
        assert optuna.get_all_study_names("sqlite:///optuna.db") == []


def test_resuming_with_other_objectives_is_refused(store):
    first = run_tune("--trials", "1", "--study-name", "goals", "--pruner", "none", *FIXED_SGD)
    assert first.exit_code == 0, first.output + str(first.exception)
    result = run_tune("--trials", "2", "--study-name", "goals", *FIXED_SGD, "--objective", "val_accuracy,model_size_mb")
    assert result.exit_code == 2
    assert "study 'goals' exists with another search space or fixed options" in result.stderr
    assert "objectives: stored None, now ['val_accuracy:max', 'model_size_mb:min']" in result.stderr
    assert len(load("goals").trials) == 1


def test_searchable_booleans_take_lists_and_still_work_as_flags():
    def parsed(*args):
        ctx = tune.make_context("tune", tune_args(list(args)))
        return {k: ctx.params[k] for k in ("pretrained", "augment", "nesterov", "balance")}

    assert parsed("--pretrained", "--augment", "true,false") == {"pretrained": "true", "augment": "true,false",
                                                               "nesterov": None, "balance": False}
    # augment is text: a comma separates choices, + combines; alone it is true, --no-augment none
    assert parsed("--augment", "none,crop,crop+flip")["augment"] == "none,crop,crop+flip"
    assert parsed("--augment", "--pretrained")["augment"] == "true"
    assert parsed("--no-augment")["augment"] == "none"
    assert parsed("--no-pretrained", "--nesterov=false", "--balance=true")["pretrained"] == "false"
    assert parsed("--pretrained", "true,false")["pretrained"] == "true,false"
    # MLproject's --flag=value form: searchable booleans stay text, the others become flags
    assert parsed("--augment=false", "--balance=true") == {"pretrained": None, "augment": "false", "nesterov": None,
                                                          "balance": True}
    # and StudyOptions' booleans (MLproject passes --system-metrics={system_metrics})
    for args, on in ((["--system-metrics=true"], True), (["--system-metrics=False"], False), ([], False),
                     (["--system-metrics"], True), (["--no-system-metrics"], False)):
        assert tune.make_context("tune", tune_args(args)).params["system_metrics"] is on, args


@pytest.mark.slow
def test_the_parent_records_system_metrics_and_trials_only_with_the_flag(store):
    """The study's parent run is sampled while its trials run (and goes on after its last step when
    the study resumes); trials start no sampler of their own unless --system-metrics (given here in
    MLproject's --flag=value form)."""
    import threading

    cpu = "system/cpu_utilization_percentage"
    fast = ["--epochs", "1", "--pruner", "none", "--lr", "0.1", "--batch-size", "64", "--weight-decay", "0",
            "--momentum", "0.9"]
    for name, flag in (("plain", "--system-metrics=false"), ("sampled", "--system-metrics=true")):
        result = run_tune("--trials", "2", "--study-name", name, flag, *fast)
        assert result.exit_code == 0, result.output + str(result.exception)
        assert not [t for t in threading.enumerate() if t.name == "SystemMetricsMonitor"]
    by_study = {}
    for run in runs_of(store):
        by_study.setdefault(run.data.tags["optuna.study"], []).append(run)
    for name, trials_sampled in (("plain", False), ("sampled", True)):
        (parent,), children = split(by_study[name])
        assert len(children) == 2
        for key in (cpu, "system/system_memory_usage_megabytes"):
            history = store.get_metric_history(parent.info.run_id, key)
            assert history and all(m.timestamp <= parent.info.end_time for m in history), (name, key)
            for c in children:
                assert bool(store.get_metric_history(c.info.run_id, key)) == trials_sampled, (name, key)
    (parent,), _ = split(by_study["plain"])
    steps = [m.step for m in store.get_metric_history(parent.info.run_id, cpu)]
    result = run_tune("--trials", "3", "--study-name", "plain", *fast)  # resumed: one more trial
    assert result.exit_code == 0, result.output + str(result.exception)
    resumed = [m.step for m in store.get_metric_history(parent.info.run_id, cpu)]
    assert resumed[:len(steps)] == steps and min(resumed[len(steps):]) > max(steps)


@pytest.mark.parametrize("env, index", [({}, 0), ({"SLURM_ARRAY_TASK_ID": "3"}, 3), ({"JOB_COMPLETION_INDEX": "2"}, 2),
                                        ({"SLURM_ARRAY_TASK_ID": ""}, 0)])
def test_a_launchers_task_index_seeds_the_sampler_apart(monkeypatch, env, index):
    """Workers that a Slurm array or a Kubernetes Indexed Job starts at once have worker index 0
    and no trials yet: their task index is what tells their samplers apart (test_deploy.py: a
    real array's trials are all different)."""
    from tuning import runner

    for name in runner.LAUNCH_INDEX_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert runner.launch_index() == index
