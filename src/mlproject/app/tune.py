"""`tune`: an Optuna study whose every trial is a tracked MLflow run.

    tune --trials 40                                    # TPE over lr, batch size, weight decay, momentum
    tune --sampler grid --batch-size 16,32,128,256,512 --lr 0.0002,0.00005 --optimizer adam --weight-decay 0  # seed 000
    tune --model resnet18 --freeze backbone --lr 1e-3:1e-1 --batch-size 64 --workers 2

Thin: parse -> TrainConfig options, search texts and tuning.StudyOptions -> tuning.check
(every check that needs no data) -> tuning.prepare (model and data, by the application's
StudyTrainer) -> tuning.execute (parent run, workers, summary), with StudyTrainer training
each trial. Optuna is imported once the command runs, torch and MLflow once those checks passed:
each takes seconds to import, which `--help` and bad input need not wait for.
"""
from __future__ import annotations

import multiprocessing
import sys

import click

from mlproject.app.cli import bool_flags_from_values, config_options, fail
from mlproject.config import ConfigError, TrainConfig
from mlproject.signals import (collect_old_objects_rarely, exit_code, handle_signals, leave_heap_to_the_os,
                               reuse_freed_memory)
from tuning import DEFAULTS, NOT_SEARCHABLE, OPTION_TYPES, SEARCHABLE, StudyOptions, flag

# non-boolean options a study cannot vary: text here, so that a list gets the reason, not a type error
FIXED_TEXT = tuple(n for n in NOT_SEARCHABLE if OPTION_TYPES[n] is not bool)
BOOL_SEARCHABLE = tuple(n for n in SEARCHABLE if OPTION_TYPES[n] is bool)


def _with_search_options(fn):
    """Every searchable option takes text: a range (numbers), a list, or one value to fix it."""
    defaults = TrainConfig()
    for name in reversed(SEARCHABLE):
        typ = OPTION_TYPES[name]
        base = config_help(name)
        if name in DEFAULTS:
            shown, how = DEFAULTS[name][0], "searched by default: "
        else:
            shown, how = str(getattr(defaults, name)).lower() if typ is bool else str(getattr(defaults, name)), ""
        form = ("LOW:HIGH (log scale), A,B,C or one value" if name in ("lr", "weight_decay") else
                "LOW:HIGH (whole numbers), A,B,C or one value" if typ is int else
                "LOW:HIGH, A,B,C or one value" if typ is float else
                "true,false or one of them" if typ is bool else "A,B,C or one value")
        help_ = f"{base} [{how}{form}]"
        if name == "momentum":
            help_ += "; searched only in SGD trials unless given"
        if name == "augment":
            help_ += "; here a comma separates choices and + combines: none,crop,affine,crop+flip"
        flag_value = "true" if typ is bool else field_metadata(name).get("flag_value")  # `--augment` alone: true
        kwargs = {"is_flag": False, "flag_value": flag_value} if flag_value else {}
        fn = click.option(flag(name), name, default=None, show_default=shown, help=help_, **kwargs)(fn)
    return fn


def field_metadata(name: str):
    import dataclasses

    return next(f for f in dataclasses.fields(TrainConfig) if f.name == name).metadata


def config_help(name: str) -> str:
    meta = field_metadata(name)
    choices = meta.get("choices")
    return meta.get("help", "") + (f" ({'|'.join(choices)})" if choices else "")


def _fixed_options(fn):
    """Options a study cannot vary, as text: a list or range is refused with the reason."""
    defaults = TrainConfig()
    for name in reversed(FIXED_TEXT):
        fn = click.option(flag(name), name, default=None, show_default=str(getattr(defaults, name)),
                          help=config_help(name) + " (one value: a study cannot vary it)")(fn)
    return fn


def _fixed_value(name: str, text: str | None):
    """A non-searchable option's value from its text; ConfigError (with the reason) for a list."""
    typ = OPTION_TYPES[name]
    if "," in text or (typ is not str and ":" in text):
        raise ConfigError(f"{flag(name)} {text!r}: cannot vary within one study: {NOT_SEARCHABLE[name]}")
    try:
        return typ(text)
    except ValueError:
        raise ConfigError(f"{flag(name)} {text!r} is not {'a whole number' if typ is int else 'a number'}") from None


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@_with_search_options
@_fixed_options
@config_options(TrainConfig, skip=SEARCHABLE + FIXED_TEXT)
@click.option("--objective", "objectives", multiple=True,
              help="a metric every trial records, with :min or :max if not the usual direction (accuracies "
                   "up; times, sizes, losses, parameter counts down); repeat (or comma-separate) for a "
                   "multi-objective study [default: val_accuracy]")
@click.option("--constraint", "constraints", multiple=True,
              help='METRIC<=VALUE or METRIC>=VALUE, e.g. "model_size_mb<=5"; repeatable. An infeasible trial '
                   "is never the best or on the front")
@click.option("--trials", type=int, default=40, show_default=True, help="trials in the study (total over all workers and invocations)")
@click.option("--timeout", type=float, default=0, help="stop starting trials after this many seconds (0: no limit)")
@click.option("--sampler", default="tpe", show_default=True, help="tpe|random|grid|cmaes|nsga2 (cmaes: one objective)")
@click.option("--pruner", default=None, help="median|hyperband|wilcoxon|none [default: median (with --cv: after each "
                                             "fold); none where a study cannot prune: several objectives, or an "
                                             "objective known only at the end; wilcoxon: --cv 5 or more]")
@click.option("--study-name", default=None, help="default: MODEL-DATASET (searched models joined by +)")
@click.option("--storage", default=None, help="Optuna storage URL [default: sqlite:///optuna.db]")
@click.option("--tracking-uri", default=None, help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or MLflow's)")
@click.option("--workers", type=int, default=1, show_default=True, help="worker processes on this machine")
@click.option("--register-name", default=None, help="Model Registry name of the best model(s) [default: the study name]")
@click.option("--max-failures", type=int, default=5, show_default=True, help="stop after this many failed trials in a row")
@click.option("--verbose/--no-verbose", default=False, show_default=True,
              help="Optuna's and MLflow's INFO lines, and a traceback for every failed trial (default: one "
                   "line per trial; a traceback only for an unexpected exception)")
@click.option("--system-metrics/--no-system-metrics", default=False, show_default=True,
              help="every trial's run records CPU, memory and GPU use over time too, each with its own sampler "
                   "thread (the study's parent run always does)")
@click.option("--grace-period", type=int, default=None, hidden=True, help="seconds without heartbeat before a trial counts as dead")
def tune(**opts):
    """Search any training option with Optuna (by default learning rate, batch size, weight decay and
    momentum), for one objective or several, under constraints; every trial is a child MLflow run
    of the study's parent run, and the best set's own models are registered."""
    import tuning

    # MLproject passes every parameter, so "" (strings) and 0 (--timeout) mean "not given"
    searched = {n: opts.pop(n) or None for n in SEARCHABLE}
    controls = {k: opts.pop(k) or None for k in ("timeout", "study_name", "storage", "tracking_uri",
                                                 "register_name", "grace_period", "pruner")}
    controls.update({k: opts.pop(k) for k in ("trials", "sampler", "workers", "max_failures", "verbose",
                                              "system_metrics")})
    controls.update({k: tuple(opts.pop(k)) for k in ("objectives", "constraints")})
    handle_signals()  # SIGTERM (Slurm, Kubernetes, docker stop) takes Ctrl-C's path: runs KILLED, exit 143
    try:
        for name in FIXED_TEXT:
            text = opts.pop(name)
            if text:  # else TrainConfig's default
                opts[name] = _fixed_value(name, text)
        checked = tuning.check(opts, searched, StudyOptions(**controls))
        from .experiment import StudyTrainer

        code = tuning.execute(tuning.prepare(checked, StudyTrainer()))
    except ConfigError as e:
        fail(str(e))
    except KeyboardInterrupt as e:  # before the study started: nothing to end
        click.echo(f"interrupted by {e or 'SIGINT (Ctrl-C)'}", err=True)
        code = exit_code(e)
    sys.exit(code)


def tune_args(args: list[str]) -> list[str]:
    """MLproject's '--nesterov=false' stays text for a searchable boolean (where 'true,false' is a
    choice), and '--no-nesterov' becomes '--nesterov=false'; '--no-augment' becomes '--augment=none'
    (bool_flags_from_values); other booleans (training options and StudyOptions' own,
    '--system-metrics=false', '--verbose=true') become click's flags."""
    searchable = {flag(n) for n in BOOL_SEARCHABLE}
    args = [f"--{a[5:]}=false" if a.startswith("--no-") and f"--{a[5:]}" in searchable else a for a in args]
    return bool_flags_from_values(bool_flags_from_values(args, skip=BOOL_SEARCHABLE), cls=StudyOptions)


def main(args: list[str] | None = None) -> None:
    """Console-script entry point."""
    collect_old_objects_rarely()
    reuse_freed_memory()
    multiprocessing.set_start_method("spawn", force=True)  # CUDA and threads are not fork-safe
    try:
        tune.main(args=tune_args(sys.argv[1:] if args is None else list(args)), prog_name="tune")
    finally:  # click exits through SystemExit
        leave_heap_to_the_os()


if __name__ == "__main__":
    main()
