"""Plan a study (every check, nothing created), then execute it: parent run, workers, summary.

    p = plan(train_options, {"lr": "1e-4:1e-1", ...}, StudyOptions(trials=40), trainer)
    exit_code = execute(p)

`plan` is `check` (every check that needs no data: bad input is answered before torch loads),
then `prepare` (the trainer loads the model and data). `trainer` is what the application gives a
study (mlproject.app.experiment.StudyTrainer): it prepares and trains a trial as a tracked child
run and stores a model. MLflow is reached only through `tracking`; every Optuna call is here, in
`tuning`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import tracking
from mlproject.config import ConfigError, TrainConfig
from mlproject.metrics import DEFAULT_OBJECTIVE, Tags
from mlproject.signals import exit_code, handle_signals, leave_heap_to_the_os

from . import study as studies
from . import goals
from .goals import Constraint, Objective
from .options import StudyOptions
from .space import SearchSpace

# .objective (torch: seconds to import) is imported where trials run, so that `check` answers bad
# input without it; these are for annotations
if TYPE_CHECKING:
    from mlproject.data import Splits

    from .objective import Trainer, Worker

# options that may change between invocations of one study without changing what it searches
NOT_IN_SIGNATURE = ("experiment", "run_name", "log_model", "num_workers", "device", "data_dir", "seed",
                    "cache_features", "compile", "checkpoint_every", "checkpoint_dir", "keep_checkpoints")
PARENT_ATTR = "mlflow_parent_run_id"
# seconds the workers get, once signalled, to end their trials' runs (a few MLflow and Optuna
# writes: well under a second on a local store, a few seconds against a busy server)
WORKER_STOP_S = 30
# exit status when the Optuna storage or the tracking server stays unreachable past its retries:
# sysexits' EX_TEMPFAIL (a temporary failure: run the same command again once the server is back)
EXIT_UNREACHABLE = 75
# columns of that view: the parent's best, each trial's own results (docs/tracking.md, 'The MLflow UI')
STUDY_VIEW_METRICS = ["best_value", DEFAULT_OBJECTIVE, f"cv_{DEFAULT_OBJECTIVE}_std", "test_accuracy", "final_train_accuracy",
                      "train_time_s", "test_time_s", "model_size_mb"]


@dataclass
class Plan:
    base: TrainConfig
    space: SearchSpace
    options: StudyOptions  # resolved: study_name, storage, pruner and register_name are set
    trainer: Trainer | None  # None: checked, not yet prepared (`check`)
    data: Splits | None = None  # loaded by prepare; worker processes load their own
    objectives: list[Objective] = dataclasses.field(default_factory=lambda: goals.parse_objectives(()))
    constraints: list[Constraint] = dataclasses.field(default_factory=list)
    prune_on: str | None = DEFAULT_OBJECTIVE  # the epoch metric reported to Optuna (the pruner's); None: none

    def signature(self) -> dict:
        fixed = {k: v for k, v in dataclasses.asdict(self.base).items()
                 if k not in NOT_IN_SIGNATURE and k not in self.space.dims}
        if not fixed.get("cv"):  # studies made before --cv existed still resume
            fixed.pop("cv", None)
        return studies.signature_of(fixed, self.space, self.options.sampler, self.objectives, self.constraints)

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1


def plan(train_options: dict, searched: dict, options: StudyOptions, trainer: Trainer) -> Plan:
    """Check everything a study needs before anything is created; ConfigError on bad input."""
    return prepare(check(train_options, searched, options), trainer)


def check(train_options: dict, searched: dict, options: StudyOptions) -> Plan:
    """The checks that need no data, model or trainer; a Plan without trainer and data (`prepare`
    adds them). `tune` runs them before it imports its trainer (torch and MLflow: seconds), so
    bad input is answered at once."""
    options.validate()
    cv = int(train_options.get("cv") or 0)  # never searched: every trial sees the same folds
    objectives = goals.parse_objectives(options.objectives, cv)
    constraints = goals.parse_constraints(options.constraints, cv)
    if len(objectives) > 1 and options.sampler not in studies.MULTI_OBJECTIVE_SAMPLERS:
        raise ConfigError(f"--sampler {options.sampler} optimises one objective; with "
                          f"{len(objectives)} use {', '.join(studies.MULTI_OBJECTIVE_SAMPLERS)}")
    pruner, prune_on = _pruning(options.pruner, objectives, cv)
    space = SearchSpace.parse(searched, train_options)
    base = _checked_base(TrainConfig(**{**train_options, **space.fixed_options}), space)
    studies.create_sampler(options.sampler, space, base.seed)  # grid over a continuous range fails here
    trials = options.trials
    if options.sampler == "grid":  # a grid is done once every combination ran: --trials cannot exceed it
        trials = min(trials, math.prod(len(v) for v in space.grid().values()))
    name = options.study_name or studies.default_study_name(
        {**dataclasses.asdict(base), "model": "+".join(map(str, space.values("model"))) if "model" in space.dims else base.model})
    resolved = dataclasses.replace(options, trials=trials, study_name=name, pruner=pruner,
                                   storage=options.storage or studies.DEFAULT_STORAGE,
                                   register_name=options.register_name or name)
    return Plan(base, space, resolved, None, None, objectives, constraints, prune_on)


def prepare(p: Plan, trainer: Trainer) -> Plan:
    """`p` (checked) with its trainer and the data it loaded: model names, the dataset and
    pretrained weights checked before any study is created; ConfigError on bad input. With
    --workers N, the workers' fork server starts first (_start_fork_server)."""
    if p.options.workers > 1:
        _start_fork_server(trainer)
    try:
        prepared = trainer.prepare(p.base)
        _check_models(p.base, p.space)
    except BaseException:  # bad data, a model name, Ctrl-C
        if p.options.workers > 1:
            _stop_fork_server()
        raise
    return dataclasses.replace(p, trainer=trainer, data=prepared.data)


def _pruning(pruner: str | None, objectives: list[Objective], cv: int = 0) -> tuple[str, str | None]:
    """(pruner, epoch metric reported to Optuna). Optuna prunes single-objective studies only, on
    a value reported every epoch (with --cv: every fold); a study that cannot prune runs without
    (one line says so) and refuses an explicit pruner. The default is median, with --cv too: it
    compares a trial's fold with the same fold (same rows: one seed) of the earlier trials, so it
    can stop a bad trial after its first fold; wilcoxon needs --cv 5 or more (study.WILCOXON_MIN_FOLDS)."""
    metric = objectives[0].metric
    if pruner == "wilcoxon" and cv < studies.WILCOXON_MIN_FOLDS:
        raise ConfigError(f"--pruner wilcoxon compares a trial's folds with the best trial's and can prune only "
                          f"from fold 4 on (p < {studies.WILCOXON_P}), before the last: it needs --cv "
                          f"{studies.WILCOXON_MIN_FOLDS} or more, got --cv {cv}; use median (the default)")
    if len(objectives) == 1 and metric in goals.EPOCH_METRICS:
        return pruner or "median", metric  # reported every epoch even unpruned: Optuna's plots show it
    why = (f"Optuna cannot prune a study with {len(objectives)} objectives" if len(objectives) > 1 else
           f"the objective {metric} is known only once a trial ends (prunable: {', '.join(goals.EPOCH_METRICS)})")
    if pruner not in (None, "none"):
        raise ConfigError(f"--pruner {pruner}: {why}; leave --pruner out (trials then run without pruning)")
    if pruner is None:
        print(f"note: trials run without pruning: {why}", file=sys.stderr)
    return "none", None


def _check_models(base: TrainConfig, space: SearchSpace) -> None:
    """Every model a study may sample exists (and its pretrained weights can be had), checked
    before any trial runs: an unknown name is a ConfigError with close matches."""
    if "model" not in space.searched():
        return
    from mlproject.data import peek_dataset
    from mlproject.models import create_model

    shape = peek_dataset(base)
    for model in space.values("model"):
        overrides = space.suggest(_Fixed({"model": model}), dataclasses.asdict(base))
        create_model(dataclasses.replace(base, **{**overrides, "model": model}), shape)


class _Fixed:
    """A stand-in Optuna trial that answers every suggestion with a given value, else the first
    choice or the low end (to build the configuration a model would be trained with).
    optuna.trial.FixedTrial cannot: it raises for a name it was not given a value for."""

    def __init__(self, values: dict):
        self.values = values

    def suggest_categorical(self, name, choices):
        return self.values.get(name, choices[0])

    def suggest_float(self, name, low, high, log=False):
        return self.values.get(name, low)

    def suggest_int(self, name, low, high, log=False):
        return self.values.get(name, low)


def _checked_base(base: TrainConfig, space: SearchSpace) -> TrainConfig:
    """`base` with the space's first values, validated with every end of every range (each must
    be a valid value itself)."""
    base = dataclasses.replace(base, **space.suggest(_Fixed({}), dataclasses.asdict(base)))
    base.validate()
    for name in space.dims:
        for v in space.values(name):
            dataclasses.replace(base, **{name: v}).validate()
    return base


# ---------------------------------------------------------------------------------------------

def close_stale_run(study, trial) -> None:
    """A trial whose worker died (no heartbeat): its MLflow run ends KILLED, not RUNNING, and its
    reason names the worker (the run's tag mlproject.worker, host:pid), so which node or process
    died is in the run."""
    run_id = trial.user_attrs.get("mlflow_run_id")
    if run_id:
        stored = tracking.stored_run(run_id)
        worker = stored.tags.get(Tags.WORKER) if stored else None
        tracking.set_run_tags(run_id, {Tags.STATE: "FAIL"})
        tracking.end_run(run_id, "KILLED", f"worker {worker + ' ' if worker else ''}stopped sending heartbeats "
                                           "(killed?); trial re-run")


def close_orphaned_runs(study, parent: str) -> None:
    """Runs of FAIL trials that were left open, because the tracking server was unreachable when
    the trial failed (objective.Worker.objective), end KILLED with the reason; the trials are
    re-run as any failed trial is. Each invocation does it once the server answers again."""
    from optuna.trial import TrialState

    open_runs = tracking.child_runs(parent, {Tags.STATE: "RUNNING"})
    if not open_runs:
        return
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        run_id = t.user_attrs.get("mlflow_run_id")
        if run_id in open_runs:
            tracking.set_run_tags(run_id, {Tags.STATE: "FAIL"})
            if open_runs[run_id] == "RUNNING":
                tracking.end_run(run_id, "KILLED", "the tracking server was unreachable; trial re-run ("
                                 + t.user_attrs.get("fail_reason", "") + ")")


def lost_server(e: BaseException, storage) -> str | None:
    """The line saying which server stayed unreachable past its retries, if that is what `e`
    is (the Optuna storage's database, its URL without the password, or the tracking server);
    None for any other error."""
    # a ReconnectingRDBStorage raises a lost database only once its retries are spent
    why = isinstance(storage, studies.ReconnectingRDBStorage) and studies.lost_database(e)
    if why:
        return (f"Optuna storage {studies.redact(storage.url)!r} unreachable ({why}) after retrying for "
                f"{studies.STORAGE_RETRY_S:g} s; rerun the same command to resume once it is back")
    why = tracking.unreachable(e)
    if why:
        return (f"MLflow tracking server {studies.redact(tracking.tracking_uri())} unreachable ({why}) after "
                "MLflow's HTTP retries; rerun the same command to resume once it is back")
    return None


class ServerLost(RuntimeError):
    """Worker processes stopped because a server stayed unreachable; each said which."""


def _open(p: Plan, worker_index: int = 0):
    o = p.options
    storage = studies.create_storage(o.storage, on_stale=close_stale_run,
                                     grace_period_s=o.grace_period or studies.GRACE_PERIOD_S)
    pruner = studies.create_pruner(o.pruner, p.base.cv or p.base.epochs)
    study = studies.open_study(o.study_name, storage, studies.create_sampler(o.sampler, p.space, p.base.seed),
                               pruner, p.signature(), [obj.optuna_direction for obj in p.objectives])
    # Workers and resumed invocations must not replay one random stream (a resumed TPE study
    # would repeat its first trials): derive the seed from the worker and the trials so far, and
    # from the launcher's task index: workers that separate `tune` processes start at once have
    # worker_index 0 and the same trials so far (a Slurm array of 2 sampled the same lr, momentum
    # and weight decay in its two first trials, and again in the next two, 2026-12-04).
    seed = p.base.seed + 100_000 * launch_index() + 1000 * worker_index + len(study.trials)
    study.sampler = studies.create_sampler(o.sampler, p.space, seed)
    return study, storage


# the task's index among workers a cluster started together: Slurm job arrays, Kubernetes Indexed Jobs
LAUNCH_INDEX_VARIABLES = ("SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX")


def launch_index() -> int:
    """This process's index among the workers its launcher started (LAUNCH_INDEX_VARIABLES), 0
    outside one. Workers started by hand at once tell themselves apart by --seed."""
    for name in LAUNCH_INDEX_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def _worker(p: Plan, parent: str, storage, **kwargs) -> Worker:
    from .objective import Worker

    o = p.options
    return Worker(p.base, p.space, p.trainer, parent, o.trials, o.max_failures, [p.data] if p.data else [],
                  heartbeat=studies.has_heartbeat(storage), objectives=p.objectives, constraints=p.constraints,
                  prune_on=p.prune_on, verbose=o.verbose, system_metrics=o.system_metrics, storage=storage, **kwargs)


def _worker_main(p: Plan, index: int, threads: int) -> None:
    """A worker process: its own threads budget, storage connection and sampler seed."""
    import gc

    import torch

    # the fork server's imports, inherited (spawned, outside Linux: its own so far): alive until the
    # process ends, so no collection scans them again (nor writes to their pages, which stay shared
    # with the server): gc.freeze's documented use
    gc.freeze()

    handle_signals()
    _quiet(p.options.verbose)
    torch.set_num_threads(threads)
    storage = None
    try:
        study, storage = _open(p, index)
        _worker(p, study.user_attrs[PARENT_ATTR], storage).run(study)
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM (from the sender, or forwarded by the
        sys.exit(exit_code(e))      # parent): its trial ended KILLED and FAIL; the parent reports
    except Exception as e:
        line = lost_server(e, storage)
        if line is None:
            raise
        print(f"Error: {line}", file=sys.stderr, flush=True)
        sys.exit(EXIT_UNREACHABLE)
    finally:
        leave_heap_to_the_os()


def _parent_run(study, storage, p: Plan, env_run_id: str | None, wait_s: float = 120.0) -> tuple[str, bool]:
    """The study's parent run: the stored one (resume); else one new run (the `mlflow run` one if
    any), made by exactly one of the workers starting together while the others wait for it.
    Also whether this process samples the parent's system metrics: not where another `tune`
    process does (it made the parent, or holds it open and is sampling it: workers on several
    machines), so one machine's figures fill the parent's `system/...` series."""
    name = p.options.study_name
    run_id = study.user_attrs.get(PARENT_ATTR)
    stale = run_id if run_id and not tracking.run_exists(run_id) else None
    if stale:
        print(f"warning: study {name!r} points at parent run {stale}, which is not in "
              f"{tracking.tracking_uri()}; starting a new parent run", file=sys.stderr)
    elif run_id:
        elsewhere = tracking.system_metrics_recorded_elsewhere(run_id)  # before it is RUNNING again
        return _resumed_parent(run_id, env_run_id), not elsewhere
    with studies.claim(storage, name, f"parent-replacing-{stale or 'none'}") as won:
        stored = study.user_attrs.get(PARENT_ATTR)  # read from the storage, not cached
        if won and stored in (None, stale):
            return _new_parent(study, p, env_run_id), True
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:  # another worker made it, or is making it: poll the storage
        run_id = study.user_attrs.get(PARENT_ATTR)
        if run_id and run_id != stale:
            tracking.resume_run(run_id)
            return run_id, False
        time.sleep(0.5)
    raise ConfigError(f"study {name!r}: another worker claimed the parent run but stored none within {wait_s:.0f} s")


def _resumed_parent(run_id: str, env_run_id: str | None) -> str:
    tracking.resume_run(run_id, env_run_id, Tags.PARENT_RUN)  # under `mlflow run`: its run points here
    return run_id


def _new_parent(study, p: Plan, env_run_id: str | None) -> str:
    """The parent run (`mlflow run`'s, or a new one) with the study's params, tags, saved view
    and dataset analysis; its id stored in the study."""
    o = p.options
    tags = {Tags.STUDY: o.study_name, Tags.SAMPLER: o.sampler, Tags.PRUNER: o.pruner,
            Tags.STORAGE: studies.redact(o.storage), Tags.ROLE: "study"}
    if env_run_id:
        run_id = env_run_id
        tracking.set_run_tags(run_id, tags)
    else:
        run_id = tracking.start_run(p.base.experiment, f"study-{o.study_name}", tags)
    fixed = {k: v for k, v in dataclasses.asdict(p.base).items() if k not in p.space.dims}
    tracking.log_params({**fixed, **p.space.describe(), "sampler": o.sampler, "pruner": o.pruner,
                         "objectives": ",".join(str(obj) for obj in p.objectives),
                         "constraints": ",".join(str(c) for c in p.constraints)}, run_id=run_id)
    view = tracking.save_runs_view(tracking.experiment_of(run_id), f"study-{o.study_name}", f"study {o.study_name}",
                                   STUDY_VIEW_METRICS, ["model", *p.space.searched()])
    study.set_user_attr(studies.VIEW_ATTR, view)
    if p.data is not None:  # the dataset analysis, once for the study (trials log only the inputs)
        tracking.log_dataset(p.data.info, *p.data.analysis_sample(), run_id=run_id)
    study.set_user_attr(PARENT_ATTR, run_id)
    return run_id


def _quiet(verbose: bool) -> None:
    """Optuna's and MLflow's INFO chatter off (it breaks the progress bar mid-line), unless --verbose."""
    tracking.set_verbosity(verbose)
    studies.set_verbosity(verbose)


def execute(p: Plan) -> int:
    """Run the study to its --trials; returns the exit code: 0, 1 when trials keep failing, 130
    or 143 on SIGINT or SIGTERM, 75 (EXIT_UNREACHABLE) when the storage or the tracking server is
    gone past its retries. Rerunning the same command resumes the same study and parent run.

    Steps: open the study, start (or resume) its parent run, run the trials, record the summary
    and end the parent with the trials' outcome, print the table."""
    from . import summary

    _quiet(p.options.verbose)
    if p.options.tracking_uri:
        tracking.use_tracking_uri(p.options.tracking_uri)  # worker processes inherit it
    try:
        study, storage = _open(p)  # may still refuse (storage unreachable, other search space): exit 2
    except BaseException:
        if p.options.workers > 1:
            _stop_fork_server()
        raise
    parent = None
    try:
        parent, samples = _parent_run(study, storage, p, tracking.detach_env_run())
        close_orphaned_runs(study, parent)
        tracking.set_run_tags(parent, {Tags.TRIALS: p.options.trials})  # a tag: --trials may grow on resume
        start = time.perf_counter()
        # the machine's CPU, memory and GPU use while the trials run, into the parent (resumed: after
        # its last step); end_run stops the sampler before it ends the run, the `with` on any other way out
        with tracking.system_metrics(parent, resume=True) if samples else contextlib.nullcontext():
            status, code, reason = _run_trials(study, storage, p, parent)
            if status != "KILLED":
                _record(study, storage, p, parent, status, reason, time.perf_counter() - start)
        if status != "KILLED":
            print(summary.table(study, p, parent, time.perf_counter() - start))
        return code
    except ServerLost:  # worker processes (--workers N) said which server, a line each
        return EXIT_UNREACHABLE
    except Exception as e:
        code = _lost_server_exit(e, storage, parent)
        if code is None:
            raise
        return code


def _run_trials(study, storage, p: Plan, parent: str) -> tuple[str, int, str | None]:
    """The trials, to --trials; (the parent run's status, the exit code, the reason). An
    interruption ends the parent KILLED here (the trials in progress already are)."""
    from .objective import StudyFailing

    try:
        _run_workers(study, storage, p, parent)
    except StudyFailing as e:
        print(f"Error: {e}", file=sys.stderr)
        return "FAILED", 1, str(e)
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM (mlproject.signals): one path
        why = f"interrupted by {e or 'SIGINT (Ctrl-C)'}"
        print(f"{why}: the current trials ended KILLED; rerun the same command to resume", file=sys.stderr)
        tracking.end_run(parent, "KILLED", why)
        return "KILLED", exit_code(e), why
    return "FINISHED", 0, None


def _record(study, storage, p: Plan, parent: str, status: str, reason: str | None, wall_time_s: float) -> None:
    """The study's summary onto the parent run (summary.record), then the parent ended with
    `status`; ended so also when the summary fails, unless the tracking server is what failed."""
    from . import summary

    try:
        summary.record(study, storage, p, parent, wall_time_s=wall_time_s)
    except Exception as e:
        if tracking.unreachable(e) is None:  # else the parent cannot be ended either (execute)
            tracking.end_run(parent, status, reason)
        raise
    tracking.end_run(parent, status, reason)


def _lost_server_exit(e: Exception, storage, parent: str | None) -> int | None:
    """A server unreachable past its retries (docs/scaling-out.md): one line, no traceback, exit
    75; the trial in progress is failed (or, with the storage gone, failed once its heartbeat is
    stale) and re-run by the next invocation, which resumes the study and its parent run. None
    for any other exception (the caller re-raises it)."""
    line = lost_server(e, storage)
    if line is None:
        return None
    print(f"Error: {line}", file=sys.stderr)
    if tracking.unreachable(e) is not None:
        tracking.give_up_on_server()  # what MLflow ends at exit: one quick try
    elif parent is not None:  # the database is gone, the tracking server is up: the parent says why
        with contextlib.suppress(Exception):
            tracking.end_run(parent, "KILLED", line)
    return EXIT_UNREACHABLE


def _run_workers(study, storage, p: Plan, parent: str) -> None:
    from .summary import progress

    deadline = time.monotonic() + p.options.timeout if p.options.timeout else None
    with progress(study, p) as bar:
        if p.options.workers == 1:
            _worker(p, parent, storage, deadline=deadline, callbacks=[bar], echo=bar.write).run(study)
        else:
            _run_processes(p, bar)
        # trials of workers that died (elsewhere or here) are failed once their heartbeat is
        # stale, and re-run: finish the study's count here
        _worker(p, parent, storage, deadline=deadline, callbacks=[bar], echo=bar.write).finish(study)


def _stop_workers(procs, signum: int, wait_s: float = WORKER_STOP_S) -> None:
    """Pass the signal on to the workers (`docker stop` and Kubernetes signal the main process
    alone; a terminal's Ctrl-C reaches them too, and a duplicate within
    mlproject.signals.SAME_REQUEST_S is ignored), wait for them to end their trials' runs, and
    kill any still alive after `wait_s`."""
    for proc in procs:
        if proc.is_alive():
            os.kill(proc.pid, signum)
    deadline = time.monotonic() + wait_s
    for proc in procs:
        proc.join(timeout=max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join()


# What every worker imports in its first trial that the trainer's modules import only where used
# (so that bad input is answered before them): MLflow and its SQL store (sqlalchemy, alembic),
# matplotlib (the confusion-matrix figure), scikit-learn's metrics, and torch._dynamo (imported by
# the first optimizer step). 5.3 s of CPU per worker on 2 idle cores (2026-12-03), now once, in the
# fork server: no faster in wall time where the workers have a core each (`tune --workers 2` of two
# softmax trials: 18.2-19.4 s either way), but the CPU of a loaded machine; none of them starts a
# thread on import.
WORKER_PRELOAD = ["tracking.runs", "tracking.record", "tracking.checkpoints", "mlflow.store.tracking.sqlalchemy_store",
                  "sklearn.metrics", "torch._dynamo"]


def _worker_context(trainer: Trainer):
    """Where worker processes come from: multiprocessing's fork server, one clean process that
    imports the trainer's modules once (torch, MLflow, Optuna, scikit-learn: ~7 s of CPU each time
    on a 2-core machine) and forks every worker from there, where 'spawn' had each worker import
    them again. The server has touched neither CUDA nor a thread pool (imports start neither), so
    its forks are as safe as spawned processes (OpenBLAS's pool, which numpy starts on import,
    re-forms after a fork: the case of every fork-started DataLoader); this process, which has
    touched both, never forks. Outside Linux, 'spawn': Windows has no fork, and macOS's system
    frameworks are not safe to use in a forked child."""
    if not sys.platform.startswith("linux"):
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["tuning._fork_server", type(trainer).__module__, "tuning.objective",
                               *WORKER_PRELOAD])
    return ctx


def _start_fork_server(trainer: Trainer) -> None:
    """Start the workers' fork server now, once the options are checked and before the data is
    loaded, so that its imports (torch, MLflow, scikit-learn, torch._dynamo: ~6 s of CPU) run on
    another core beside this process's data, study and parent run (~3 s, mostly Python) instead
    of after them, where the first worker.start() would start it (`tune --workers 2` of two
    one-epoch softmax trials: 0.82-0.88x the wall time of starting it once the study was open, 3
    interleaved pairs, 2026-12-04). Where the data or the study is then refused (exit 2), the
    server is stopped (_stop_fork_server). `multiprocessing.forkserver.ensure_running` is what
    Process.start() calls for it (CPython 3.8-3.13; not in the module's documentation, hence this
    one function); where it is missing the first start() starts the server as before."""
    ctx = _worker_context(trainer)
    if ctx.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        ensure_running = getattr(forkserver, "ensure_running", None)
        if ensure_running is not None:
            ensure_running()


def _stop_fork_server() -> None:
    """End the fork server that _start_fork_server started, where `tune` stops before any worker
    (bad data, a refused study, Ctrl-C): it would otherwise run its ~6 s of imports to the end,
    for nothing, before it found this process gone. multiprocessing has no public call for it (its
    own stop waits for the server), so it is found among this process's children by its command
    line; a later start in this process starts a new one (ensure_running sees it dead)."""
    import psutil

    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            if "multiprocessing.forkserver" in " ".join(child.cmdline()):
                child.kill()


def _run_processes(p: Plan, bar) -> None:
    """p.options.workers worker processes on this machine, the cores shared between them."""
    from . import summary

    workers = p.options.workers
    threads = max(1, (os.cpu_count() or 1) // workers)  # N workers x threads = the cores, no oversubscription
    ctx = _worker_context(p.trainer)
    procs = [ctx.Process(target=_worker_main, args=(dataclasses.replace(p, data=None), i, threads))
             for i in range(1, workers + 1)]
    # this process only waits from here on: the summary's imports meanwhile, in a thread
    threading.Thread(target=summary.import_plotting, name="summary-imports", daemon=True).start()
    for proc in procs:
        proc.start()
    try:
        while any(proc.is_alive() for proc in procs):
            bar.poll()
            for proc in procs:
                proc.join(timeout=2.0)
    except KeyboardInterrupt as e:
        _stop_workers(procs, getattr(e, "signum", signal.SIGINT))
        raise
    bad = [proc.exitcode for proc in procs if proc.exitcode]
    if bad and set(bad) == {EXIT_UNREACHABLE}:
        raise ServerLost(f"{len(bad)} of {workers} workers lost a server")
    if bad:
        from .objective import StudyFailing

        raise StudyFailing(f"{len(bad)} of {workers} workers exited with codes {bad}")
