"""--cv K: stratified K-fold over train + validation, per-fold metrics, the refit model, pruning
after a fold, and bad input. Digits, softmax/mlp, one epoch: the whole file is CPU-cheap."""
from __future__ import annotations

import subprocess

import numpy as np
import optuna
import pytest
import torch
from click.testing import CliRunner
from optuna.trial import TrialState

from mlproject.app.cli import bool_flags_from_values, cli
from mlproject.app.experiment import prepare
from mlproject.app.tune import tune, tune_args
from mlproject.config import ConfigError, TrainConfig
from mlproject.data import Split, Splits, create_dataset, cv_folds, cv_pool, fold_splits, refit_splits
from mlproject.train import cross_validate, evaluate
from tuning.study import SAMPLERS

from conftest import check_declared

K = 3
CHEAP = ["--model", "softmax", "--epochs", "1", "--num-workers", "0", "--batch-size", "128"]


def train(*args):
    return CliRunner().invoke(cli, bool_flags_from_values(["train", *CHEAP, *args]))


def run_tune(*args):
    return CliRunner().invoke(tune, tune_args([*CHEAP, *args]))


def all_runs(client):
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps) if exps else []


def history(client, run_id, name):
    return [m.value for m in sorted(client.get_metric_history(run_id, name), key=lambda m: m.step)]


def predicted_accuracy(model_uri: str, test: Split) -> float:
    """The accuracy of the logged pyfunc model on the test split (float images in [0, 1])."""
    import mlflow

    import tracking

    x = test.images.numpy().astype(np.float32) / 255.0
    probs = tracking.probabilities(mlflow.pyfunc.load_model(model_uri).predict(x))
    return float((probs.argmax(1) == test.labels.numpy()).mean())


# ---------------------------------------------------------------------------------------------
# the folds

@pytest.mark.parametrize("k", [2, 3, 5])
def test_folds_are_stratified_disjoint_cover_train_and_validation_and_never_touch_test(k):
    data = create_dataset(TrainConfig(dataset="digits", cv=k))
    pool = cv_pool(data)
    labels = pool.labels.numpy()
    assert len(pool) == len(data.train) + len(data.val)
    folds = cv_folds(labels, k, seed=0)
    assert len(folds) == k
    # disjoint, and together every row of train + validation once
    joined = np.concatenate(folds)
    assert len(joined) == len(set(joined.tolist())) == len(pool)
    assert sorted(joined.tolist()) == list(range(len(pool)))
    # stratified: each fold holds each class's count / k, within one image
    counts = np.bincount(labels)
    for fold in folds:
        assert np.all(np.abs(np.bincount(labels[fold], minlength=len(counts)) - counts / k) <= 1)
    # the same folds for the same seed (a study's trials), others for another seed
    assert all(np.array_equal(a, b) for a, b in zip(folds, cv_folds(labels, k, seed=0)))
    assert not all(np.array_equal(a, b) for a, b in zip(folds, cv_folds(labels, k, seed=1)))
    # each fold's Splits: train = the other folds, val = this fold, test = the test split itself
    for fold, splits in zip(folds, fold_splits(data, k, seed=0)):
        assert splits.test is data.test
        assert torch.equal(splits.val.images, pool.images[fold])
        assert torch.equal(splits.val.labels, pool.labels[fold])
        rest = np.setdiff1d(np.arange(len(pool)), fold)
        assert torch.equal(splits.train.images, pool.images[rest])
        assert len(splits.train) + len(splits.val) == len(pool)
    refit = refit_splits(data)
    assert refit.test is data.test and len(refit.val) == 0 and torch.equal(refit.train.images, pool.images)


def test_folds_of_cached_features_are_the_same_index_sets():
    """Frozen-feature cache: the folds are index sets, so features fold exactly as their images."""
    data = create_dataset(TrainConfig(dataset="digits"))
    feats = Splits(*(Split(s.labels, images=s.images.flatten(1).float() * 2) for s in (data.train, data.val, data.test)),
                   data.info)
    for images, features in zip(fold_splits(data, K, 0), fold_splits(feats, K, 0)):
        assert torch.equal(features.val.images, images.val.images.flatten(1).float() * 2)
        assert torch.equal(features.train.labels, images.train.labels)


def test_cross_validation_on_cached_features_equals_the_uncached_one(store, tmp_path, monkeypatch):
    """A frozen backbone's folds and refit, on cached features and on images: the same results."""
    monkeypatch.setenv("MLPROJECT_CACHE_DIR", str(tmp_path / "cache"))
    frozen = dict(model="smallcnn", freeze="backbone", epochs=1, num_workers=0, lr=0.05, batch_size=128, cv=K)
    results = []
    for cache in (True, False):
        cfg = TrainConfig(**frozen, cache_features=cache)
        p = prepare(cfg)
        assert (p.features is not None) == cache
        cv = cross_validate(*p.trained, cfg, p.device)
        model, data = p.trained
        results.append(([h.epochs[-1].val_accuracy for h in cv.folds], evaluate(model, data.test, p.device).accuracy))
    (cached_folds, cached_test), (folds, test) = results
    assert cached_folds == pytest.approx(folds, abs=1e-9) and cached_test == test


# ---------------------------------------------------------------------------------------------
# mlproject train --cv

def test_train_cv_records_folds_mean_std_and_the_refit_model(store):
    result = train("--cv", str(K), "--lr", "0.1")
    assert result.exit_code == 0, result.output + str(result.exception)
    (run,) = all_runs(store)
    m, rid = run.data.metrics, run.info.run_id
    assert run.info.status == "FINISHED" and run.data.params["cv"] == str(K)
    folds = [m[f"fold_{i}/val_accuracy"] for i in range(1, K + 1)]
    for i in range(1, K + 1):  # per fold, per epoch (step = epoch)
        for name in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "epoch_time_s"):
            assert len(history(store, rid, f"fold_{i}/{name}")) == 1, (i, name)
    assert f"fold_{K + 1}/val_accuracy" not in m
    assert m["cv_folds"] == K
    check_declared(m, ("cv", "analysis"))
    assert m["cv_val_accuracy_mean"] == pytest.approx(np.mean(folds))
    assert m["cv_val_accuracy_std"] == pytest.approx(np.std(folds))
    assert m["cv_val_loss_mean"] == pytest.approx(np.mean([m[f"fold_{i}/val_loss"] for i in range(1, K + 1)]))
    # the run's val metrics are the folds' mean (what a study optimises)
    assert m["val_accuracy"] == m["final_val_accuracy"] == pytest.approx(m["cv_val_accuracy_mean"])
    assert history(store, rid, "refit/train_loss") and m["refit_time_s"] > 0
    # the logged model is the refit one: its test accuracy is the one logged
    data = create_dataset(TrainConfig(dataset="digits"))
    assert predicted_accuracy(f"runs:/{rid}/model", data.test) == pytest.approx(m["test_accuracy"], abs=1e-12)
    assert f"test accuracy {m['test_accuracy']:.4f}" in result.output


# ---------------------------------------------------------------------------------------------
# tune --cv

@pytest.mark.slow
def test_tune_cv_study_values_are_the_fold_means_and_keeps_the_refit_model(store):
    # a --cv metric as a constraint (a loose bound: both trials feasible)
    result = run_tune("--cv", str(K), "--trials", "2", "--sampler", "random", "--lr", "0.05:0.5",
                      "--weight-decay", "0", "--momentum", "0.9", "--study-name", "cv",
                      "--constraint", "cv_val_accuracy_std<=0.5")
    assert result.exit_code == 0, result.output + str(result.exception)
    study = optuna.load_study(study_name="cv", storage="sqlite:///optuna.db")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert study.user_attrs["signature"]["fixed"]["cv"] == K
    for t in study.trials:
        run = store.get_run(t.user_attrs["mlflow_run_id"])
        m = run.data.metrics
        assert t.value == pytest.approx(m["cv_val_accuracy_mean"]) == pytest.approx(m["val_accuracy"])
        assert t.constraints == {"cv_val_accuracy_std<=0.5": pytest.approx(m["cv_val_accuracy_std"] - 0.5)}
        assert run.data.tags["optuna.feasible"] == "true"
        check_declared(m, ("cv",))
        # reported after each fold (step = fold): the fold's validation accuracy
        assert sorted(t.intermediate_values) == list(range(1, K + 1))
        for i, v in t.intermediate_values.items():
            assert v == pytest.approx(m[f"fold_{i}/val_accuracy"])
    best = study.best_trial
    data = create_dataset(TrainConfig(dataset="digits"))
    logged = store.get_run(best.user_attrs["mlflow_run_id"]).data.metrics["test_accuracy"]
    assert best.user_attrs["test_accuracy"] == logged
    assert predicted_accuracy(best.user_attrs["model_uri"], data.test) == pytest.approx(logged, abs=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("sampler, workers", [(s, 1) for s in SAMPLERS] + [("tpe", 2)])
def test_every_sampler_and_two_workers_run_a_cv_study(store, sampler, workers):
    """--cv 2 with each sampler (grid: explicit values), and two worker processes on one study: each
    trial's value is its fold mean, reported fold by fold, and its run keeps both folds."""
    sep = "," if sampler == "grid" else ":"
    args = ["--cv", "2", "--trials", "2", "--sampler", sampler, "--pruner", "none", "--workers", str(workers),
            "--lr", f"0.05{sep}0.2", "--momentum", f"0.5{sep}0.9", "--weight-decay", "0",
            "--study-name", f"cv-{sampler}-{workers}"]
    if workers == 1:
        result = run_tune(*args)
        assert result.exit_code == 0, result.output + str(result.exception)
    else:
        # a real `tune` process: worker processes start from their parent's sys.path, and in this
        # one an earlier test's mlflow.pyfunc.load_model put a logged model's code/ first (MLflow
        # prepends it for good), whose mlproject has no app/
        proc = subprocess.run(["tune", *CHEAP, *args], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    study = optuna.load_study(study_name=f"cv-{sampler}-{workers}", storage="sqlite:///optuna.db")
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 2 and done[0].params != done[1].params
    for t in done:
        m = store.get_run(t.user_attrs["mlflow_run_id"]).data.metrics
        assert sorted(t.intermediate_values) == [1, 2]
        assert t.value == pytest.approx(m["cv_val_accuracy_mean"]) == pytest.approx(
            (m["fold_1/val_accuracy"] + m["fold_2/val_accuracy"]) / 2)
    # none failed (two workers asking at once may make a surplus trial, failed untrained by design)
    assert not [t.number for t in study.trials if t.state == TrialState.FAIL and not t.user_attrs.get("surplus")]


@pytest.mark.slow
def test_a_bad_trial_is_pruned_after_its_first_fold_and_a_diverging_one_fails_in_it(store):
    """Median pruner on folds: 5 good trials (its warm-up), then lr 1e-7 (barely learns) is pruned
    after fold 1; lr 1e30 diverges in fold 1's first epoch and fails at once (no fold 2)."""
    storage = "sqlite:///optuna.db"
    study = optuna.create_study(study_name="prune", storage=storage, direction="maximize")
    for lr in (0.1, 0.2, 0.3, 0.15, 0.25, 1e-7, 1e30):
        study.enqueue_trial({"lr": lr})
    result = run_tune("--cv", str(K), "--model", "mlp", "--trials", "7", "--sampler", "random", "--lr", "1e-7:1e30",
                      "--weight-decay", "0", "--momentum", "0.9", "--study-name", "prune")
    assert result.exit_code == 0, result.output + str(result.exception)
    study = optuna.load_study(study_name="prune", storage=storage)
    states = {t.params["lr"]: t for t in study.trials}
    assert [states[lr].state for lr in (0.1, 0.2, 0.3, 0.15, 0.25)] == [TrialState.COMPLETE] * 5
    pruned, diverged = states[1e-7], states[1e30]
    assert pruned.state == TrialState.PRUNED and pruned.user_attrs["pruned_fold"] == 1
    assert list(pruned.intermediate_values) == [1]
    run = store.get_run(pruned.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED" and run.data.tags["optuna.pruned_fold"] == "1"
    assert "fold_1/val_accuracy" in run.data.metrics and "fold_2/val_accuracy" not in run.data.metrics
    assert "pruned after fold 1 (val_accuracy" in result.output
    assert diverged.state == TrialState.FAIL and not diverged.intermediate_values
    assert diverged.user_attrs["fail_reason"].startswith("TrainingDiverged: training loss became nan in epoch 1")
    run = store.get_run(diverged.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and not any(k.startswith("fold_2/") for k in run.data.metrics)


# ---------------------------------------------------------------------------------------------
# bad input: one line, exit 2, nothing created

@pytest.mark.parametrize("args, message", [
    (["--cv", "1"], "cv must be 0 (off) or >= 2 folds, got 1"),
    (["--cv", "-2"], "cv must be 0 (off) or >= 2 folds, got -2"),
    (["--cv", "200"], "--cv 200: class '"),  # digits' smallest class has ~145 images in train + validation
    (["--cv", "3", "--dataset", "FIXED_VAL"], "has a fixed validation folder (valid/)"),
])
def test_bad_cv_input_exits_2_with_one_line_and_no_run(store, tmp_path, make_image_folder, args, message):
    args = [str(make_image_folder(tmp_path / "fixed", layout="splits")) if a == "FIXED_VAL" else a for a in args]
    for result in (train(*args), run_tune("--trials", "2", *args)):
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.stderr
        assert all_runs(store) == []
    assert "fewer than the 200 folds" in lines[0] or "200" not in args


@pytest.mark.parametrize("args, message", [
    (["--pruner", "wilcoxon"], "--pruner wilcoxon compares a trial's folds with the best trial's"),
    (["--pruner", "wilcoxon", "--cv", "3"], "it needs --cv 5 or more, got --cv 3"),
])
def test_wilcoxon_pruner_needs_enough_folds(store, args, message):
    result = run_tune("--trials", "2", *args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert all_runs(store) == []


def test_cv_config_validation():
    assert TrainConfig(cv=0).validate().cv == 0 and TrainConfig(cv=2).validate().cv == 2
    with pytest.raises(ConfigError, match=r"cv must be 0 \(off\) or >= 2 folds, got 1"):
        TrainConfig(cv=1).validate()


@pytest.mark.slow
def test_wilcoxon_pruner_stops_a_bad_trial_after_four_of_five_folds(store):
    """--cv 5 --pruner wilcoxon: a trial worse than the best on each of its first 4 folds
    (one-sided signed-rank p = 1/16 < 0.1) is pruned there, before its last fold and refit."""
    storage = "sqlite:///optuna.db"
    study = optuna.create_study(study_name="wx", storage=storage, direction="maximize")
    for lr in (0.2, 1e-7):
        study.enqueue_trial({"lr": lr})
    result = run_tune("--cv", "5", "--pruner", "wilcoxon", "--trials", "2", "--sampler", "random",
                      "--lr", "1e-7:1", "--weight-decay", "0", "--momentum", "0.9", "--study-name", "wx")
    assert result.exit_code == 0, result.output + str(result.exception)
    good, bad = optuna.load_study(study_name="wx", storage=storage).trials
    assert good.state == TrialState.COMPLETE and sorted(good.intermediate_values) == [1, 2, 3, 4, 5]
    assert bad.state == TrialState.PRUNED and bad.user_attrs["pruned_fold"] == 4
    assert sorted(bad.intermediate_values) == [1, 2, 3, 4]
