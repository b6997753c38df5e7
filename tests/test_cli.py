"""`mlproject` CLI: bad input exits 2 with one clear line and leaves no MLflow run RUNNING."""
import pytest
from click.testing import CliRunner
from PIL import Image

from mlproject.app.cli import bool_flags_from_values, cli
from conftest import new_mlflow_store


def invoke(*args):
    return CliRunner().invoke(cli, bool_flags_from_values(["train", "--num-workers", "0", *args]))


def all_runs(client):
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps) if exps else []


def write_png(path, size=(12, 12), colour=(200, 10, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def folder(tmp_path, kind):
    root = tmp_path / kind
    root.mkdir()
    if kind == "one_class":
        for i in range(4):
            write_png(root / "cat" / f"{i}.png")
    elif kind == "empty_class":  # cat and dog with images, bird without
        for cls in ("cat", "dog"):
            for i in range(6):
                write_png(root / cls / f"{i}.png")
        (root / "bird").mkdir()
        (root / "bird" / "notes.txt").write_text("no image here")
    elif kind == "bad_image":
        for cls in ("cat", "dog"):
            for i in range(4):
                write_png(root / cls / f"{i}.png")
        (root / "dog" / "broken.png").write_bytes(b"this is not a png")
    return str(root)


@pytest.mark.parametrize("args, message", [
    (["--model", "resnet181"], "unknown model 'resnet181' (did you mean: resnet18"),
    (["--model", "lenet"], "unknown model 'lenet' (did you mean: lenet5"),
    (["--dataset", "digitz"], "unknown dataset 'digitz' (did you mean: digits?)"),
    (["--optimizer", "sdg"], "unknown optimizer 'sdg' (did you mean: sgd?); valid: sgd, adam, adamw"),
    (["--lr", "0"], "lr must be > 0 and a finite float32 (<= 3.4e+38), got 0.0"),
    (["--lr", "-1"], "lr must be > 0 and a finite float32 (<= 3.4e+38), got -1.0"),
    (["--lr", "1e300"], "lr must be > 0 and a finite float32 (<= 3.4e+38), got 1e+300"),
    (["--batch-size", "0"], "batch size must be >= 1, got 0"),
    (["--epochs", "0"], "epochs must be >= 1, got 0"),
    (["--momentum", "1"], "momentum must be in [0, 1), got 1.0"),
    (["--weight-decay", "-0.1"], "weight decay must be >= 0 and a finite float32 (<= 3.4e+38), got -0.1"),
    (["--dataset", "./no/such/folder"], "ImageFolder directory not found: no/such/folder"),
    (["--dataset", "EMPTY"], "no images found in"),
    (["--dataset", "ONE_CLASS"], "has 1 class folder(s) with images (cat); a classifier needs at least 2"),
    (["--dataset", "BAD_IMAGE"], "cannot decode image"),
    (["--dataset", "EMPTY_CLASS"], "1 class folder(s) in EMPTY_CLASS hold no images: bird; add images, remove "
                                   "the folders, or pass --allow-empty-classes to train without them"),
    (["--augment", "crops"], "unknown augment 'crops' (did you mean: crop?); valid: none, crop, flip, crop+flip, affine, affine+flip, true"),
    (["--model", "lenet5", "--pretrained"], "built-in model 'lenet5' has no pretrained weights"),
    (["--model", "tv:resnet18", "--pretrained"], "pretrained weights for 'resnet18' could not be loaded"),
])
def test_bad_input_exits_2_with_one_line_and_no_run(store, tmp_path, monkeypatch, args, message):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # no cached torchvision weights
    if "EMPTY" in args:
        (tmp_path / "empty").mkdir()
        args = [str(tmp_path / "empty") if a == "EMPTY" else a for a in args]
    for kind in ("one_class", "bad_image", "empty_class"):
        if kind.upper() in args:
            args = [folder(tmp_path, kind) if a == kind.upper() else a for a in args]
            message = message.replace(kind.upper(), str(tmp_path / kind))
    result = invoke(*args, "--epochs" if "--epochs" not in args else "--seed", "1")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.stderr
    if "BAD_IMAGE" not in str(args) and "bad_image" in str(args):
        assert "broken.png" in lines[0]
    assert all_runs(store) == []


def test_allowed_empty_class_folders_are_named_once_and_tagged(store, tmp_path):
    result = invoke("--dataset", folder(tmp_path, "empty_class"), "--allow-empty-classes", "--model", "softmax",
                    "--epochs", "1", "--num-workers", "0", "--no-log-model", "--val-fraction", "0.2")
    assert result.exit_code == 0, result.output
    named = [line for line in result.stderr.splitlines() if "bird" in line]  # MLflow's INFO lines aside
    assert named == ["warning: training without the class folders that hold no images: bird"]
    (run,) = all_runs(store)
    assert run.info.status == "FINISHED" and run.data.tags["data.empty_classes"] == "bird"
    assert run.data.params["num_classes"] == "2" and run.data.params["allow_empty_classes"] == "True"


def test_bad_input_under_mlflow_run_marks_its_run_failed(store):
    """`mlflow run` creates the run before our code starts (MLFLOW_RUN_ID): it must not stay RUNNING."""
    run = store.create_run(store.create_experiment("e"))
    import os
    os.environ["MLFLOW_RUN_ID"] = run.info.run_id
    try:
        result = invoke("--lr", "-3")
    finally:
        del os.environ["MLFLOW_RUN_ID"]
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [
        "Error: lr must be > 0 and a finite float32 (<= 3.4e+38), got -3.0"]
    got = store.get_run(run.info.run_id)
    assert got.info.status == "FAILED"
    assert [r.info.run_id for r in all_runs(store)] == [run.info.run_id]  # no other run
    assert got.data.tags["mlproject.failure"] == "lr must be > 0 and a finite float32 (<= 3.4e+38), got -3.0"


def test_click_rejects_malformed_numbers_with_status_2(store):
    result = invoke("--lr", "fast")
    assert result.exit_code == 2 and "'fast' is not a valid float" in result.stderr
    assert all_runs(store) == []


def test_diverging_training_exits_1_and_records_the_reason(store):
    """A configuration that really diverges: SGD at lr 1e30 with momentum takes the mlp's loss on
    digits to nan in its first epoch (any lr from 1e6 does, for every seed tried)."""
    result = invoke("--model", "mlp", "--lr", "1e30", "--momentum", "0.9", "--epochs", "2", "--no-log-model")
    assert result.exit_code == 1, result.output + str(result.exception)
    message = "training loss became nan in epoch 1 (lr=1e+30, optimizer=sgd); lower the learning rate"
    # one error line, the last (MLflow logs the experiment it created before it)
    assert [line for line in result.stderr.splitlines() if line.startswith("Error: ")] == [f"Error: {message}"]
    assert result.stderr.strip().splitlines()[-1] == f"Error: {message}"
    assert "test accuracy" not in result.output  # no summary of a run that failed
    (run,) = all_runs(store)
    assert run.info.status == "FAILED"
    assert run.data.tags["mlproject.failure"] == f"TrainingDiverged: {message}"
    assert run.data.params["lr"] == "1e+30" and run.data.params["model"] == "mlp"
    assert "train_loss" not in run.data.metrics and "test_accuracy" not in run.data.metrics  # ended in epoch 1


def test_models_lists_builtin_timm_and_torchvision():
    result = CliRunner().invoke(cli, ["models", "resnet1*"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert "resnet18" in lines and "tv:resnet18" in lines
    result = CliRunner().invoke(cli, ["models", "lenet*"])
    assert result.exit_code == 0 and "lenet5" in result.output.splitlines()
    result = CliRunner().invoke(cli, ["models", "nosuchmodel*"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: no model matches 'nosuchmodel*'"), result.stderr


def test_train_prints_summary_with_run_id_and_ui_command(store):
    result = invoke("--model", "softmax", "--epochs", "2", "--no-log-model", "--lr", "0.1", "--run-name", "quick")
    assert result.exit_code == 0, result.output
    (run,) = all_runs(store)
    assert run.info.status == "FINISHED" and run.info.run_name == "quick"
    assert f"run {run.info.run_id}" in result.output
    assert "test accuracy" in result.output and "mlflow ui" in result.output
    assert run.data.params["log_model"] == "False"


@pytest.mark.parametrize("args, given, applied", [
    (["--augment"], "true", "crop"),  # alone: the dataset's default, crops only for digits
    (["--augment", "crop,flip"], "crop,flip", "crop+flip"),
    (["--no-augment"], "none", "none"),
])
def test_train_records_the_augmentation_applied(store, args, given, applied):
    result = invoke("--model", "softmax", "--epochs", "1", "--no-log-model", *args)
    assert result.exit_code == 0, result.output + str(result.exception)
    (run,) = all_runs(store)
    assert run.data.params["augment"] == given and run.data.tags["augment.applied"] == applied


@pytest.mark.slow
@pytest.mark.parametrize("signum, code, name", [("SIGTERM", 143, "SIGTERM"), ("SIGINT", 130, "SIGINT (Ctrl-C)")])
def test_a_signal_mid_training_ends_the_run_killed_with_its_exit_status(tmp_path, signum, code, name):
    """`mlproject train` as Slurm or `docker stop` (SIGTERM) or a terminal (SIGINT) stops it:
    the run ends KILLED with the reason, exit 128 + the signal number, no traceback."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from mlflow.tracking import MlflowClient

    uri = new_mlflow_store(tmp_path)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}, "MLFLOW_TRACKING_URI": uri,
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", "from mlproject.app.cli import main; main()", "train",
                             "--model", "mlp", "--epochs", "1000", "--num-workers", "0", "--no-log-model"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    client = MlflowClient(uri)
    deadline, run = time.monotonic() + 180, None
    try:
        while time.monotonic() < deadline and run is None:  # poll until an epoch is logged: mid-training
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            exp = client.get_experiment_by_name("mlproject") if (tmp_path / "mlflow.db").exists() else None
            runs = client.search_runs([exp.experiment_id]) if exp else []
            run = next((r for r in runs if "val_accuracy" in r.data.metrics), None)
            time.sleep(0.05)
        assert run is not None, "no epoch logged within 180 s"
        proc.send_signal(getattr(signal, signum))
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err[-3000:]
    assert f"interrupted by {name}" in err and "Traceback" not in err
    ended = client.get_run(run.info.run_id)
    assert ended.info.status == "KILLED" and ended.data.tags["mlproject.failure"] == f"interrupted by {name}"


def test_train_records_system_metrics_and_leaves_no_sampler(store):
    """A `mlproject train` of a few seconds still gets CPU and memory samples (MLflow's sampler,
    with the samples it holds logged when the run ends), all before the run's end; no sampler
    thread outlives the run."""
    import threading

    result = invoke("--model", "softmax", "--epochs", "1", "--no-log-model")
    assert result.exit_code == 0, result.output
    (run,) = all_runs(store)
    for key in ("system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"):
        history = store.get_metric_history(run.info.run_id, key)
        assert history and all(m.timestamp <= run.info.end_time for m in history), key
    assert not [t for t in threading.enumerate() if t.name == "SystemMetricsMonitor"]


# what `--help` and bad input answer without: each takes seconds to import, on 2 cores
HEAVY = ("torch", "mlflow", "optuna", "sklearn")


def fresh(tmp_path, command, *args, absent: tuple[str, ...] = ()):
    """`command ARGS` (`mlproject` or `tune`) through its console-script entry point in a new
    interpreter, outside any `mlflow run`, with the packages `absent` unimportable (as when not
    installed); (the finished process, the HEAVY modules it had imported by its exit)."""
    import os
    import subprocess
    import sys

    module = "tune" if command == "tune" else "cli"
    code = ("import atexit, sys\n"
            + "".join(f"sys.modules[{m!r}] = None\n" for m in absent)
            + f"atexit.register(lambda: print('loaded:', *[m for m in {HEAVY!r} if m in sys.modules], file=sys.stderr))\n"
            + f"sys.argv = [{command!r}, *{list(args)!r}]\n"
            + f"from mlproject.app.{module} import main\n"
            + "main()\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=300)
    *err, last = proc.stderr.strip().splitlines()
    assert last.startswith("loaded:"), proc.stderr[-3000:]
    proc.stderr = "\n".join(err)
    return proc, last.split()[1:]


@pytest.mark.parametrize("command, args, shown", [
    ("mlproject", ["--help"], "Usage: mlproject [OPTIONS] COMMAND [ARGS]..."),
    ("mlproject", ["train", "--help"], "Usage: mlproject train [OPTIONS]"),
    ("tune", ["--help"], "Usage: tune [OPTIONS]"),
], ids=["mlproject", "train", "tune"])
def test_help_imports_no_torch_mlflow_optuna_or_sklearn(tmp_path, command, args, shown):
    proc, loaded = fresh(tmp_path, command, *args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(shown) and "--model" in proc.stdout and proc.stderr == ""
    assert loaded == []


@pytest.mark.parametrize("command, args, message, loaded", [
    ("mlproject", ["train", "--bogus"], "Error: No such option '--bogus'", []),
    ("tune", ["--bogus"], "Error: No such option '--bogus'", []),
    ("mlproject", ["train", "--lr", "0"], "Error: lr must be > 0 and a finite float32", []),
    ("tune", ["--lr", "5:1"], "Error: --lr '5:1': empty or inverted range (low 5 must be < high 1)", ["optuna"]),
    # timm (with torch) names the close matches; MLflow and scikit-learn still wait
    ("mlproject", ["train", "--model", "lenet6"], "Error: unknown model 'lenet6' (did you mean: lenet5", ["torch"]),
], ids=["train-unknown-option", "tune-unknown-option", "train-bad-lr", "tune-inverted-lr-range", "train-unknown-model"])
def test_bad_input_is_answered_before_the_heavy_imports_it_does_not_need(tmp_path, monkeypatch, command, args,
                                                                         message, loaded):
    monkeypatch.setenv("MLPROJECT_CACHE_DIR", str(tmp_path / "empty-cache"))  # no model names cached yet
    proc, imported = fresh(tmp_path, command, *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[-1].startswith(message), proc.stderr
    if "No such option" not in message:  # click's own errors come after its usage lines
        assert len(lines) == 1, proc.stderr
    assert imported == loaded
