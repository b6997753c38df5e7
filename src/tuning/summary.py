"""What a study leaves on its parent run, the progress bar over trials, and the final table.

Parent run, at the end of every invocation (names stable, docs/tuning.md):
  metrics  best_value (the first objective of the best trial), best_trial, trials_complete,
           trials_pruned, trials_fail, trials_infeasible, pareto_size (several objectives),
           wall_time_s
  tags     best.trial, best.value, best.<param> (tags, since a resumed study's best may change)
  artifacts study/trials.csv, study/optimization_history.png, study/param_importances.png,
           study/parallel_coordinate.png, study/slice.png; with several objectives also
           study/pareto_front.csv and study/pareto_front.png
Trial runs: tag optuna.pareto=true|false on every COMPLETE trial of a multi-objective study.
Models: a trial logs its own trained model (and the figures trials skip) when it enters the
best set (objective.Worker); here each model of the best set (the best trial, or the Pareto
front) is registered once as a version of --register-name, and the alias `champion` points at
the best by the first objective (goals.BEST_TIE_RULE).
"""
from __future__ import annotations

import contextlib
import sys
import warnings

import optuna
import pandas as pd
from optuna.trial import TrialState
from tqdm.auto import tqdm

import tracking
from mlproject.metrics import BEST_PREFIX, METRICS, Tags, trials_table

from . import goals
from . import study as studies


@contextlib.contextmanager
def progress(study, p):
    """A bar over the study's finished trials with the best value so far (terminal only)."""
    bar = tqdm(total=p.options.trials, desc=f"study {p.options.study_name}", unit="trial", disable=not sys.stderr.isatty())

    class Bar:
        def __call__(self, study, trial=None):
            self.poll()

        def write(self, text: str) -> None:
            """A line above the bar, which is redrawn below it (never broken mid-line)."""
            tqdm.write(text, file=sys.stderr)

        def poll(self):
            trials = study.get_trials(deepcopy=False)
            bar.n = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
            best = goals.best_set(study, p.objectives)
            if len(p.objectives) > 1:
                bar.set_postfix(pareto=len(best))
            elif best:
                bar.set_postfix(best=f"{best[0].values[0]:.4f}")
            bar.refresh()

    try:
        yield Bar()
    finally:
        bar.close()


def counts(study) -> dict[str, int]:
    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus")]
    out = {s.name: sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    out["INFEASIBLE"] = sum(t.state == TrialState.COMPLETE and not goals.feasible(t) for t in trials)
    return out


PLOTS = ("optimization_history", "param_importances", "parallel_coordinate", "slice")


def import_plotting() -> None:
    """Import what log_plots draws with: pyplot, Optuna's matplotlib plots and its importance
    evaluators (fANOVA's scikit-learn forest). `tune --workers N` calls it in a thread while its
    workers run (runner._run_processes), which leave this process waiting, so that the summary
    does not import them after the last trial."""
    import matplotlib.pyplot  # noqa: F401
    import optuna.importance  # noqa: F401
    import optuna.visualization.matplotlib  # noqa: F401


def log_plots(study, run_id: str, objectives=None) -> None:
    """Optuna's matplotlib plots that apply to this study (some need 2+ trials or varying
    params) as PNGs under study/ of run `run_id`; with several objectives, the Pareto front (2
    or 3 objectives) and the others for the first objective. Optuna draws them with pyplot, so
    each figure is closed once logged (pyplot keeps every figure it made alive until then)."""
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as vm

    objectives = objectives or goals.parse_objectives(())
    calls = {name: {} for name in PLOTS}
    if len(objectives) > 1:
        first = objectives[0].metric
        calls = {name: {"target": lambda t: t.values[0], "target_name": first} for name in PLOTS}
        if len(objectives) <= 3:
            calls["pareto_front"] = {"target_names": [o.metric for o in objectives]}
    for name, kwargs in calls.items():
        with warnings.catch_warnings():
            # the matplotlib backend is 'experimental' since Optuna 2.2 (ExperimentalWarning). A
            # small study's plots are degenerate, and Optuna and matplotlib say so in a UserWarning
            # each ('The number of trials is too small to compute importances', 'Attempting to set
            # identical low and high xlims', 'No artists with labels found to put in legend'; with
            # a `target`, that importances rank params for low values whatever the direction, which
            # holds as they are unsigned): on stderr, between the trial lines and the table. The
            # plots are logged as drawn.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.simplefilter("ignore", UserWarning)
            try:
                ax = getattr(vm, f"plot_{name}")(study, **kwargs)
            except (ValueError, RuntimeError, ZeroDivisionError):  # too few trials / no varying params
                continue
        fig = (ax.flat[0] if hasattr(ax, "flat") else ax).get_figure()
        try:
            tracking.log_run_figure(run_id, fig, f"study/{name}.png")
        finally:
            plt.close(fig)


def record(study, storage, p, parent: str, wall_time_s: float) -> None:
    """Write the study's summary onto the parent run, tag the Pareto trials and register the
    best set's models."""
    c = counts(study)
    trials = study.get_trials(deepcopy=False)
    front = goals.best_set(study, p.objectives)
    best = front[0] if front else None
    metrics = {"trials_complete": c["COMPLETE"], "trials_pruned": c["PRUNED"], "trials_fail": c["FAIL"],
               "trials_infeasible": c["INFEASIBLE"], "wall_time_s": wall_time_s}
    if best is not None:
        metrics.update(best_value=best.values[0], best_trial=best.number)
    if p.multi_objective:
        metrics["pareto_size"] = len(front)
    tracking.log_run_metrics(parent, metrics)
    if best is not None:
        tracking.set_run_tags(parent, {f"{BEST_PREFIX}trial": best.number, f"{BEST_PREFIX}value": f"{best.values[0]:.6f}",
                                       **{f"{BEST_PREFIX}{k}": v for k, v in best.params.items()}})
    df = study.trials_dataframe(attrs=("number", "value", "state", "params", "user_attrs", "duration"),
                                multi_index=False)
    tracking.log_run_text(parent, df.drop(columns=["user_attrs_metrics"], errors="ignore").to_csv(index=False),
                          "study/trials.csv")
    if p.multi_objective:
        _tag_pareto(study, trials, front)
        tracking.log_run_text(parent, front_frame(front, p).to_csv(index=False), "study/pareto_front.csv")
    log_plots(study, parent, p.objectives)
    if front:
        _register(study, storage, front, p)


def _tag_pareto(study, trials, front) -> None:
    """optuna.pareto=true|false on every COMPLETE trial's run, written where it changed (a trial
    leaves the front when a resumed study finds better ones); the tagged state is kept in the study."""
    on = {t.number for t in front}
    tagged = dict(study.user_attrs.get("pareto_tags", {}))  # trial number (str) -> tagged value
    for t in trials:
        run_id = t.user_attrs.get("mlflow_run_id")
        if t.state == TrialState.COMPLETE and run_id and tagged.get(str(t.number)) != (t.number in on):
            tracking.set_run_tags(run_id, {Tags.PARETO: str(t.number in on).lower()})
            tagged[str(t.number)] = t.number in on
    study.set_user_attr("pareto_tags", tagged)


def front_frame(front, p) -> pd.DataFrame:
    """The best set as a table: trial, its sampled params, its objective values, test accuracy."""
    rows = []
    for t in front:
        m = t.user_attrs.get("metrics", {})
        rows.append({"trial": t.number, **t.params, **{o.metric: v for o, v in zip(p.objectives, t.values)},
                     "test_accuracy": m.get("test_accuracy", float("nan")),
                     "run_id": t.user_attrs.get("mlflow_run_id", "")})
    return pd.DataFrame(rows)


def _register(study, storage, front, p) -> None:
    """Register each best-set trial's own model as a version of --register-name (once), and point
    the alias `champion` at the best by the first objective; by one worker at a time."""
    with studies.claim(storage, p.options.study_name, "register") as won:
        if not won:
            return
        versions = dict(study.user_attrs.get("registered_versions", {}))  # trial number (str) -> version
        for t in front:
            uri = t.user_attrs.get("model_uri")
            if str(t.number) in versions or not uri:
                continue  # registered by an earlier invocation, or no model (--no-log-model)
            tags = {Tags.STUDY: p.options.study_name, Tags.TRIAL_NUMBER: t.number,
                    "mlflow_run_id": t.user_attrs.get("mlflow_run_id", ""),
                    **{o.metric: f"{v:.6g}" for o, v in zip(p.objectives, t.values)}}
            versions[str(t.number)] = tracking.register_model(uri, p.options.register_name, tags)
        study.set_user_attr("registered_versions", versions)
        if p.multi_objective:  # a resumed study may push earlier versions off the front: say so on them
            on = {str(t.number) for t in front}
            for number, version in versions.items():
                tracking.set_model_version_tags(p.options.register_name, version,
                                                {Tags.PARETO: str(number in on).lower()})
        champion = front[0]
        if str(champion.number) in versions:
            tracking.set_model_alias(p.options.register_name, CHAMPION, versions[str(champion.number)])
            study.set_user_attr("best_model_uri", f"models:/{p.options.register_name}@{CHAMPION}")
            study.set_user_attr("best_model_trial", champion.number)
            study.set_user_attr("best_model_version", versions[str(champion.number)])


CHAMPION = "champion"  # the registry alias of the study's best model


def table(study, p, parent: str, wall_time_s: float, top: int = 5) -> str:
    """The end-of-study text: the best trials (one objective: the top `top` feasible ones by
    goals.BEST_TIE_RULE) or the Pareto front (several), counts by state, wall time, the
    registered models, how to open the UI."""
    trials = study.get_trials(deepcopy=False)
    if p.multi_objective:
        done = goals.best_set(study, p.objectives)
    else:
        done = sorted((t for t in trials if t.state == TrialState.COMPLETE and goals.feasible(t)),
                      key=lambda t: goals.rank_key(p.objectives[0], t.values[0],
                                                   t.user_attrs.get("metrics", {}).get("val_loss"), t.number))[:top]
    names = sorted({k for t in done for k in t.params})
    shown = [o.metric for o in p.objectives] + [m for m in trials_table() if m not in {o.metric for o in p.objectives}]
    label = {m: METRICS[m].short for m in shown}
    head = ["trial", *names, *label.values()]
    nan = float("nan")  # blank in the table, as a param a trial did not sample

    def row(t) -> dict:
        values = {**t.user_attrs.get("metrics", {}), **{o.metric: v for o, v in zip(p.objectives, t.values)}}
        return {"trial": t.number, **t.params, **{label[m]: values.get(m, nan) for m in shown}}

    best = pd.DataFrame([row(t) for t in done], columns=head, dtype=object)  # object: an int param stays an int

    def param(value) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    def number(value) -> str:
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"

    formats = {**{n: param for n in names}, **{label[m]: number for m in shown}}
    c = counts(study)
    lines = [f"study {p.options.study_name}: {c['COMPLETE']} complete"
             + (f" ({c['INFEASIBLE']} infeasible)" if p.constraints else "")
             + f", {c['PRUNED']} pruned, {c['FAIL']} failed in {wall_time_s:.1f} s (this invocation)"]
    if p.multi_objective:
        lines.append(f"Pareto front of {', '.join(map(str, p.objectives))}: {len(done)} trials")
    lines.append(best.to_string(index=False, formatters=formats, na_rep="") if done else " ".join(head))
    versions = study.user_attrs.get("registered_versions", {})
    if "best_model_uri" in study.user_attrs:
        lines.append(f"best model (trial {study.user_attrs['best_model_trial']}): {study.user_attrs['best_model_uri']} "
                     f"(registered {p.options.register_name!r} version {study.user_attrs['best_model_version']}"
                     + (f"; {len(versions)} versions for the front" if p.multi_objective else "") + ")")
    command, address = tracking.ui_address()  # a tracking server serves the UI itself
    view = study.user_attrs.get(studies.VIEW_ATTR)  # the study's trials with their key columns
    if command is None:
        lines.append(f"parent run {parent}; open the UI: {address}/{view or ''}")
    else:
        lines.append(f"parent run {parent}; open the UI: {command}")
        if view:
            lines.append(f"  then {address}/{view}")
    return "\n".join(lines)
