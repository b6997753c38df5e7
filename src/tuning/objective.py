"""One worker of a study: trials until the study holds `--trials` finished ones.

Every trial is one child MLflow run under the study's parent run, trained by the `Trainer` the
application gives (mlproject.app.experiment.StudyTrainer: the same path as `mlproject train`). Optuna states map to MLflow
statuses as: COMPLETE -> FINISHED, PRUNED -> KILLED (stopped by the pruner, tag
optuna.pruned_epoch), FAIL -> FAILED (reason in tag mlproject.failure), a worker killed or
interrupted mid-trial -> KILLED (its trial is failed and re-run).

An interrupted trial goes on from its checkpoint (SIGTERM and Ctrl-C write one after the current
batch; `--checkpoint-every` covers SIGKILL): the next invocation, or any worker, enqueues a trial
with its parameters (`requeue_interrupted`; the heartbeat's retry of a dead worker's trial is the
same), which reports the intermediate values the interrupted one reported before its checkpoint
(so the pruner judges it as if it never stopped) and continues the same MLflow run, from the
checkpoint, to the same weights and metrics as an uninterrupted trial. A checkpoint that cannot
be read is one line, and the trial starts from epoch 1 in a new run.
"""
from __future__ import annotations

import dataclasses
import math
import os
import socket
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import optuna
from optuna.trial import TrialState

import tracking
from mlproject.config import TrainConfig
from mlproject.data import Splits
from mlproject.metrics import DEFAULT_OBJECTIVE, SAMPLED_PREFIX, Tags, trials_table
from mlproject.errors import first_line
from mlproject.train import CheckpointError, FoldStats, History, TrainingDiverged

from . import goals
from . import study as studies
from .goals import Constraint, Objective
from .space import SearchSpace

FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
# user attrs: where a trial's last checkpoint is (its run's tag mlproject.checkpoint; None once it
# is of no use: the trial was pruned or failed otherwise than by an interruption), and, on a trial
# enqueued to go on with an interrupted one, that one's number (its run's tag mlproject.resumed_at
# says it did; a checkpoint that could not be read left it to start from epoch 1 in a run of its own)
CHECKPOINT_ATTR = "checkpoint"
RESUMES_ATTR = "resumes_trial"


class Trainer(Protocol):
    """What a study needs from the application (mlproject.app.experiment.StudyTrainer). It must
    pickle: worker processes get it."""

    def prepare(self, cfg: TrainConfig, data: Sequence[Splits] = ()) -> Any:
        """Model and data for cfg (an object with `.data`: the Splits, one of `data` where one
        fits cfg); ConfigError on bad input."""

    def train_trial(self, cfg: TrainConfig, prepared: Any, parent_run_id: str, tags: dict, params: dict,
                    on_epoch: Callable, on_run_start: Callable[[str], None],
                    keep_model: Callable[[dict, History], bool], system_metrics: bool = False,
                    resume: Any = None, on_checkpoint: Callable[[str], None] | None = None) -> Any:
        """Train cfg as a tracked child run of `parent_run_id`; returns an object with `run_id`,
        `metrics` (dict), `history` (mlproject.train.History) and `model_uri`. `on_epoch(stats)`
        may raise to stop the run (pruning). `keep_model(metrics, history)`, asked once trained,
        says whether to log this trial's model (the weights it trained) and its figures into its run.
        `system_metrics`: sample the machine's CPU/memory/GPU use into the trial's run. `resume`
        (from `resume_point`): go on with that run from its checkpoint. `on_checkpoint(where)`:
        after each checkpoint is stored."""

    def resume_point(self, run_id: str, cfg: TrainConfig, prepared: Any) -> Any:
        """Where the interrupted run `run_id` goes on from: an object with `position` (text) and
        `first_step` (the first epoch, or with --cv fold, it will report); CheckpointError (one line)
        where its checkpoint cannot be had or read."""


class Pruned(optuna.TrialPruned):
    """Optuna's TrialPruned that ends its MLflow run KILLED (see tracking.runs.training_run)."""

    mlflow_status = "KILLED"


class Surplus(RuntimeError):
    """This trial would exceed --trials (two workers asked at once); it is failed untrained."""


@dataclass
class Worker:
    base: TrainConfig
    space: SearchSpace
    trainer: Trainer
    parent_run_id: str
    total_trials: int
    max_failures_in_a_row: int = 5
    data: list[Splits] = dataclasses.field(default_factory=list)  # loaded splits, reused where they fit
    heartbeat: bool = True  # the storage fails a dead worker's trial when its heartbeat stops
    deadline: float | None = None  # time.monotonic() after which no trial starts (--timeout)
    callbacks: list = dataclasses.field(default_factory=list)  # Optuna callbacks (progress bar)
    objectives: list[Objective] = dataclasses.field(default_factory=lambda: goals.parse_objectives(()))
    constraints: list[Constraint] = dataclasses.field(default_factory=list)
    prune_on: str | None = DEFAULT_OBJECTIVE  # the epoch metric reported to Optuna (and its pruner); None: none
    echo: Callable[[str], None] | None = None  # where trial outcomes go, a line each (default: stderr)
    verbose: bool = False  # a traceback for every failed trial, not only for unexpected exceptions
    _tracebacks: dict = dataclasses.field(default_factory=dict, repr=False)  # trial number -> text (bugs)
    system_metrics: bool = False  # each trial's run samples CPU/memory/GPU (tune --system-metrics)
    # (trial number, exception) of the trial that found the tracking server unreachable: run() stops
    _lost: tuple[int, BaseException] | None = dataclasses.field(default=None, repr=False)
    storage: Any = None  # the study's storage: claims (requeue_interrupted); None: no other worker

    def remaining(self, study) -> int:
        """--trials minus the trials finished, running or waiting (failed ones are re-run)."""
        states = FINISHED_STATES + (TrialState.RUNNING, TrialState.WAITING)
        return self.total_trials - len(study.get_trials(deepcopy=False, states=states))

    def pending(self, study) -> bool:
        """Trials to start: fewer than --trials so far, or retries waiting (enqueued by the
        heartbeat's RetryHeartbeatStaleTrialCallback, or interrupted trials going on:
        requeue_interrupted); never past --timeout, nor past an exhausted grid but for retries."""
        if self.deadline is not None and time.monotonic() > self.deadline:
            return False
        if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            return True  # retries, of a point the grid counts as run too
        if isinstance(study.sampler, optuna.samplers.GridSampler) and study.sampler.is_exhausted(study):
            # every grid point has run (a failed one counts: it would fail again), so more trials
            # would only repeat points; --trials is capped at the grid's size anyway
            return False
        return self.remaining(study) > 0

    def objective(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        """One trial (`_objective`). If the tracking server is unreachable once MLflow's retries
        are spent, the trial FAILs (Optuna re-runs it later), its run is left open (a later
        invocation ends it: runner.close_orphaned_runs) and `run` stops this worker."""
        try:
            return self._objective(trial)
        except Exception as e:
            if tracking.unreachable(e) is not None:
                tracking.give_up_on_server()  # the runs still open here: one quick try each
                self._lost = (trial.number, e)
            elif not isinstance(e, (optuna.TrialPruned, Surplus)):
                self._give_reason(trial, e)
            raise

    def _give_reason(self, trial: optuna.Trial, e: Exception) -> None:
        """A trial that failed before or after its run's body (its configuration, the checkpoint
        it goes on from, its values) gets a fail_reason too, and a bug its traceback, as one that
        failed in training does (`_train`); else only Optuna's log would say why."""
        try:
            if "fail_reason" in trial.user_attrs:
                return  # _train or _values gave it
            self._note_failure(trial, e)
        except Exception:  # noqa: BLE001 (the storage is failing too: the trial fails without it)
            return

    def _note_failure(self, trial: optuna.Trial, e: BaseException, with_traceback: bool = True) -> None:
        """The trial's user attr fail_reason ('Type: message'), and for a bug (or with --verbose)
        its traceback, which announce() prints under the trial's line."""
        trial.set_user_attr("fail_reason", f"{type(e).__name__}: {e}"[:1000])
        if with_traceback and (self.verbose or not isinstance(e, EXPECTED_FAILURES)):
            self._tracebacks[trial.number] = traceback.format_exc()

    def _objective(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        """One trial in four steps: its configuration, its tracked run, its values, its outcome."""
        cfg, prepared, overrides = self._configure(trial)
        result = self._train(trial, cfg, prepared, overrides)
        values = self._values(trial, result)
        self._complete(trial, result, values)
        objective_values = [values[o.metric] for o in self.objectives]
        return objective_values[0] if len(objective_values) == 1 else tuple(objective_values)

    def _configure(self, trial: optuna.Trial):
        """(TrainConfig, prepared model and data, sampled overrides) of this trial; Surplus when
        the study already has --trials (two workers asked at once)."""
        earlier = [t for t in trial.study.get_trials(deepcopy=False)
                   if t.number < trial.number and t.state != TrialState.FAIL]
        if len(earlier) >= self.total_trials:
            trial.set_user_attr("surplus", True)
            raise Surplus(f"the study already has {self.total_trials} trials")
        overrides = self.space.suggest(trial, dataclasses.asdict(self.base))
        cfg = dataclasses.replace(self.base, **overrides, run_name=f"trial-{trial.number}")
        prepared = self.trainer.prepare(cfg, data=self.data)
        if not any(prepared.data is d for d in self.data):
            self.data.append(prepared.data)  # loaded once per worker for each input size it needs
        return cfg, prepared, overrides

    def _train(self, trial: optuna.Trial, cfg: TrainConfig, prepared, overrides: dict):
        """The trial's tracked run (tag optuna.state RUNNING, then PRUNED or FAIL if it ends so),
        going on with an interrupted trial's run where it is one's retry (`_resume`); an exception
        fails the trial (Optuna), with its reason in the user attr fail_reason."""
        resume = self._resume(trial, cfg, prepared)
        try:
            return self.trainer.train_trial(
                cfg, prepared, self.parent_run_id,
                tags={Tags.STUDY: trial.study.study_name, Tags.TRIAL_NUMBER: str(trial.number), Tags.STATE: "RUNNING",
                      Tags.WORKER: f"{socket.gethostname()}:{os.getpid()}"},
                params={f"{SAMPLED_PREFIX}{k}": v for k, v in overrides.items() if k in trial.params},
                on_epoch=lambda stats: self._report(trial, stats),
                on_run_start=lambda run_id: trial.set_user_attr("mlflow_run_id", run_id),
                keep_model=lambda metrics, history: self._enters_best_set(trial, metrics, history),
                system_metrics=self.system_metrics, resume=resume,
                on_checkpoint=lambda where: trial.set_user_attr(CHECKPOINT_ATTR, where))
        except optuna.TrialPruned:
            self._drop_checkpoint(trial, cfg)
            raise
        except (Exception, KeyboardInterrupt) as e:
            # diverged, out of memory, a bug (the study goes on), or Ctrl-C: Optuna fails the trial
            lost = tracking.unreachable(e) is not None
            self._note_failure(trial, e, with_traceback=not lost)
            if lost:
                raise  # no tag then: the server is gone (objective, above); the checkpoint serves its retry
            tracking.set_run_tags(trial.user_attrs.get("mlflow_run_id"), {Tags.STATE: "FAIL"})
            if not isinstance(e, KeyboardInterrupt):  # only an interrupted trial goes on from its checkpoint
                self._drop_checkpoint(trial, cfg)
            raise

    def _resume(self, trial: optuna.Trial, cfg: TrainConfig, prepared):
        """Where this trial goes on from (the trainer's resume_point), if it is the retry of an
        interrupted trial that left a checkpoint; the intermediate values that one reported before
        its checkpoint are reported again first. None: from epoch 1 (a checkpoint that cannot be
        read is one line)."""
        source = self._interrupted(trial)
        if source is None:
            for attr in (CHECKPOINT_ATTR, RESUMES_ATTR):  # a heartbeat retry inherits its trial's user attrs
                if trial.user_attrs.get(attr) is not None:
                    trial.set_user_attr(attr, None)
            return None
        run_id = source.user_attrs["mlflow_run_id"]
        try:
            resume = self.trainer.resume_point(run_id, cfg, prepared)
        except CheckpointError as e:
            (self.echo or _stderr)(f"trial {trial.number}: {first_line(e)}; it starts from epoch 1 "
                                   f"instead of going on with trial {source.number}")
            if trial.user_attrs.get(CHECKPOINT_ATTR) is not None:
                trial.set_user_attr(CHECKPOINT_ATTR, None)
            trial.set_user_attr(RESUMES_ATTR, source.number)  # tried: never enqueued for it again
            return None
        trial.set_user_attr(RESUMES_ATTR, source.number)
        trial.set_user_attr(CHECKPOINT_ATTR, source.user_attrs[CHECKPOINT_ATTR])
        if self.prune_on is not None:
            for step, value in sorted(source.intermediate_values.items()):
                if step < resume.first_step:
                    trial.report(value, step)
        (self.echo or _stderr)(f"trial {trial.number} goes on with trial {source.number} from its checkpoint "
                               f"({resume.position}; run {run_id})")
        return resume

    def _interrupted(self, trial: optuna.Trial) -> optuna.trial.FrozenTrial | None:
        """The interrupted trial this one is the retry of, if that one left a checkpoint: the trial
        enqueued by `requeue_interrupted` (user attr resumes_trial), or by the heartbeat's retry of a
        stale trial (the last of its system attr retry_history)."""
        trials = trial.study.get_trials(deepcopy=False)  # by number: a study's trials are numbered 0, 1, ...
        history = trials[trial.number].system_attrs.get("retry_history")
        number = history[-1] if history else trial.user_attrs.get(RESUMES_ATTR)
        if number is None:
            return None
        source = trials[number]
        return source if source.user_attrs.get(CHECKPOINT_ATTR) and source.user_attrs.get("mlflow_run_id") else None

    def _drop_checkpoint(self, trial: optuna.Trial, cfg: TrainConfig) -> None:
        """A trial pruned or failed otherwise than by an interruption is not resumed: its checkpoint
        is deleted (unless --keep-checkpoints) and no longer named in its user attrs."""
        if not trial.user_attrs.get(CHECKPOINT_ATTR):
            return
        trial.set_user_attr(CHECKPOINT_ATTR, None)
        if cfg.keep_checkpoints:
            return
        try:
            tracking.delete_checkpoint(trial.user_attrs["mlflow_run_id"])
        except Exception as e:  # noqa: BLE001 (the trial's outcome stands; the file stays, its tags say where)
            (self.echo or _stderr)(f"warning: the checkpoint of trial {trial.number} was not deleted: "
                                   f"{type(e).__name__}: {first_line(e, '')}")

    def requeue_interrupted(self, study) -> None:
        """Each FAIL trial that was interrupted (SIGTERM, Ctrl-C, a worker killed after a
        checkpoint) and left a checkpoint is enqueued once, with its parameters, to go on from it
        (`_resume`). Exactly once over workers and machines: one claim per trial, and a trial that
        already has a retry (this one's, or the heartbeat's) is left alone."""
        def interrupted(trials):
            followed = {t.user_attrs.get(RESUMES_ATTR) for t in trials}
            followed |= {(t.system_attrs.get("retry_history") or [None])[-1] for t in trials}
            return [t for t in trials if t.state == TrialState.FAIL and t.user_attrs.get(CHECKPOINT_ATTR)
                    and t.user_attrs.get("mlflow_run_id") and t.number not in followed]

        for t in interrupted(study.get_trials(deepcopy=False)):
            if self.storage is None:
                study.enqueue_trial(t.params, user_attrs={RESUMES_ATTR: t.number})
                continue
            with studies.claim(self.storage, study.study_name, f"resume-trial-{t.number}") as won:
                if won and t.number in {u.number for u in interrupted(study.get_trials(deepcopy=False))}:
                    study.enqueue_trial(t.params, user_attrs={RESUMES_ATTR: t.number})

    def _report(self, trial: optuna.Trial, stats) -> None:
        """After each epoch (EpochStats), or with --cv after each fold (FoldStats, step = fold):
        the value Optuna's pruner judges; Pruned when it says stop."""
        if self.prune_on is None:
            return
        value = getattr(stats, self.prune_on)
        unit, step = ("fold", stats.fold) if isinstance(stats, FoldStats) else ("epoch", stats.epoch)
        trial.report(value, step)
        if trial.should_prune():
            trial.set_user_attr(f"pruned_{unit}", step)
            tracking.set_tags({Tags.STATE: "PRUNED", f"{Tags.PRUNED_AT}{unit}": str(step)})
            raise Pruned(f"pruned after {unit} {step} ({self.prune_on} {value:.4f})")

    def _enters_best_set(self, trial: optuna.Trial, metrics: dict, history: History) -> bool:
        """Log this trial's weights only if it enters the best set now: later it cannot."""
        values = goals.recorded(metrics, history.epochs[-1])
        if goals.violated(self.constraints, values):
            return False
        return goals.enters_best_set(trial.study.get_trials(deepcopy=False), self.objectives,
                                     [values[o.metric] for o in self.objectives], values["val_loss"], trial.number)

    def _values(self, trial: optuna.Trial, result) -> dict[str, float]:
        """The trial's recorded metrics (goals.TRIAL_METRICS); TrainingDiverged (the trial FAILs,
        its run tagged so) when an objective is not finite."""
        values = goals.recorded(result.metrics, result.history.epochs[-1])
        bad = [f"{o.metric}={values[o.metric]}" for o in self.objectives if not math.isfinite(values[o.metric])]
        if bad:
            trial.set_user_attr("fail_reason", "an objective is not finite (empty validation split?): "
                                + ", ".join(bad))
            tracking.set_run_tags(result.run_id, {Tags.STATE: "FAIL"})
            raise TrainingDiverged(trial.user_attrs["fail_reason"])
        return values

    def _complete(self, trial: optuna.Trial, result, values: dict[str, float]) -> None:
        """What a COMPLETE trial leaves: its constraints' values (Optuna), its metrics and model in
        user attrs, and its run tagged COMPLETE (and feasible or not, under --constraint)."""
        tags = {Tags.STATE: "COMPLETE"}
        if self.constraints:
            for c in self.constraints:
                trial.set_constraint(str(c), c.violation(values[c.metric]))
            broken = goals.violated(self.constraints, values)
            tags[Tags.FEASIBLE] = "false" if broken else "true"
            if broken:
                tags[Tags.VIOLATED] = "; ".join(broken)
        trial.set_user_attr("metrics", values)
        for name in trials_table():  # in Optuna's own trials table (dashboard, trials_dataframe) too
            trial.set_user_attr(name, values[name])
        if result.model_uri:
            trial.set_user_attr("model_uri", result.model_uri)
        tracking.set_run_tags(result.run_id, tags)

    def run(self, study) -> None:
        """Run trials until the study has total_trials finished ones (over all workers and
        invocations); StudyFailing after `max_failures_in_a_row` failures one after another."""
        failures = 0

        def count(study, trial):
            nonlocal failures
            real_failure = trial.state == TrialState.FAIL and not trial.user_attrs.get("surplus")
            failures = failures + 1 if real_failure else 0
            self.announce(trial)

        while True:
            self.requeue_interrupted(study)
            if not self.pending(study):
                return
            study.optimize(self.objective, n_trials=1, catch=(Exception,), callbacks=[count, *self.callbacks])
            if self._lost is not None:  # the tracking server: this worker stops (runner.execute says why)
                raise self._lost[1]
            if failures >= self.max_failures_in_a_row:
                last = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))[-1]
                raise StudyFailing(f"{failures} trials failed in a row; last: "
                                   f"{last.user_attrs.get('fail_reason', 'see its MLflow run')}")

    def announce(self, trial) -> None:
        """One line for a finished trial: its outcome, its values or reason, its sampled params; a
        traceback after it only for an unexpected exception (a bug), or with --verbose."""
        if trial.user_attrs.get("surplus") or (self._lost and self._lost[0] == trial.number):
            return  # a lost tracking server has its own line (runner.execute)
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
        if trial.state == TrialState.COMPLETE:
            values = ", ".join(f"{o.metric}={v:.4g}" for o, v in zip(self.objectives, trial.values))
            line = f"complete: {values}" + ("" if goals.feasible(trial) else " (infeasible)")
        elif trial.state == TrialState.PRUNED:
            unit = "fold" if "pruned_fold" in trial.user_attrs else "epoch"
            step = trial.user_attrs.get(f"pruned_{unit}")
            last = trial.intermediate_values.get(step) if step is not None else None
            line = f"pruned after {unit} {step}" + (f" ({self.prune_on} {last:.4g})" if last is not None else "")
        else:
            line = f"failed: {trial.user_attrs.get('fail_reason', 'see its MLflow run')}"
        text = f"trial {trial.number} {line}" + (f" [{params}]" if params else "")
        tb = self._tracebacks.pop(trial.number, None)
        (self.echo or _stderr)(text + (f"\n{tb.rstrip()}" if tb else ""))

    def finish(self, study, poll_s: float = 5.0) -> None:
        """After this machine's workers: wait for trials still RUNNING elsewhere; those whose
        worker died are failed once their heartbeat is stale (and re-enqueued), then run here."""
        while True:
            with warnings.catch_warnings():  # 'experimental' since Optuna 2.9
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            if self.pending(study):
                self.run(study)
                continue
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if not running or not self.heartbeat or (self.deadline and time.monotonic() > self.deadline):
                return
            time.sleep(poll_s)  # other workers' trials: nothing to do until they end or go stale


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# Trial failures a search expects (a diverging learning rate, a model too large for the device, a
# signal): one line each. Anything else is a bug, shown with its traceback.
EXPECTED_FAILURES = (TrainingDiverged, KeyboardInterrupt, Surplus, MemoryError)
try:
    import torch

    EXPECTED_FAILURES += (torch.OutOfMemoryError,)
except (ImportError, AttributeError):  # torch < 2.5 names it torch.cuda.OutOfMemoryError
    pass


class StudyFailing(RuntimeError):
    """Trials keep failing: the study stops instead of burning its budget."""
