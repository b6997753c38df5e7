"""`mlproject report` on a small real study (seed 000's setup shrunk: a grid over batch size and
learning rate, plus a standalone "default" run and a stopped one), in a sqlite store."""
import csv
import io
import re

import mlflow
import numpy as np
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from PIL import Image

import tracking
from mlproject.app import report as rep
from conftest import module_store
from mlproject.app.cli import bool_flags_from_values, cli
from mlproject.config import TrainConfig
from mlproject.app.experiment import run_training
from mlproject.app.tune import tune

STUDY = "grid"
TABLE_METRICS = {"train_time_s": "train_time_s", "test_time_s": "test_time_s", "train_accuracy": "final_train_accuracy",
                 "val_accuracy": "final_val_accuracy", "test_accuracy": "test_accuracy",
                 "model_size_mb": "model_size_mb", "params_total": "params_total"}


class Stop(Exception):
    """Ends a run after its first epoch, KILLED like a pruned trial."""

    mlflow_status = "KILLED"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{client, parent, trials, default, stopped}: a 4-trial grid study (batch size 16, 64 x lr
    0.05, 0.2) of softmax on digits, a standalone finished run and a KILLED one (stopped after its
    first epoch, as a pruned trial is), all in experiment 'mlproject', and a second KILLED run alone
    in experiment 'side', in a sqlite store in a tmp dir that is the working directory meanwhile."""
    with module_store(tmp_path_factory, "report-store") as uri:
        result = CliRunner().invoke(tune, bool_flags_from_values([
            "--model", "softmax", "--num-workers", "0", "--epochs", "1", "--sampler", "grid",
            "--batch-size", "16,64", "--lr", "0.05,0.2", "--weight-decay", "0", "--momentum", "0.9",
            "--pruner", "none", "--trials", "4", "--study-name", STUDY]))
        assert result.exit_code == 0, result.output + str(result.exception)
        cfg = TrainConfig(model="softmax", epochs=1, lr=0.01, batch_size=32, num_workers=0, log_model=False)
        default = run_training(cfg.replace(run_name="default")).run_id

        def stop(stats):
            raise Stop("stopped after one epoch")

        for experiment in ("mlproject", "side"):  # "side" holds only this unfinished run
            with pytest.raises(Stop):
                run_training(cfg.replace(run_name="stopped", experiment=experiment), on_epoch=stop)
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
    (["--study", STUDY, "--y", "test_accuracy"], "--y needs --x"),
    (["--study", STUDY, "--x", "batch_size", "--y", "model"], "--y 'model' is not numeric"),
    ([], "say which runs to report on"),
])
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
