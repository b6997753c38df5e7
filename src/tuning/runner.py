"""Plan a study (every check, nothing created), then execute it: parent run, workers, summary.

    p = plan(train_options, {"lr": "1e-4:1e-1", ...}, trials=40, sampler="tpe", ...)
    exit_code = execute(p)
"""
from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass

import mlflow
from mlflow.entities import Param
from mlflow.tracking import MlflowClient

import tracking
from mlproject.config import ConfigError, TrainConfig
from mlproject.data import Splits

from . import study as studies
from .objective import StudyFailing, Worker
from .space import SearchSpace

# options that may change between invocations of one study without changing what it searches
NOT_IN_SIGNATURE = ("experiment", "run_name", "log_model", "num_workers", "device", "data_dir", "seed",
                    "cache_features", "compile")
PARENT_ATTR = "mlflow_parent_run_id"
# columns of that view: the parent's best, each trial's own results (README, 'The MLflow UI')
STUDY_VIEW_METRICS = ["best_value", "val_accuracy", "test_accuracy", "final_train_accuracy", "train_time_s",
                      "test_time_s", "model_size_mb"]


@dataclass
class Plan:
    base: TrainConfig
    space: SearchSpace
    trials: int
    timeout: float | None
    sampler: str
    pruner: str
    study_name: str
    storage: str
    tracking_uri: str | None
    workers: int
    register_name: str
    max_failures: int
    grace_period: int | None
    data: Splits | None = None

    def signature(self) -> dict:
        fixed = {k: v for k, v in dataclasses.asdict(self.base).items()
                 if k not in NOT_IN_SIGNATURE and k not in self.space.dims}
        return studies.signature_of(fixed, self.space, self.sampler)


def plan(options: dict, searched: dict, trials: int, timeout, sampler: str, pruner: str, study_name,
         storage, tracking_uri, workers: int, register_name, max_failures: int, grace_period) -> Plan:
    """Check everything a study needs before anything is created; ConfigError on bad input."""
    from mlproject.experiment import prepare

    for name, value, low in (("trials", trials, 1), ("workers", workers, 1), ("max failures", max_failures, 1)):
        if value < low:
            raise ConfigError(f"--{name.replace(' ', '-')} must be >= {low}, got {value}")
    if timeout is not None and timeout <= 0:
        raise ConfigError(f"--timeout must be > 0 seconds, got {timeout}")
    if sampler not in studies.SAMPLERS:
        raise studies.unknown("sampler", sampler, studies.SAMPLERS)
    if pruner not in studies.PRUNERS:
        raise studies.unknown("pruner", pruner, studies.PRUNERS)
    space = SearchSpace.parse(searched, optimizer=options.get("optimizer", "sgd"))
    base = TrainConfig(**options)
    base = dataclasses.replace(base, **{n: d.choices[0] if d.kind != "range" else d.low for n, d in space.dims.items()})
    base.validate()
    for name, d in space.dims.items():  # every end of every range must be a valid value itself
        for v in ((d.low, d.high) if d.kind == "range" else d.choices):
            dataclasses.replace(base, **{name: v}).validate()
    studies.create_sampler(sampler, space, base.seed)  # grid over a continuous range fails here
    if sampler == "grid":  # a grid is done once every combination ran: --trials cannot exceed it
        trials = min(trials, math.prod(len(v) for v in space.grid().values()))
    prepared = prepare(base)  # model name, dataset, pretrained weights: checked before any study
    name = study_name or studies.default_study_name(dataclasses.asdict(base))
    return Plan(base, space, trials, timeout, sampler, pruner, name, storage or studies.DEFAULT_STORAGE,
                tracking_uri, workers, register_name or name, max_failures, grace_period, data=prepared.data)


# ---------------------------------------------------------------------------------------------

def close_stale_run(study, trial) -> None:
    """A trial whose worker died (no heartbeat): its MLflow run ends KILLED, not RUNNING."""
    run_id = trial.user_attrs.get("mlflow_run_id")
    if not run_id:
        return
    tracking.set_run_tags(run_id, {tracking.FAILURE_TAG: "worker stopped sending heartbeats (killed?); trial re-run",
                                   "optuna.state": "FAIL"})
    MlflowClient().set_terminated(run_id, "KILLED")


def _open(p: Plan, worker_index: int = 0):
    storage = studies.create_storage(p.storage, on_stale=close_stale_run,
                                     grace_period_s=p.grace_period or studies.GRACE_PERIOD_S)
    pruner = studies.create_pruner(p.pruner, p.base.epochs)
    study = studies.open_study(p.study_name, storage, studies.create_sampler(p.sampler, p.space, p.base.seed),
                               pruner, p.signature())
    # Workers and resumed invocations must not replay one random stream (a resumed TPE study
    # would repeat its first trials): derive the seed from the worker and the trials so far.
    study.sampler = studies.create_sampler(p.sampler, p.space, p.base.seed + 1000 * worker_index + len(study.trials))
    return study, storage


def _worker_main(p: Plan, index: int, threads: int) -> None:
    """A worker process: its own threads budget, storage connection and sampler seed."""
    import torch

    torch.set_num_threads(threads)
    study, _ = _open(p, index)
    try:
        Worker(p.base, p.space, study.user_attrs[PARENT_ATTR], p.trials, p.max_failures, p.data).run(study)
    except KeyboardInterrupt:  # Ctrl-C reaches every worker: its trial ended KILLED; the parent reports
        sys.exit(130)


def _exists(client, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id).info.lifecycle_stage != "deleted"
    except MlflowException:
        return False


def _parent_run(study, storage, p: Plan, env_run_id: str | None, wait_s: float = 120.0) -> str:
    """The study's parent run: the stored one (resume); else one new run (the `mlflow run` one if
    any), made by exactly one of the workers starting together while the others wait for it."""
    client = MlflowClient()
    run_id = study.user_attrs.get(PARENT_ATTR)
    stale = run_id if run_id and not _exists(client, run_id) else None
    if stale:
        print(f"warning: study {p.study_name!r} points at parent run {stale}, which is not in "
              f"{mlflow.get_tracking_uri()}; starting a new parent run", file=sys.stderr)
    elif run_id:
        client.update_run(run_id, status="RUNNING")
        if env_run_id and env_run_id != run_id:  # a resumed study under `mlflow run`: point there
            client.set_tag(env_run_id, "mlproject.parent_run", run_id)
            client.set_terminated(env_run_id, "FINISHED")
        return run_id
    if not studies.claim(storage, p.study_name, f"parent-replacing-{stale or 'none'}"):
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:  # another worker is making it: poll the storage
            run_id = study.user_attrs.get(PARENT_ATTR)
            if run_id and run_id != stale:
                client.update_run(run_id, status="RUNNING")
                return run_id
            time.sleep(0.5)
        raise ConfigError(f"study {p.study_name!r}: another worker claimed the parent run but stored none "
                          f"within {wait_s:.0f} s")
    if env_run_id:
        run_id = env_run_id
    else:
        exp = mlflow.set_experiment(p.base.experiment)
        run_id = client.create_run(exp.experiment_id, run_name=f"study-{p.study_name}").info.run_id
    fixed = {k: v for k, v in dataclasses.asdict(p.base).items() if k not in p.space.dims}
    have = client.get_run(run_id).data.params
    params = {**fixed, **p.space.describe(), "sampler": p.sampler, "pruner": p.pruner}
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items() if k not in have])
    tracking.set_run_tags(run_id, {"optuna.study": p.study_name, "optuna.sampler": p.sampler,
                                   "optuna.pruner": p.pruner, "optuna.storage": studies.redact(p.storage),
                                   "mlproject.role": "study"})
    experiment_id = client.get_run(run_id).info.experiment_id
    view = tracking.save_runs_view(experiment_id, f"study-{p.study_name}", f"study {p.study_name}", STUDY_VIEW_METRICS,
                                   ["model", *p.space.searched()])
    study.set_user_attr(studies.VIEW_ATTR, view)
    if p.data is not None:  # the dataset analysis, once for the study (trials log only the inputs)
        from mlproject.experiment import log_dataset

        log_dataset(p.data, run_id=run_id)
    study.set_user_attr(PARENT_ATTR, run_id)
    return run_id


def execute(p: Plan) -> int:
    """Run the study to its --trials; returns the exit code (0, 1 when trials keep failing,
    130 on Ctrl-C). Rerunning the same command resumes the same study and parent run."""
    from . import summary

    if p.tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = p.tracking_uri  # worker processes inherit it
        mlflow.set_tracking_uri(p.tracking_uri)
    study, storage = _open(p)  # may still refuse (storage unreachable, other search space): exit 2
    env_run_id = os.environ.pop("MLFLOW_RUN_ID", None)  # trials must not join `mlflow run`'s run
    parent = _parent_run(study, storage, p, env_run_id)
    tracking.set_run_tags(parent, {"optuna.trials": p.trials})  # a tag: --trials may grow on resume
    client = MlflowClient()
    start = time.perf_counter()
    status, code = "FINISHED", 0
    try:
        _run_workers(study, p, parent)
    except StudyFailing as e:
        print(f"Error: {e}", file=sys.stderr)
        status, code = "FAILED", 1
        client.set_tag(parent, tracking.FAILURE_TAG, str(e)[:5000])
    except KeyboardInterrupt:
        print("interrupted: the current trial ended KILLED; rerun the same command to resume", file=sys.stderr)
        client.set_terminated(parent, "KILLED")
        return 130
    try:
        summary.record(study, storage, p, parent, wall_time_s=time.perf_counter() - start)
    finally:
        client.set_terminated(parent, status)
    print(summary.table(study, p, parent, time.perf_counter() - start))
    return code


def _run_workers(study, p: Plan, parent: str) -> None:
    from .summary import progress

    deadline = time.monotonic() + p.timeout if p.timeout else None
    with progress(study, p) as bar:
        if p.workers == 1:
            Worker(p.base, p.space, parent, p.trials, p.max_failures, p.data, deadline=deadline,
                   callbacks=[bar]).run(study)
        else:
            cores = os.cpu_count() or 1
            threads = max(1, cores // p.workers)  # N workers x threads = the cores, no oversubscription
            ctx = multiprocessing.get_context("spawn")
            procs = [ctx.Process(target=_worker_main, args=(dataclasses.replace(p, data=None), i, threads))
                     for i in range(1, p.workers + 1)]
            for proc in procs:
                proc.start()
            while any(proc.is_alive() for proc in procs):
                bar.poll()
                for proc in procs:
                    proc.join(timeout=2.0)
            bad = [proc.exitcode for proc in procs if proc.exitcode]
            if bad:
                raise StudyFailing(f"{len(bad)} of {p.workers} workers exited with codes {bad}")
        # trials of workers that died (elsewhere or here) are failed once their heartbeat is
        # stale, and re-run: finish the study's count here
        Worker(p.base, p.space, parent, p.trials, p.max_failures, p.data, deadline=deadline,
               callbacks=[bar]).finish(study)
