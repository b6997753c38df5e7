"""Optuna studies: storage, sampler and pruner factories, loading a study safely for resume, and
claims that let one worker alone do a study's one-off work.

    storage = create_storage("sqlite:///optuna.db", on_stale=close_run)   # heartbeat-enabled
    study = open_study("s1", storage, create_sampler("tpe", space, seed=0), create_pruner("median", 5),
                       signature_of(fixed, space, "tpe"))   # creates, or resumes if the signature matches
    with claim(storage, "s1", "parent") as won: ...           # True for one caller at a time
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import threading
import time
import warnings

import optuna
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend

from mlproject.errors import first_line
from mlproject.config import ConfigError, unknown
from mlproject.errors import chained

from .space import SearchSpace

SAMPLERS = ("tpe", "random", "grid", "cmaes", "nsga2")
# samplers that optimise several objectives (Optuna's default for them is TPE, as for one)
MULTI_OBJECTIVE_SAMPLERS = ("tpe", "random", "grid", "nsga2")
PRUNERS = ("median", "hyperband", "wilcoxon", "none")
# WilcoxonPruner's threshold (Optuna's default) and the folds it needs: it compares the folds a
# trial has run with the best trial's, and a one-sided signed-rank test over n folds gives p >= 1/2^n
# (n = 1, 2, 3: 0.5, 0.25, 0.125), so it can prune only from fold 4 on (p 0.0625 < 0.1), and only
# before the last fold: --cv 5 at least (docs/tuning.md, on --cv).
WILCOXON_P = 0.1
WILCOXON_MIN_FOLDS = 5
DEFAULT_STORAGE = "sqlite:///optuna.db"
# A worker writes a heartbeat every 10 s; a RUNNING trial without one for 60 s is failed and
# re-run (RetryHeartbeatStaleTrialCallback). 60 s covers a slow epoch's GIL-heavy stretches on 2 cores.
HEARTBEAT_INTERVAL_S = 10
GRACE_PERIOD_S = 60

# study user attribute: the UI path of the study's saved runs-table view (runner sets it, summary prints it)
VIEW_ATTR = "mlflow_ui_view"

# SQLite serialises writers; with N local workers a writer may wait for others' commits.
# 60 s busy timeout instead of the default 5 s turns "database is locked" into a short wait.
SQLITE_TIMEOUT_S = 60


def redact(url: str) -> str:
    """The storage URL without its password (for tags, logs and errors)."""
    if "://" not in url:
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not an SQLAlchemy URL (journal:...): nothing to hide
        return url


def create_storage(url: str, on_stale=None, grace_period_s: int = GRACE_PERIOD_S):
    """An Optuna storage for `url`: sqlite:///..., postgresql://..., mysql://... (with heartbeats,
    so trials of killed workers are failed and retried), or journal:PATH (a journal file; no
    heartbeats). ConfigError naming the (redacted) URL when it cannot be reached.
    `grace_period_s`: seconds without a heartbeat before a trial counts as dead (beats come every
    10 s, or 3 times per grace period if that is shorter)."""
    if url.startswith("journal:"):
        path = url[len("journal:"):]
        return JournalStorage(JournalFileBackend(path))
    kwargs = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
    elif url.startswith(("postgresql", "mysql")):
        kwargs["engine_kwargs"] = {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}
    else:
        raise ConfigError(f"unsupported --storage {redact(url)!r}; use sqlite:///FILE, postgresql://..., "
                          "mysql://... or journal:FILE")
    with warnings.catch_warnings():  # heartbeats are 'experimental' in Optuna since 2.8; they work
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=3)

    def stale(study, trial):
        if on_stale is not None:
            on_stale(study, trial)
        retry(study, trial)

    from sqlalchemy.exc import IntegrityError, ProgrammingError

    # a database server may restart under a running study: its storage calls wait for it
    storage_class = StartOnceRDBStorage if url.startswith("sqlite") else ReconnectingRDBStorage
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return storage_class(_with_installed_driver(url), grace_period=grace_period_s,
                                  heartbeat_interval=max(1, min(HEARTBEAT_INTERVAL_S, grace_period_s // 3)),
                                  heartbeat_stale_trial_callback=stale, **kwargs)
        except (IntegrityError, ProgrammingError):
            # workers opening an empty database together race to create Optuna's tables; the
            # losers see duplicate tables/rows, and a retry finds them made (seen with 3 workers)
            if attempt == 4:
                raise
            time.sleep(0.5 * (attempt + 1))
        except ImportError as e:
            raise ConfigError(f"cannot open Optuna storage {redact(url)!r}: its database driver is missing "
                              f"({e}); for PostgreSQL: pip install psycopg2-binary") from None
        except Exception as e:  # OperationalError, ArgumentError ...
            first = first_line(e)
            raise ConfigError(f"cannot open Optuna storage {redact(url)!r}: {type(e).__name__}: "
                              f"{first.replace(url, redact(url))[:300]}") from None


# Seconds a storage call keeps retrying while its database server is unreachable
# (docs/scaling-out.md; MLPROJECT_STORAGE_RETRY_S): a PostgreSQL restart takes a few seconds. Past it the
# worker exits with one line (exit 75) and the next invocation resumes. 45 s: with a beat every
# 10 s and a retry at least every 5 s, a worker whose database is back within it beats again before
# its trial's 60 s grace period ends, so no other worker fails that trial as stale.
STORAGE_RETRY_S = float(os.environ.get("MLPROJECT_STORAGE_RETRY_S", "45"))
STORAGE_RETRY_MAX_SLEEP_S = 5.0


def lost_database(exc: BaseException | None) -> str | None:
    """Why the database could not be reached, if `exc` or an exception it was raised from or
    while handling is SQLAlchemy's OperationalError (connection refused, the server shutting
    down or starting, a connection it ended: psycopg2 classes them all so) or an error that
    invalidated the connection: the DBAPI's first line ('connection to server at "127.0.0.1",
    port 5432 failed: Connection refused'). None for any other error."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    # Optuna wraps it in StorageInternalError (raise ... from), and a failure while handling it
    # (Optuna's tell after a failed objective) keeps it as __context__
    for e in chained(exc):
        if isinstance(e, OperationalError) or (isinstance(e, DBAPIError) and e.connection_invalidated):
            text = str(getattr(e, "orig", None) or e).strip()
            return text.splitlines()[0] if text else type(e).__name__
    return None


_retrying = threading.local()  # per thread: the heartbeat thread retries on its own


def _retried(method, give_up_quietly: bool = False):
    """`method` of ReconnectingRDBStorage, retried while the database is unreachable.

    Observed without it (tests/test_tune_outage.py, PostgreSQL stopped and started under a
    worker): a storage call in the restart's window raised sqlalchemy OperationalError
    'connection to server at "127.0.0.1", port ... failed: Connection refused' (pool_pre_ping
    found the pooled connection dead, and reconnecting was refused), which Optuna wraps in
    StorageInternalError; in Optuna's tell it crashed the worker with a traceback
    (UnboundLocalError inside Optuna's _run_trial), leaving the trial RUNNING. pool_pre_ping
    replaces connections the restart ended but does not wait for the server, and Optuna retries
    only create_new_trial (5 times within about 5 s). Here a call is retried every 0.5, 1, 2, 4,
    then 5 s for STORAGE_RETRY_S (a restart's few seconds pass unnoticed); then it raises, and
    later calls of this storage try once only until one succeeds (the worker is on its way out).
    Only the outermost call retries (Optuna's calls nest). A write whose commit went through
    while its reply was lost would be sent twice: Optuna's writes are upserts except creating
    a study or trial, and the window is a commit's last instant. `give_up_quietly`: the heartbeat
    thread's beat is skipped instead (an exception there would end the thread with a traceback,
    and no beat for the grace period fails the trial, as it should when the database is gone)."""

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        if getattr(_retrying, "active", False):
            return method(self, *args, **kwargs)
        _retrying.active = True
        try:
            deadline, pause = time.monotonic() + STORAGE_RETRY_S, 0.5
            while True:
                try:
                    result = method(self, *args, **kwargs)
                    self.lost = None
                    return result
                except Exception as e:
                    why = lost_database(e)
                    if why is None:
                        raise
                    if self.lost is not None or time.monotonic() + pause > deadline:
                        self.lost = why
                        if give_up_quietly:
                            return None
                        raise
                    time.sleep(pause)
                    pause = min(2 * pause, STORAGE_RETRY_MAX_SLEEP_S)
        finally:
            _retrying.active = False

    return call


class StartOnceRDBStorage(RDBStorage):
    """Optuna's RDBStorage in which a WAITING trial (an enqueued retry, a grid point) is started
    by one worker only, however many pop it at the same instant.

    Why: Optuna starts a WAITING trial (Study._pop_waiting_trial_id) by reading its state, then
    writing RUNNING if it read WAITING, in one session. On SQLite (pysqlite begins a transaction
    at the first write, not the read) two processes can both read WAITING, and both then write
    RUNNING and run the same trial: two workers popping one WAITING trial at once both got it in
    25 of 100 rounds (2026-12-04). The same retry run twice resumed one interrupted trial's run
    twice ('No tag with name: mlproject.failure' from one worker's resume, then Optuna's 'Cannot
    tell a FAIL trial'; tests/test_tune_resume.py, once in a full suite). Here the start is one
    UPDATE ... WHERE state = WAITING, which one writer wins: 0 of 100 rounds. PostgreSQL and
    MySQL lock the row in Optuna's read (SELECT ... FOR UPDATE); the same UPDATE costs them
    nothing. Optuna has no public hook for this: _start_waiting_trial holds the workaround."""

    def set_trial_state_values(self, trial_id: int, state, values=None) -> bool:
        if state == optuna.trial.TrialState.RUNNING and values is None and _start_waiting_trial(self.engine, trial_id):
            return True
        # not WAITING (any more): Optuna's own answer, False for a RUNNING trial (another worker
        # started it) or UpdateFinishedTrialError for a finished one; or any other change of state
        return super().set_trial_state_values(trial_id, state, values)


def _start_waiting_trial(engine, trial_id: int) -> bool:
    """Trial `trial_id` set RUNNING, with its start time, if it is WAITING, in one statement;
    whether it was. Optuna's table and columns through its own (private) model, as its
    set_trial_state_values writes them: the state by name, the start as naive UTC."""
    from datetime import datetime, timezone

    from optuna.storages._rdb import models
    from optuna.trial import TrialState

    trials = models.TrialModel.__table__
    start = trials.update().where(trials.c.trial_id == trial_id, trials.c.state == TrialState.WAITING).values(
        state=TrialState.RUNNING, datetime_start=datetime.now(timezone.utc).replace(tzinfo=None))
    with engine.begin() as connection:
        return connection.execute(start).rowcount == 1


class ReconnectingRDBStorage(StartOnceRDBStorage):
    """Optuna's RDBStorage whose calls wait for a restarting database server (see _retried)."""

    lost: str | None = None  # why the database was unreachable when the last call ended, if it was


# every method that reaches the database, the private ones Optuna's _CachedStorage calls included
for _name in ("create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr",
              "get_study_id_from_name", "get_study_name_from_id", "get_study_directions",
              "get_study_user_attrs", "get_study_system_attrs", "get_trial_user_attrs", "get_trial_system_attrs",
              "get_all_studies", "create_new_trial", "_create_new_trial", "set_trial_param", "_set_trial_param",
              "get_trial_param", "set_trial_state_values", "set_trial_intermediate_value", "set_trial_user_attr",
              "set_trial_system_attr", "get_trial_id_from_study_id_trial_number", "get_trial", "get_all_trials",
              "_get_trials", "get_best_trial", "_get_best_trial_id", "_get_stale_trial_ids"):
    setattr(ReconnectingRDBStorage, _name, _retried(getattr(StartOnceRDBStorage, _name)))
ReconnectingRDBStorage.record_heartbeat = _retried(RDBStorage.record_heartbeat, give_up_quietly=True)
del _name


def _with_installed_driver(url: str) -> str:
    """SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; use psycopg2 where only it is installed."""
    import importlib.util

    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


@contextlib.contextmanager
def claim(storage, study_name: str, key: str):
    """Yields True for exactly one caller at a time per (study, key), across processes and
    machines, while it holds the claim (one worker alone makes the parent run, one stores a best
    model). Optuna has no lock; creating a study is atomic in every storage (study names are
    unique), so the claim is a marker study `NAME::KEY`, deleted on leaving, so that it never
    shows in the user's study list for longer than the claim. Callers check again, after winning,
    that the work is still undone: the previous holder may have done it and left."""
    marker = f"{study_name}::{key}"
    try:
        optuna.create_study(study_name=marker, storage=storage)
    except optuna.exceptions.DuplicatedStudyError:
        yield False
        return
    try:
        yield True
    finally:
        optuna.delete_study(study_name=marker, storage=storage)


def set_verbosity(verbose: bool) -> None:
    """Optuna's own log lines ('Trial 3 finished with value ...', a failed trial's traceback) only
    with --verbose: the worker prints one line per trial instead (objective.Worker.announce), through
    the progress bar, and a traceback only for a bug."""
    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.ERROR)


def has_heartbeat(storage) -> bool:
    """Whether trials in `storage` send heartbeats, so a dead worker's trial goes stale (RDB
    storages, as create_storage makes them; journal files have none)."""
    return isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() is not None


def create_sampler(name: str, space: SearchSpace, seed: int | None):
    if name not in SAMPLERS:
        raise unknown("sampler", name, SAMPLERS)
    if name == "grid":
        return optuna.samplers.GridSampler(space.grid(), seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":  # continuous dimensions; categorical ones (batch size) sampled independently
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def create_pruner(name: str, steps: int):
    """`steps`: what a trial reports, epochs (or folds with --cv), the most a pruner can see."""
    if name not in PRUNERS:
        raise unknown("pruner", name, PRUNERS)
    if name == "median":
        # compare from the first epoch (fold) on, once 5 trials have finished (Optuna's default warm-up)
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(steps, 1))
    if name == "wilcoxon":  # --cv only (runner._pruning): the folds are its paired instances
        with warnings.catch_warnings():  # 'experimental' since Optuna 3.6
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.pruners.WilcoxonPruner(p_threshold=WILCOXON_P, n_startup_steps=2)
    return optuna.pruners.NopPruner()


def open_study(name: str, storage, sampler, pruner, signature: dict, directions=("maximize",)):
    """Create study `name`, or load it if it exists and was made with the same `signature`
    (search space, fixed options, objectives and constraints); ConfigError naming the
    differences otherwise."""
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                                directions=list(directions), load_if_exists=True)
    stored = study.user_attrs.get("signature")
    if stored is None:
        study.set_user_attr("signature", signature)
    elif stored != signature:
        diff = [f"{k}: stored {stored.get(k)!r}, now {signature.get(k)!r}"
                for k in sorted(set(stored) | set(signature)) if stored.get(k) != signature.get(k)]
        raise ConfigError(f"study {name!r} exists with another search space or fixed options "
                          f"({'; '.join(diff)}); use another --study-name or the original options")
    return study


def default_study_name(fixed: dict) -> str:
    return f"{fixed['model']}-{os.path.basename(str(fixed['dataset']).rstrip('/'))}".replace(":", "-")


def signature_of(fixed: dict, space: SearchSpace, sampler: str, objectives=(), constraints=()) -> dict:
    """What must match for a study to be resumed: the fixed options, the space, the sampler, and
    the objectives and constraints where they are not the default (validation accuracy alone,
    none), so that studies made before they existed still resume."""
    sig = {"fixed": fixed, "space": space.describe(), "sampler": sampler}
    if [str(o) for o in objectives] not in ([], ["val_accuracy:max"]):
        sig["objectives"] = [str(o) for o in objectives]
    if constraints:
        sig["constraints"] = [str(c) for c in constraints]
    return json.loads(json.dumps(sig))
