"""`mlproject` command line: parse -> TrainConfig -> experiment.run_training; report, outliers, models.

    mlproject train --model lenet5 --epochs 3
    mlproject train --resume RUN_ID --model lenet5 --epochs 3    # a KILLED/FAILED run goes on from its checkpoint
    mlproject models 'resnet*'

The `train` options are generated from TrainConfig's fields, so the CLI, the MLproject
parameters and the logged params cannot drift apart.

torch, MLflow, timm and scikit-learn are imported in the commands that use them, once click has
parsed: each takes seconds to import, which `--help` and bad input need not wait for.
"""
from __future__ import annotations

import dataclasses
import os
import sys

import click

import tracking
from mlproject.config import BOOL_WORDS, ConfigError, TrainConfig, differing_option
from mlproject.signals import (collect_old_objects_rarely, exit_code, handle_signals, leave_heap_to_the_os,
                               reuse_freed_memory)


def config_options(cls=TrainConfig, skip: tuple[str, ...] = ()):
    """Decorator adding one click option per dataclass field but `skip` (bools as --x/--no-x flags;
    a field with metadata flag_value, such as augment, also takes its option alone, `--augment`
    meaning `--augment true`, and `--no-augment` is turned into its off_value by bool_flags_from_values)."""
    def decorate(fn):
        for f in reversed([f for f in dataclasses.fields(cls) if f.name not in skip]):
            flag = "--" + f.name.replace("_", "-")
            help_ = f.metadata.get("help", "")
            if f.metadata.get("choices"):
                help_ += f" [{'|'.join(f.metadata['choices'])}]"
            if f.type in (bool, "bool"):
                fn = click.option(f"{flag}/--no-{flag[2:]}", f.name, default=f.default, show_default=True, help=help_)(fn)
            else:
                typ = {"int": int, "float": float, "str": str}.get(f.type if isinstance(f.type, str) else f.type.__name__, str)
                optional = {"is_flag": False, "flag_value": f.metadata["flag_value"]} if f.metadata.get("flag_value") else {}
                fn = click.option(flag, f.name, type=typ, default=f.default, show_default=True, help=help_,
                                  **optional)(fn)
        return fn
    return decorate


def bool_flags_from_values(args: list[str], cls=TrainConfig, skip: tuple[str, ...] = ()) -> list[str]:
    """'--pretrained=true' -> '--pretrained', '--pretrained=false' -> '--no-pretrained', and
    '--no-augment' -> '--augment=none' (an option with an off_value: a text option that once was a flag).

    MLproject commands can only substitute values, so its `main` entry point passes booleans
    as `--flag={value}`; this turns them back into click's flags. Other values are left for
    click to reject.
    """
    names = {"--" + f.name.replace("_", "-") for f in dataclasses.fields(cls)
             if f.type in (bool, "bool") and f.name not in skip}
    off = {"--no-" + f.name.replace("_", "-"): f"--{f.name.replace('_', '-')}={f.metadata['off_value']}"
           for f in dataclasses.fields(cls) if f.metadata.get("off_value") and f.name not in skip}
    out = []
    for a in args:
        flag, eq, value = a.partition("=")
        if eq and flag in names and value.lower() in BOOL_WORDS:
            a = flag if BOOL_WORDS[value.lower()] else "--no-" + flag[2:]
        out.append(off.get(a, a))
    return out


def fail(message: str) -> None:
    """Bad input: one line on stderr, the `mlflow run` run (if any) marked FAILED, exit 2."""
    click.echo(f"Error: {message}", err=True)
    if tracking.run_id_from_env():  # MLflow is imported only to mark a run that exists
        tracking.fail_env_run(message)
    sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
def cli():
    """Train and track image classifiers (timm, torchvision, built-in) with MLflow."""


RESUME_KEY = "mlproject.resume"  # where --resume's value is kept: click's ctx.meta


def _keep_resume(ctx: click.Context, param, value: str | None) -> None:
    ctx.meta[RESUME_KEY] = (value or "").strip()


@cli.command()
@config_options()
# not a parameter of train(): its params stay TrainConfig's fields, one to one (TrainConfig(**ctx.params)
# is the command's config, for tests/test_docs.py's parse too); a run's params cannot change, so
# --resume is no TrainConfig field either
@click.option("--resume", default="", metavar="RUN_ID", expose_value=False, callback=_keep_resume,
              help="go on with this KILLED or FAILED run, in it, from its checkpoint (written every "
                   "--checkpoint-every seconds and on SIGTERM/SIGINT); give the run's options again "
                   "(only those that do not change training may differ). Empty: a new run")
def train(**options):
    """Train one model and record it in MLflow (or go on with a stopped run: --resume RUN_ID)."""
    cfg = TrainConfig(**options)
    resume = click.get_current_context().meta.get(RESUME_KEY, "")
    try:
        cfg.validate()  # what needs no data or model answers before torch loads (prepare checks it again)
        stopped = resumable_run(resume, cfg) if resume else None  # MLflow, not yet torch
    except ConfigError as e:
        fail(str(e))
    from mlproject.train import CheckpointError, TrainingDiverged

    from . import experiment

    handle_signals()  # SIGTERM (Slurm, docker stop) ends the run as Ctrl-C does: KILLED, with the reason
    try:
        try:
            prepared = experiment.prepare(cfg)
            # read and checked before the run changes: a bad checkpoint leaves it as it was
            resumed = experiment.load_resume(stopped, cfg, prepared) if stopped else None
        except (ConfigError, CheckpointError) as e:
            fail(str(e))
        result = experiment.run_training(cfg, prepared, resume=resumed)
    except TrainingDiverged as e:  # the run is already FAILED with the reason as a tag
        click.echo(f"Error: {e}", err=True)
        sys.exit(1)
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: a started run is already KILLED with the reason
        click.echo(f"interrupted by {e or 'SIGINT (Ctrl-C)'}: the run (if started) ended KILLED", err=True)
        sys.exit(exit_code(e))
    click.echo(result_text(cfg, result))


RESUMABLE = ("KILLED", "FAILED")


def resumable_run(run_id: str, cfg: TrainConfig) -> tracking.StoredRun:
    """The run `--resume RUN_ID` goes on with, checked against the tracking store: ConfigError (one
    line) where there is no such run, it is FINISHED (nothing to resume), RUNNING (another process
    may hold it) or otherwise not KILLED or FAILED, an option that decides training differs from its
    params (MLflow params cannot change: a resumed run keeps its own), or it has no checkpoint."""
    run = tracking.stored_run(run_id)
    if run is None:
        raise ConfigError(f"--resume {run_id}: no such run in {tracking.tracking_uri()}")
    if run.status == "FINISHED":
        raise ConfigError(f"--resume {run_id}: the run is FINISHED; nothing to resume")
    if run.status == "RUNNING":
        raise ConfigError(f"--resume {run_id}: the run is RUNNING: another process may be training it (one killed "
                          f"outright, by SIGKILL or a lost machine, leaves it RUNNING: end it KILLED first, "
                          f"MlflowClient().set_terminated(run_id, 'KILLED'))")
    if run.status not in RESUMABLE:
        raise ConfigError(f"--resume {run_id}: the run is {run.status}; only a KILLED or FAILED run can be resumed")
    differs = differing_option(cfg, run.params)
    if differs:
        raise ConfigError(f"--resume {run_id}: {differs}; a resumed run keeps its options: give the run's")
    if run.checkpoint is None:
        raise ConfigError(f"--resume {run_id}: the run has no checkpoint (it stopped before writing one, or it "
                          f"was deleted); start a new run")
    return run


def result_text(cfg: TrainConfig, result) -> str:
    m = result.metrics
    uri = tracking.tracking_uri()
    command, address = tracking.ui_address()
    here = uri in ("sqlite:///mlflow.db", "sqlite:///" + os.path.abspath("mlflow.db"))  # MLflow's default
    run_page = f"{address}/#/experiments/{result.experiment_id}/runs/{result.run_id}"
    ui = run_page if command is None else f"{'mlflow ui  (in this folder)' if here else command}   (then {address})"
    return "\n".join([
        f"{cfg.model} on {cfg.dataset}: test accuracy {m['test_accuracy']:.4f}, "
        f"train accuracy {m['final_train_accuracy']:.4f}, val accuracy {m['final_val_accuracy']:.4f}"
        + (f" ({cfg.cv}-fold mean, std {m['cv_val_accuracy_std']:.4f}; tested: the model refit on train + "
           "validation)" if cfg.cv else ""),
        f"train time {m['train_time_s']:.1f} s ({m['train_throughput_ips']:.0f} images/s), "
        f"test time {m['test_time_s']:.2f} s, model size {m['model_size_mb']:.2f} MB, "
        f"{m['params_total']:,} parameters ({m['params_trainable']:,} trainable)",
        f"run {result.run_id} (experiment id {result.experiment_id}) in {uri}",
        f"open the UI: {ui}",
    ])


@cli.command()
@click.argument("pattern", default="*")
@click.option("--pretrained", is_flag=True, help="only timm models with pretrained weights")
def models(pattern, pretrained):
    """List what --model accepts (glob PATTERN, e.g. 'resnet*')."""
    from mlproject.model_names import list_models  # names cached: neither torch nor timm is imported

    found = list_models(pattern, pretrained=pretrained)
    for source, names in found.items():
        prefix = {"builtin": "", "timm": "", "torchvision": "tv:"}[source]
        click.echo(f"# {source} ({len(names)})")
        for n in names:
            click.echo(prefix + n)
    if not any(found.values()):
        fail(f"no model matches {pattern!r}")


@cli.command()
@click.argument("model_refs", metavar="MODEL...", nargs=-1, required=True)
@click.option("--images", required=True, type=click.Path(file_okay=False),
              help="folder of out-of-domain images (any size and mode)")
@click.option("--out", default="outliers", show_default=True, type=click.Path(file_okay=False),
              help="folder for raw_probs.csv, predictions.csv/.md, outlier_scores.csv, predictions_grid.png")
@click.option("--experiment", default="mlproject", show_default=True, help="MLflow experiment of the run")
@click.option("--log/--no-log", default=True, show_default=True, help="log the files as a run named 'outliers'")
def outliers(model_refs, images, out, experiment, log):
    """Show logged models images from outside their domain (seed 000's outlier test).

    MODEL: a run id, a registered model NAME (latest version) or NAME/VERSION, or a runs:/ or
    models:/ URI. Writes every probability, the labels (Table 2), max-probability and entropy
    scores and an image grid to --out."""
    from . import outliers as ood

    try:
        checked = ood.check(model_refs, images)
    except ConfigError as e:
        fail(str(e))
    click.echo(ood.outliers_text(ood.run(checked, out, experiment=experiment if log else None)))


@cli.command()
@click.argument("run_ids", metavar="[RUN_ID]...", nargs=-1)
@click.option("--study", "studies", multiple=True, help="a study's trial runs (repeatable)")
@click.option("--experiment", "experiments", multiple=True, help="an experiment's training runs (repeatable)")
@click.option("--all", "include_all", is_flag=True,
              help="also runs of studies/experiments that did not finish (pruned, failed)")
@click.option("--sort", default=None, help="sort the table by this column (or any param or metric)")
@click.option("--ascending/--descending", default=True, show_default=True, help="sort order")
@click.option("--x", default=None,
              help="plot: the param on the x axis, e.g. batch_size (lines), or a metric, e.g. model_size_mb (scatter)")
@click.option("--y", "ys", multiple=True, help="plot: the metric on the y axis, e.g. train_time (repeatable)")
@click.option("--by", default=None,
              help="with --x: one line (colour) per value of this param, e.g. lr; without: the table by_<BY>.md/.csv, "
                   "one row per value (runs, best and mean metrics), e.g. model")
@click.option("--out", default="report", show_default=True, type=click.Path(),
              help="folder for table.md/.csv, by_<BY>.md/.csv, the plots, confusion_matrices.png, per_class_accuracy.*")
@click.option("--log/--no-log", default=True, show_default=True, help="log the files as a run named 'report'")
def report(run_ids, studies, experiments, include_all, sort, ascending, x, ys, by, out, log):
    """Compare runs already in MLflow: seed 000's Table 1, plots, confusion matrices.

    Runs: RUN_IDs (a study's parent run: its trials), --study NAME, --experiment NAME; combined,
    each run once. E.g. mlproject report --study seed000 --x batch_size --y train_time
    --y test_accuracy --by lr --sort test_accuracy --descending; a study's models compared:
    --study s --by model, its front: --study s --x model_size_mb --y test_accuracy --by model
    (Pareto runs ringed, infeasible ones a grey x)"""
    from . import report as rep

    try:
        checked = rep.check(run_ids, experiments, studies, include_all=include_all, sort=sort, ascending=ascending,
                            x=x, ys=ys, by=by, out=out)
    except ConfigError as e:
        fail(str(e))
    click.echo(rep.report_text(rep.run(checked, out, log=log)))


def main(args: list[str] | None = None) -> None:
    """Console-script entry point."""
    collect_old_objects_rarely()
    reuse_freed_memory()
    try:
        cli.main(args=bool_flags_from_values(sys.argv[1:] if args is None else list(args)), prog_name="mlproject")
    finally:  # click exits through SystemExit
        leave_heap_to_the_os()


if __name__ == "__main__":
    main()
