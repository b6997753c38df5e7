"""Outages under a running study (issue 13 item 2): `tune` workers log to a real `mlflow server`
and share a real PostgreSQL Optuna storage, as in docs/scaling-out.md (tests/test_tune_distributed.py),
and the servers go away mid-study.

- The tracking server stopped for 12 s and started again (same port, same backend store), then
  PostgreSQL stopped and started again: MLflow's HTTP retries and the storage's own
  (tuning.study.ReconnectingRDBStorage) carry the workers through; the study ends with exactly
  --trials finished trials, one child run per finished trial under one parent, no run RUNNING.
- An outage that outlasts the retries (lowered here through MLflow's environment variables and
  MLPROJECT_STORAGE_RETRY_S, so that the test is quick): the worker exits 75 with one line naming
  the unreachable server (its URL without the password), and the same command, run again once the
  server is back, resumes the study to the same end state; the run left open is ended KILLED.

The outages' durations are the scenarios themselves (time.sleep); everything else polls for a
state with a bounded deadline (servers.wait_for).
"""
from __future__ import annotations

import collections
import socket
import subprocess
import time
from pathlib import Path

import pytest

import servers
from test_tune_distributed import (CHEAP, PARENT_ATTR, PASSWORD, Worker, describe, parent_run_stored,  # noqa: F401
                                   postgres, runs_in, stop, tune_command, wait_all, worker_env)

# one test process: the module's servers are stopped and started by its tests
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("outage")]

# MLflow's default retries (after 0, 4, 8, 16, ... s: about 4 min) carry a worker through this: the
# 3rd retry lands after the server is back, so the test proves retries, not one lucky attempt
MLFLOW_OUTAGE_S = 12  # the tracking server is down this long (plus its own start)
POSTGRES_OUTAGE_S = 5  # PostgreSQL is down this long: within the storage's default 45 s of retries
WORKER_TIMEOUT_S = 600  # a whole study with its outages on 2 busy cores; never reached when green
EXIT_UNREACHABLE = 75  # tuning.runner.EXIT_UNREACHABLE (sysexits' EX_TEMPFAIL)
# a trial long enough to be caught mid-training (0.01-0.1 s an epoch, idle to busy)
MID_TRIAL = ["--epochs", "40"]
# MLflow gives up after 2 retries, 0 + 2 s apart (defaults: 7 retries, about 4 minutes)
QUICK_MLFLOW = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0"}
QUICK_STORAGE_S = 4  # MLPROJECT_STORAGE_RETRY_S for the storage that stays away (default 45)


# ---------------------------------------------------------------------------------- servers

@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    """An `mlflow server` the tests stop and start again (servers.MlflowServer.start_again: the
    same port and backend store); started at once so that it boots while PostgreSQL does."""
    server = servers.MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def tracking_up(tracking) -> servers.MlflowServer:
    """The server, up (started again if a test before left it stopped)."""
    if tracking.proc.poll() is not None:
        tracking.start_again()
    t = time.monotonic()
    tracking.wait_ready(180)
    print(f"\nmlflow server up ({time.monotonic() - t:.1f} s waited)")
    return tracking


# ---------------------------------------------------------------------------------- workers

def start_tune(args: list[str], cwd: Path, env: dict | None = None) -> Worker:
    """test_tune_distributed.start_tune, with extra environment variables."""
    cwd.mkdir(parents=True, exist_ok=True)
    out, err = cwd / "stdout.txt", cwd / "stderr.txt"
    with open(out, "ab") as o, open(err, "ab") as e:  # appended: a rerun in the same directory
        proc = subprocess.Popen([*tune_command(), *args], cwd=cwd, env={**worker_env(), **(env or {})},
                                stdout=o, stderr=e, stdin=subprocess.DEVNULL)
    return Worker(proc, out, err)


def rerun(args: list[str], cwd: Path, name: str) -> tuple[int | None, str]:
    """The same command again, in its own output files; (exit code, stderr)."""
    w = start_tune(args, cwd / name)
    (code,) = wait_all([w], WORKER_TIMEOUT_S)
    assert code == 0, describe([w], [code])
    return code, w.outputs()[1]


def _sql(postgres, query: str, *params):
    """Rows of a query on the study database, with plain psycopg2 (not through Optuna)."""
    conn = postgres.connect()
    try:
        cur = conn.cursor()
        cur.execute(query, params)
        return cur.fetchall()
    finally:
        conn.close()


def finished(postgres, study: str) -> int:
    """COMPLETE + PRUNED trials of the study."""
    return _sql(postgres, "SELECT count(*) FROM trials t JOIN studies s ON s.study_id = t.study_id "
                          "WHERE s.study_name = %s AND t.state IN ('COMPLETE', 'PRUNED')", study)[0][0]


def training(postgres, study: str) -> bool:
    """A trial of the study is RUNNING with its MLflow run started (mid-trial)."""
    return bool(_sql(postgres, "SELECT 1 FROM trials t JOIN studies s ON s.study_id = t.study_id "
                               "JOIN trial_user_attributes a ON a.trial_id = t.trial_id WHERE s.study_name = %s "
                               "AND t.state = 'RUNNING' AND a.key = 'mlflow_run_id'", study))


def assert_study_complete(postgres, uri: str, study_name: str, experiment: str, trials: int) -> dict:
    """Exactly `trials` finished trials and none RUNNING or WAITING; one parent run, FINISHED;
    one child run per finished trial, under it; no run RUNNING. Returns what the report prints."""
    import optuna
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    study = optuna.load_study(study_name=study_name, storage=postgres.url)
    all_trials = study.get_trials(deepcopy=False)
    states = collections.Counter(t.state.name for t in all_trials)
    done = [t for t in all_trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == trials, dict(states)
    assert not [t.number for t in all_trials if t.state in (TrialState.RUNNING, TrialState.WAITING)], dict(states)

    runs = runs_in(MlflowClient(uri), experiment)
    parents = [r for r in runs if r.data.tags.get("mlproject.role") == "study"]
    assert len(parents) == 1, [(r.info.run_id, r.info.status) for r in parents]
    parent = parents[0]
    assert study.user_attrs[PARENT_ATTR] == parent.info.run_id
    assert parent.info.status == "FINISHED", parent.data.tags.get("mlproject.failure")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    for t in done:
        mine = [r for r in children if r.data.tags.get("optuna.trial_number") == str(t.number)]
        assert len(mine) == 1, (t.number, [(r.info.run_id, r.info.status) for r in mine])
        assert t.user_attrs["mlflow_run_id"] == mine[0].info.run_id
    known = {parent.info.run_id, *(r.info.run_id for r in children)}
    strays = [r.info.run_id for r in runs if r.info.run_id not in known]
    assert not strays, strays
    running = [(r.info.run_name, r.data.tags.get("optuna.state")) for r in runs if r.info.status == "RUNNING"]
    assert not running, running
    return {"states": dict(states), "runs": collections.Counter(r.info.status for r in children),
            "failed": {t.number: t.user_attrs.get("fail_reason", "")[:120] for t in all_trials
                       if t.state == TrialState.FAIL}, "children": children, "study": study}


# ------------------------------------------------- outages the retries carry the study through

def test_study_goes_on_through_a_tracking_outage_and_a_postgres_restart(postgres, tracking_up, tmp_path):
    """2 workers, 10 trials, the default retry settings: once 2 are finished the tracking server
    stops for 12 s and starts again on the same port; once 2 more are finished PostgreSQL stops for
    5 s and starts again.
    Both outages come mid-study (workers alive, trials left) and no worker notices beyond waiting."""
    trials, name = 10, "through"
    uri = tracking_up.uri
    args = [*CHEAP, "--epochs", "10", "--storage", postgres.url, "--tracking-uri", uri, "--study-name", name,
            "--trials", str(trials), "--experiment", name]
    started = time.monotonic()
    workers = [start_tune(args, tmp_path / "machine0")]
    try:
        servers.wait_for(lambda: parent_run_stored(postgres, name), 180, "the first worker's parent run",
                         proc=workers[0].proc, log=workers[0].err)
        workers.append(start_tune(args, tmp_path / "machine1"))
        procs = [w.proc for w in workers]

        # (a) the tracking server: down for MLFLOW_OUTAGE_S, then started again (same port, same store)
        servers.wait_for(lambda: finished(postgres, name) >= 2, 300, "2 finished trials", proc=procs,
                         log=workers[0].err)
        at_stop = finished(postgres, name)
        tracking_up.stop()
        t = time.monotonic()
        try:
            time.sleep(MLFLOW_OUTAGE_S)  # the outage itself
            alive = [p.poll() for p in procs]
        finally:
            tracking_up.start_again()
        assert alive == [None, None], describe(workers, alive)
        tracking_up.wait_ready(180)
        mlflow_down = time.monotonic() - t
        assert at_stop < trials, "the study ended before the tracking outage"

        # (b) PostgreSQL: stopped (-m fast: every session ended), down POSTGRES_OUTAGE_S, started again
        servers.wait_for(lambda: finished(postgres, name) >= at_stop + 2, 400, "2 more finished trials",
                         proc=procs, log=workers[0].err)
        at_pg = finished(postgres, name)
        t = time.monotonic()
        postgres.stop_server()
        try:
            time.sleep(POSTGRES_OUTAGE_S)  # the outage itself
            alive = [p.poll() for p in procs]
        finally:
            postgres.start_server()  # for the tests after this one too
        pg_down = time.monotonic() - t
        assert alive == [None, None], describe(workers, alive)
        assert at_pg < trials, "the study ended before the PostgreSQL outage"
    except BaseException:
        stop(workers)
        raise
    codes = wait_all(workers, WORKER_TIMEOUT_S)
    assert codes == [0, 0], describe(workers, codes)
    end = assert_study_complete(postgres, uri, name, name, trials)
    for w in workers:  # nothing but trial lines and the summary: no traceback, no error line
        err = w.outputs()[1]
        assert "Traceback" not in err and "Error" not in err, err[-3000:]
        assert PASSWORD not in err
    print(f"tracking server down {mlflow_down:.1f} s after {at_stop} finished trials, PostgreSQL down "
          f"{pg_down:.1f} s after {at_pg}; study done in {time.monotonic() - started:.1f} s: trials "
          f"{end['states']}, child runs {dict(end['runs'])}, failed {end['failed']}")


# ---------------------------------------------------- outages that outlast the retries

def test_tracking_server_gone_past_mlflow_retries_exits_75_with_one_line_and_the_rerun_resumes(
        postgres, tracking_up, tmp_path):
    """MLflow retries 2 times (QUICK_MLFLOW); the server stops mid-trial and stays down: the worker
    exits 75 with one line, the trial FAILs and its run stays open (the server is gone); the same
    command, once the server is back, ends that run KILLED and finishes the study."""
    trials, name = 3, "lost-tracking"
    uri = tracking_up.uri
    args = [*CHEAP, *MID_TRIAL, "--storage", postgres.url, "--tracking-uri", uri, "--study-name", name,
            "--trials", str(trials), "--experiment", name]
    worker = start_tune(args, tmp_path / "first", env=QUICK_MLFLOW)
    try:
        servers.wait_for(lambda: training(postgres, name), 300, "a trial mid-training", proc=worker.proc,
                         log=worker.err)
        tracking_up.stop()
        t = time.monotonic()
        (code,) = wait_all([worker], 180)
    finally:
        stop([worker])
    gone_s = time.monotonic() - t
    out, err = worker.outputs()
    assert code == EXIT_UNREACHABLE, describe([worker], [code])
    line = (f"Error: MLflow tracking server {uri} unreachable (Connection refused) after MLflow's HTTP retries; "
            "rerun the same command to resume once it is back")
    assert [x for x in err.splitlines() if x.startswith("Error")] == [line], err[-3000:]
    assert err.strip().splitlines()[-1] == line, err[-3000:]
    assert "Traceback" not in err, err[-3000:]

    import optuna

    study = optuna.load_study(study_name=name, storage=postgres.url)
    lost = [t for t in study.trials if t.state.name == "FAIL"]
    assert len(lost) == 1 and "API request to" in lost[0].user_attrs["fail_reason"], \
        [(t.number, t.state.name, t.user_attrs.get("fail_reason")) for t in study.trials]
    lost_run = lost[0].user_attrs["mlflow_run_id"]

    tracking_up.start_again()
    tracking_up.wait_ready(180)
    _, err2 = rerun(args, tmp_path, "rerun")  # MLflow's default retries
    assert "Traceback" not in err2 and "Error" not in err2, err2[-3000:]
    end = assert_study_complete(postgres, uri, name, name, trials)
    (run,) = [r for r in end["children"] if r.info.run_id == lost_run]
    assert run.info.status == "KILLED", run.info.status
    assert run.data.tags["optuna.state"] == "FAIL"
    assert run.data.tags["mlproject.failure"].startswith("the tracking server was unreachable; trial re-run ("), \
        run.data.tags["mlproject.failure"]
    print(f"\nworker exited {code} {gone_s:.1f} s after the server stopped: {line!r}; rerun: trials "
          f"{end['states']}, child runs {dict(end['runs'])}; the open run {lost_run} ended KILLED")


def test_postgres_gone_past_the_storage_retries_exits_75_with_one_line_and_the_rerun_resumes(
        postgres, tracking_up, tmp_path):
    """The storage retries for 4 s (MLPROJECT_STORAGE_RETRY_S); PostgreSQL stops mid-trial and stays
    down: the worker exits 75 with one line naming the storage without its password, its parent run
    KILLED with that line (the tracking server is up). Once PostgreSQL is back the same command
    fails the trial left RUNNING once its heartbeat is stale (--grace-period 6), ends its run KILLED,
    re-runs it and finishes the study."""
    trials, name = 3, "lost-db"
    uri = tracking_up.uri
    args = [*CHEAP, *MID_TRIAL, "--storage", postgres.url, "--tracking-uri", uri, "--study-name", name,
            "--trials", str(trials), "--experiment", name, "--grace-period", "6"]
    worker = start_tune(args, tmp_path / "first", env={"MLPROJECT_STORAGE_RETRY_S": str(QUICK_STORAGE_S)})
    try:
        servers.wait_for(lambda: training(postgres, name), 300, "a trial mid-training", proc=worker.proc,
                         log=worker.err)
        postgres.stop_server()
        try:
            t = time.monotonic()
            (code,) = wait_all([worker], 180)
            gone_s = time.monotonic() - t
        finally:
            postgres.start_server()
    finally:
        stop([worker])
    out, err = worker.outputs()
    assert code == EXIT_UNREACHABLE, describe([worker], [code])
    why = f'connection to server at "127.0.0.1", port {postgres.port} failed: Connection refused'
    line = (f"Error: Optuna storage '{postgres.redacted()}' unreachable ({why}) after retrying for "
            f"{QUICK_STORAGE_S} s; rerun the same command to resume once it is back")
    assert [x for x in err.splitlines() if x.startswith("Error")] == [line], err[-3000:]
    assert err.strip().splitlines()[-1] == line, err[-3000:]
    assert "Traceback" not in err and PASSWORD not in err + out, err[-3000:]

    from mlflow.tracking import MlflowClient

    (parent,) = [r for r in runs_in(MlflowClient(uri), name) if r.data.tags.get("mlproject.role") == "study"]
    assert parent.info.status == "KILLED" and parent.data.tags["mlproject.failure"] == line[len("Error: "):]

    _, err2 = rerun(args, tmp_path, "rerun")
    assert "Traceback" not in err2 and "Error" not in err2, err2[-3000:]
    end = assert_study_complete(postgres, uri, name, name, trials)
    killed = [r for r in end["children"] if r.info.status == "KILLED"]
    assert [r.data.tags.get("mlproject.failure") for r in killed] == [
        f"worker {r.data.tags['mlproject.worker']} stopped sending heartbeats (killed?); trial re-run"
        for r in killed] and len(killed) == 1, [
        (r.info.run_name, r.info.status, r.data.tags.get("mlproject.failure")) for r in end["children"]]
    assert killed[0].data.tags["mlproject.worker"] == f"{socket.gethostname()}:{worker.proc.pid}"  # the one that exited
    print(f"\nworker exited {code} {gone_s:.1f} s after PostgreSQL stopped: {line!r}; rerun: trials "
          f"{end['states']}, child runs {dict(end['runs'])}")
