"""`tune` scaled out: 3 worker processes share one study in a real PostgreSQL 15 and log to one
real `mlflow server`; bad Postgres credentials are refused before anything is tracked; and the
races of workers that start or finish at the same moment (see RACE_* below).

Scaling out, as tested here (every URL is 127.0.0.1: other machines reach the servers through
an SSH tunnel, so the servers stay unexposed and every worker runs the very same command):

  # 1. the database host: PostgreSQL 15, a user with a password, a database it owns
  sudo apt-get install -y postgresql
  sudo -u postgres psql -c "CREATE ROLE tuner LOGIN PASSWORD 's3cret-pw'"
  sudo -u postgres psql -c "CREATE DATABASE optuna OWNER tuner"

  # 2. the same host: the MLflow tracking server, bound to 127.0.0.1
  mkdir -p $HOME/mlflow
  mlflow server --host 127.0.0.1 --port 5000 \
      --backend-store-uri sqlite:///$HOME/mlflow/mlflow.db --artifacts-destination $HOME/mlflow/artifacts

  # 3. every worker machine: the driver, and (other machines) a tunnel to both servers
  pip install psycopg2-binary
  ssh -N -L 5432:127.0.0.1:5432 -L 5000:127.0.0.1:5000 you@db-host &

  # 4. workers: the same command (same study name and search/training options) everywhere, one
  #    process per GPU; --trials is the study's total over all workers. Workers may start at the
  #    same moment: the races of a new study (RACE_* below) are tested here.
  export STORAGE=postgresql+psycopg2://tuner:s3cret-pw@127.0.0.1:5432/optuna
  export TRACKING=http://127.0.0.1:5000
  CUDA_VISIBLE_DEVICES=0 tune --study-name dist --trials 40 --storage $STORAGE --tracking-uri $TRACKING &
  CUDA_VISIBLE_DEVICES=1 tune --study-name dist --trials 40 --storage $STORAGE --tracking-uri $TRACKING &

  The driver is named (postgresql+psycopg2://): SQLAlchemy 2.1 maps a bare postgresql:// to
  psycopg 3 (pip install "psycopg[binary]"), 2.0 to psycopg2. The parent run's tag optuna.storage
  shows the URL as postgresql+psycopg2://tuner:***@127.0.0.1:5432/optuna.
"""
from __future__ import annotations

import collections
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import servers

USER, PASSWORD, DATABASE = "tuner", "s3cret-pw", "optuna"
STUDY, TRIALS, WORKERS, EXPERIMENT = "dist", 7, 3, "distributed"
RACERS = 2  # workers in the race tests: 2 suffice to race
CHEAP = ["--model", "softmax", "--dataset", "digits", "--epochs", "2", "--num-workers", "0", "--pruner", "none"]
WORKER_TIMEOUT_S = 180
# one test process: its tests share the PostgreSQL cluster, the tracking server and a study
pytestmark = pytest.mark.xdist_group("distributed")
PARENT_ATTR = "mlflow_parent_run_id"  # the study's user attribute naming its parent run


# ---------------------------------------------------------------------------------- servers

@pytest.fixture(scope="module")
def postgres():
    try:
        t = time.monotonic()
        servers.ensure_psycopg2()
        with servers.postgres_cluster(USER, PASSWORD, DATABASE) as pg:
            print(f"\nPostgreSQL up in {time.monotonic() - t:.1f} s")
            yield pg
    except servers.Unavailable as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def mlflow_boot(tmp_path_factory):
    """`mlflow server` started without waiting for it, so that its start (5-40 s on 2 busy cores)
    overlaps the first test, which does not need it; terminated after the module."""
    server = servers.MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tracking_server(mlflow_boot) -> str:
    t = time.monotonic()
    uri = mlflow_boot.wait_ready(120)
    print(f"\nmlflow server up ({time.monotonic() - t:.1f} s waited)")
    return uri


# ---------------------------------------------------------------------------------- workers

def tune_command() -> list[str]:
    script = Path(sys.executable).with_name("tune")  # the console script of `pip install -e .`
    return [str(script)] if script.exists() else [sys.executable, "-m", "mlproject.app.tune"]


def worker_env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID")}
    # 3 workers on 2 cores: one torch thread each rather than 3 x 2 threads fighting for them
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


@dataclass
class Worker:
    proc: subprocess.Popen
    out: Path
    err: Path

    def outputs(self) -> tuple[str, str]:
        return self.out.read_text(errors="replace"), self.err.read_text(errors="replace")


def start_tune(args: list[str], cwd: Path) -> Worker:
    """One `tune` process, as on its own machine: own working directory, no MLflow run in its env."""
    cwd.mkdir(parents=True, exist_ok=True)
    out, err = cwd / "stdout.txt", cwd / "stderr.txt"
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen([*tune_command(), *args], cwd=cwd, env=worker_env(), stdout=o, stderr=e,
                                stdin=subprocess.DEVNULL)
    return Worker(proc, out, err)


def wait_all(workers: list[Worker], timeout: float) -> list[int | None]:
    """Exit codes; a worker still running `timeout` s after the call is killed and gives None."""
    deadline = time.monotonic() + timeout
    codes = []
    for w in workers:
        try:
            codes.append(w.proc.wait(timeout=max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            codes.append(None)
    stop(workers)
    return codes


def stop(workers: list[Worker]) -> None:
    for w in workers:  # ours, each by its own pid
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait(timeout=30)


def describe(workers: list[Worker], codes) -> str:
    return "\n".join(f"--- worker {i}: exit {c}\nstdout:\n{o[-1500:]}\nstderr:\n{e[-3000:]}"
                     for i, (c, (o, e)) in enumerate(zip(codes, (w.outputs() for w in workers))))


def parent_run_stored(postgres, study: str) -> str | None:
    """The study's parent run id as the first worker stores it, read with plain SQL (opening an
    Optuna storage here would itself race the worker creating Optuna's tables)."""
    import psycopg2

    conn = postgres.connect()
    try:
        cur = conn.cursor()
        cur.execute("SELECT a.value_json FROM study_user_attributes a JOIN studies s ON s.study_id = a.study_id "
                    "WHERE s.study_name = %s AND a.key = %s", (study, PARENT_ATTR))
        row = cur.fetchone()
        return row[0] if row else None
    except psycopg2.errors.UndefinedTable:  # Optuna's tables are not there yet
        return None
    finally:
        conn.close()


def runs_in(client, experiment: str):
    from mlflow.entities import ViewType

    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=5000)


def all_runs(client):
    from mlflow.entities import ViewType

    ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    return client.search_runs(ids, run_view_type=ViewType.ALL, max_results=5000) if ids else []


# ----------------------------------------------- workers started at the same moment (src bugs)

OPEN_STORAGE = "import sys; from tuning.study import create_storage; create_storage(sys.argv[1]); print('opened')"
# The races of workers that start or finish together, each made deterministic by a test below.
RACE_SCHEMA = (
    "Optuna's first-time schema creation on an empty PostgreSQL database races: losers get "
    "IntegrityError / ProgrammingError, which create_storage (src/tuning/study.py) must retry")
RACE_PARENT = (
    "workers starting a new study at once must share one parent run: src/tuning/runner.py "
    "_parent_run claims it atomically (study.claim) and the others wait for the stored id")
MARKER = "::"  # in the name of study.claim's marker studies, NAME::KEY, deleted when the claim ends
RACE_BEST_MODEL = (
    "workers finishing at once must store the best model once (study.claim in "
    "src/tuning/summary.py record) and end the best trial's run FINISHED")


def _blocked_on(postgres, table: str, database: str) -> int:
    """Sessions of `database` waiting for a lock on `table` (pg_locks, as the superuser; connected
    to `database` itself, where the table's name resolves)."""
    conn = postgres.superuser(database)
    try:
        cur = conn.cursor()
        cur.execute("SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                    "WHERE d.datname = %s AND l.relation = %s::regclass AND NOT l.granted", (database, table))
        return cur.fetchone()[0]
    finally:
        conn.close()


def _waiting(postgres, database: str) -> list[tuple[str, str]]:
    """(wait event, query) of every session of `database` waiting for a lock (pg_stat_activity)."""
    conn = postgres.superuser(database)
    try:
        cur = conn.cursor()
        cur.execute("SELECT wait_event, query FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock' "
                    "ORDER BY wait_event", (database,))
        return cur.fetchall()
    finally:
        conn.close()


def markers(storage) -> list[str]:
    """Marker studies of claims left in `storage` (none should outlive the claim)."""
    import optuna

    return [n for n in optuna.get_all_study_names(storage) if MARKER in n]


@pytest.mark.slow
def test_workers_opening_an_empty_postgres_database_at_once(postgres, mlflow_boot, tmp_path):
    """2 workers open the storage of an empty database at the same moment, made deterministic: the
    superuser holds SHARE on pg_type, so every worker passes its 'table exists?' check and then
    waits to create its first table; the lock is released once both wait.
    (First in the module: it runs while the mlflow server starts.)"""
    url = postgres.create_database("cold_start")
    holder = postgres.superuser("cold_start", autocommit=False)
    procs = []
    try:
        holder.cursor().execute("LOCK TABLE pg_catalog.pg_type IN SHARE MODE")
        procs = [subprocess.Popen([sys.executable, "-c", OPEN_STORAGE, url], cwd=tmp_path, env=worker_env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for _ in range(RACERS)]
        servers.wait_for(lambda: _blocked_on(postgres, "pg_catalog.pg_type", "cold_start") == RACERS, 90,
                         f"{RACERS} workers waiting to create Optuna's tables", proc=procs)
    except BaseException:
        for p in procs:  # ours, by pid
            p.kill()
        raise
    finally:
        holder.rollback()  # releases the lock: all go on at once
        holder.close()
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    errors = [o.strip().splitlines()[-1] for o in outputs if o.strip() and "opened" not in o]
    assert [p.returncode for p in procs] == [0] * RACERS, errors
    assert [o.strip().splitlines()[-1] for o in outputs] == ["opened"] * RACERS, outputs
    # one complete schema at Optuna's current version, usable: no half-made tables from the race
    import optuna

    storage = optuna.storages.RDBStorage(url)
    try:
        assert storage.get_current_version() == storage.get_head_version()
        assert optuna.get_all_study_names(storage) == []
    finally:
        storage.engine.dispose()


# ------------------------------------------------------------------------ the scaled-out study

@dataclass
class StudyRun:
    workers: list[Worker]
    codes: list[int | None]
    elapsed_s: float


@pytest.fixture(scope="module")
def scaled_out_study(postgres, tracking_server, tmp_path_factory) -> StudyRun:
    """docs/scaling-out.md: the first worker creates the study (Optuna's tables, the study,
    its parent run); once its parent run is stored, two more workers join, all three concurrently."""
    tmp = tmp_path_factory.mktemp("scaled-out")
    args = [*CHEAP, "--storage", postgres.url, "--tracking-uri", tracking_server, "--study-name", STUDY,
            "--trials", str(TRIALS), "--workers", "1", "--experiment", EXPERIMENT]
    started = time.monotonic()
    first = start_tune(args, tmp / "machine0")
    try:
        servers.wait_for(lambda: parent_run_stored(postgres, STUDY), 120, "the first worker's parent run",
                         proc=first.proc, log=first.err)
    except RuntimeError:
        stop([first])
        raise
    workers = [first, *(start_tune(args, tmp / f"machine{i}") for i in range(1, WORKERS))]
    codes = wait_all(workers, WORKER_TIMEOUT_S)
    return StudyRun(workers, codes, time.monotonic() - started)


@pytest.mark.slow
def test_three_workers_one_postgres_study_one_tracking_server(scaled_out_study, postgres, tracking_server):
    import optuna
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    workers, codes = scaled_out_study.workers, scaled_out_study.codes
    assert codes == [0] * WORKERS, describe(workers, codes)

    # --- the Optuna study in PostgreSQL -----------------------------------------------------
    study = optuna.load_study(study_name=STUDY, storage=postgres.url)
    trials = study.get_trials(deepcopy=False)
    states = collections.Counter(t.state.name for t in trials)
    surplus = [t.number for t in trials if t.user_attrs.get("surplus")]
    failed = {t.number: t.user_attrs.get("fail_reason") for t in trials
              if t.state == TrialState.FAIL and not t.user_attrs.get("surplus")}
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    print(f"\n{WORKERS} workers in {scaled_out_study.elapsed_s:.1f} s; trial states {dict(states)}; "
          f"surplus trials (failed untrained) {surplus}; other failed trials {failed}")
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)) and sorted(numbers) == list(range(len(trials))), numbers
    assert len(done) == TRIALS, (dict(states), describe(workers, codes))
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    # failed trials (a diverged lr, say) do not count; their runs must have ended too (below)

    # --- the runs on the tracking server -------------------------------------------------------
    client = MlflowClient(tracking_server)
    runs = runs_in(client, EXPERIMENT)
    parents = [r for r in runs if r.data.tags.get("mlproject.role") == "study"]
    assert len(parents) == 1, [(r.info.run_id, r.info.status) for r in parents]
    parent = parents[0]
    assert study.user_attrs[PARENT_ATTR] == parent.info.run_id
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["optuna.study"] == STUDY
    assert parent.data.tags["optuna.storage"] == postgres.redacted()  # postgresql+psycopg2://tuner:***@...
    assert parent.data.metrics["trials_complete"] + parent.data.metrics["trials_pruned"] == TRIALS

    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    status = {}
    for t in done:
        mine = [r for r in children if r.data.tags.get("optuna.trial_number") == str(t.number)]
        assert len(mine) == 1, (t.number, [(r.info.run_id, r.info.status) for r in mine])
        assert t.user_attrs["mlflow_run_id"] == mine[0].info.run_id
        status[t.number] = mine[0].info.status
    known = {parent.info.run_id, *(r.info.run_id for r in children)}
    strays = [(r.info.run_id, r.info.run_name, r.data.tags.get("mlflow.parentRunId")) for r in runs
              if r.info.run_id not in known]
    assert not strays, strays

    # --- the closing hint: the tracking server's own UI (it serves one), not `mlflow ui` on its URL
    for w in workers:
        out, _ = w.outputs()
        assert (f"parent run {parent.info.run_id}; open the UI: {tracking_server.rstrip('/')}/#/experiments/"
                f"{parent.info.experiment_id}/runs?viewStateShareKey=study-{STUDY}") in out, out[-2000:]
        assert "mlflow ui" not in out

    # --- the password is in no param or tag of any run (nor in what the workers printed) -------
    leaks = [(r.info.run_id, kind, k) for r in runs
             for kind, values in (("param", r.data.params), ("tag", r.data.tags))
             for k, v in values.items() if PASSWORD in str(v)]
    assert not leaks, leaks
    assert not [i for i, w in enumerate(workers) if PASSWORD in "".join(w.outputs())]

    # --- every run ended; the best model stored once (last: a src race, RACE_BEST_MODEL) ---------
    best = study.best_trial
    best_run = best.user_attrs["mlflow_run_id"]
    stored = [v.version for v in client.search_model_versions(f"name='{STUDY}'") if v.run_id == best_run]
    print(f"best trial {best.number}: its model registered as {STUDY!r} {len(stored)} time(s) "
          f"(versions {stored}); run status by trial {status}")
    running = [(r.info.run_id, r.info.run_name) for r in runs if r.info.status == "RUNNING"]
    assert not [r for r in running if r[0] != best_run], running
    assert all(s in ("FINISHED", "KILLED") for n, s in status.items() if n != best.number), status
    assert len(stored) == 1, f"trial {best.number}'s model was stored {len(stored)} times ({RACE_BEST_MODEL})"
    assert status[best.number] == "FINISHED"
    # the claims of 3 workers (parent run, best model) left no marker study in the user's list
    assert markers(postgres.url) == [], optuna.get_all_study_names(postgres.url)


@pytest.mark.slow
def test_bad_postgres_storage_exits_2_without_any_mlflow_run(postgres, tracking_server, tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_server)
    before = {r.info.run_id for r in all_runs(client)}
    args = [*CHEAP, "--storage", postgres.url_with(password="wrongpw"), "--tracking-uri", tracking_server,
            "--study-name", "bad", "--trials", "2", "--experiment", "never-created"]
    worker = start_tune(args, tmp_path / "bad")
    (code,) = wait_all([worker], WORKER_TIMEOUT_S)
    stdout, stderr = worker.outputs()
    assert code == 2, (code, stdout[-2000:], stderr[-3000:])
    errors = [line for line in stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, stderr[-3000:]
    # Error: cannot open Optuna storage 'postgresql+psycopg2://tuner:***@127.0.0.1:PORT/optuna':
    #        OperationalError: ... password authentication failed for user "tuner"
    assert errors[0].startswith(f"Error: cannot open Optuna storage '{postgres.redacted()}': "), errors[0]
    assert "password authentication failed" in errors[0], errors[0]
    assert "wrongpw" not in stdout + stderr and PASSWORD not in stdout + stderr, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert client.get_experiment_by_name("never-created") is None
    assert {r.info.run_id for r in all_runs(client)} == before


# ------------------------------------------------------------- the parent run race (src bug)

@pytest.mark.slow
def test_workers_starting_a_study_at_once_share_one_parent_run(scaled_out_study, postgres, tracking_server,
                                                               tmp_path):
    """2 workers start a new study at the same moment, made deterministic: the study exists with
    the signature the workers compute (copied from the scaled-out study: same options), so each
    worker finds no parent run and claims it, creating the marker study
    'race::parent-replacing-none' (tuning.study.claim). The superuser holds SHARE on
    study_directions, which creating a study writes (opening an existing one does not): the first
    claimant waits there with its marker uncommitted, the second waits behind it on the marker's
    unique name. Both are seen waiting at once before the lock is released; then one wins and makes
    the parent run, the other finds the claim taken and resumes that run, and the study ends."""
    import optuna
    from mlflow.tracking import MlflowClient

    signature = optuna.load_study(study_name=STUDY, storage=postgres.url).user_attrs["signature"]
    optuna.create_study(study_name="race", storage=postgres.url, direction="maximize").set_user_attr(
        "signature", signature)
    marker = "race::parent-replacing-none"
    args = [*CHEAP, "--storage", postgres.url, "--tracking-uri", tracking_server, "--study-name", "race",
            "--trials", "3", "--workers", "1", "--experiment", "race"]
    holder = postgres.superuser(postgres.database, autocommit=False)
    workers = []
    try:
        holder.cursor().execute("LOCK TABLE study_directions IN SHARE MODE")
        workers = [start_tune(args, tmp_path / f"machine{i}") for i in range(RACERS)]

        def all_waiting():
            sessions = _waiting(postgres, postgres.database)
            return sessions if len(sessions) >= RACERS else None

        waiting = servers.wait_for(all_waiting, 120, f"{RACERS} workers claiming the parent run at once",
                                   proc=[w.proc for w in workers], log=workers[0].err)
    except BaseException:
        stop(workers)
        raise
    finally:
        holder.rollback()  # releases the lock: the claims go on
        holder.close()
    codes = wait_all(workers, WORKER_TIMEOUT_S)

    # both raced: one creating the marker (waiting for study_directions), the other creating the
    # same marker (waiting for the first one's transaction, which holds the unique name)
    assert len(waiting) == RACERS, waiting
    (first_event, first_query), (second_event, second_query) = waiting  # ordered: relation, transactionid
    assert (first_event, second_event) == ("relation", "transactionid"), waiting
    assert first_query.startswith("INSERT INTO study_directions"), waiting
    assert second_query.startswith("INSERT INTO studies") and marker in second_query, waiting

    assert codes == [0] * RACERS, describe(workers, codes)
    client = MlflowClient(tracking_server)
    runs = runs_in(client, "race")
    parents = [r for r in runs if r.data.tags.get("mlproject.role") == "study"]
    assert len(parents) == 1, f"{len(parents)} parent runs for one study ({RACE_PARENT}): " \
                              f"{[r.info.run_id for r in parents]}"
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    study = optuna.load_study(study_name="race", storage=postgres.url)
    assert study.user_attrs[PARENT_ATTR] == parent.info.run_id
    done = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(done) == 3, [(t.number, t.state.name) for t in study.trials]
    children = [r for r in runs if r.info.run_id != parent.info.run_id]
    assert all(r.data.tags.get("mlflow.parentRunId") == parent.info.run_id for r in children), \
        [(r.info.run_id, r.data.tags.get("mlflow.parentRunId")) for r in children]
    assert {t.user_attrs["mlflow_run_id"] for t in done} <= {r.info.run_id for r in children}
    # each worker ended on that parent run (its summary names it)
    for i, w in enumerate(workers):
        assert f"parent run {parent.info.run_id};" in w.outputs()[0], (i, w.outputs()[0][-2000:])
    # the claim's marker study is gone: the user's study list shows no 'race::...'
    assert markers(postgres.url) == [], optuna.get_all_study_names(postgres.url)


@pytest.mark.slow
def test_train_against_a_tracking_server_points_to_the_server_s_own_ui(tracking_server, tmp_path, monkeypatch):
    """`mlproject train` in this process, logging to the tracking server: its closing hint is the
    run's page on the server (which serves the UI), not `mlflow ui --backend-store-uri http://...`."""
    import mlflow
    from click.testing import CliRunner
    from mlflow.tracking import MlflowClient

    from mlproject.app.cli import bool_flags_from_values, cli

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(tracking_server)
    try:
        result = CliRunner().invoke(cli, bool_flags_from_values(
            ["train", *CHEAP[:-2], "--no-log-model", "--experiment", "hint"]))
    finally:
        mlflow.set_tracking_uri(None)
    assert result.exit_code == 0, result.output + repr(result.exception)
    (run,) = runs_in(MlflowClient(tracking_server), "hint")
    page = f"{tracking_server.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    assert f"open the UI: {page}" in result.output.splitlines()
    assert "mlflow ui" not in result.output
