"""tracking.runs: run status on every way out, params, batched epoch metrics, system metrics (real sqlite
store)."""
import dataclasses
import contextlib
import os
import threading
import time
from pathlib import Path

import mlflow
import pytest

import tracking


@pytest.fixture
def client(store):
    return store


class Stopped(Exception):
    mlflow_status = "KILLED"


@pytest.mark.parametrize("raised, status, reason", [
    (None, "FINISHED", None),
    (ValueError("bad"), "FAILED", "ValueError: bad"),
    (Stopped("pruned"), "KILLED", "Stopped: pruned"),
    (KeyboardInterrupt(), "KILLED", "interrupted (Ctrl-C)"),
])
def test_training_run_ends_with_a_status_and_reason(client, raised, status, reason):
    with pytest.raises(type(raised)) if raised else contextlib.nullcontext():
        with tracking.training_run("e", run_name="r", tags={"a": "1"}) as run:
            if raised:
                raise raised
    got = client.get_run(run.info.run_id)
    assert got.info.status == status and got.data.tags["a"] == "1"
    assert got.data.tags.get(tracking.FAILURE_TAG) == reason
    assert mlflow.active_run() is None


def test_a_signal_while_mlflow_creates_the_run_ends_it_killed_not_running(client, monkeypatch):
    """A real SIGTERM to this process inside mlflow.start_run, once the run is in the store (a
    worker signalled as its trial starts): Interrupted comes after start_run, and the run ends
    KILLED with the reason; the body never runs."""
    import signal

    from mlproject import signals

    handlers = {s: signal.getsignal(s) for s in signals.NAMES}
    real_start = mlflow.start_run

    def start_run(*args, **kwargs):
        run = real_start(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)  # handled now, before start_run returns
        return run

    monkeypatch.setattr(mlflow, "start_run", start_run)
    body = []
    signals.handle_signals()
    try:
        with pytest.raises(signals.Interrupted):
            with tracking.training_run("e", run_name="r"):
                body.append(1)
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
    assert not signals.pending() and body == []
    (run,) = client.search_runs([client.get_experiment_by_name("e").experiment_id])
    assert run.info.status == "KILLED" and run.data.tags[tracking.FAILURE_TAG] == "interrupted by SIGTERM"


def test_a_signal_inside_an_mlflow_call_in_the_run_is_raised_after_the_body_not_inside_the_call(client, monkeypatch):
    """A real SIGTERM inside the run's body, in the middle of an MLflow write (a worker signalled
    while it logs its trial's params): the write completes (raised inside SQLAlchemy, Interrupted
    could leave a SQLite transaction open, whose lock fails the clean-up), the body goes on to its
    end, and then Interrupted ends the run KILLED, not FINISHED."""
    import signal

    from mlflow.tracking import MlflowClient

    from mlproject import signals

    handlers = {s: signal.getsignal(s) for s in signals.NAMES}
    real_log_batch = MlflowClient.log_batch

    def log_batch(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # handled now, inside the call
        return real_log_batch(self, *args, **kwargs)

    body = []
    signals.handle_signals()
    try:
        with pytest.raises(signals.Interrupted):
            with tracking.training_run("e", run_name="r") as run:
                monkeypatch.setattr(MlflowClient, "log_batch", log_batch)
                tracking.log_params({"lr": 0.1})
                monkeypatch.setattr(MlflowClient, "log_batch", real_log_batch)
                body.append("after the params")
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
    assert not signals.pending() and body == ["after the params"]
    got = client.get_run(run.info.run_id)
    assert got.data.params == {"lr": "0.1"}
    assert got.info.status == "KILLED" and got.data.tags[tracking.FAILURE_TAG] == "interrupted by SIGTERM"


def test_child_runs_join_the_parents_experiment(client):
    parent = client.create_run(client.create_experiment("study")).info
    with tracking.training_run("another-experiment", parent_run_id=parent.run_id) as run:
        pass
    got = client.get_run(run.info.run_id)
    assert got.info.experiment_id == parent.experiment_id
    assert got.data.tags["mlflow.parentRunId"] == parent.run_id
    assert client.get_experiment_by_name("another-experiment") is None


def test_joins_the_run_mlflow_run_created(client, monkeypatch):
    created = client.create_run(client.create_experiment("x")).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", created)
    client.log_param(created, "lr", "1e-2")  # as `mlflow run -P lr=1e-2` logs it
    with tracking.training_run("ignored") as run:
        tracking.log_params({"lr": 0.01, "epochs": 3})
    assert run.info.run_id == created
    got = client.get_run(created)
    assert got.info.status == "FINISHED" and got.data.params == {"lr": "1e-2", "epochs": "3"}


def test_fail_env_run_marks_the_mlflow_run_run_failed(client, monkeypatch):
    created = client.create_run(client.create_experiment("x")).info.run_id
    tracking.fail_env_run("nothing to fail")  # standalone: no run, nothing happens
    monkeypatch.setenv("MLFLOW_RUN_ID", created)
    tracking.fail_env_run("lr must be > 0, got 0")
    got = client.get_run(created)
    assert got.info.status == "FAILED" and got.data.tags[tracking.FAILURE_TAG] == "lr must be > 0, got 0"


def test_metric_buffer_batches_short_epochs_and_flushes(client):
    run = client.create_run(client.create_experiment("m")).info.run_id
    buf = tracking.MetricBuffer(run, every_s=3600)
    for epoch in (1, 2, 3):
        buf.log({"loss": 1.0 / epoch, "acc": 0.1 * epoch}, step=epoch)
    assert client.get_metric_history(run, "loss") == []  # gathered, not sent yet
    buf.flush()
    assert [(m.step, m.value) for m in client.get_metric_history(run, "loss")] == [(1, 1.0), (2, 0.5), (3, 1 / 3)]
    live = tracking.MetricBuffer(run, every_s=0)
    live.log({"lr": 0.1}, step=1)  # every_s elapsed: sent at once
    assert [m.value for m in client.get_metric_history(run, "lr")] == [0.1]


def test_log_model_pins_requirements_and_ships_the_core_only(store):
    """The logged requirements are the installed versions, and the code beside the model is the
    training core without the application layer."""
    from importlib import metadata

    import numpy as np
    import torch

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3), torch.nn.Softmax(dim=1))
    mlflow.set_experiment("models")
    with mlflow.start_run():
        info = tracking.log_model(net, np.zeros((2, 1, 2, 2), np.float32), ["a", "b", "c"])
    reqs = open(mlflow.pyfunc.get_model_dependencies(info.model_uri)).read().split()
    assert f"torch=={metadata.version('torch').split('+')[0]}" in reqs
    assert f"mlflow=={metadata.version('mlflow')}" in reqs
    code = Path(mlflow.artifacts.download_artifacts(info.model_uri)) / "code"
    shipped = {p.relative_to(code).as_posix() for p in code.rglob("*.py")}
    assert {"mlproject/__init__.py", "mlproject/train.py", "mlproject/figures.py"} <= shipped
    assert not any(s.startswith("mlproject/app") for s in shipped), shipped


def test_warm_model_logging_fills_mlflows_package_map_in_the_background():
    """Pins the private MLflow function warm_model_logging relies on: it exists, and it builds the
    module -> package map that MLflow's requirement check needs (so the check is then quick)."""
    from mlflow.utils import requirements_utils

    assert callable(requirements_utils._init_packages_to_modules_map)
    tracking.warm_model_logging()
    scan = [t for t in threading.enumerate() if t.name == "mlflow-requirements-scan"]
    for t in scan:
        t.join(timeout=60)
    assert requirements_utils._MODULES_TO_PACKAGES is not None
    assert "torch" in requirements_utils._MODULES_TO_PACKAGES


def test_standalone_runs_get_distinct_readable_names(store):
    """MLflow's own generated names come from the `random` state training seeds: three runs with
    one seed got one name. Each now gets MODEL-DATASET-N, unique in its experiment."""
    from mlproject.app.experiment import run_training
    from mlproject.config import TrainConfig

    cfg = TrainConfig(model="softmax", epochs=1, num_workers=0, log_model=False, experiment="names")
    names = [store.get_run(run_training(c).run_id).info.run_name
             for c in (cfg, cfg, dataclasses.replace(cfg, run_name="mine"), dataclasses.replace(cfg, model="mlp"))]
    assert names == ["softmax-digits-1", "softmax-digits-2", "mine", "mlp-digits-1"]
    assert tracking.unique_run_name("names", "softmax-digits") == "softmax-digits-3"
    assert tracking.unique_run_name("no-such-experiment", "a'b") == "a-b-1"  # no quote reaches the filter


SAMPLED = ("system/cpu_utilization_percentage", "system/system_memory_usage_megabytes")


def samplers_alive() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "SystemMetricsMonitor" and t.is_alive()]


def system_history(client, run_id, key):
    return client.get_metric_history(run_id, key)


@pytest.mark.parametrize("raised, status", [
    (None, "FINISHED"), (ValueError("bad"), "FAILED"), (Stopped("pruned"), "KILLED"), (KeyboardInterrupt(), "KILLED"),
])
def test_system_metrics_are_sampled_and_the_sampler_stops_on_every_way_out(client, raised, status):
    """MLflow's sampler runs as a thread while the run does, and whichever way the run ends it is
    stopped first: its samples (a last step even in a run shorter than one) are logged before the
    run's end time, and no sampler thread is left."""
    with pytest.raises(type(raised)) if raised else contextlib.nullcontext():
        with tracking.training_run("e", run_name="r", system_metrics=True) as run:
            assert samplers_alive() == ["SystemMetricsMonitor"]
            if raised:
                raise raised
    got = client.get_run(run.info.run_id)
    assert got.info.status == status and mlflow.active_run() is None
    for key in SAMPLED:
        history = system_history(client, run.info.run_id, key)
        assert len(history) >= 1, key
        assert all(m.timestamp <= got.info.end_time for m in history), key  # nothing after the end
    assert all(m.value > 0 for m in system_history(client, run.info.run_id, "system/system_memory_usage_megabytes"))
    assert samplers_alive() == []


def test_runs_record_no_system_metrics_unless_asked(client):
    with tracking.training_run("e") as run:
        assert samplers_alive() == []
    assert not [k for k in client.get_run(run.info.run_id).data.metrics if k.startswith("system/")]


def test_the_first_cpu_sample_is_measured(client):
    """psutil measures CPU use since the calling thread's previous call; a new thread's first call
    compares two readings microseconds apart (0.0 or 100.0). One busy core of this machine over
    the first sample's 0.5 s: clearly above 0."""
    with tracking.training_run("e", system_metrics=True) as run:
        start = time.perf_counter()
        while time.perf_counter() - start < 0.8:
            pass
    (first, *_) = system_history(client, run.info.run_id, "system/cpu_utilization_percentage")
    assert first.step == 0 and first.value >= 100 / (os.cpu_count() or 1) / 2


def test_a_run_that_is_not_active_is_sampled_until_end_run_and_resumes_its_steps(client):
    """A study's parent: created with MlflowClient, never the active run. end_run stops its sampler
    before ending it; resumed, the sampler goes on after the last step."""
    parent = tracking.start_run("study", "study-s")
    with tracking.system_metrics(parent, resume=True):
        assert samplers_alive() == ["SystemMetricsMonitor"] and mlflow.active_run() is None
        tracking.end_run(parent, "KILLED")
        assert samplers_alive() == []  # stopped by end_run, before the run ended
    first = client.get_run(parent)
    steps = [m.step for m in system_history(client, parent, SAMPLED[0])]
    assert first.info.status == "KILLED" and steps == [0]
    assert all(m.timestamp <= first.info.end_time for m in system_history(client, parent, SAMPLED[1]))

    client.set_tag(parent, tracking.FAILURE_TAG, "interrupted by SIGTERM")
    tracking.resume_run(parent)
    resumed = client.get_run(parent)
    assert resumed.info.status == "RUNNING" and tracking.FAILURE_TAG not in resumed.data.tags  # failed no more
    with tracking.system_metrics(parent, resume=True):
        pass  # left without end_run (an unexpected exception): the `with` stops it
    assert samplers_alive() == []
    assert [m.step for m in system_history(client, parent, SAMPLED[0])] == [0, 1]
    tracking.end_run(parent, "FINISHED")


def test_system_metrics_recorded_elsewhere_means_running_and_sampled_lately(client):
    run = client.create_run(client.create_experiment("x")).info.run_id
    assert not tracking.system_metrics_recorded_elsewhere(run)  # RUNNING, never sampled
    client.log_metric(run, SAMPLED[0], 50.0, timestamp=int((time.time() - 3600) * 1000))
    assert not tracking.system_metrics_recorded_elsewhere(run)  # a `tune` killed an hour ago
    client.log_metric(run, SAMPLED[0], 50.0, step=1)
    assert tracking.system_metrics_recorded_elsewhere(run)  # another process samples it now
    client.set_terminated(run, "FINISHED")
    assert not tracking.system_metrics_recorded_elsewhere(run)


def test_what_the_sampler_relies_on_in_mlflow(client):
    """Pins MLflow's SystemMetricsMonitor (not in MLflow's API reference) as tracking.runs._sampler
    uses it: its arguments, the methods it overrides or calls, the stop event, the metric names."""
    import inspect

    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    params = inspect.signature(SystemMetricsMonitor).parameters
    assert {"run_id", "sampling_interval", "samples_before_logging", "resume_logging"} <= set(params)
    run = client.create_run(client.create_experiment("pin")).info.run_id
    monitor = SystemMetricsMonitor(run, sampling_interval=60)
    for name in ("start", "finish", "collect_metrics", "aggregate_metrics", "publish_metrics"):
        assert callable(getattr(monitor, name)), name
    assert hasattr(monitor._shutdown_event, "wait") and hasattr(monitor.mlflow_logger, "flush")
    monitor.collect_metrics()
    keys = {"system/" + k for k in monitor.aggregate_metrics()}
    assert set(SAMPLED) <= keys


def test_ending_a_run_whose_reason_another_process_is_writing_too_retries_once(client, monkeypatch):
    """Two workers ending the study's parent at once: the second insert of the new tag fails on the
    store's unique key (as MLflow's SQL store answers it, here raised by the first call); the
    retry updates the row, and the run ends with the reason."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    run_id = client.create_run(client.create_experiment("race")).info.run_id
    real, calls = MlflowClient.set_tag, []

    def set_tag(self, *args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            real(self, *args, **kwargs)  # the other process's insert...
            raise MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: tags.key, tags.run_uuid")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "set_tag", set_tag)
    tracking.end_run(run_id, "KILLED", "interrupted by SIGTERM")
    run = client.get_run(run_id)
    assert len(calls) == 2 and run.info.status == "KILLED"
    assert run.data.tags[tracking.FAILURE_TAG] == "interrupted by SIGTERM"


# Two processes resume the same ended run at the same instant (a barrier), ROUNDS runs in turn, as
# every worker of a requeued job array resumes the study's parent; prints what each resume did
RESUME_RACE = r"""
import multiprocessing as mp, sys
import tracking

def resumer(runs, start, out):
    for run_id in iter(runs.get, None):
        start.wait()
        try:
            tracking.resume_run(run_id)
            out.put("ok")
        except Exception as e:
            out.put(f"{type(e).__name__}: {e}")

if __name__ == "__main__":
    from mlflow.tracking import MlflowClient
    client, rounds = MlflowClient(), int(sys.argv[1])
    experiment = client.create_experiment("resumed-at-once")
    start, out = mp.Barrier(2), mp.Queue()
    queues = [mp.Queue(), mp.Queue()]
    racers = [mp.Process(target=resumer, args=(q, start, out)) for q in queues]
    for p in racers:
        p.start()
    for _ in range(rounds):
        run_id = client.create_run(experiment).info.run_id
        tracking.end_run(run_id, "KILLED", "interrupted by SIGTERM")
        for q in queues:
            q.put(run_id)
        print(out.get(), out.get(), client.get_run(run_id).info.status,
              tracking.FAILURE_TAG in client.get_run(run_id).data.tags, flush=True)
    for q in queues:
        q.put(None)
    for p in racers:
        p.join()
"""


def test_two_processes_resuming_one_run_at_once_both_succeed(store, tmp_path):
    """The failure tag's check-then-delete raced: the later delete found no tag in 7 of 10 rounds
    ('No tag with name: mlproject.failure'), and that worker of the job array failed."""
    import subprocess
    import sys

    (tmp_path / "race.py").write_text(RESUME_RACE)
    done = subprocess.run([sys.executable, str(tmp_path / "race.py"), "10"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == ["ok ok RUNNING False"] * 10, done.stdout
    assert "Traceback" not in done.stderr and "SAWarning" not in done.stderr, done.stderr[-3000:]
