"""`mlproject train` checkpoints and `--resume RUN_ID`, on a real MLflow store: a run stopped by a
real SIGTERM goes on in the same run and ends with the uninterrupted run's metrics exactly; where
checkpoints go (the run's artifacts, --checkpoint-dir) and when they are deleted; bad input to
--resume refused with one line, no run changed or created."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import tracking
from mlproject.app import experiment
from mlproject.app.cli import bool_flags_from_values, cli
from conftest import module_store

# softmax on digits: a run of 2 epochs trains in well under a second (20 batches an epoch, 5-10 ms
# in all on a fast machine: a period of 0.01 s wrote no checkpoint there); --checkpoint-every
# EVERY_BATCH writes one after every batch, whatever the machine (a batch takes far longer than 1 us)
EVERY_BATCH = "1e-6"
QUICK = ["--model", "softmax", "--epochs", "2", "--no-log-model", "--num-workers", "0", "--lr", "0.1"]


def invoke(*args):
    return CliRunner().invoke(cli, bool_flags_from_values(["train", *args]))


def all_runs(client):
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps) if exps else []


def the_run(client, result):
    """The run a `train` invocation reported."""
    line = next(line for line in result.output.splitlines() if line.startswith("run "))
    return client.get_run(line.split()[1])


def snapshot(client) -> dict:
    """Every run's status, end time, params, tags, latest metrics and artifacts: what must not change."""
    def artifacts(run_id, path=None):
        out = []
        for f in client.list_artifacts(run_id, path):
            out += artifacts(run_id, f.path) if f.is_dir else [(f.path, f.file_size)]
        return out

    return {r.info.run_id: (r.info.status, r.info.end_time, r.data.params, r.data.tags, r.data.metrics,
                            artifacts(r.info.run_id)) for r in all_runs(client)}


def steps(client, run_id, key):
    return [m.step for m in client.get_metric_history(run_id, key)]


def failed_run(client, monkeypatch, *args) -> str:
    """A run that trained every epoch (a checkpoint after every batch) and then FAILED, as on a
    full disk while recording its results: it keeps its checkpoint. Its id."""
    def broken(*a, **k):
        raise OSError("No space left on device")

    with monkeypatch.context() as m:
        m.setattr(experiment, "_results", broken)
        result = invoke(*QUICK, "--checkpoint-every", EVERY_BATCH, *args)
    assert result.exit_code == 1 and isinstance(result.exception, OSError), result.output
    (run,) = [r for r in all_runs(client) if r.info.status == "FAILED"][-1:]
    assert run.data.tags[tracking.CHECKPOINT_TAG]
    return run.info.run_id


# ------------------------------------------------------------------------------------------------
# a real SIGTERM, then --resume

# smallcnn on digits in batches of 32, one thread: about a second an epoch. A checkpoint every 0.2 s
# tags the run with its position (epoch, batch): the test signals once the tag says epoch 2, mid-epoch.
# Periodic checkpoints change nothing of the arithmetic (tests/test_checkpoint.py).
SLOW = ["--model", "smallcnn", "--epochs", "4", "--batch-size", "32", "--seed", "3", "--lr", "0.05",
        "--num-workers", "0", "--no-log-model", "--checkpoint-every", "0.2"]


@pytest.fixture
def one_thread():
    """torch on one thread in this process, as in the OMP_NUM_THREADS=1 process it goes on from:
    the same kernels, so the same arithmetic."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_a_run_killed_by_sigterm_mid_epoch_goes_on_in_the_same_run_and_ends_as_if_never_stopped(
        store, tmp_path, one_thread):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
           "MLFLOW_TRACKING_URI": os.environ["MLFLOW_TRACKING_URI"], "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", "from mlproject.app.cli import main; main()", "train", *SLOW],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, run_id = time.monotonic() + 300, None
    try:
        while time.monotonic() < deadline and run_id is None:  # a checkpoint of epoch 2: it is under way
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            run = next(iter(all_runs(store)), None)
            if run is not None and run.data.tags.get(tracking.CHECKPOINT_EPOCH_TAG) == "2":
                run_id = run.info.run_id
            time.sleep(0.02)
        assert run_id is not None, "no checkpoint of epoch 2 within 300 s"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err[-3000:]
    killed = store.get_run(run_id)
    assert killed.info.status == "KILLED" and killed.data.tags["mlproject.failure"] == "interrupted by SIGTERM"
    tags, logged = killed.data.tags, steps(store, run_id, "val_accuracy")
    assert tags[tracking.CHECKPOINT_TAG] == f"runs:/{run_id}/checkpoint/checkpoint.pt"
    stopped_in = logged[-1] + 1  # 2 (3 where epoch 2 ended before the signal came); the epoch under way
    assert logged == list(range(1, stopped_in)) and stopped_in <= 4, "the signal must come mid-training"
    assert tags[tracking.CHECKPOINT_EPOCH_TAG] == str(stopped_in) and int(tags[tracking.CHECKPOINT_BATCH_TAG]) >= 1
    print(f"SIGTERM: checkpoint at epoch {stopped_in}, batch {tags[tracking.CHECKPOINT_BATCH_TAG]}")  # -rP shows it
    assert [f.path for f in store.list_artifacts(run_id, "checkpoint")] == ["checkpoint/checkpoint.pt"]
    params_before = killed.data.params

    resumed = invoke("--resume", run_id, *SLOW)
    assert resumed.exit_code == 0, resumed.output + str(resumed.exception)
    assert f"run {run_id}" in resumed.output
    assert len(all_runs(store)) == 1  # no other run
    done = store.get_run(run_id)
    assert done.info.status == "FINISHED" and "mlproject.failure" not in done.data.tags
    assert done.data.params == params_before
    assert done.data.tags[tracking.RESUMED_AT_TAG] == f"epoch {stopped_in}, batch {tags[tracking.CHECKPOINT_BATCH_TAG]}"
    for key in ("val_accuracy", "train_loss", "val_loss", "lr", "epoch_time_s"):
        assert steps(store, run_id, key) == [1, 2, 3, 4], key  # one series, every epoch once
    assert store.list_artifacts(run_id, "checkpoint") == []  # FINISHED: deleted
    assert not any(t.startswith("mlproject.checkpoint") for t in done.data.tags)
    assert {f.path for f in store.list_artifacts(run_id, "figures")} >= {"figures/loss_accuracy.png"}
    assert len([d for d in store.get_run(run_id).inputs.dataset_inputs]) == 3  # train, validation, test: once

    fresh = invoke(*SLOW)
    assert fresh.exit_code == 0, fresh.output + str(fresh.exception)
    reference = the_run(store, fresh)
    for key in ("test_accuracy", "test_loss", "final_train_accuracy", "final_val_accuracy"):
        assert done.data.metrics[key] == reference.data.metrics[key], key
    for key in ("train_loss", "val_loss", "train_accuracy", "val_accuracy", "lr"):
        got = [m.value for m in store.get_metric_history(run_id, key)]
        assert got == [m.value for m in store.get_metric_history(reference.info.run_id, key)], key


# ------------------------------------------------------------------------------------------------
# where checkpoints go, and when they go away

@pytest.mark.parametrize("where", ["artifacts", "dir"])
@pytest.mark.parametrize("keep", [False, True], ids=["deleted", "kept"])
def test_checkpoints_are_written_where_asked_and_deleted_when_the_run_finishes_unless_kept(
        store, tmp_path, monkeypatch, where, keep):
    written = []
    store_checkpoint = tracking.store_checkpoint

    def spy(run_id, write, checkpoint_dir="", position=None):
        written.append(position)
        return store_checkpoint(run_id, write, checkpoint_dir, position)

    monkeypatch.setattr(tracking, "store_checkpoint", spy)
    ckpts = tmp_path / "ckpts"
    args = [*QUICK, "--checkpoint-every", EVERY_BATCH, *(["--checkpoint-dir", str(ckpts)] if where == "dir" else []),
            *(["--keep-checkpoints"] if keep else [])]
    result = invoke(*args)
    assert result.exit_code == 0, result.output + str(result.exception)
    run = the_run(store, result)
    run_id = run.info.run_id
    assert run.info.status == "FINISHED"
    assert len(written) >= 2 and {p["epoch"] for p in written} == {1, 2}, written  # periodic, both epochs
    artifacts = [f.path for f in store.list_artifacts(run_id, "checkpoint")]
    file = ckpts / run_id / "checkpoint.pt"
    if not keep:
        assert artifacts == [] and not (ckpts / run_id).exists()
        assert not any(t.startswith("mlproject.checkpoint") for t in run.data.tags)
        return
    location = run.data.tags[tracking.CHECKPOINT_TAG]
    last = written[-1]
    assert (run.data.tags[tracking.CHECKPOINT_EPOCH_TAG], run.data.tags[tracking.CHECKPOINT_BATCH_TAG]) == \
        (str(last["epoch"]), str(last["batch"]))
    if where == "dir":
        assert location == str(file) and file.is_file() and artifacts == []
    else:
        assert location == f"runs:/{run_id}/checkpoint/checkpoint.pt" and artifacts == ["checkpoint/checkpoint.pt"]
        assert not ckpts.exists()
    from mlproject.config import TrainConfig
    from mlproject.train import Checkpoint

    cfg = TrainConfig(model="softmax", epochs=2, lr=0.1, log_model=False, num_workers=0)  # QUICK
    path = tracking.fetch_checkpoint(tracking.stored_run(run_id), str(tmp_path / "down"))
    ckpt = Checkpoint.load(path, cfg)
    assert (ckpt.epoch, ckpt.batch) == (last["epoch"], last["batch"])


def test_a_failed_run_keeps_its_checkpoint_and_resumes_to_finished_without_logging_an_epoch_twice(
        store, monkeypatch, tmp_path):
    """A run FAILED after its last epoch was logged (a checkpoint from within that epoch): the epoch
    runs again from the checkpoint, its metrics are not sent again; the checkpoint, in
    --checkpoint-dir, is deleted once the run is FINISHED."""
    ckpts = tmp_path / "ckpts"
    run_id = failed_run(store, monkeypatch, "--checkpoint-dir", str(ckpts))
    assert (ckpts / run_id / "checkpoint.pt").is_file()
    assert steps(store, run_id, "val_accuracy") == [1, 2]
    result = invoke("--resume", run_id, *QUICK, "--checkpoint-every", EVERY_BATCH, "--checkpoint-dir", str(ckpts))
    assert result.exit_code == 0, result.output + str(result.exception)
    done = store.get_run(run_id)
    assert done.info.status == "FINISHED" and "mlproject.failure" not in done.data.tags
    for key in ("val_accuracy", "train_loss", "epoch_time_s"):
        assert steps(store, run_id, key) == [1, 2], key
    assert "test_accuracy" in done.data.metrics
    assert not (ckpts / run_id).exists()
    cpu = steps(store, run_id, "system/cpu_utilization_percentage")  # the sampler goes on after its last step
    assert len(cpu) >= 2 and cpu == sorted(set(cpu)), cpu


def test_a_cross_validated_run_resumes_too(store, monkeypatch):
    run_id = failed_run(store, monkeypatch, "--cv", "2")
    assert store.get_run(run_id).data.tags[tracking.CHECKPOINT_FOLD_TAG] == "3"  # the refit
    result = invoke("--resume", run_id, *QUICK, "--cv", "2")
    assert result.exit_code == 0, result.output + str(result.exception)
    done = store.get_run(run_id)
    assert done.info.status == "FINISHED" and done.data.metrics["cv_folds"] == 2
    for key in ("fold_1/val_accuracy", "fold_2/val_accuracy", "refit/train_loss", "val_accuracy"):
        assert steps(store, run_id, key) == [1, 2], key
    assert store.list_artifacts(run_id, "checkpoint") == []


def test_under_mlflow_run_its_own_run_points_to_the_run_resumed_and_ends_finished(store, monkeypatch):
    run_id = failed_run(store, monkeypatch)
    env_run = store.create_run(store.create_experiment("mlflow-run")).info.run_id  # as `mlflow run` makes it
    monkeypatch.setenv("MLFLOW_RUN_ID", env_run)
    result = invoke("--resume", run_id, *QUICK)
    assert result.exit_code == 0, result.output + str(result.exception)
    mine = store.get_run(env_run)
    assert mine.info.status == "FINISHED" and mine.data.tags[tracking.RESUMED_RUN_TAG] == run_id
    assert mine.data.metrics == {} and mine.data.params == {}
    assert store.get_run(run_id).info.status == "FINISHED"


def test_an_empty_resume_is_a_new_run(store):
    """MLproject passes `--resume ''` where -P resume is not given."""
    result = invoke("--resume", "", *QUICK)
    assert result.exit_code == 0, result.output + str(result.exception)
    assert len(all_runs(store)) == 1


# ------------------------------------------------------------------------------------------------
# bad input: exit 2, one line, nothing changed

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A store with a FAILED run that has a checkpoint, a FINISHED run, a RUNNING one and a KILLED
    one without checkpoint (the FAILED run's params): {kind: run id}, and the client."""
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    with module_store(tmp_path_factory, "resume-bad-input") as uri, pytest.MonkeyPatch.context() as mp:
        client = MlflowClient(uri)
        failed = failed_run(client, mp)
        finished = the_run(client, invoke(*QUICK)).info.run_id
        exp = client.get_run(failed).info.experiment_id
        running = client.create_run(exp).info.run_id
        bare = client.create_run(exp).info.run_id
        client.log_batch(bare, params=[Param(k, v) for k, v in client.get_run(failed).data.params.items()])
        client.set_terminated(bare, "KILLED")
        yield {"failed": failed, "finished": finished, "running": running, "bare": bare}, client


@pytest.mark.parametrize("target, args, message", [
    ("0123456789abcdef0123456789abcdef", [], "--resume 0123456789abcdef0123456789abcdef: no such run in sqlite:///"),
    ("finished", [], "the run is FINISHED; nothing to resume"),
    ("running", [], "the run is RUNNING: another process may be training it"),
    ("failed", ["--lr", "0.2"], "the run has --lr 0.1, this command has --lr 0.2; a resumed run keeps its options"),
    ("failed", ["--epochs", "3"], "the run has --epochs 2, this command has --epochs 3"),
    ("bare", [], "the run has no checkpoint"),
    ("failed", ["--checkpoint-every", "0"], "checkpoint every must be > 0 seconds, got 0.0"),
    ("failed", ["--checkpoint-every", "-5"], "checkpoint every must be > 0 seconds, got -5.0"),
    (None, ["--checkpoint-every", "0"], "checkpoint every must be > 0 seconds, got 0.0"),
], ids=["missing", "finished", "running", "other-lr", "other-epochs", "no-checkpoint", "every-0-resume", "every-neg",
        "every-0-new"])
def test_bad_resume_exits_2_with_one_line_and_changes_no_run(runs, target, args, message):
    ids, client = runs
    before = snapshot(client)
    resume = ["--resume", ids.get(target, target)] if target else []
    result = invoke(*resume, *QUICK, *args)
    assert result.exit_code == 2, result.output + str(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.stderr
    assert snapshot(client) == before


@pytest.mark.parametrize("where", ["artifacts", "dir"])
@pytest.mark.parametrize("damage", ["truncated", "deleted"])
def test_a_truncated_or_missing_checkpoint_is_refused_in_one_line_naming_it(store, monkeypatch, tmp_path, where,
                                                                               damage):
    args = ["--checkpoint-dir", str(tmp_path / "ckpts")] if where == "dir" else []
    run_id = failed_run(store, monkeypatch, *args)
    run = store.get_run(run_id)
    location = run.data.tags[tracking.CHECKPOINT_TAG]
    file = Path(location) if where == "dir" else \
        Path(run.info.artifact_uri.removeprefix("file://")) / "checkpoint" / "checkpoint.pt"
    data = file.read_bytes()
    if damage == "truncated":
        file.write_bytes(data[:len(data) // 2])
        said = f"Error: checkpoint {location}: cannot be read ("
    else:
        file.unlink()
        said = f"Error: checkpoint {location} of run {run_id} " + ("is not there" if where == "dir" else
                                                                    "cannot be downloaded: ")
    before = snapshot(store)
    result = invoke("--resume", run_id, *QUICK, *args)
    assert result.exit_code == 2, result.output + str(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(said), result.stderr
    assert snapshot(store) == before


def test_resume_is_checked_before_torch_loads(store, tmp_path):
    """Through the console-script entry point in a new interpreter (on this store: MLflow's default
    in the working directory): a FINISHED run is refused once MLflow answers, torch never loaded."""
    from test_cli import fresh

    run_id = store.create_run(store.create_experiment("e")).info.run_id
    store.set_terminated(run_id, "FINISHED")
    proc, loaded = fresh(tmp_path, "mlproject", "train", "--resume", run_id, "--model", "softmax")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [f"Error: --resume {run_id}: the run is FINISHED; nothing to resume"]
    assert loaded == ["mlflow"]
