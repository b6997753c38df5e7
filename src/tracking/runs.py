"""Every run's lifecycle: start one (or join the one `mlflow run` created), and always end it
with a status. A training run is the active run; a study's parent is not (its trials are).

    with training_run("my-experiment", run_name="", tags={...}) as run:
        log_params(cfg_dict)
        ...
    # FINISHED on success; FAILED with tag mlproject.failure on an exception; KILLED on Ctrl-C

    parent = start_run("my-experiment", "study-s1", tags={...})   # or resume_run(stored id)
    with system_metrics(parent):                                  # CPU, memory, GPU over time
        ...
        end_run(parent, "FINISHED")                               # or FAILED/KILLED with a reason

`training_run(..., system_metrics=True)` and `system_metrics(run_id)` record the machine's CPU,
memory, disk, network and (with nvidia-ml-py) GPU use as `system/...` metrics, through MLflow's
own sampler; it is stopped before the run ends, on every way out.

`MLFLOW_TRACKING_URI` is respected (MLflow reads it); otherwise MLflow's default store is used
(sqlite:///mlflow.db in the working directory for MLflow 3), so `mlflow ui` there shows the runs.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
import re
import sys
import time
import warnings

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlproject import signals
from mlproject.errors import chained
from mlproject.metrics import Tags

from .env import run_id_from_env

_logger = logging.getLogger(__name__)
FAILURE_TAG = Tags.FAILURE
# MLflow rejects param values over 6,000 characters (MAX_PARAM_VAL_LENGTH in mlflow 3.x)
MAX_PARAM_LENGTH = 6000


def set_verbosity(verbose: bool) -> None:
    """MLflow's INFO lines (database migrations, 'Creating a new experiment') only with --verbose;
    its warnings always."""
    import logging

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)


@contextlib.contextmanager
def training_run(experiment: str, run_name: str = "", tags: dict | None = None, parent_run_id: str | None = None,
                 system_metrics: bool = False, resume_run_id: str | None = None):
    """Start a run in `experiment` (or join MLFLOW_RUN_ID under `mlflow run`, or nest under
    `parent_run_id`) as the active run; end it FINISHED, FAILED (reason in tag mlproject.failure)
    or KILLED. `system_metrics`: sample the machine's use into it while it runs (stopped first,
    whichever way the run ends).

    `resume_run_id`: an ended run (KILLED, FAILED) made RUNNING again and active instead, without
    its failure tag, its system metrics going on after their last step (`mlproject train --resume`).
    Under `mlflow run` the run MLflow created for this invocation gets tag mlproject.resumed_run
    (the run resumed) and ends FINISHED at once, as a resumed study's does."""
    joined = run_id_from_env() if parent_run_id is None else None
    tags = {k: str(v) for k, v in (tags or {}).items()} or None
    # log_system_metrics=False: this module runs the sampler (its own interval, a last sample at the
    # end); MLflow's MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING must not start a second one beside it
    # A signal while MLflow creates the run (tens of ms; a trial's worker signalled as its trial
    # starts: seen in tests/test_tune_resume.py) waits until it exists, and then ends it KILLED. So
    # does one anywhere in the run's body (its params and dataset inputs, its Optuna records, its
    # results and artifacts), which is raised at the body's next stop_point() (the training loop's,
    # after the current batch) or at its end, before the run would end FINISHED: raised inside an
    # MLflow or Optuna call instead, it could leave a SQLite transaction open, whose lock then made
    # the clean-up fail ("database is locked": a worker signalled while logging its trial's params,
    # the trial left RUNNING; tests/test_tune_resume.py, sigterm-2-workers, 2026-12-04)
    with signals.deferred():
        if resume_run_id:
            resume_run(resume_run_id, joined, Tags.RESUMED_RUN)
            # the run's own experiment, whatever `experiment` says: MLflow refuses to start a run of
            # another experiment than the active one
            mlflow.set_experiment(experiment_id=_experiment_of(resume_run_id))
            run = mlflow.start_run(run_id=resume_run_id, tags=tags, log_system_metrics=False)
        elif joined:
            run = mlflow.start_run(run_id=joined, tags=tags, log_system_metrics=False)
        elif parent_run_id:  # a child lives in its parent's experiment, whatever `experiment` says
            run = mlflow.start_run(experiment_id=_experiment_of(parent_run_id), run_name=run_name or None,
                                   parent_run_id=parent_run_id, nested=True, tags=tags, log_system_metrics=False)
        else:
            mlflow.set_experiment(experiment)
            run = mlflow.start_run(run_name=run_name or None, tags=tags, log_system_metrics=False)
        with ended_on_exception(run.info.run_id), _system_metrics_if(run.info.run_id, system_metrics,
                                                                      resume=bool(resume_run_id)):
            signals.stop_point()
            yield run
            signals.stop_point()
    mlflow.end_run("FINISHED")


@contextlib.contextmanager
def ended_on_exception(run_id: str):
    """End `run_id` KILLED on Ctrl-C or SIGTERM, else FAILED (or the exception's `mlflow_status`: tuning's
    pruned trials end KILLED) with the reason in tag mlproject.failure, and re-raise. When the
    exception is the tracking server being unreachable, the run is ended only if one quick try
    reaches it (`give_up_on_server`); else it stays RUNNING until a later process ends it."""
    try:
        yield
    except KeyboardInterrupt as e:  # Ctrl-C, or mlproject.signals.Interrupted (SIGTERM too)
        end_run(run_id, "KILLED", f"interrupted by {e}" if str(e) else "interrupted (Ctrl-C)")
        raise
    except BaseException as e:
        if unreachable(e) is not None:
            give_up_on_server()
            with contextlib.suppress(MlflowException):
                end_run(run_id, "KILLED", f"{type(e).__name__}: {e}")
            raise
        end_run(run_id, getattr(e, "mlflow_status", "FAILED"), f"{type(e).__name__}: {e}")
        raise


def unreachable(exc: BaseException | None) -> str | None:
    """Why the tracking server could not be reached, if `exc`, or an exception it was raised
    from or while handling, is MLflow's HTTP client giving up on it after its retries
    (MLFLOW_HTTP_REQUEST_MAX_RETRIES ...; docs/scaling-out.md): 'Connection refused', a timeout,
    'too many 503 error responses'. None for any other error (the server's own answers
    included: RESOURCE_DOES_NOT_EXIST, a bad parameter)."""
    import requests

    for e in chained(exc):
        if isinstance(e, MlflowException):
            # mlflow.utils.rest_utils.http_request raises MlflowException('API request to URL
            # failed with exception ...') while handling the requests error (its __context__)
            cause = e.__cause__ or e.__context__
            if isinstance(cause, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                                  requests.exceptions.RetryError)):
                return _why_unreachable(cause)
    return None


def _why_unreachable(error: BaseException) -> str:
    """The innermost reason of a requests error: an OSError's text ('Connection refused'), else
    urllib3's (MaxRetryError.reason: 'Read timed out', 'too many 503 error responses')."""
    reason = error.args[0] if error.args and isinstance(error.args[0], BaseException) else error
    reason = getattr(reason, "reason", None) or reason  # urllib3's MaxRetryError
    inner = reason
    while inner is not None:
        if isinstance(inner, OSError) and inner.strerror:
            return inner.strerror
        inner = inner.__cause__ or inner.__context__
    text = str(reason).strip()
    return (text.splitlines()[0] if text else type(reason).__name__)[:300]


# what give_up_on_server sets: one attempt, refused at once or answered within 10 s
_GIVEN_UP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def give_up_on_server() -> None:
    """After one MLflow call has spent its retries on an unreachable server (about 4 minutes by
    default), this process's later calls try once (a 10 s timeout) instead of 4 minutes each:
    ending the run that was open, and the one MLflow ends itself at exit (its atexit end_run),
    would otherwise each wait as long before the process can exit. MLflow reads these settings
    at every request."""
    os.environ.update(_GIVEN_UP)


@contextlib.contextmanager
def reopened_run(run_id: str):
    """An ended run made the active run again (a study stores its best model into the best
    trial's run), ended FINISHED again, or as `ended_on_exception` says."""
    mlflow.start_run(run_id=run_id, log_system_metrics=False)
    with ended_on_exception(run_id):
        yield
    mlflow.end_run("FINISHED")


def end_run(run_id: str, status: str, reason: str | None = None) -> None:
    """End any run with `status` (FINISHED, FAILED, KILLED), `reason` in tag mlproject.failure;
    the active run is ended too, so no run of this process stays open. Its system-metrics sampler
    (if any) is stopped first: nothing is logged into the run once it has ended."""
    stop_system_metrics(run_id)
    client = MlflowClient()
    if reason:
        _set_tag_racing(client, run_id, FAILURE_TAG, reason[:5000])
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        mlflow.end_run(status)
    else:
        client.set_terminated(run_id, status)


def _set_tag_racing(client, run_id: str, key: str, value: str) -> None:
    """client.set_tag where another process may set the same new tag at the same moment (two
    workers of one study signalled together each end its parent KILLED with the reason): MLflow's
    SQL store inserts a tag it has not seen, and the second insert fails on the table's unique key
    ('UNIQUE constraint failed: tags.key, tags.run_uuid', through a tracking server a 400; seen in
    tests/test_deploy.py). Once the other one's row exists, the same call updates it: one retry."""
    try:
        client.set_tag(run_id, key, value)
    except MlflowException as e:
        if "UNIQUE constraint" not in str(e) and "duplicate key" not in str(e):  # sqlite; PostgreSQL
            raise
        client.set_tag(run_id, key, value)


def _delete_tag_racing(client, run_id: str, key: str) -> None:
    """client.delete_tag where another process may delete the same tag at the same moment: every
    worker of a requeued Slurm job array resumes the study's parent run at once, and each removes
    the failure tag the interruption left. The later delete finds no tag ('No tag with name:
    mlproject.failure', in 7 of 10 rounds of two processes resuming one run, 2026-12-04) or
    deletes no row (SQLAlchemy's warning that 0 rows matched): the tag is gone either way."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="DELETE statement on table 'tags' expected to delete")
        try:
            client.delete_tag(run_id, key)
        except MlflowException:
            if key in client.get_run(run_id).data.tags:
                raise


def start_run(experiment: str, run_name: str, tags: dict | None = None) -> str:
    """A new run in `experiment` that is not the active one (a study's parent: its trials run
    beside it, and any process may end it); returns its id."""
    exp = mlflow.set_experiment(experiment)
    tags = {k: str(v) for k, v in (tags or {}).items()}
    return MlflowClient().create_run(exp.experiment_id, run_name=run_name, tags=tags).info.run_id


def resume_run(run_id: str, env_run_id: str | None = None, pointer_tag: str = "") -> None:
    """Mark an ended run RUNNING again (a resumed study's parent, a resumed training run), without
    the failure tag of the invocation that ended it: a run that is RUNNING, then FINISHED, has
    failed no more. `env_run_id`: the run `mlflow run` created for this invocation, where it is
    another run: tagged `pointer_tag` = run_id (where the work goes on) and ended FINISHED."""
    client = MlflowClient()
    client.update_run(run_id, status="RUNNING")
    if FAILURE_TAG in client.get_run(run_id).data.tags:
        _delete_tag_racing(client, run_id, FAILURE_TAG)
    if env_run_id and env_run_id != run_id:
        set_run_tags(env_run_id, {pointer_tag: run_id})
        end_run(env_run_id, "FINISHED")


# ---------------------------------------------------------------------------------------------
# System metrics: the machine's CPU, memory, disk, network and GPU use over a run's time.

# One sample every 2 s, one logged step per 5 samples (their mean: 10 s, MLflow's own step), and the
# samples not yet logged as a last step when the sampler stops. A `mlproject train` on digits lasts a
# few seconds: at MLflow's 10 s interval, with MLflow dropping the samples it holds when stopped, it
# would record nothing. 2 s gives such a run a mean of one or two real samples; a 10 h run gets 3,600
# steps (8 metrics each, 5 more per GPU), not the 18,000 of a step every 2 s, and each step is the
# mean of five readings (GPU utilisation read every 2 s, not once per 10 s). The sampler costs a
# store read per sample (MLflow checks the run is still RUNNING) and a write per step; bench_speed
# measures it. MLflow's MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL / _SAMPLES_BEFORE_LOGGING override both.
SYSTEM_METRICS_INTERVAL_S = 2.0
SYSTEM_METRICS_SAMPLES = 5
SYSTEM_METRIC_PREFIX = "system/"
_samplers: dict[str, object] = {}  # run id -> its running sampler (this process's)


def _sampler(run_id: str, resume: bool):
    """MLflow's system-metrics sampler for `run_id`, any run (the active one or not).

    `mlflow.start_run(log_system_metrics=True)` is MLflow's public way, but it serves the active
    run only, at a process-wide interval (an environment variable) and drops the samples taken since
    its last step when the run ends. A study's parent run is not the active run (its trials are), so
    this uses the class behind it, `mlflow.system_metrics.system_metrics_monitor.SystemMetricsMonitor`
    (not in MLflow's API reference; its docstring documents run_id, sampling_interval,
    samples_before_logging, resume_logging, start() and finish()), with two additions:

    - the samples not yet logged when it stops become a last step (`aggregate_metrics`,
      `publish_metrics`, its `mlflow_logger`), so a run shorter than one step records one too;
    - a real first CPU reading: psutil.cpu_percent() measures since the calling thread's previous
      call, and a new thread's first call compares two readings microseconds apart (0.0 or 100.0).
      The sampler thread's first sample calls it once, then waits 0.5 s (on the monitor's stop
      event, so stopping does not wait) and measures.

    tests/test_runs.py pins what this relies on.
    """
    import psutil
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    class Sampler(SystemMetricsMonitor):
        primed = False

        def collect_metrics(self):
            if not self.primed:
                self.primed = True
                psutil.cpu_percent()
                self._shutdown_event.wait(0.5)
            return super().collect_metrics()

        def finish(self):
            super().finish()  # stops and joins the thread, sends the steps not yet sent
            try:
                tail = self.aggregate_metrics()  # the samples since the last step
                if tail:
                    self.publish_metrics(tail)
                    self.mlflow_logger.flush()
            except Exception as e:  # never in the way of ending the run
                _logger.warning("system metrics: the last samples of run %s were not logged: %s", run_id, e)

    return Sampler(run_id, sampling_interval=SYSTEM_METRICS_INTERVAL_S, samples_before_logging=SYSTEM_METRICS_SAMPLES,
                   resume_logging=resume)


@functools.lru_cache(maxsize=1)
def _system_metrics_ready() -> bool:
    """psutil importable (else one warning, and runs go without); MLflow's info lines about the
    sampler (started, stopping, no GPU) silenced; one note where a CUDA GPU's metrics need nvidia-ml-py."""
    if importlib.util.find_spec("psutil") is None:
        print("warning: system metrics are not recorded: psutil is not installed (pip install psutil)",
              file=sys.stderr)
        return False
    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
    torch = sys.modules.get("torch")
    if importlib.util.find_spec("pynvml") is None and torch is not None and torch.cuda.is_available():
        print('note: no GPU metrics: they need nvidia-ml-py (pip install -e ".[gpu]")', file=sys.stderr)
    return True


def start_system_metrics(run_id: str, resume: bool = False) -> None:
    """Sample the machine's use into `run_id` (any run: the active one or not) until
    `stop_system_metrics(run_id)` or `end_run(run_id, ...)`: metrics `system/cpu_utilization_percentage`,
    `system/system_memory_usage_megabytes`, ... and with nvidia-ml-py `system/gpu_0_utilization_percentage`,
    `system/gpu_0_memory_usage_megabytes`, ... (step 0, 1, ...; `resume`: after the run's last step)."""
    if run_id in _samplers or not _system_metrics_ready():
        return
    try:
        sampler = _sampler(run_id, resume)
    except Exception as e:  # as mlflow.start_run does: the run goes on without them
        _logger.warning("system metrics: not recorded for run %s: %s", run_id, e)
        return
    _samplers[run_id] = sampler
    sampler.start()


def stop_system_metrics(run_id: str) -> None:
    """Stop `run_id`'s sampler, if this process runs one: its thread ends and the samples it holds
    are logged (a last step) before this returns."""
    sampler = _samplers.pop(run_id, None)
    if sampler is not None:
        sampler.finish()


@contextlib.contextmanager
def system_metrics(run_id: str, resume: bool = False):
    """`start_system_metrics(run_id)`, stopped on the way out (on an exception or Ctrl-C too);
    ending the run inside (`end_run`) stops it first."""
    start_system_metrics(run_id, resume)
    try:
        yield
    except BaseException as e:
        if unreachable(e) is not None:  # the sampler's last step would wait out MLflow's retries again
            give_up_on_server()
        raise
    finally:
        stop_system_metrics(run_id)


def _system_metrics_if(run_id: str, enabled: bool, resume: bool = False):
    return system_metrics(run_id, resume) if enabled else contextlib.nullcontext()


def system_metrics_recorded_elsewhere(run_id: str) -> bool:
    """Whether another process samples `run_id`'s system metrics now: the run is RUNNING and its last
    system metric is younger than three steps (a study's parent opened by a `tune` on another
    machine; a parent left RUNNING by a `tune` killed outright has none that recent)."""
    run = MlflowClient().get_run(run_id)
    if run.info.status != "RUNNING":
        return False
    last = [m.timestamp for m in MlflowClient().get_metric_history(run_id, SYSTEM_METRIC_PREFIX + "cpu_utilization_percentage")]
    return bool(last) and time.time() - max(last) / 1000 < max(30.0, 3 * system_metrics_step_s())


def system_metrics_step_s() -> float:
    """Seconds between two logged steps of system metrics (MLflow's environment variables first)."""
    from mlflow.environment_variables import (MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING,
                                              MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL)

    return ((MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL.get() or SYSTEM_METRICS_INTERVAL_S)
            * (MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING.get() or SYSTEM_METRICS_SAMPLES))


def run_exists(run_id: str) -> bool:
    """Whether `run_id` is a run of the tracking store that is not deleted."""
    try:
        return MlflowClient().get_run(run_id).info.lifecycle_stage != "deleted"
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise


def child_runs(parent_run_id: str, tags: dict) -> dict[str, str]:
    """{run id: status} of the parent's child runs with these tag values (a few: the query is
    meant for runs left open, such as tag optuna.state=RUNNING)."""
    conditions = [f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
                  *(f"tags.`{k}` = '{v}'" for k, v in tags.items())]
    runs = MlflowClient().search_runs([_experiment_of(parent_run_id)], " and ".join(conditions), max_results=1000)
    return {r.info.run_id: r.info.status for r in runs}


def experiment_of(run_id: str) -> str:
    """The experiment id of a run."""
    return _experiment_of(run_id)


@functools.lru_cache(maxsize=64)
def _experiment_of(run_id: str) -> str:
    # a study's trials share one parent: one lookup per worker process, not one per trial
    return MlflowClient().get_run(run_id).info.experiment_id


def fail_env_run(message: str) -> None:
    """Bad input under `mlflow run`: mark the run MLflow created FAILED with the reason as a tag,
    so no run is left RUNNING. Does nothing for standalone runs (none was created yet)."""
    run_id = run_id_from_env()
    if run_id:
        end_run(run_id, "FAILED", message)


def use_tracking_uri(uri: str) -> None:
    """Track to `uri` in this process and the processes it starts."""
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)


def tracking_uri() -> str:
    return mlflow.get_tracking_uri()


LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves, by default


def ui_address() -> tuple[str | None, str]:
    """Where to see the runs of the tracking URI: (None, the server's own URL) for a tracking
    server, which serves the UI itself; else (the `mlflow ui` command that serves this store, the
    address it serves at)."""
    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        return None, uri.rstrip("/")
    return f"mlflow ui --backend-store-uri {uri}", LOCAL_UI


def log_params(params: dict, run_id: str | None = None) -> None:
    """Log params on `run_id` (default: the active run) in one batch, skipping keys already
    logged: `mlflow run` logs the -P values itself, as typed strings, a resumed study's parent
    has its params, and MLflow refuses to change a logged param. The active run, unless it is
    `mlflow run`'s, was just created here and holds none: not asked (one call fewer per trial)."""
    client = MlflowClient()
    if run_id is None:
        run_id = mlflow.active_run().info.run_id
        have = client.get_run(run_id).data.params if run_id == run_id_from_env() else {}
    else:
        have = client.get_run(run_id).data.params
    new = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items() if k not in have]
    if new:
        client.log_batch(run_id, params=new, synchronous=True)


# Why batches, every 5 s: bench_train measured a synchronous log_metrics at 5-30 ms per call on 2
# shared cores, 3-6 % of a run of 0.15 s epochs when sent one call per epoch. Every 5 s, a 10 s
# tuning trial sends two or three batches (bench_speed, sending every 1 s: 0.08 s, 0.8 % of such a
# trial, a third of its tracking), and the UI still shows a long run's epochs within seconds.
class MetricBuffer:
    """Per-epoch metrics sent in batches: an epoch that ends `every_s` or more after the last
    send goes out at once (so long epochs appear live in the UI); shorter ones are gathered.
    `logged`: {metric: highest step} the run has already (a resumed run: `logged_steps`); those
    steps are not sent again, so each series holds every step once."""

    def __init__(self, run_id: str, every_s: float = 5.0, logged: dict[str, int] | None = None):
        self.run_id, self.every_s = run_id, every_s
        self.logged = logged or {}
        self.pending: list[Metric] = []
        self.sent_at = time.monotonic()

    def log(self, metrics: dict, step: int) -> None:
        now = int(time.time() * 1000)
        self.pending += [Metric(k, float(v), now, step) for k, v in metrics.items()
                         if step > self.logged.get(k, -1)]
        if time.monotonic() - self.sent_at >= self.every_s:
            self.flush()

    def flush(self) -> None:
        client = MlflowClient()
        try:
            for i in range(0, len(self.pending), 1000):  # MLflow takes at most 1,000 metrics a batch
                client.log_batch(self.run_id, metrics=self.pending[i:i + 1000])
        except MlflowException as e:
            if unreachable(e) is not None:  # the flush its caller makes in `finally` would wait as long again
                give_up_on_server()
                self.pending = []
            raise
        self.pending = []
        self.sent_at = time.monotonic()


def set_tags(tags: dict) -> None:
    """Tags on the active run."""
    mlflow.set_tags(tags)


def set_run_tags(run_id: str | None, tags: dict) -> None:
    """Tags on any run (also a finished one); nothing if run_id is None."""
    if run_id:
        MlflowClient().log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def log_run_metrics(run_id: str, metrics: dict) -> None:
    """Metrics on any run, in one batch."""
    now = int(time.time() * 1000)
    MlflowClient().log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])


def log_metrics(metrics: dict, step: int | None = None) -> None:
    """A dict of metrics on the active run, in one call (an epoch's, with step=epoch)."""
    mlflow.log_metrics(metrics, step=step)


def log_run_text(run_id: str, text: str, path: str) -> None:
    """A text artifact (CSV, Markdown) on any run."""
    MlflowClient().log_text(run_id, text, path)


# Every PNG this project logs, at zlib level 1 instead of 6: measured on a study's Optuna plots, each
# savefig took 0.05-0.15 s instead of 0.07-0.25 s (about 40 % less), for files 5-15 % larger.
PNG = {"pil_kwargs": {"compress_level": 1}}


def log_run_figure(run_id: str, figure, path: str) -> None:
    """A matplotlib figure as a PNG artifact on any run."""
    MlflowClient().log_figure(run_id, figure, path, save_kwargs=PNG)


def unique_run_name(experiment: str, prefix: str) -> str:
    """`PREFIX-N`: N one more than the highest N of the runs named so in `experiment` (1 for the
    first), so every run gets a readable name of its own. MLflow's generated names come from
    Python's `random`, which training seeds before the run starts: runs with one seed all got
    the same name. Two runs starting at the same instant may still draw the same N."""
    prefix = re.sub(r"[^\w.:-]+", "-", prefix).strip("-") or "run"  # no quote can reach the filter
    exp = MlflowClient().get_experiment_by_name(experiment)
    if exp is None:
        return f"{prefix}-1"
    runs = mlflow.search_runs([exp.experiment_id], filter_string=f"attributes.run_name LIKE '{prefix}-%'",
                              output_format="list")
    taken = [int(m.group(1)) for r in runs if (m := re.fullmatch(re.escape(prefix) + r"-(\d+)", r.info.run_name or ""))]
    return f"{prefix}-{max(taken, default=0) + 1}"


def log_files_run(experiment: str, role: str, out_dir: str, files: list[str], params: dict,
                  metrics: dict | None = None) -> str:
    """A new run named `ROLE-N` (tag mlproject.role=ROLE) in `experiment`, holding `files` (paths
    relative to `out_dir`) as artifacts under `ROLE/`, plus `params` and `metrics`: what
    `mlproject report` and `mlproject outliers` leave. Returns its id."""
    name = unique_run_name(experiment, role)
    with training_run(experiment, run_name=name, tags={Tags.ROLE: role}) as run:
        log_params(params)
        if metrics:
            mlflow.log_metrics(metrics)
        for f in files:
            sub = os.path.dirname(f)
            mlflow.log_artifact(os.path.join(out_dir, f), f"{role}/{sub}" if sub else role)
        return run.info.run_id


VIEW_TAG_PREFIX = "mlflow.sharedViewState."  # MLflow 3 UI: experiment tags holding saved run-table views


def save_runs_view(experiment_id: str, key: str, name: str, metrics: list[str], params: list[str]) -> str:
    """Save a view of the experiment's runs table (these metric and param columns) in the MLflow
    UI's own format, and return the path that opens it (append to the UI's address).

    MLflow's UI shows no metric or param columns until a user picks them; a study's parent run
    saves one view of its key columns so its link opens with them. The format (an experiment tag
    `mlflow.sharedViewState.<key>` holding {"name", "createdAt", "updatedAt", "state"}, state a
    JSON string with "selectedColumns") is what MLflow 3.x's UI writes when a view is shared;
    a UI that does not know it ignores the tag, and the runs table is then as it always was.
    """
    import json
    import re

    # MLflow's tag names take alphanumerics and _-. :/ only (a study name may hold '+')
    key = re.sub(r"[^\w\-. :/]", "_", key)
    now = int(time.time() * 1000)
    columns = ["attributes.`Dataset`", "attributes.`Models`", *(f"params.`{p}`" for p in params),
               *(f"metrics.`{m}`" for m in metrics)]
    value = {"name": name, "createdAt": now, "updatedAt": now, "state": json.dumps({"selectedColumns": columns})}
    MlflowClient().set_experiment_tag(experiment_id, VIEW_TAG_PREFIX + key, json.dumps(value))
    return f"#/experiments/{experiment_id}/runs?viewStateShareKey={key}&workflowType=machine_learning"
