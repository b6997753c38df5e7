"""End to end: `mlflow run` of the MLproject, and in-process tracked runs, against a real store."""
import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix

from mlproject.config import TrainConfig
from mlproject.data import create_dataset
from mlproject.app.experiment import prepare, run_training
from mlproject.train import evaluate
import tracking

from conftest import check_declared

ROOT = Path(__file__).resolve().parents[1]

ARTIFACTS = ["test/confusion_matrix.png", "test/confusion_matrix.json", "test/confusion_matrix.csv",
             "test/classification_report.txt", "test/misclassified.png", "test/per_class_accuracy.json",
             "data/samples_per_class.png", "data/input_analysis.json", "figures/loss_accuracy.png",
             "figures/first_layer_weights.png"]


def artifact_paths(client, run_id, path=""):
    out = []
    for a in client.list_artifacts(run_id, path):
        out += artifact_paths(client, run_id, a.path) if a.is_dir else [a.path]
    return out


def logged_models(run):
    """MLflow 3 keeps logged models as LoggedModel entities linked to their run."""
    return mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list",
                                       filter_string=f"source_run_id='{run.info.run_id}'")


def check_recorded(client, run, num_classes=10):
    """Everything the issue lists as recorded by every run."""
    assert run.info.status == "FINISHED"
    check_declared(run.data.metrics, ("analysis",))
    per_class = [k for k in run.data.metrics if k.startswith("test_class_accuracy/")]
    assert len(per_class) == num_classes
    for tag in ("model_source", "device", "torch_version", "mlflow_version", "timm_version"):
        assert tag in run.data.tags, tag
    assert {"model", "dataset", "lr", "batch_size", "epochs", "optimizer", "momentum", "weight_decay"} <= set(run.data.params)
    paths = artifact_paths(client, run.info.run_id)
    for a in ARTIFACTS:
        assert a in paths, a
    contexts = sorted(t.value for d in run.inputs.dataset_inputs for t in d.tags if t.key == "mlflow.data.context")
    assert contexts == ["test", "train", "validation"]
    cm = json.loads(Path(client.download_artifacts(run.info.run_id, "test/confusion_matrix.json")).read_text())
    matrix = np.array(cm["matrix"])
    assert matrix.trace() / matrix.sum() == pytest.approx(run.data.metrics["test_accuracy"])
    assert [m.name for m in logged_models(run)] == ["model"]
    return matrix


@pytest.mark.slow
def test_mlflow_run_main_entry_point_resnet18(store, tmp_path):
    """The README's command, shrunk to one epoch: one FINISHED run with everything recorded, and a
    model that pyfunc reloads and that predicts the logged confusion matrix again."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    proc = subprocess.run(
        [sys.executable, "-m", "mlflow", "run", str(ROOT), "--env-manager", "local", "--experiment-name", "e2e",
         "-P", "model=resnet18", "-P", "epochs=1", "-P", "optimizer=adam", "-P", "lr=0.001"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = store.search_runs([store.get_experiment_by_name("e2e").experiment_id])  # no second run
    matrix = check_recorded(store, run)
    assert run.data.tags["model_source"] == "timm"
    assert run.data.metrics["params_trainable"] == run.data.metrics["params_total"] > 11e6
    assert "test accuracy" in proc.stdout and run.info.run_id in proc.stdout

    # the logged model predicts the same labels: rebuild the test split, predict, compare
    cfg = TrainConfig(model="resnet18", epochs=1)
    test = create_dataset(cfg).test
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    probs = tracking.probabilities(model.predict(test.images.numpy().astype(np.float32) / 255.0))
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-4)
    reloaded = confusion_matrix(test.labels.numpy(), probs.argmax(1), labels=list(range(10)))
    np.testing.assert_array_equal(reloaded, matrix)


@pytest.mark.slow
def test_mlflow_run_bad_input_leaves_run_failed(store, tmp_path):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    proc = subprocess.run(
        [sys.executable, "-m", "mlflow", "run", str(ROOT), "--env-manager", "local", "--experiment-name", "bad",
         "-P", "model=resnet181"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "unknown model 'resnet181' (did you mean: resnet18" in proc.stderr
    (run,) = store.search_runs([store.get_experiment_by_name("bad").experiment_id])
    assert run.info.status == "FAILED"
    assert "unknown model 'resnet181'" in run.data.tags["mlproject.failure"]


@pytest.mark.parametrize("model", ["lenet5", "mlp"])
def test_in_process_run_records_everything_and_model_reloads(store, model):
    cfg = TrainConfig(model=model, epochs=2, lr=0.05, experiment="inproc", num_workers=0)
    prepared = prepare(cfg)
    result = run_training(cfg, prepared)
    run = store.get_run(result.run_id)
    check_recorded(store, run)
    assert run.data.tags["model_source"] == "builtin"
    assert run.data.params["model"] == model
    history = store.get_metric_history(result.run_id, "val_accuracy")
    assert [m.step for m in history] == [1, 2]
    # the pass over the training split that ran beside the test results' recording
    train_pass = evaluate(prepared.model, prepared.data.train, prepared.device, cfg.batch_size)
    assert run.data.metrics["final_train_accuracy"] == train_pass.accuracy
    # pyfunc reload gives the trained model's probabilities
    test = prepared.data.test
    x = test.images[:32].numpy().astype(np.float32) / 255.0
    with torch.no_grad():
        expected = torch.softmax(prepared.model.cpu().eval()(torch.from_numpy(x)), 1).numpy()
    frame = mlflow.pyfunc.load_model(result.model_uri).predict(x)
    got = tracking.probabilities(frame)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert (got.argmax(1) == result.test.y_pred[:32]).all()
    assert (frame["label_index"].to_numpy() == got.argmax(1)).all()
    assert list(frame["label"]) == [prepared.data.info.class_names[k] for k in got.argmax(1)]


def test_image_folder_run_and_no_model(store, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, colour in enumerate([(220, 30, 30), (30, 220, 30), (30, 30, 220)]):
        for i in range(15):
            arr = np.clip(np.array(colour) + rng.normal(0, 25, (20, 24, 3)), 0, 255).astype(np.uint8)
            path = tmp_path / "shapes" / f"class{c}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(path)
    cfg = TrainConfig(model="smallcnn", dataset=str(tmp_path / "shapes"), epochs=3, lr=0.05, log_model=False,
                      experiment="folder", num_workers=0)
    result = run_training(cfg)
    run = store.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["input_size"] == "32"
    assert run.data.tags["data.resolution"] == "3x32x32"
    assert logged_models(run) == []
    assert run.data.metrics["test_accuracy"] > 0.5
    assert sum(1 for k in run.data.metrics if k.startswith("test_class_accuracy/class")) == 3
