"""`tune` survives what happens to real studies: a worker SIGKILLed mid-trial, Ctrl-C, two local
workers on the default SQLite storage. (`--trials` as the study's total over invocations:
test_tune.py's storage-kinds test, in process.)

Every test runs the `tune` console script as a subprocess in its own directory, with its own
MLflow store (sqlite:///<tmp>/mlflow.db) and the default Optuna storage (sqlite:///optuna.db
there), and reads the results back with Optuna and MlflowClient.
"""
from __future__ import annotations

import collections
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from conftest import new_mlflow_store

pytestmark = pytest.mark.slow

CHEAP = ["--model", "softmax", "--dataset", "digits", "--num-workers", "0", "--pruner", "none"]
# a trial long enough (about 0.01 s an epoch on an idle machine, 0.1 s on a busy one) to be caught
# mid-training and stopped
LONG_EPOCHS = 60
LONG = [*CHEAP, "--epochs", str(LONG_EPOCHS)]
SHORT = [*CHEAP, "--epochs", "1"]
RUN_TIMEOUT_S = 300  # one invocation, generous for a loaded 2-core machine; never reached when green
WAIT_TIMEOUT_S = 180  # for a trial to be RUNNING, or for the process to end after a signal
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def tune_command() -> list[str]:
    """The console script of `pip install -e .` (a Python script: its process is the Python process
    that signals reach), else the same entry point through this interpreter."""
    script = Path(sys.executable).with_name("tune")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from mlproject.app.tune import main; main()"]


_started: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def no_tune_left_behind():
    """A test that fails between starting `tune` and stopping it leaves no process running."""
    yield
    while _started:
        proc = _started.pop()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class Tune:
    """`tune` in one directory: run it, start it in the background, read its study and runs."""

    def __init__(self, cwd: Path):
        self.cwd = cwd
        self.uri = new_mlflow_store(cwd)
        self.storage = f"sqlite:///{cwd}/optuna.db"
        self.client = MlflowClient(self.uri)
        env = {k: v for k, v in os.environ.items()
               if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID")}
        # one torch thread: 2 threads on 2 busy cores make epochs 10-30x slower
        # PYTHONFAULTHANDLER: a tune that hangs shows every thread's stack when wait_exit aborts it
        env.update(MLFLOW_TRACKING_URI=self.uri, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   PYTHONFAULTHANDLER="1")
        self.env = env
        self.n = 0

    def _logs(self):
        self.n += 1
        return self.cwd / f"out{self.n}.txt", self.cwd / f"err{self.n}.txt"

    def run(self, *args: str) -> tuple[int, str, str]:
        out, err = self._logs()
        with open(out, "w") as o, open(err, "w") as e:
            proc = subprocess.run([*tune_command(), *args], cwd=self.cwd, env=self.env, stdout=o, stderr=e,
                                  timeout=RUN_TIMEOUT_S)
        return proc.returncode, out.read_text(), err.read_text()

    def start(self, *args: str) -> subprocess.Popen:
        """In its own session, so that killpg reaches tune and nothing else (Ctrl-C in a terminal
        signals the foreground process group the same way), with SIGINT's default action: a
        suite started in the background (`cmd &` in a script) inherits SIGINT ignored, and Python
        then never raises KeyboardInterrupt (seen: the Ctrl-C tests' study ran to its end)."""
        out, err = self._logs()
        with open(out, "w") as o, open(err, "w") as e:
            proc = subprocess.Popen([*tune_command(), *args], cwd=self.cwd, env=self.env, stdout=o, stderr=e,
                                    start_new_session=True,
                                    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        proc.err_path = err
        _started.append(proc)
        return proc

    def study(self, name: str) -> optuna.Study:
        return optuna.load_study(study_name=name, storage=self.opened_storage())

    def opened_storage(self):
        """self.storage opened as `tune` (in self.cwd) opens it: a journal:PATH is no SQLAlchemy
        URL, and a relative PATH is in self.cwd."""
        from tuning.study import create_storage

        if not self.storage.startswith("journal:"):
            return self.storage
        return create_storage(f"journal:{self.cwd / self.storage[len('journal:'):]}")

    def runs(self):
        exp = self.client.get_experiment_by_name("mlproject")
        return self.client.search_runs([exp.experiment_id], max_results=1000) if exp else []

    def parents_children(self):
        runs = self.runs()
        parents = [r for r in runs if r.data.tags.get("mlproject.role") == "study"]
        children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
        return parents, children

    def wait_mid_training(self, proc: subprocess.Popen, name: str) -> str:
        """Poll (bounded) until a trial of study `name` is RUNNING with its MLflow run started and
        has reported its first epochs but not yet half of them (so that a signal sent right away
        lands mid-training); returns its run id. Polls Optuna's storage, where every epoch is
        reported at once (MLflow gets an epoch's metrics in batches, up to a second later)."""
        deadline = time.monotonic() + WAIT_TIMEOUT_S
        storage = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"tune exited ({proc.returncode}) before a trial was caught running:\n"
                            + proc.err_path.read_text()[-3000:])
            if storage is None and self.runs():  # the parent run exists: so do the Optuna tables and study
                storage = optuna.storages.RDBStorage(self.storage)
            if storage is not None:
                for t in optuna.load_study(study_name=name, storage=storage).get_trials(
                        deepcopy=False, states=(TrialState.RUNNING,)):
                    if t.user_attrs.get("mlflow_run_id") and 1 <= len(t.intermediate_values) <= LONG_EPOCHS // 2:
                        return t.user_attrs["mlflow_run_id"]
            time.sleep(0.02)
        pytest.fail(f"no trial was caught mid-training within {WAIT_TIMEOUT_S} s")

    def trial_of_run(self, name: str, run_id: str):
        """The Optuna trial whose MLflow run is run_id (its user attr mlflow_run_id)."""
        (trial,) = [t for t in self.study(name).trials if t.user_attrs.get("mlflow_run_id") == run_id]
        return trial


def wait_exit(proc: subprocess.Popen, timeout: float = WAIT_TIMEOUT_S) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGABRT)  # faulthandler (PYTHONFAULTHANDLER) writes where each thread is
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"tune did not exit within {timeout} s; its stacks then:\n" + proc.err_path.read_text()[-6000:])


def by_trial_number(children) -> dict[int, list]:
    out = collections.defaultdict(list)
    for r in children:
        out[int(r.data.tags["optuna.trial_number"])].append(r)
    return out


def assert_consistent(tune: Tune, study: optuna.Study, parent_id: str, n_finished: int) -> None:
    """exactly n_finished COMPLETE/PRUNED trials, each with exactly one child run of the right
    status under `parent_id`, the only parent run; no run left RUNNING; no trial number twice."""
    trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == n_finished, [(t.number, t.state.name) for t in trials]
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    parents, children = tune.parents_children()
    assert [p.info.run_id for p in parents] == [parent_id]
    assert not [r.info.run_id for r in tune.runs() if r.info.status == "RUNNING"]
    assert all(c.data.tags["mlflow.parentRunId"] == parent_id for c in children)
    runs_of = by_trial_number(children)
    assert all(len(rs) == 1 for rs in runs_of.values()), {n: len(rs) for n, rs in runs_of.items()}
    for t in finished:
        (run,) = runs_of[t.number]
        assert run.info.run_id == t.user_attrs["mlflow_run_id"]
        want = "FINISHED" if t.state == TrialState.COMPLETE else "KILLED"
        assert run.info.status == want, (t.number, t.state.name, run.info.status)


def test_sigkill_mid_trial_then_rerun_resumes_the_same_study_and_parent(tmp_path):
    tune = Tune(tmp_path)
    args = [*LONG, "--trials", "4", "--grace-period", "6", "--study-name", "k"]
    proc = tune.start(*args)
    child_id = tune.wait_mid_training(proc, "k")
    os.killpg(proc.pid, signal.SIGKILL)  # the whole session: tune's Python process, nothing survives
    assert proc.wait(timeout=30) == -signal.SIGKILL

    # the kill left the trial RUNNING in Optuna and its run RUNNING in MLflow: the rerun must close both
    trial = tune.trial_of_run("k", child_id)
    assert trial.state == TrialState.RUNNING
    child = tune.client.get_run(child_id)
    assert child.info.status == "RUNNING"
    parent_before = tune.study("k").user_attrs["mlflow_parent_run_id"]
    assert child.data.tags["mlflow.parentRunId"] == parent_before

    code, out, err = tune.run(*args)
    assert code == 0, err[-3000:]
    assert "database is locked" not in err

    study = tune.study("k")
    assert study.user_attrs["mlflow_parent_run_id"] == parent_before
    assert_consistent(tune, study, parent_before, n_finished=4)
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) >= 1
    killed = study.trials[trial.number]
    assert killed.state == TrialState.FAIL
    run = tune.client.get_run(child_id)
    assert run.info.status == "KILLED"
    assert run.data.tags.get("mlproject.failure")
    assert run.data.tags.get("optuna.state") == "FAIL"
    # the killed trial was re-run (RetryHeartbeatStaleTrialCallback) with its sampled values
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == trial.number]
    assert len(retries) == 1 and retries[0].state in FINISHED
    assert retries[0].params == killed.params
    # the resumed invocation did not replay the killed one's random stream
    finished = [t for t in study.trials if t.state in FINISHED]
    assert len({tuple(sorted(t.params.items())) for t in finished}) == 4
    assert tune.client.get_run(parent_before).info.status == "FINISHED"


# (signal, sent to, workers, exit status): Ctrl-C in a terminal signals the foreground process
# group; Slurm's, Kubernetes' and `docker stop`'s SIGTERM may reach the main process alone, which
# passes it on to its workers
INTERRUPTIONS = {
    "ctrl-c": (signal.SIGINT, "group", 1, 130),
    "sigterm": (signal.SIGTERM, "main", 1, 143),
    "sigterm-2-workers": (signal.SIGTERM, "main", 2, 143),
}


# each interrupted study in one test process, where both tests that read it run (module-scoped)
@pytest.fixture(scope="module", params=[pytest.param(name, marks=pytest.mark.xdist_group(f"interrupted-{name}"))
                                        for name in INTERRUPTIONS])
def interrupted(request, tmp_path_factory):
    """A study interrupted mid-trial (shared by the tests of what an interruption leaves behind)."""
    signum, target, workers, expected = INTERRUPTIONS[request.param]
    tune = Tune(tmp_path_factory.mktemp(request.param))
    args = [*LONG, "--trials", "2", "--study-name", "c", "--workers", str(workers)]
    proc = tune.start(*args)
    child_id = tune.wait_mid_training(proc, "c")
    start = time.monotonic()
    if target == "group":
        os.killpg(proc.pid, signum)
    else:
        os.kill(proc.pid, signum)
    code = wait_exit(proc, timeout=60)
    trial = tune.trial_of_run("c", child_id)
    parent = tune.study("c").user_attrs["mlflow_parent_run_id"]
    took_s = time.monotonic() - start
    # as the interruption left it (the first test below resumes the study)
    left = (trial, tune.client.get_run(child_id).data.tags)
    return (tune, args, trial, child_id, parent, code, proc.err_path.read_text(), (signum, expected, took_s), left)


def test_an_interruption_ends_trials_and_parent_killed_and_the_rerun_resumes(interrupted):
    tune, args, trial, child_id, parent, code, err, (signum, expected, took_s), _ = interrupted
    name = "SIGTERM" if signum == signal.SIGTERM else "SIGINT (Ctrl-C)"
    assert code == expected, err[-3000:]
    assert f"interrupted by {name}" in err and "Traceback" not in err
    assert took_s < 30  # "within a few seconds" on a loaded 2-core machine, workers included

    run = tune.client.get_run(child_id)
    assert run.info.status == "KILLED"
    assert run.data.tags.get("mlproject.failure") == f"interrupted by {name}"
    assert tune.client.get_run(parent).info.status == "KILLED"
    assert tune.client.get_run(parent).data.tags.get("mlproject.failure") == f"interrupted by {name}"
    assert not [r.info.run_id for r in tune.runs() if r.info.status == "RUNNING"]
    trials = tune.study("c").trials
    assert trials[trial.number].state == TrialState.FAIL
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]  # every worker's trial ended

    code, out, err = tune.run(*args)
    assert code == 0, err[-3000:]
    study = tune.study("c")
    assert study.user_attrs["mlflow_parent_run_id"] == parent
    assert_consistent(tune, study, parent, n_finished=2)
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 2
    assert tune.client.get_run(parent).info.status == "FINISHED"
    assert "mlproject.failure" not in tune.client.get_run(parent).data.tags  # the interruption's, gone
    # the interrupted trial went on from its checkpoint, in its own run (test below: exactly)
    (again,) = [t for t in study.trials if t.user_attrs.get("resumes_trial") == trial.number]
    assert again.state == TrialState.COMPLETE and again.params == trial.params
    run = tune.client.get_run(child_id)
    assert run.info.status == "FINISHED" and run.data.tags["optuna.resumed_trials"] == str(trial.number)
    assert run.data.tags["optuna.trial_number"] == str(again.number) and "mlproject.resumed_at" in run.data.tags
    assert f"trial {again.number} goes on with trial {trial.number} from its checkpoint" in err


def test_an_interrupted_trial_run_is_tagged_failed_not_running(interrupted):
    trial, tags = interrupted[-1]
    assert trial.state == TrialState.FAIL and tags.get("optuna.state") == "FAIL"
    assert trial.user_attrs["checkpoint"] == tags["mlproject.checkpoint"]  # written on the signal


def live_processes_in_group(pgid: int) -> list[str]:
    """Command lines of the processes of process group `pgid` still running (a zombie has ended:
    where PID 1 does not reap orphans, as in some containers, zombies stay in the group)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        with contextlib.suppress(ProcessLookupError, psutil.Error):
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(" ".join(proc.info["cmdline"] or [])[:200])
    return found


@pytest.mark.parametrize("storage", [None, "journal:optuna.log"], ids=["default-sqlite", "journal"])
def test_two_workers_on_one_local_storage(tmp_path, storage):
    """--workers 2 on the default storage (sqlite:///optuna.db) and on a journal file, each named
    relative to the working directory that the worker processes share.

    First, on the default storage, a dataset that is not there: the workers' fork server starts
    before the data loads (its imports run beside the parent's), yet `tune` still exits 2 with one
    line before any study or run, and takes the server with it (else it would import for seconds
    more, for nothing)."""
    tune = Tune(tmp_path)
    extra = []
    if storage:
        tune.storage, extra = storage, ["--storage", storage]
    else:
        missing = tmp_path / "nowhere"
        refused = tune.start(*SHORT, "--trials", "2", "--workers", "2", "--dataset", str(missing))
        assert refused.wait(timeout=RUN_TIMEOUT_S) == 2
        assert refused.err_path.read_text().strip().splitlines() == [f"Error: ImageFolder directory not found: {missing}"]
        assert tune.runs() == [] and not (tmp_path / "optuna.db").exists()
        deadline = time.monotonic() + 30  # the server killed; multiprocessing's resource tracker ends on EOF
        while (left := live_processes_in_group(refused.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert left == [], left
    code, out, err = tune.run(*SHORT, "--trials", "6", "--workers", "2", "--study-name", "w", *extra)
    assert code == 0, err[-3000:]
    assert "database is locked" not in err.lower()
    # the storage asked for, in the working directory, and no other
    assert (tmp_path / "optuna.db").exists() == (storage is None)
    assert (tmp_path / "optuna.log").exists() == (storage is not None)
    # the workers' claims (parent run, best model) left no marker study beside the user's
    assert optuna.get_all_study_names(tune.opened_storage()) == ["w"]

    study = tune.study("w")
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 6
    parent = study.user_attrs["mlflow_parent_run_id"]
    assert_consistent(tune, study, parent, n_finished=6)
    _, children = tune.parents_children()
    finished_runs = sorted(int(c.data.tags["optuna.trial_number"]) for c in children if c.info.status == "FINISHED")
    assert finished_runs == sorted(t.number for t in complete)
    # each run names the worker process that ran it: the two workers, on this host
    workers = {c.data.tags["mlproject.worker"] for c in children}
    assert len(workers) == 2 and {w.rpartition(":")[0] for w in workers} == {socket.gethostname()}, workers
    # both workers really ran trials, each from its own random stream: no two trials drew the same values
    assert len({tuple(sorted(t.params.items())) for t in complete}) == 6
    assert len({t.params["lr"] for t in complete}) == 6
    assert tune.client.get_run(parent).info.status == "FINISHED"

    # no trial failed (a surplus trial, asked for by two workers at once, is failed untrained by design)
    failed = [t for t in study.trials if t.state == TrialState.FAIL and not t.user_attrs.get("surplus")]
    reasons = [t.user_attrs.get("fail_reason", "") for t in failed]
    assert not failed, reasons  # e.g. "UNIQUE constraint failed: datasets": log_dataset retries that race


# ------------------------------------------------------------------------------------------------
# an interrupted trial goes on from its checkpoint, to what an uninterrupted trial ends with (in
# process: `tune` through click, a real SIGTERM to this process from inside a training step)

RESUMED = ["--model", "mlp", "--dataset", "digits", "--num-workers", "0", "--epochs", "3", "--batch-size", "64",
           "--lr", "0.01:0.2", "--trials", "1", "--no-log-model"]


@pytest.fixture
def in_process(store, monkeypatch):
    """`tune` in this process (its signal handlers put back after the test), the weights each
    trial ended with (experiment._results sees them), and `interrupt(call, epoch, batch)`: the
    next invocation gets a SIGTERM in training step `batch` of `epoch` of its `call`-th fit (with
    --cv: a fit per fold, then the refit)."""
    import torch
    from click.testing import CliRunner

    from mlproject import signals, train
    from mlproject.app import experiment
    from mlproject.app.tune import tune, tune_args

    handlers = {s: signal.getsignal(s) for s in signals.NAMES}
    weights, plan = [], {}
    real_fit, real_results = train.fit, experiment._results

    def results(cfg, prepared, *args, **kwargs):
        weights.append({k: v.detach().clone() for k, v in prepared.trained[0].state_dict().items()})
        return real_results(cfg, prepared, *args, **kwargs)

    def fit(model, data, cfg, device, on_epoch=None, **kwargs):
        plan["calls"] = plan.get("calls", 0) + 1
        if plan.get("call") != plan["calls"]:
            return real_fit(model, data, cfg, device, on_epoch=on_epoch, **kwargs)
        epochs, steps = [], []

        def counted(stats):
            epochs.append(stats.epoch)
            if on_epoch is not None:
                on_epoch(stats)

        def step(module, args):
            if module.training and len(epochs) == plan["epoch"] - 1:
                steps.append(1)
                if len(steps) == plan["batch"]:
                    os.kill(os.getpid(), signal.SIGTERM)  # handled now: fit checkpoints after this batch

        hook = model.net.register_forward_pre_hook(step)  # the loop calls the network itself
        try:
            return real_fit(model, data, cfg, device, on_epoch=counted, **kwargs)
        finally:
            hook.remove()

    monkeypatch.setattr(experiment, "_results", results)
    monkeypatch.setattr(experiment, "fit", fit)
    monkeypatch.setattr(train, "fit", fit)  # cross_validate's

    def run(*args):
        result = CliRunner().invoke(tune, tune_args(list(args)))
        plan.clear()
        return result

    def interrupt(call, epoch, batch):
        plan.update(call=call, epoch=epoch, batch=batch)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same kernels for every run of the test: the same arithmetic
    yield run, interrupt, weights
    torch.set_num_threads(threads)
    for s, handler in handlers.items():
        signal.signal(s, handler)
    assert not signals.pending()


@pytest.mark.parametrize("cv", [0, 2], ids=["plain", "cv-fold-2"])
def test_an_interrupted_trial_goes_on_from_its_checkpoint_and_ends_as_if_never_stopped(store, in_process, cv):
    import torch

    run, interrupt, weights = in_process
    args = [*RESUMED, *(["--cv", str(cv)] if cv else [])]
    # plain: epoch 2, batch 3; --cv 2: fold 2's epoch 2, batch 3
    interrupt(call=2 if cv else 1, epoch=2, batch=3)
    stopped = run(*args, "--study-name", "a")
    assert stopped.exit_code == 143, stopped.output + repr(stopped.exception)
    (trial,) = optuna.load_study(study_name="a", storage="sqlite:///optuna.db").trials
    run_id = trial.user_attrs["mlflow_run_id"]
    assert trial.state == TrialState.FAIL and trial.user_attrs["checkpoint"] == f"runs:/{run_id}/checkpoint/checkpoint.pt"
    killed = store.get_run(run_id)
    assert killed.info.status == "KILLED"
    position = {"mlproject.checkpoint_epoch": "2", "mlproject.checkpoint_batch": "3"}
    if cv:
        position["mlproject.checkpoint_fold"] = "2"
    assert {k: killed.data.tags.get(k) for k in position} == position
    assert list(trial.intermediate_values) == [1]  # epoch 1 (with --cv: fold 1) reported before the signal

    resumed = run(*args, "--study-name", "a")
    assert resumed.exit_code == 0, resumed.output + repr(resumed.exception)
    where = "epoch 2, batch 3" + (", fold 2" if cv else "")
    assert f"trial 1 goes on with trial 0 from its checkpoint ({where}; run {run_id})" in resumed.output
    study = optuna.load_study(study_name="a", storage="sqlite:///optuna.db")
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    again = study.trials[1]
    assert again.params == trial.params and again.user_attrs["resumes_trial"] == 0
    assert again.user_attrs["mlflow_run_id"] == run_id  # one run: the interrupted one, gone on
    done = store.get_run(run_id)
    assert done.info.status == "FINISHED" and "mlproject.failure" not in done.data.tags
    assert done.data.tags["optuna.trial_number"] == "1" and done.data.tags["optuna.resumed_trials"] == "0"
    assert done.data.tags["mlproject.resumed_at"] == where and done.data.tags["optuna.state"] == "COMPLETE"
    assert store.list_artifacts(run_id, "checkpoint") == []  # FINISHED: deleted
    assert not any(t.startswith("mlproject.checkpoint") for t in done.data.tags)

    reference_run = run(*args, "--study-name", "b")  # the same trial, never stopped
    assert reference_run.exit_code == 0, reference_run.output + repr(reference_run.exception)
    (reference,) = optuna.load_study(study_name="b", storage="sqlite:///optuna.db").trials
    assert reference.params == again.params
    assert again.intermediate_values == reference.intermediate_values  # what the pruner judged
    assert again.value == reference.value
    ref = store.get_run(reference.user_attrs["mlflow_run_id"])
    for key in ("test_accuracy", "test_loss", "final_train_accuracy", "final_val_accuracy"):
        assert done.data.metrics[key] == ref.data.metrics[key], key
    series = ["train_loss", "val_loss", "train_accuracy", "val_accuracy", "lr"]
    if cv:
        series += ["fold_1/val_loss", "fold_2/train_loss", "fold_2/val_accuracy", "refit/train_loss"]
    for key in series:
        got = [(m.step, m.value) for m in store.get_metric_history(run_id, key)]
        assert got == [(m.step, m.value) for m in store.get_metric_history(ref.info.run_id, key)], key
        assert [s for s, _ in got] == [1, 2, 3], key  # one unbroken series, each epoch once
    resumed_weights, reference_weights = weights[-2], weights[-1]
    assert resumed_weights.keys() == reference_weights.keys()
    assert all(torch.equal(resumed_weights[k], reference_weights[k]) for k in resumed_weights)


def test_a_checkpoint_that_cannot_be_read_is_one_line_and_the_trial_starts_from_epoch_1(store, in_process):
    run, interrupt, _ = in_process
    args = [*RESUMED, "--epochs", "2", "--study-name", "t"]
    interrupt(call=1, epoch=2, batch=3)
    assert run(*args).exit_code == 143
    (trial,) = optuna.load_study(study_name="t", storage="sqlite:///optuna.db").trials
    run_id = trial.user_attrs["mlflow_run_id"]
    path = Path(store.get_run(run_id).info.artifact_uri.removeprefix("file://")) / "checkpoint" / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:1000])  # a copy cut short

    result = run(*args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    (line,) = [line for line in result.output.splitlines() if line.startswith("trial 1: ")]
    assert line.startswith(f"trial 1: checkpoint runs:/{run_id}/checkpoint/checkpoint.pt: cannot be read (")
    assert line.endswith("; it starts from epoch 1 instead of going on with trial 0")
    study = optuna.load_study(study_name="t", storage="sqlite:///optuna.db")
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]  # not enqueued again
    again = study.trials[1]
    assert again.params == trial.params and again.user_attrs["mlflow_run_id"] != run_id  # a run of its own
    fresh = store.get_run(again.user_attrs["mlflow_run_id"])
    assert fresh.info.status == "FINISHED" and "mlproject.resumed_at" not in fresh.data.tags
    assert [m.step for m in store.get_metric_history(fresh.info.run_id, "val_accuracy")] == [1, 2]
    assert store.get_run(run_id).info.status == "KILLED"
