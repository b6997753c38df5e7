"""`mlproject report` on a small real study (seed 000's setup shrunk: a grid over batch size and
learning rate, plus a standalone "default" run and a stopped one), in a sqlite store; and on
synthetic runs of a multi-objective, constrained study (logged directly with MLflow, no training)
for the searched categoricals, the grouped table, the front's scatter and the Pareto/feasible
columns."""
import dataclasses
import csv
import io
import os
import re

import mlflow
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from matplotlib.markers import MarkerStyle
from mlflow.tracking import MlflowClient
from PIL import Image

import tracking
from mlproject.app import report as rep
from conftest import module_store, new_mlflow_store
from mlproject.app.cli import bool_flags_from_values, cli
from mlproject.config import TrainConfig

STUDY = "grid"
TABLE_METRICS = {"train_time_s": "train_time_s", "test_time_s": "test_time_s", "train_accuracy": "final_train_accuracy",
                 "val_accuracy": "final_val_accuracy", "test_accuracy": "test_accuracy",
                 "model_size_mb": "model_size_mb", "params_total": "params_total"}


class Stop(Exception):
    """Ends a run after its first epoch, KILLED like a pruned trial."""

    mlflow_status = "KILLED"


# one test process: its tests read two module-scoped stores (one holds a real study)
pytestmark = pytest.mark.xdist_group("report")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{client, parent, trials, default, stopped}: a 4-trial grid study (batch size 16, 64 x lr
    0.05, 0.2) of softmax on digits, a standalone finished run and a KILLED one (stopped after its
    first epoch, as a pruned trial is), all in experiment 'mlproject', and a second KILLED run alone
    in experiment 'side', in a sqlite store in a tmp dir that is the working directory meanwhile."""
    # imported here, not at the top: the synthetic-run tests below need no training stack
    from mlproject.app.experiment import run_training
    from mlproject.app.tune import tune

    with module_store(tmp_path_factory, "report-store") as uri:
        result = CliRunner().invoke(tune, bool_flags_from_values([
            "--model", "softmax", "--num-workers", "0", "--epochs", "1", "--sampler", "grid",
            "--batch-size", "16,64", "--lr", "0.05,0.2", "--weight-decay", "0", "--momentum", "0.9",
            "--pruner", "none", "--trials", "4", "--study-name", STUDY]))
        assert result.exit_code == 0, result.output + str(result.exception)
        cfg = TrainConfig(model="softmax", epochs=1, lr=0.01, batch_size=32, num_workers=0, log_model=False)
        default = run_training(dataclasses.replace(cfg, run_name="default")).run_id

        def stop(stats):
            raise Stop("stopped after one epoch")

        for experiment in ("mlproject", "side"):  # "side" holds only this unfinished run
            with pytest.raises(Stop):
                run_training(dataclasses.replace(cfg, run_name="stopped", experiment=experiment), on_epoch=stop)
        client = MlflowClient(uri)
        everything = all_runs(client)
        (parent,) = [r for r in everything if r.data.tags.get("mlproject.role") == "study"]
        trials = [r.info.run_id for r in everything if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        (stopped,) = [r.info.run_id for r in everything if r.info.run_name == "stopped"
                      and client.get_experiment(r.info.experiment_id).name == "mlproject"]
        assert len(trials) == 4 and client.get_run(stopped).info.status == "KILLED"
        yield {"uri": uri, "client": client, "parent": parent.info.run_id, "trials": trials, "default": default,
               "stopped": stopped}


def all_runs(client):
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def invoke(*args):
    return CliRunner().invoke(cli, ["report", *[str(a) for a in args]])


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def md_cells(line):
    """The cells of a Markdown table row, stripped of their padding."""
    return [c.strip() for c in line.strip().strip("|").split("|")]


def assert_image(path, min_bytes=5000):
    assert path.stat().st_size > min_bytes, path
    with Image.open(path) as im:
        im.load()
        pixels = np.asarray(im.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10, f"{path} is (nearly) one colour"
    return pixels


@pytest.mark.slow
def test_report_on_a_study_and_a_run(runs, tmp_path):
    client = runs["client"]
    out = tmp_path / "out"
    before = {r.info.run_id for r in all_runs(client)}
    result = invoke(runs["default"], "--study", STUDY, "--x", "batch_size", "--y", "train_time", "--y",
                    "test_accuracy", "--by", "lr", "--sort", "test_accuracy", "--descending", "--out", out)
    assert result.exit_code == 0, result.output + str(result.exception)

    # the table: one row per run, its values the runs' logged metrics and params, exactly
    rows = read_csv(out / "table.csv")
    assert list(rows[0]) == ["run", "run_id", "study", "trial", "model", "optimizer", "lr", "batch_size", "momentum",
                             "weight_decay", "epochs", *TABLE_METRICS]
    assert sorted(r["run_id"] for r in rows) == sorted([*runs["trials"], runs["default"]])
    for row in rows:
        run = client.get_run(row["run_id"])
        for column, metric in TABLE_METRICS.items():
            assert float(row[column]) == run.data.metrics[metric], (column, row["run"])
        for param in ("lr", "batch_size", "momentum", "weight_decay", "epochs"):
            assert float(row[param]) == float(run.data.params[param])
        assert row["model"] == "softmax" and row["run"] == run.info.run_name
        assert row["study"] == ("" if row["run"] == "default" else STUDY)
        assert row["trial"] == run.data.tags.get("optuna.trial_number", "")
    accuracies = [float(r["test_accuracy"]) for r in rows]
    assert accuracies == sorted(accuracies, reverse=True)
    assert {(int(r["batch_size"]), float(r["lr"])) for r in rows if r["study"]} == {(16, 0.05), (16, 0.2),
                                                                                  (64, 0.05), (64, 0.2)}
    md = (out / "table.md").read_text()
    lines = md.splitlines()
    assert md_cells(lines[0]) == list(rows[0]) and len(lines[2:2 + len(rows)]) == 5
    assert all(line.startswith("| ") for line in lines[2:7]) and not lines[7]
    best = dict(zip(md_cells(lines[0]), md_cells(lines[2])))
    assert best["run_id"] == rows[0]["run_id"][:8] and best["test_accuracy"] == f"{float(rows[0]['test_accuracy']):.4f}"
    assert "Same in every run: dataset=digits" in md and "Sorted by test_accuracy, descending." in md

    # the plots, the side-by-side confusion matrices and the per-class accuracy heat map
    written = ["table.csv", "table.md", "train_time_s_vs_batch_size_by_lr.png", "test_accuracy_vs_batch_size_by_lr.png",
               "confusion_matrices.png", "per_class_accuracy.csv", "per_class_accuracy.md", "per_class_accuracy.png"]
    assert sorted(p.name for p in out.iterdir()) == sorted(written)
    for name in written:
        if name.endswith(".png"):
            assert_image(out / name)
    cms = assert_image(out / "confusion_matrices.png", min_bytes=50_000)
    assert cms.shape[1] > 1.5 * cms.shape[0]  # 4 matrices in the first row, 1 in the second

    per_class = read_csv(out / "per_class_accuracy.csv")
    assert list(per_class[0]) == ["run", *[str(k) for k in range(10)]]
    for row, trow in zip(per_class, rows):  # same order as the table
        metrics = client.get_run(trow["run_id"]).data.metrics
        assert row["run"] == f"{trow['run']} ({trow['run_id'][:8]})"
        assert all(float(row[str(k)]) == metrics[f"test_class_accuracy/{k}"] for k in range(10))

    # logged as a run of its own, in the runs' experiment
    (new,) = {r.info.run_id for r in all_runs(client)} - before
    report_run = client.get_run(new)
    names = [r.info.run_name for r in all_runs(client) if r.info.experiment_id == report_run.info.experiment_id]
    assert re.fullmatch(r"report-\d+", report_run.info.run_name) and names.count(report_run.info.run_name) == 1
    assert report_run.info.status == "FINISHED"
    assert report_run.data.tags["mlproject.role"] == "report"
    assert client.get_experiment(report_run.info.experiment_id).name == "mlproject"
    assert report_run.data.params["runs"] == "5"
    assert {a.path for a in client.list_artifacts(new, "report")} == {f"report/{n}" for n in written}
    assert f"logged as run {new}" in result.output and re.search(r"^\| run +\| run_id +\|", result.output, re.MULTILINE)


@pytest.mark.slow
def test_selection_by_experiment_parent_run_and_all(runs, tmp_path):
    client = runs["client"]
    before = len(all_runs(client))
    # an experiment: its training runs (the 4 trials and the default run), not the study's parent
    # run, not the KILLED run (said under the table), not earlier report runs
    result = invoke("--experiment", "mlproject", "--no-log", "--out", tmp_path / "a")
    assert result.exit_code == 0, result.output + str(result.exception)
    rows = read_csv(tmp_path / "a" / "table.csv")
    assert sorted(r["run_id"] for r in rows) == sorted([*runs["trials"], runs["default"]])
    assert "status" not in rows[0]
    assert "Left out (not finished; `--all` includes them): 1 KILLED." in (tmp_path / "a" / "table.md").read_text()
    # --all: the KILLED run too, without test metrics, and a status column
    result = invoke("--experiment", "mlproject", "--all", "--no-log", "--out", tmp_path / "b", "--sort", "run")
    assert result.exit_code == 0, result.output + str(result.exception)
    rows = read_csv(tmp_path / "b" / "table.csv")
    assert len(rows) == 6 and [r["run"] for r in rows] == sorted(r["run"] for r in rows)
    (stopped,) = [r for r in rows if r["run_id"] == runs["stopped"]]
    assert stopped["status"] == "KILLED" and stopped["test_accuracy"] == "" and stopped["train_time_s"] == ""
    # an unfinished run named by its id counts, whatever its status
    result = invoke(runs["stopped"], "--experiment", "mlproject", "--no-log", "--out", tmp_path / "d")
    assert result.exit_code == 0, result.output + str(result.exception)
    assert len(read_csv(tmp_path / "d" / "table.csv")) == 6
    assert "Left out" not in (tmp_path / "d" / "table.md").read_text()
    # the parent run's id: the study's trials; a run sorted by a metric not in the table shows it
    result = invoke(runs["parent"], "--no-log", "--out", tmp_path / "c", "--sort", "test_loss")
    assert result.exit_code == 0, result.output + str(result.exception)
    rows = read_csv(tmp_path / "c" / "table.csv")
    assert sorted(r["run_id"] for r in rows) == sorted(runs["trials"]) and "test_loss" in rows[0]
    losses = [float(r["test_loss"]) for r in rows]
    assert losses == sorted(losses)
    assert len(all_runs(client)) == before  # --no-log: no run


@pytest.mark.slow
def test_confusion_matrices_are_the_logged_ones(runs):
    checked = rep.check([runs["default"]], studies=[STUDY])
    table = checked.table()
    cms = tracking.confusion_matrices(table["run_id"])
    assert list(cms) == list(table["run_id"])
    for rid, data in cms.items():
        assert data == mlflow.artifacts.load_dict(f"runs:/{rid}/test/confusion_matrix.json")
    fig = rep.confusion_matrices_figure(checked, table, cms)
    matrices = [ax for ax in fig.axes if ax.images]
    assert len(matrices) == len(fig.axes) == 5 and all(len(ax.child_axes) == 1 for ax in matrices)  # + colorbar
    for ax, rid in zip(matrices, table["run_id"]):
        # each run's own matrix, drawn with its counts, titled with the run
        assert len(ax.images) == 1 and rid[:8] in ax.get_title()
        assert np.array_equal(ax.images[0].get_array(), cms[rid]["matrix"])
        assert sorted(t.get_text() for t in ax.texts) == sorted(str(v) for row in cms[rid]["matrix"] for v in row)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.tell() > 50_000


@pytest.mark.slow
def test_log_scale_for_batch_sizes_spanning_8x(runs):
    # seed 000's batch sizes 16..512: a log2 axis with a tick at every value ("16" and "32" apart)
    checked = rep.check(studies=[STUDY], x="batch_size", ys=["test_acc"], by="lr")
    checked.data.loc[checked.data["batch_size"] == 64, "batch_size"] = 512
    (plot,) = checked.plots
    assert (plot.x, plot.y, plot.by, plot.filename) == ("batch_size", "test_accuracy", "lr",
                                                       "test_accuracy_vs_batch_size_by_lr.png")
    ax = rep.plot_figure(checked, plot).axes[0]
    assert ax.get_xscale() == "log" and list(ax.get_xticks()) == [16, 512]
    assert sorted(line.get_label() for line in ax.lines) == ["lr=0.05", "lr=0.2"]


@pytest.mark.parametrize("args, message", [
    (["0" * 32, "nope"], "runs '00000000000000000000000000000000', 'nope' do not exist in sqlite:///"),
    (["--study", "gird"], "no runs of study 'gird' (did you mean: grid?) in sqlite:///"),
    (["--experiment", "mlprojekt"], "no experiment 'mlprojekt' (did you mean: mlproject?)"),
    (["--study", STUDY, "--x", "batch_size", "--y", "train_tme"],
     "--y 'train_tme': no selected run has it (did you mean: "),
    (["--study", STUDY, "--x", "batch_sise", "--y", "test_accuracy"],
     "--x 'batch_sise': no selected run has it (did you mean: batch_size"),
    (["--study", STUDY, "--x", "batch_size", "--y", "test_accuracy", "--by", "learning_rat"],
     "--by 'learning_rat': no selected run has it (did you mean: learning_rate"),
    (["--study", STUDY, "--sort", "accuracy"], "--sort 'accuracy': no selected run has it"),
    (["--study", STUDY, "--by", "optimiser"], "--by 'optimiser': no selected run has it (did you mean: optimizer"),
    (["--study", STUDY, "--y", "test_accuracy"], "--y needs --x"),
    (["--study", STUDY, "--x", "batch_size", "--y", "model"], "--y 'model' is not numeric"),
    ([], "say which runs to report on"),
])
@pytest.mark.slow
def test_bad_input_one_line_exit_2_no_run(runs, tmp_path, args, message):
    client = runs["client"]
    before = len(all_runs(client))
    result = invoke(*args, "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output + str(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.stderr
    if "train_tme" in args:  # every existing name is listed, per-class metrics collapsed
        assert "train_time_s" in lines[0].split("?)")[0]
        assert ("they have table columns: run, run_id, study, trial, model, optimizer, lr, batch_size, momentum, "
                "weight_decay, epochs, train_time_s, test_time_s, train_accuracy, val_accuracy, test_accuracy, "
                "model_size_mb, params_total; ") in lines[0]
        assert "other params: dataset," in lines[0] and "test_loss" in lines[0]
        assert "test_class_accuracy/<class> (10 classes)" in lines[0]
    if "gird" in args:
        assert lines[0].endswith("studies: grid")
    assert len(all_runs(client)) == before and not (tmp_path / "out").exists()
    assert not [r for r in all_runs(client) if r.info.status == "RUNNING"]


@pytest.mark.slow
def test_a_selector_with_unfinished_runs_only_is_refused_without_all(runs, tmp_path):
    result = invoke("--experiment", "side", "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output + str(result.exception)
    assert result.stderr.strip() == ("Error: experiment 'side' has no finished runs (1 KILLED); "
                                     "--all includes unfinished ones")
    result = invoke("--experiment", "side", "--all", "--no-log", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output + str(result.exception)
    (row,) = read_csv(tmp_path / "out" / "table.csv")
    assert row["status"] == "KILLED" and row["test_accuracy"] == ""
    # no confusion matrix, no per-class accuracy: the table alone
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["table.csv", "table.md"]
    assert "no logged confusion matrix in 1 runs" in result.output


@pytest.mark.slow
def test_no_store_is_not_created(runs, tmp_path):
    # MLflow would create an empty mlflow.db for the query; the report says there is none instead
    missing = tmp_path / "mlflow.db"
    mlflow.set_tracking_uri(f"sqlite:///{missing}")
    try:
        result = invoke("--study", STUDY, "--out", tmp_path / "out")
    finally:
        mlflow.set_tracking_uri(runs["uri"])
    assert result.exit_code == 2, result.output + str(result.exception)
    assert result.stderr.strip() == (f"Error: no MLflow store at sqlite:///{missing}: run this in the folder "
                                     "holding mlflow.db, or set MLFLOW_TRACKING_URI")
    assert not missing.exists() and not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# a multi-objective, constrained study, logged directly (the tags the tuning code sets on
# COMPLETE trials: optuna.pareto, optuna.feasible, optuna.violated; the parent's objectives and
# constraints params)

FRONT = "front"
OBJECTIVES, CONSTRAINTS = "val_accuracy:max,model_size_mb:min", "model_size_mb<=5"
SEARCHED = ("model", "freeze", "head", "optimizer", "scheduler", "augment", "pretrained", "head_dropout")
# model, freeze, head, optimizer, scheduler, augment, pretrained, size MB, val, test, train s, test s, pareto
FRONT_TRIALS = [
    ("lenet5", "none", "linear", "sgd", "none", "False", "False", 0.25, 0.90, 0.89, 10.0, 0.5, True),
    ("lenet5", "none", "mlp", "adam", "cosine", "True", "False", 0.30, 0.92, 0.91, 12.0, 0.7, True),
    ("tv:mobilenet_v3_small", "backbone", "linear", "adam", "none", "False", "True", 2.5, 0.95, 0.94, 30.0, 1.0, True),
    ("tv:mobilenet_v3_small", "backbone", "mlp", "sgd", "cosine", "True", "True", 3.0, 0.93, 0.92, 36.0, 1.2, False),
    ("resnet18", "backbone", "linear", "adam", "cosine", "False", "True", 11.2, 0.97, 0.96, 80.0, 2.0, False),
    ("resnet18", "none", "mlp", "sgd", "step", "True", "True", 11.5, 0.96, 0.955, 90.0, 2.4, False),
]


def _log_run(client, experiment_id, name, start, params=(), metrics=(), tags=(), status="FINISHED"):
    from mlflow.entities import Metric, Param

    run = client.create_run(experiment_id, start_time=start, run_name=name, tags=dict(tags))
    rid = run.info.run_id
    client.log_batch(rid, metrics=[Metric(k, float(v), start, 0) for k, v in dict(metrics).items()],
                     params=[Param(k, str(v)) for k, v in dict(params).items()], synchronous=True)
    client.set_terminated(rid, status, end_time=start + 500)
    return rid


@pytest.fixture(scope="module")
def front_store(tmp_path_factory):
    """{uri, parent, trials, pruned, single, constrained}: study FRONT (its parent run and the 6
    FRONT_TRIALS, COMPLETE, plus a pruned one, KILLED and without outcome tags), study 'single'
    (one objective, no constraints: no outcome tags) and study 'constrained' (one objective, a
    constraint every trial meets), logged by an explicit client: no global MLflow state is set."""
    uri = new_mlflow_store(tmp_path_factory.mktemp("front-store"))
    client = MlflowClient(uri)
    eid = client.create_experiment("comparison")
    t0 = 1_700_000_000_000
    parent = _log_run(client, eid, f"study-{FRONT}", t0, tags={"mlproject.role": "study", "optuna.study": FRONT},
                      params={"objectives": OBJECTIVES, "constraints": CONSTRAINTS, "sampler": "nsgaii"})
    trials = []
    for i, (model, freeze, head, opt, sched, aug, pre, size, val, test, train_s, test_s, pareto) in \
            enumerate(FRONT_TRIALS):
        config = {"model": model, "freeze": freeze, "head": head, "optimizer": opt, "scheduler": sched,
                  "augment": aug, "pretrained": pre, "head_dropout": "0.0", "lr": 0.001, "batch_size": 64,
                  "momentum": 0.9, "weight_decay": 0.0, "epochs": 5, "dataset": "cifar10", "num_workers": 2}
        tags = {"optuna.study": FRONT, "mlflow.parentRunId": parent, "optuna.trial_number": str(i),
                "optuna.pareto": str(pareto).lower(), "optuna.feasible": str(size <= 5).lower()}
        if size > 5:
            tags["optuna.violated"] = f"model_size_mb<=5 (got {size})"
        metrics = {"model_size_mb": size, "final_val_accuracy": val, "test_accuracy": test, "train_time_s": train_s,
                   "test_time_s": test_s, "final_train_accuracy": min(1.0, val + 0.02), "params_total": size * 250_000}
        trials.append(_log_run(client, eid, f"{model.split(':')[-1]}-cifar10-{i + 1}", t0 + 1000 * (i + 1),
                               {**config, **{f"sampled.{k}": config[k] for k in SEARCHED}}, metrics, tags))
    pruned = _log_run(client, eid, "pruned", t0 + 10_000, {"model": "resnet18", "sampled.model": "resnet18"},
                      {"final_val_accuracy": 0.5},
                      {"optuna.study": FRONT, "mlflow.parentRunId": parent, "optuna.trial_number": "6"}, "KILLED")
    single = [_log_run(client, eid, f"single-{i}", t0 + 20_000 + i, {"model": "lenet5", "lr": lr},
                       {"test_accuracy": 0.8 + lr, "model_size_mb": 0.25}, {"optuna.study": "single"})
              for i, lr in enumerate((0.01, 0.1))]
    constrained = [_log_run(client, eid, f"constrained-{i}", t0 + 30_000 + i, {"model": "lenet5", "lr": lr},
                            {"test_accuracy": 0.8 + lr, "model_size_mb": 0.25},
                            {"optuna.study": "constrained", "optuna.feasible": "true"})
                   for i, lr in enumerate((0.01, 0.1))]
    return {"uri": uri, "client": client, "parent": parent, "trials": trials, "pruned": pruned, "single": single,
            "constrained": constrained}


@pytest.fixture
def front(front_store, monkeypatch):
    """front_store as the tracking store for one test; the store before it restored after."""
    before = os.environ.get("MLFLOW_TRACKING_URI")  # the module store's (or None), as module_store set it
    monkeypatch.setenv("MLFLOW_TRACKING_URI", front_store["uri"])
    mlflow.set_tracking_uri(front_store["uri"])
    yield front_store
    mlflow.set_tracking_uri(before)


def test_searched_categoricals_are_columns_and_plot_sort_and_group_names(front, tmp_path):
    # (a) every option a study sampled is a column, under the run's own param name (not
    # sampled.<name>), constant or not; strings work in --x, --by and --sort
    result = invoke("--study", FRONT, "--sort", "head", "--x", "model", "--y", "test_accuracy", "--by", "freeze",
                    "--no-log", "--out", tmp_path)
    assert result.exit_code == 0, result.output + str(result.exception)
    rows = read_csv(tmp_path / "table.csv")
    assert list(rows[0]) == ["run", "run_id", "study", "trial", "model", "optimizer", "lr", "batch_size", "momentum",
                             "weight_decay", "epochs", "pretrained", "freeze", "head", "head_dropout", "augment",
                             "scheduler", *TABLE_METRICS, "pareto", "feasible", "violated"]
    assert [r["head"] for r in rows] == sorted(r["head"] for r in rows)  # --sort head, stable: trial order kept
    assert [int(r["trial"]) for r in rows] == [0, 2, 4, 1, 3, 5]
    by_trial = {int(r["trial"]): r for r in rows}
    for i, trial in enumerate(FRONT_TRIALS):
        assert tuple(by_trial[i][k] for k in SEARCHED[:7]) == trial[:7]
        assert by_trial[i]["head_dropout"] == "0.0"  # sampled, the same in every run: still a column
    md = (tmp_path / "table.md").read_text()
    assert "Same in every run: dataset=cifar10." in md and "num_workers" not in md  # bookkeeping
    assert "Left out (not finished; `--all` includes them): 1 KILLED." in md
    # a text x is categorical; one line per value of a text --by; Pareto runs ringed on lines too
    checked = rep.check(studies=[FRONT], x="model", ys=["test_accuracy"], by="augment", sort="scheduler")
    (plot,) = checked.plots
    assert not plot.scatter and checked.sort == "scheduler"
    ax = rep.plot_figure(checked, plot).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["lenet5", "resnet18", "tv:mobilenet_v3_small"]
    # the constraint is on a metric, not on x or y: no line for it
    assert [line.get_label() for line in ax.lines] == ["augment=False", "augment=True"]
    assert {c.get_label() for c in ax.collections} == {"Pareto front (3)", "infeasible (2)"}


def test_grouped_table_by_model(front, tmp_path):
    # (b) --by without --x: one row per model, best and mean of the key metrics, in by_model.md/.csv
    result = invoke("--study", FRONT, "--by", "model", "--no-log", "--out", tmp_path)
    assert result.exit_code == 0, result.output + str(result.exception)
    assert not list(tmp_path.glob("*.png"))  # no plot without --x
    rows = read_csv(tmp_path / "by_model.csv")
    assert list(rows[0]) == ["model", "runs", "best_run", "pareto_runs", "feasible_runs",
                             "test_accuracy_best", "test_accuracy_mean", "val_accuracy_best", "val_accuracy_mean",
                             "train_time_s_best", "train_time_s_mean", "test_time_s_best", "test_time_s_mean",
                             "model_size_mb_best", "model_size_mb_mean"]
    assert [r["model"] for r in rows] == ["lenet5", "resnet18", "tv:mobilenet_v3_small"]
    names = {r["run_id"]: r["run"] for r in read_csv(tmp_path / "table.csv")}
    runs = dict(zip(front["trials"], FRONT_TRIALS))
    for row in rows:
        mine = {rid: t for rid, t in runs.items() if t[0] == row["model"]}
        assert int(row["runs"]) == len(mine)
        assert int(row["pareto_runs"]) == sum(t[12] for t in mine.values())
        assert int(row["feasible_runs"]) == sum(t[7] <= 5 for t in mine.values())
        assert row["best_run"] == names[max(mine, key=lambda rid: mine[rid][9])]
        # accuracies: the highest; times and size: the lowest; each metric on its own
        for column, index, best in (("test_accuracy", 9, max), ("val_accuracy", 8, max), ("train_time_s", 10, min),
                                    ("test_time_s", 11, min), ("model_size_mb", 7, min)):
            values = [t[index] for t in mine.values()]
            assert float(row[f"{column}_best"]) == best(values), (row["model"], column)
            assert float(row[f"{column}_mean"]) == pytest.approx(sum(values) / len(values))
    md = (tmp_path / "by_model.md").read_text()
    header, _, first = md.splitlines()[:3]
    cells = dict(zip(md_cells(header), md_cells(first)))
    assert cells["model"] == "lenet5" and cells["test_accuracy_best"] == "0.9100" and cells["train_time_s_mean"] == "11.00"
    # printed too, under the per-run table
    assert "by model:\n" + md.rstrip() in result.output
    # a boolean --by and, with --all, the pruned run (no metrics, no tags) counted in its group
    checked = rep.check(studies=[FRONT], by="augment", include_all=True)
    assert checked.group_by == "augment" and not checked.plots
    grouped = rep.grouped_table(checked)
    assert list(grouped["augment"][:2]) == ["False", "True"] and pd.isna(grouped["augment"].iloc[2])  # missing last
    assert list(grouped["runs"]) == [3, 3, 1] and list(grouped["pareto_runs"]) == [2, 1, 0]
    assert pd.isna(grouped["test_accuracy_best"].iloc[2]) and pd.isna(grouped["best_run"].iloc[2])
    assert grouped["val_accuracy_best"].iloc[2] == 0.5


def test_front_scatter_marks_pareto_and_infeasible_trials(front, tmp_path):
    # (c) x a metric: a scatter, one colour per model, no lines through the runs; Pareto ringed,
    # infeasible a grey x, the constraint dashed
    result = invoke("--study", FRONT, "--x", "model_size_mb", "--y", "test_accuracy", "--by", "model",
                    "--no-log", "--out", tmp_path)
    assert result.exit_code == 0, result.output + str(result.exception)
    assert_image(tmp_path / "test_accuracy_vs_model_size_mb_by_model.png")
    checked = rep.check(studies=[FRONT], x="model_size", ys=["test_acc"], by="model")
    (plot,) = checked.plots
    assert plot.scatter and (plot.x, plot.y, plot.by) == ("model_size_mb", "test_accuracy", "model")
    ax = rep.plot_figure(checked, plot).axes[0]
    # the only line is the constraint's, at x = 5
    (line,) = ax.lines
    assert line.get_label() == "constraint model_size_mb<=5" and list(line.get_xdata()) == [5, 5]
    collections = {c.get_label(): c for c in ax.collections}
    assert list(collections) == ["model=lenet5", "model=resnet18", "model=tv:mobilenet_v3_small",
                                 "Pareto front (3)", "infeasible (2)"]
    # feasible runs in their model's colour (resnet18's both infeasible: grey x only)
    assert [len(collections[f"model={m}"].get_offsets()) for m in ("lenet5", "resnet18", "tv:mobilenet_v3_small")] \
        == [2, 0, 2]
    colours = [tuple(collections[f"model={m}"].get_facecolor()[0]) for m in ("lenet5", "tv:mobilenet_v3_small")]
    assert colours[0] != colours[1]
    ring = collections["Pareto front (3)"]
    assert len(ring.get_facecolor()) == 0 and tuple(ring.get_edgecolor()[0]) == (0, 0, 0, 1)  # a black ring
    assert sorted(map(tuple, ring.get_offsets().tolist())) == sorted(
        (t[7], t[9]) for t in FRONT_TRIALS if t[12])
    cross = collections["infeasible (2)"]
    assert sorted(map(tuple, cross.get_offsets().tolist())) == [(11.2, 0.96), (11.5, 0.955)]
    assert tuple(cross.get_facecolor()[0]) == (0.5, 0.5, 0.5, 1) and len(cross.get_paths()) == 1
    x = MarkerStyle("x")
    assert cross.get_paths()[0].vertices.tolist() == x.get_path().transformed(x.get_transform()).vertices.tolist()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["model=lenet5", "model=resnet18", "model=tv:mobilenet_v3_small", "Pareto front (3)",
                      "infeasible (2)", "constraint model_size_mb<=5"]


def test_pareto_and_feasible_columns_only_where_tagged(front, tmp_path):
    # (d) the tuning code's tags as columns, sortable; absent where no selected run has them
    result = invoke("--study", FRONT, "--study", "single", "--sort", "pareto", "--descending", "--no-log",
                    "--out", tmp_path / "a")
    assert result.exit_code == 0, result.output + str(result.exception)
    rows = read_csv(tmp_path / "a" / "table.csv")
    assert list(rows[0])[-3:] == ["pareto", "feasible", "violated"]
    by_id = {r["run_id"]: r for r in rows}
    for rid, trial in zip(front["trials"], FRONT_TRIALS):
        size, pareto = trial[7], trial[12]
        assert by_id[rid]["pareto"] == str(pareto) and by_id[rid]["feasible"] == str(size <= 5)
        assert by_id[rid]["violated"] == ("" if size <= 5 else f"model_size_mb<=5 (got {size})")
    for rid in front["single"]:  # a study without the tags: empty there
        assert (by_id[rid]["pareto"], by_id[rid]["feasible"], by_id[rid]["violated"]) == ("", "", "")
    assert [r["pareto"] for r in rows] == ["True"] * 3 + ["False"] * 3 + [""] * 2
    md = (tmp_path / "a" / "table.md").read_text()
    assert f"Study {FRONT}: objectives {OBJECTIVES}; constraints {CONSTRAINTS}." in md
    assert "| model_size_mb<=5 (got 11.2) |" in md
    # no outcome tags at all: no such columns; a feasible tag alone: that column only
    result = invoke("--study", "single", "--no-log", "--out", tmp_path / "b")
    assert result.exit_code == 0, result.output + str(result.exception)
    assert not {"pareto", "feasible", "violated"} & set(read_csv(tmp_path / "b" / "table.csv")[0])
    result = invoke("--study", "constrained", "--no-log", "--out", tmp_path / "c")
    assert result.exit_code == 0, result.output + str(result.exception)
    rows = read_csv(tmp_path / "c" / "table.csv")
    assert list(rows[0])[-1] == "feasible" and not {"pareto", "violated"} & set(rows[0])
    assert [r["feasible"] for r in rows] == ["True", "True"]


def test_group_by_a_name_no_run_has_is_one_line_exit_2(front, tmp_path):
    result = invoke("--study", FRONT, "--by", "modle", "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output + str(result.exception)
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: --by 'modle': no selected run has it (did you mean: model")
    assert "they have table columns: run, run_id, study, trial, model, optimizer," in line
    assert "freeze, head" in line and "pareto, feasible, violated" in line
    assert not (tmp_path / "out").exists()
    assert not [r for r in all_runs(front["client"]) if r.data.tags.get("mlproject.role") == "report"]
