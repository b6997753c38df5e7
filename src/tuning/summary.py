"""What a study leaves on its parent run, the progress bar over trials, and the final table.

Parent run, at the end of every invocation (names stable, README 'Tuning'):
  metrics  best_value (validation accuracy), best_trial, trials_complete, trials_pruned,
           trials_fail, wall_time_s
  tags     best.trial, best.value, best.<param> (tags, since a resumed study's best may change)
  artifacts study/trials.csv, study/optimization_history.png, study/param_importances.png,
           study/parallel_coordinate.png, study/slice.png
  model    the best trial's model, logged in the best trial's run and registered as
           --register-name (retrained from its config and seed: no model per trial is stored),
           with the figures trials skip (loss curves, misclassified images, first-layer weights)
"""
from __future__ import annotations

import contextlib
import dataclasses
import sys
import warnings

import optuna
import pandas as pd
from optuna.trial import TrialState
from tqdm.auto import tqdm

import tracking

from . import study as studies


@contextlib.contextmanager
def progress(study, p):
    """A bar over the study's finished trials with the best value so far (terminal only)."""
    bar = tqdm(total=p.options.trials, desc=f"study {p.options.study_name}", unit="trial", disable=not sys.stderr.isatty())

    class Bar:
        def __call__(self, study, trial=None):
            self.poll()

        def poll(self):
            done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
            bar.n = len(done)
            best = [t.value for t in done if t.state == TrialState.COMPLETE and t.value is not None]
            if best:
                bar.set_postfix(best=f"{max(best):.4f}")
            bar.refresh()

    try:
        yield Bar()
    finally:
        bar.close()


def counts(study) -> dict[str, int]:
    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus")]
    return {s.name: sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}


def _best(study):
    try:
        return study.best_trial
    except ValueError:  # no COMPLETE trial yet
        return None


PLOTS = ("optimization_history", "param_importances", "parallel_coordinate", "slice")


def log_plots(study, run_id: str) -> None:
    """Optuna's matplotlib plots that apply to this study (some need 2+ trials or varying
    params) as PNGs under study/ of run `run_id`. Optuna draws them with pyplot, so each figure
    is closed once logged (pyplot keeps every figure it made alive until then)."""
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as vm

    for name in PLOTS:
        with warnings.catch_warnings():  # the matplotlib backend is 'experimental' since Optuna 2.2
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                ax = getattr(vm, f"plot_{name}")(study)
            except (ValueError, RuntimeError, ZeroDivisionError):  # too few trials / no varying params
                continue
        fig = (ax.flat[0] if hasattr(ax, "flat") else ax).get_figure()
        try:
            tracking.log_run_figure(run_id, fig, f"study/{name}.png")
        finally:
            plt.close(fig)


def record(study, storage, p, parent: str, wall_time_s: float) -> None:
    """Write the study's summary onto the parent run and store/register the best model."""
    c = counts(study)
    best = _best(study)
    metrics = {"trials_complete": c["COMPLETE"], "trials_pruned": c["PRUNED"], "trials_fail": c["FAIL"],
               "wall_time_s": wall_time_s}
    if best is not None:
        metrics.update(best_value=best.value, best_trial=best.number)
    tracking.log_run_metrics(parent, metrics)
    if best is not None:
        tracking.set_run_tags(parent, {"best.trial": best.number, "best.value": f"{best.value:.6f}",
                                       **{f"best.{k}": v for k, v in best.params.items()}})
    df = study.trials_dataframe(attrs=("number", "value", "state", "params", "user_attrs", "duration"))
    tracking.log_run_text(parent, df.to_csv(index=False), "study/trials.csv")
    log_plots(study, parent)
    if best is not None:
        _store_best_model(study, storage, best, p)


def _store_best_model(study, storage, best, p) -> None:
    """The best trial's model, logged into its own run and registered as --register-name, by one
    worker alone (whichever finishes the study first): the trainer trains it again (same config
    and seed, so the same model on CPU)."""
    with studies.claim(storage, p.options.study_name, f"model-{best.number}") as won:
        if not won or study.user_attrs.get("best_model_trial") == best.number:
            return
        cfg = dataclasses.replace(p.base, **{**p.space.fixed(), **best.params})
        uri = p.trainer.store_model(cfg, p.data, best.user_attrs["mlflow_run_id"], p.options.register_name)
        study.set_user_attr("best_model_uri", uri)
        study.set_user_attr("best_model_trial", best.number)


def table(study, p, parent: str, wall_time_s: float, top: int = 5) -> str:
    """The end-of-study text: best trials, counts by state, wall time, how to open the UI."""
    done = sorted((t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE),
                  key=lambda t: t.value, reverse=True)[:top]
    names = sorted({k for t in done for k in t.params})
    head = ["trial", *names, "val_acc", "test_acc", "train_s", "size_mb"]
    nan = float("nan")  # blank in the table, as a param a trial did not sample
    best = pd.DataFrame([{"trial": t.number, **t.params, "val_acc": t.value,
                          "test_acc": t.user_attrs.get("test_accuracy", nan),
                          "train_s": t.user_attrs.get("train_time_s", nan),
                          "size_mb": t.user_attrs.get("model_size_mb", nan)} for t in done],
                        columns=head, dtype=object)  # object: an int param stays an int

    def param(value) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    formats = {**{n: param for n in names}, "val_acc": "{:.4f}".format, "test_acc": "{:.4f}".format,
               "train_s": "{:.1f}".format, "size_mb": "{:.2f}".format}
    c = counts(study)
    lines = [(f"study {p.options.study_name}: {c['COMPLETE']} complete, {c['PRUNED']} pruned, {c['FAIL']} failed "
              f"in {wall_time_s:.1f} s (this invocation)"),
             best.to_string(index=False, formatters=formats, na_rep="") if done else " ".join(head)]
    if "best_model_uri" in study.user_attrs:
        lines.append(f"best model (trial {study.user_attrs['best_model_trial']}): {study.user_attrs['best_model_uri']}, "
                     f"registered as {p.options.register_name!r}")
    uri = tracking.tracking_uri()
    lines.append(f"parent run {parent}; open the UI: mlflow ui --backend-store-uri {uri}")
    if study.user_attrs.get(studies.VIEW_ATTR):  # the study's trials with their key columns
        lines.append(f"  then http://127.0.0.1:5000/{study.user_attrs[studies.VIEW_ATTR]}")
    return "\n".join(lines)
