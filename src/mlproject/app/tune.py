"""`tune`: an Optuna study whose every trial is a tracked MLflow run.

    tune --trials 40                                    # TPE over lr, batch size, weight decay, momentum
    tune --sampler grid --batch-size 16,32,128,256,512 --lr 0.0002,0.00005    # seed 000's grid
    tune --model resnet18 --freeze backbone --lr 1e-3:1e-1 --batch-size 64 --workers 2

Thin: parse -> TrainConfig options, search texts and tuning.StudyOptions -> tuning.runner.plan
(every check) -> tuning.runner.execute (parent run, workers, summary), with the application's
StudyTrainer training each trial.
"""
from __future__ import annotations

import multiprocessing
import sys

import click

from mlproject.app.cli import bool_flags_from_values, config_options, fail
from mlproject.config import ConfigError, TrainConfig
from tuning.space import DEFAULTS

SEARCHED = tuple(DEFAULTS)


def _with_search_options(fn):
    """The searched options take text (ranges, lists or one value) instead of one number."""
    for name in reversed(SEARCHED):
        default, log, typ = DEFAULTS[name]
        flag = "--" + name.replace("_", "-")
        help_ = (f"LOW:HIGH{' (log scale)' if log else ''}, A,B,C, or one value to fix it"
                 if typ is float else "A,B,C (categorical) or one value")
        if name == "momentum":
            help_ += "; searched only for --optimizer sgd unless given"
        fn = click.option(flag, name, default=None, show_default=default, help=help_)(fn)
    return fn


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@config_options(TrainConfig, skip=SEARCHED)
@_with_search_options
@click.option("--trials", type=int, default=40, show_default=True, help="trials in the study (total over all workers and invocations)")
@click.option("--timeout", type=float, default=0, help="stop starting trials after this many seconds (0: no limit)")
@click.option("--sampler", default="tpe", show_default=True, help="tpe|random|grid|cmaes")
@click.option("--pruner", default="median", show_default=True, help="median|hyperband|none")
@click.option("--study-name", default=None, help="default: MODEL-DATASET")
@click.option("--storage", default=None, help="Optuna storage URL [default: sqlite:///optuna.db]")
@click.option("--tracking-uri", default=None, help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or MLflow's)")
@click.option("--workers", type=int, default=1, show_default=True, help="worker processes on this machine")
@click.option("--register-name", default=None, help="Model Registry name of the best model [default: the study name]")
@click.option("--max-failures", type=int, default=5, show_default=True, help="stop after this many failed trials in a row")
@click.option("--grace-period", type=int, default=None, hidden=True, help="seconds without heartbeat before a trial counts as dead")
def tune(**opts):
    """Search learning rate, batch size, weight decay and momentum with Optuna; every trial is a
    child MLflow run of the study's parent run."""
    from tuning import runner

    from .experiment import StudyTrainer

    # MLproject passes every parameter, so "" (strings) and 0 (--timeout) mean "not given"
    searched = {n: opts.pop(n) or None for n in SEARCHED}
    controls = {k: opts.pop(k) or None for k in ("timeout", "study_name", "storage", "tracking_uri",
                                                 "register_name", "grace_period")}
    controls.update({k: opts.pop(k) for k in ("trials", "sampler", "pruner", "workers", "max_failures")})
    try:
        plan = runner.plan(opts, searched, runner.StudyOptions(**controls), StudyTrainer())
        code = runner.execute(plan)
    except ConfigError as e:
        fail(str(e))
    sys.exit(code)


def main(args: list[str] | None = None) -> None:
    """Console-script entry point."""
    multiprocessing.set_start_method("spawn", force=True)  # CUDA and threads are not fork-safe
    tune.main(args=bool_flags_from_values(sys.argv[1:] if args is None else list(args)), prog_name="tune")


if __name__ == "__main__":
    main()
