"""`mlproject report`: seed 000's Table 1, its grouped plots, its page of confusion matrices and a
per-class accuracy table, from runs already in MLflow (nothing typed by hand).

    checked = check(run_ids, experiments, studies, x="batch_size", ys=["train_time"], by="lr")  # ConfigError
    checked = check(studies=["s"], by="model")          # no --x: by_model.md/.csv, one row per model
    result = run(checked, "report/", log=True)   # writes the files, logs them as a run named "report"
    print(report_text(result))

MLflow is reached only through `tracking` (tracking/query.py selects the runs, reads their
confusion matrices and studies' parent params; tracking/runs.py's log_files_run logs the report
run); this module checks the request and renders.

Files written to the output folder (and logged under `report/` of a run named "report"):
    table.md, table.csv          one row per run: run, run_id, [experiment, study, trial, status],
                                 the hyperparameters, train_time_s, test_time_s, train_accuracy,
                                 val_accuracy, test_accuracy, model_size_mb, params_total,
                                 [pareto, feasible, violated]
    by_<by>.md, by_<by>.csv      --by without --x: one row per value of --by (see "Grouped")
    <y>_vs_<x>[_by_<by>].png     one per --y: y against x, one line per value of --by; where x is
                                 a metric (model_size_mb), a scatter (see "Plots")
    confusion_matrices.png       every selected run's logged test confusion matrix, side by side
    per_class_accuracy.csv/.md/.png   test accuracy of every class (columns) in every run (rows)

Table columns (names are stable): `train_accuracy` / `val_accuracy` are the metrics
final_train_accuracy / final_val_accuracy (the whole split in eval mode after training). The
hyperparameter columns are KEY_PARAMS (model, optimizer, lr, batch_size, momentum, weight_decay,
epochs) always, plus every other param whose value differs between the selected runs or that a
study sampled (`sampled.<name>`: the run's own param <name> is the column, so a searched
categorical such as freeze, head, scheduler, augment or pretrained is one whether or not its
values differ; `sampled.<name>` itself where the run has no param <name>), bookkeeping params
(BOOKKEEPING) excepted; the params equal in every run are listed under the Markdown table
instead. `experiment` appears when the runs come from several, `study`/`trial` when any run is a
study's trial, `status` when any is not FINISHED.
Multi-objective and constrained studies (OUTCOME_TAGS, set by the tuning code on COMPLETE trial
runs): `pareto` (True: on the study's Pareto front, tag optuna.pareto) and `feasible` (tag
optuna.feasible) appear when any selected run has that tag, `violated` (which constraints, tag
optuna.violated) when any run has one; runs without the tag are empty there. The notes under
table.md give each study's `objectives` and `constraints` (params of its parent run).

Grouped (`--by NAME` without `--x`): by_<NAME>.md/.csv, one row per value of NAME (sorted, a
missing value last): `runs` (how many), `best_run` (the run with the highest test_accuracy),
`pareto_runs` / `feasible_runs` (how many of them are on the front / feasible, where the table
has those columns), then for each of GROUP_METRICS (test_accuracy, val_accuracy, train_time_s,
test_time_s, model_size_mb) `<metric>_best` and `<metric>_mean`. Best is the highest accuracy and
the lowest time or size, each metric on its own (best test_accuracy and best model_size_mb may be
different runs; best_run says whose accuracy it is); mean is over the runs that logged the metric.
Every selected run counts, infeasible ones included (feasible_runs says how many are not): what
the value of NAME reaches at all is the comparison. With --x, --by means one line per value.

Plots: x a param (batch_size, lr, model) draws one line per value of --by through the runs sorted
by x; x a metric (a per-run number: model_size_mb, train_time_s) draws a scatter, one colour per
value of --by and no lines, as a front is read. Either way runs on the Pareto front get a black
ring, infeasible runs a grey 'x' (in a scatter instead of their colour, on a line over it), and a
study's constraint on x or y a dashed grey line, each in the legend.

Names in --x/--y/--by/--sort: any table column, any param or metric of the selected runs (a
metric whose name a param or table column already takes is `metrics.<name>`, e.g. the per-epoch
`metrics.lr` and `metrics.train_accuracy`; `params.<name>` works too), and the aliases in ALIASES
(train_time -> train_time_s, ...). A name no selected run has is a ConfigError listing those
that exist.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

import tracking

from mlproject.config import ConfigError, TrainConfig, did_you_mean
from mlproject.metrics import METRICS as CATALOGUE
from mlproject.metrics import CLASS_ACCURACY_PREFIX, SAMPLED_PREFIX, Tags
from tracking.query import study_params
from tuning import parse_constraints

KEY_PARAMS = ("model", "optimizer", "lr", "batch_size", "momentum", "weight_decay", "epochs")
# params that say where and how a run was recorded, not what was trained: never table columns
# (class_names: logged with a model, so only the runs that hold one have it)
BOOKKEEPING = ("experiment", "run_name", "data_dir", "num_workers", "log_model", "cache_features", "checkpoint_every",
               "checkpoint_dir", "keep_checkpoints", "class_names")
# metric -> table column (mlproject.metrics: in_report, column)
METRICS = {m.name: m.report_column for m in CATALOGUE.values() if m.in_report}
INTEGER_METRICS = tuple(m.name for m in CATALOGUE.values() if m.integer)
ALIASES = {"train_time": "train_time_s", "test_time": "test_time_s", "model_size": "model_size_mb",
           "size": "model_size_mb", "params": "params_total", "parameters": "params_total",
           "train_acc": "train_accuracy",
           # the catalogue's other names of a report column: tune's short labels (val_acc, test_acc, ...)
           # and the metric names behind renamed columns (final_val_accuracy is column val_accuracy)
           **{m.label: METRICS.get(m.name, m.name) for m in CATALOGUE.values() if m.label},
           **{name: column for name, column in METRICS.items() if column != name},
           "learning_rate": "lr", "batch": "batch_size", "name": "run", "run_name": "run"}
# table column -> the tag the tuning code sets on COMPLETE trial runs of multi-objective
# (pareto) and constrained (feasible, violated) studies; shown where any selected run has it
OUTCOME_TAGS = {"pareto": Tags.PARETO, "feasible": Tags.FEASIBLE, "violated": Tags.VIOLATED}
# metric -> the better direction, for the grouped table's <column>_best (accuracy up, cost down)
GROUP_METRICS = {m.name: m.better for m in sorted((m for m in CATALOGUE.values() if m.grouped), key=lambda m: m.grouped)}
SCATTER_LOG_SPAN = 100  # a scatter's metric x spanning this factor or more is drawn on a log axis
CLASS_PREFIX = CLASS_ACCURACY_PREFIX
CM_COLUMNS = 4  # confusion matrices per row in confusion_matrices.png
CM_MAX_PIXELS = 40e6  # the matrices together, at most (drawn at less than 100 dpi if need be)


@dataclass
class Plot:
    x: str
    y: str
    by: str | None
    scatter: bool = False  # x is a metric: markers only (a front), not lines through sorted x

    @property
    def filename(self) -> str:
        name = f"{_safe(self.y)}_vs_{_safe(self.x)}" + (f"_by_{_safe(self.by)}" if self.by else "")
        return name + ".png"


@dataclass
class Checked:
    """Everything `run` needs, validated."""

    selection: object  # tracking.Selection
    data: pd.DataFrame  # one row per run: every table column, param and metric (see _wide)
    source: dict[str, tuple[str, str]]  # column -> ("meta" | "param" | "metric", name in MLflow)
    columns: list[str]  # the table's columns, in order
    fixed: dict[str, str]  # params equal in every run and not in the table
    sort: str | None = None
    ascending: bool = True
    plots: list[Plot] = field(default_factory=list)
    group_by: str | None = None  # --by without --x: the column of the grouped table by_<group_by>
    studies: dict[str, dict[str, str]] = field(default_factory=dict)  # study -> its parent run's params

    def table(self) -> pd.DataFrame:
        t = self.data[self.columns]
        if self.sort:
            t = t.sort_values(self.sort, ascending=self.ascending, na_position="last", kind="stable")
        return t.reset_index(drop=True)


@dataclass
class Report:
    checked: Checked
    out_dir: Path
    files: list[str] = field(default_factory=list)  # written, relative to out_dir
    matrices: list[str] = field(default_factory=list)  # run ids shown in confusion_matrices.png
    no_matrix: list[str] = field(default_factory=list)  # run ids without a logged confusion matrix
    run_id: str | None = None


# ---------------------------------------------------------------------------------------------
# checks

def check(run_ids=(), experiments=(), studies=(), include_all: bool = False, sort: str | None = None,
          ascending: bool = True, x: str | None = None, ys=(), by: str | None = None, out=None) -> Checked:
    """All bad input, before anything is written or logged: ConfigError for run ids that do not
    exist, an unknown experiment or study, a study or experiment with no finished runs, names in
    sort / x / ys / by that no selected run has (those that exist listed), --x without --y and
    the reverse, a non-numeric --y, and an --out that is a file. `by` without `x` asks for the
    grouped table, with `x` for one line (or colour) per value."""
    try:
        sel = tracking.select_runs(run_ids=run_ids, experiments=experiments, studies=studies, include_all=include_all)
    except tracking.RunsNotFound as e:
        raise ConfigError(str(e)) from None
    data, source = _wide(sel.runs)
    columns, fixed = _columns(data, source)
    checked = Checked(sel, data, source, columns, fixed, ascending=ascending,
                      studies=study_params(data["study"].dropna().unique()))
    if sort:
        checked.sort = resolve(checked, sort, "--sort")
        if checked.sort not in checked.columns:  # sorted by a param or metric: show it too
            checked.columns.append(checked.sort)
    ys = list(ys)
    if x and not ys:
        raise ConfigError("--x needs --y (the metric to plot against it), e.g. --x batch_size --y train_time")
    if ys and not x:
        raise ConfigError("--y needs --x (the parameter to plot it against), e.g. --x batch_size --y train_time")
    if by and not x:  # no plot to colour: the grouped table
        checked.group_by = resolve(checked, by, "--by")
    if x:
        xc = resolve(checked, x, "--x")
        bc = resolve(checked, by, "--by") if by else None
        for y in ys:
            yc = resolve(checked, y, "--y")
            if not pd.api.types.is_numeric_dtype(data[yc]):
                raise ConfigError(f"--y {y!r} is not numeric (values like {data[yc].dropna().iloc[0]!r}); "
                                  "plot a metric or a numeric param")
            both = data[[xc, yc]].notna().all(axis=1)
            if not both.any():
                raise ConfigError(f"no selected run has both {xc!r} and {yc!r}")
            checked.plots.append(Plot(xc, yc, bc, scatter=source[xc][0] == "metric"))
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise ConfigError(f"--out {str(out)!r} is a file, not a folder")
    return checked


def resolve(checked: Checked, name: str, option: str) -> str:
    """The data column `name` means (a column, an alias, params.X / metrics.X); ConfigError
    listing the names the selected runs have when none does."""
    data, source = checked.data, checked.source
    have = [c for c in data.columns if data[c].notna().any()]
    name = name.strip()
    candidates = [name, ALIASES.get(name, "")]
    prefix, _, rest = name.partition(".")
    if prefix in ("params", "metrics") and rest:
        kind = prefix[:-1]
        candidates += [c for c, (k, n) in source.items() if k == kind and n == rest]
    for c in candidates:
        if c and c in have:
            return c
    raise ConfigError(f"{option} {name!r}: no selected run has it{did_you_mean(name, dict.fromkeys([*have, *ALIASES]))}; "
                      f"they have {names_listed(checked, have)}")


def names_listed(checked: Checked, have: list[str]) -> str:
    """'table columns: ...; other params: ...; other metrics: ...', per-class metrics collapsed."""
    table = [c for c in checked.columns if c in have]
    params = [c for c in have if c not in table and checked.source[c][0] == "param"]
    metrics = [c for c in have if c not in table and checked.source[c][0] == "metric"]
    classes = [m for m in metrics if m.startswith(CLASS_PREFIX)]
    if len(classes) > 3:
        metrics = [m for m in metrics if not m.startswith(CLASS_PREFIX)]
        metrics.append(f"{CLASS_PREFIX}<class> ({len(classes)} classes)")
    parts = [f"table columns: {', '.join(table)}"]
    if params:
        parts.append(f"other params: {', '.join(params)}")
    if metrics:
        parts.append(f"other metrics: {', '.join(metrics)}")
    return "; ".join(parts)


def _typed(values: pd.Series) -> pd.Series:
    """Param strings as numbers where every logged value is one (Int64 where all are integers)."""
    present = values.dropna().astype(str).str.strip()
    if present.empty:
        return values
    try:
        pd.to_numeric(present)
    except (ValueError, TypeError):
        return values
    numbers = pd.to_numeric(values.astype(object).where(values.notna(), None))
    if present.str.fullmatch(r"[+-]?\d+").all():
        return numbers.astype("Int64")
    return numbers.astype(float)


def _wide(runs: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, tuple[str, str]]]:
    """One row per run with friendly column names: META, every param under its own name, the
    METRICS under their table names and every other metric under its own name (or metrics.<name>
    where that is taken); and where every column came from."""
    data: dict[str, pd.Series] = {}
    source: dict[str, tuple[str, str]] = {}

    def put(column, values, kind, name):
        data[column] = values
        source[column] = (kind, name)

    def tag(name):
        return runs[f"tags.{name}"] if f"tags.{name}" in runs else pd.Series([None] * len(runs), index=runs.index)

    names = runs["run_name"].where(runs["run_name"].astype(bool), runs["run_id"].str[:8])
    put("run", names, "meta", "run_name")
    put("run_id", runs["run_id"], "meta", "run_id")
    put("experiment", runs["experiment"], "meta", "experiment")
    put("study", tag(Tags.STUDY), "meta", f"tags.{Tags.STUDY}")
    put("trial", _typed(tag(Tags.TRIAL_NUMBER)), "meta", f"tags.{Tags.TRIAL_NUMBER}")
    put("status", runs["status"], "meta", "status")
    for column, name in OUTCOME_TAGS.items():
        values = tag(name)
        put(column, values if column == "violated" else _flag(values), "meta", f"tags.{name}")
    rank = {f.name: i for i, f in enumerate(dataclasses.fields(TrainConfig))}  # TrainConfig's order, then by name
    param_cols = sorted((c for c in runs.columns if c.startswith("params.")),
                        key=lambda c: (rank.get(c[len("params."):], len(rank)), c))
    for c in param_cols:
        name = c[len("params."):]
        put(name if name not in data else c, _typed(runs[c]), "param", name)
    metric_cols = [c for c in runs.columns if c.startswith("metrics.")]
    for metric, column in METRICS.items():  # always there, so the table's columns are stable
        values = runs[f"metrics.{metric}"] if f"metrics.{metric}" in runs else pd.Series(np.nan, index=runs.index)
        if metric in INTEGER_METRICS and _integral(values):
            values = values.round().astype("Int64")
        put(column if column not in data else f"metrics.{metric}", values, "metric", metric)
    for c in metric_cols:
        name = c[len("metrics."):]
        if name in METRICS:
            continue
        values = runs[c].round().astype("Int64") if name in INTEGER_METRICS and _integral(runs[c]) else runs[c]
        put(name if name not in data else c, values, "metric", name)
    return pd.DataFrame(data, index=runs.index).reset_index(drop=True), source


def _flag(values: pd.Series) -> pd.Series:
    """Tag values "true"/"false" as a nullable boolean (sortable; NA where a run has no such tag
    or an unexpected value)."""
    words = values.astype(object).where(values.notna(), None).map(lambda v: str(v).strip().lower() if v else v)
    return pd.Series(pd.array(words.map({"true": True, "false": False}), dtype="boolean"), index=values.index)


def _integral(values: pd.Series) -> bool:
    v = values.dropna()
    return bool(len(v)) and bool(np.all(np.mod(v.to_numpy(dtype=float), 1) == 0))


def _columns(data: pd.DataFrame, source) -> tuple[list[str], dict[str, str]]:
    """The table's columns in order, and the params equal in every run that it leaves out."""
    cols = ["run", "run_id"]
    if data["experiment"].nunique() > 1:
        cols.append("experiment")
    for c in ("study", "trial"):
        if data[c].notna().any():
            cols.append(c)
    if (data["status"] != "FINISHED").any():
        cols.append("status")
    params = {c: n for c, (k, n) in source.items() if k == "param"}
    sampled = {n[len(SAMPLED_PREFIX):] for n in params.values() if n.startswith(SAMPLED_PREFIX)}
    logged = set(params.values())
    order = [f.name for f in dataclasses.fields(TrainConfig)]
    rank = {n: i for i, n in enumerate(order)}
    shown, fixed = [], {}
    for c, n in sorted(params.items(), key=lambda kv: (rank.get(kv[1], len(rank)), kv[1])):
        # sampled.<name> repeats the run's own param <name>; shown only where that is missing
        if (n.startswith(SAMPLED_PREFIX) and n[len(SAMPLED_PREFIX):] in logged) or n.startswith("space.") or n in BOOKKEEPING:
            continue
        varies = data[c].astype(str).nunique(dropna=False) > 1 or data[c].isna().any()
        if n in KEY_PARAMS or n in sampled or n.startswith(SAMPLED_PREFIX) or varies:
            shown.append(c)
        else:
            fixed[n] = str(data[c].iloc[0])
    shown.sort(key=lambda c: (KEY_PARAMS.index(params[c]) if params[c] in KEY_PARAMS else len(KEY_PARAMS),
                              rank.get(params[c], len(rank)), params[c]))
    metrics = [c for c, (k, n) in source.items() if k == "metric" and n in METRICS]
    outcomes = [c for c in OUTCOME_TAGS if data[c].notna().any()]
    return cols + shown + metrics + outcomes, fixed


# ---------------------------------------------------------------------------------------------
# the report

def run(checked: Checked, out_dir, log: bool = True) -> Report:
    """Write every file into `out_dir` and, with `log`, log them as a run named "report" (tag
    mlproject.role=report) in the experiment of the first selector."""
    result = Report(checked, Path(out_dir))
    result.out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, object] = {}
    table = checked.table()
    files["table.csv"] = table.to_csv(index=False)
    files["table.md"] = table_markdown(checked, table)
    if checked.group_by:
        grouped = grouped_table(checked)
        name = f"by_{_safe(checked.group_by)}"
        files[f"{name}.csv"] = grouped.to_csv(index=False)
        files[f"{name}.md"] = grouped_markdown(grouped)
    for plot in checked.plots:
        files[plot.filename] = plot_figure(checked, plot)
    cms = tracking.confusion_matrices(table["run_id"])
    result.matrices = [r for r in table["run_id"] if r in cms]
    result.no_matrix = [r for r in table["run_id"] if r not in cms]
    if cms:
        files["confusion_matrices.png"] = confusion_matrices_figure(checked, table, cms)
    per_class = per_class_table(checked, table, cms)
    if per_class is not None:
        files["per_class_accuracy.csv"] = per_class.to_csv()
        files["per_class_accuracy.md"] = markdown(per_class.reset_index(), {c: ".4f" for c in per_class.columns})
        files["per_class_accuracy.png"] = per_class_figure(per_class)
    for name, content in files.items():
        path = result.out_dir / name
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            content.savefig(path)
    result.files = list(files)
    if log:
        sel = checked.selection
        order = "ascending" if checked.ascending else "descending"
        params = {"runs": len(table), "selected": "; ".join(sel.sources), "run_ids": ",".join(table["run_id"]),
                  "sort": f"{checked.sort} {order}" if checked.sort else "",
                  "plots": ", ".join(p.filename for p in checked.plots)}
        result.run_id = tracking.log_files_run(tracking.experiment_name(sel.experiment_id), "report", str(result.out_dir),
                                              result.files, params)
    return result


def _seconds(v: float) -> str:
    return f"{v:.2f}" if abs(v) >= 0.1 else f"{v:.2g}"  # 682.71, 1.53; 0.0071, not 0.00


def _format(column: str, dtype):
    """How table.md writes a float column: seconds to 0.01 s (2 significant digits below 0.1 s),
    accuracies to 4 decimals, sizes to 3 significant digits, anything else to 6."""
    if not pd.api.types.is_float_dtype(dtype):
        return None
    if column.endswith("_s"):
        return _seconds
    if "accuracy" in column:
        return ".4f"
    if column.endswith("_mb"):
        return ".3g"
    return ".6g"


def _cell(value, fmt=None) -> str:
    """One Markdown cell: '' for a missing value, floats by `fmt` (a format spec or a function)."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    if fmt and isinstance(value, (float, np.floating)):
        text = fmt(float(value)) if callable(fmt) else format(value, fmt)
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(frame: pd.DataFrame, formats: dict | None = None) -> str:
    """A GitHub Markdown table of `frame` (DataFrame.to_markdown, no index): every cell as _cell
    writes it, numbers right-aligned; formats: column -> a format spec or a function for its floats."""
    formats = formats or {}
    columns = range(frame.shape[1])  # by position: names may repeat
    cells = pd.DataFrame({i: [_cell(v, formats.get(frame.columns[i])) for v in frame.iloc[:, i]] for i in columns},
                         index=frame.index, dtype=object)
    cells.columns = [_cell(c) for c in frame.columns]
    # True/False read as words, not numbers (pandas counts booleans numeric)
    align = ["right" if pd.api.types.is_numeric_dtype(frame.iloc[:, i]) and not pd.api.types.is_bool_dtype(frame.iloc[:, i])
             else "left" for i in columns]
    return cells.to_markdown(index=False, colalign=align, disable_numparse=True) + "\n"


def table_markdown(checked: Checked, table: pd.DataFrame) -> str:
    """table.md: the table (run ids shortened to 8 characters, numbers rounded: see _format),
    then the params every run shares, what was left out and the sort order."""
    shown = table.copy()
    shown["run_id"] = shown["run_id"].str[:8]
    text = markdown(shown, {c: _format(c, shown[c].dtype) for c in shown.columns})
    notes = []
    if checked.fixed:
        notes.append("Same in every run: " + ", ".join(f"{k}={v}" for k, v in checked.fixed.items()) + ".")
    excluded = checked.selection.excluded
    if excluded:
        notes.append("Left out (not finished; `--all` includes them): "
                     + ", ".join(f"{n} {s}" for s, n in sorted(excluded.items())) + ".")
    if checked.sort:
        notes.append(f"Sorted by {checked.sort}, {'ascending' if checked.ascending else 'descending'}.")
    notes += study_notes(checked)
    return text + ("\n" + "\n\n".join(notes) + "\n" if notes else "")


def metric_column(checked: Checked, metric: str) -> str | None:
    """The data column holding MLflow metric `metric` (test_accuracy, final_val_accuracy -> val_accuracy)."""
    return next((c for c, (k, n) in checked.source.items() if k == "metric" and n == metric), None)


def grouped_table(checked: Checked) -> pd.DataFrame:
    """by_<group_by>: one row per value of checked.group_by over every selected run (module
    docstring, "Grouped"): the value, runs, best_run, [pareto_runs, feasible_runs], then
    <metric>_best (max for accuracies, min for times and size) and <metric>_mean of GROUP_METRICS."""
    data, by = checked.data, checked.group_by
    frame = pd.DataFrame({"_key": data[by], "_run": data["run"]})
    counts = [c for c in ("pareto", "feasible") if c in checked.columns and c != by]
    for c in counts:
        frame[c] = data[c].fillna(False).astype(bool)  # runs without the tag are not counted
    metrics = {}
    for metric, how in GROUP_METRICS.items():
        column = metric_column(checked, metric)
        if column is not None:
            metrics[column] = how
            frame[column] = data[column].astype(float)
    groups = frame.groupby("_key", dropna=False, sort=True)
    out = pd.DataFrame({"runs": groups.size()})
    accuracy = metric_column(checked, "test_accuracy")
    if accuracy is not None:  # first among equals in the table's (start-time) order
        ranked = frame.dropna(subset=[accuracy]).sort_values(accuracy, ascending=False, kind="stable")
        out["best_run"] = ranked.drop_duplicates("_key").set_index("_key")["_run"]
    for c in counts:
        out[f"{c}_runs"] = groups[c].sum().astype(int)
    for column, how in metrics.items():
        out[f"{column}_best"] = groups[column].max() if how == "max" else groups[column].min()
        out[f"{column}_mean"] = groups[column].mean()
    out.index.name = by
    return out.reset_index()


def grouped_markdown(grouped: pd.DataFrame) -> str:
    """by_<by>.md: as table.md rounds each metric (a <metric>_best / _mean column like <metric>)."""
    return markdown(grouped, {c: _format(re.sub(r"_(best|mean)$", "", c), grouped[c].dtype) for c in grouped.columns})


def study_notes(checked: Checked) -> list[str]:
    """'Study S: objectives ...; constraints ...' for each selected study whose parent run says."""
    notes = []
    for name, params in checked.studies.items():
        said = [f"{k} {params[k]}" for k in ("objectives", "constraints") if params.get(k)]
        if said:
            notes.append(f"Study {name}: " + "; ".join(said) + ".")
    return notes


def constraints(checked: Checked) -> list[tuple[str, str, float, str]]:
    """(data column, operator, bound, text) of every parsable constraint of the selected studies
    (param `constraints`: "model_size_mb<=5", several separated by ',' or ';')."""
    found = []
    for params in checked.studies.values():
        for text in re.split(r"[,;]", params.get("constraints") or ""):
            try:  # tune's own grammar: what tune accepted, it logged
                parsed = parse_constraints([text])
            except ConfigError:  # a metric this version does not know: not drawn
                continue
            for c in parsed:
                column = metric_column(checked, c.metric) or (c.metric if c.metric in checked.data else None)
                if column is not None and (column, c.op, c.bound, str(c)) not in found:
                    found.append((column, c.op, c.bound, str(c)))
    return found


def run_labels(checked: Checked, table: pd.DataFrame) -> dict[str, str]:
    """run id -> 'run (run_id8)' plus its hyperparameters that vary between the runs: figure titles."""
    varying = [c for c in checked.columns if checked.source[c][0] == "param"
               and table[c].astype(str).nunique(dropna=False) > 1]
    labels = {}
    for _, row in table.iterrows():
        parts = [f"{c}={_cell(row[c], '.6g')}" for c in varying[:4]]
        labels[row["run_id"]] = f"{row['run']} ({row['run_id'][:8]})" + ("\n" + " ".join(parts) if parts else "")
    return labels


# ---------------------------------------------------------------------------------------------
# figures

def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("_") or "value"


def plot_figure(checked: Checked, plot: Plot):
    """y against x, one colour per value of `by`. x a param: a line per value through its runs
    sorted by x; a numeric x spanning 8x or more (batch sizes 16..512) is drawn on a log2 axis
    with a tick at every value, so 16 and 32 do not run together (seed 000's figure), a text x
    (model names) is categorical. x a metric (plot.scatter): markers only, as a front is read; a
    log axis where x spans SCATTER_LOG_SPAN or more. Either way (_mark_outcomes) Pareto runs are
    ringed, infeasible ones a grey 'x', and the studies' constraints on x or y dashed lines."""
    from matplotlib.figure import Figure

    d, cats = _plot_points(checked, plot)
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    # infeasible runs: a grey 'x' in a scatter, not their value's colour (the eye picks the feasible front)
    infeasible = d["feasible"].eq(False).fillna(False).astype(bool) if "feasible" in d else pd.Series(False, d.index)
    groups = [(None, d)] if not plot.by else list(d.groupby(plot.by, dropna=False, sort=True))
    for i, (value, g) in enumerate(groups):
        label = None if plot.by is None else f"{plot.by}={_cell(value, '.6g') or 'none'}"
        if plot.scatter:
            g = g[~infeasible[g.index]]
            ax.scatter(g["_x"], g["_y"], s=36, color=f"C{i % 10}", label=label, zorder=2)
        else:
            g = g.sort_values("_x", kind="stable")
            ax.plot(g["_x"], g["_y"], marker="o", color=f"C{i % 10}", label=label)
    marked = _mark_outcomes(ax, checked, plot, d, infeasible)
    _x_axis(ax, plot, d["_x"], cats)
    ax.set_xlabel(plot.x)
    ax.set_ylabel(plot.y)
    ax.set_title(f"{plot.y} vs {plot.x}" + (f" by {plot.by}" if plot.by else ""))
    ax.grid(alpha=0.3)
    if plot.by or marked:
        ax.legend(title=plot.by, fontsize=8 if len(groups) + marked > 8 else None)
    return fig


def _plot_points(checked: Checked, plot: Plot) -> tuple[pd.DataFrame, list[str] | None]:
    """The runs with both x and y, with the numbers drawn in columns _x and _y (a text x becomes
    its category's index), and the categories (None for a numeric x)."""
    outcomes = [c for c in ("pareto", "feasible") if c in checked.columns]
    cols = list(dict.fromkeys([plot.x, plot.y, *([plot.by] if plot.by else []), *outcomes]))
    d = checked.data[cols].dropna(subset=[plot.x, plot.y])
    if pd.api.types.is_numeric_dtype(d[plot.x]):
        return d.assign(_x=d[plot.x].astype(float), _y=d[plot.y].astype(float)), None
    cats = sorted(d[plot.x].astype(str).unique())
    xs = d[plot.x].astype(str).map({c: i for i, c in enumerate(cats)}).astype(float)
    return d.assign(_x=xs, _y=d[plot.y].astype(float)), cats


def _x_axis(ax, plot: Plot, xs: pd.Series, cats: list[str] | None) -> None:
    """The x axis's scale and ticks: log for a scatter spanning SCATTER_LOG_SPAN, log2 with a tick
    per value for a param spanning 8x (batch sizes), the names for a categorical x."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    if plot.scatter:
        if len(xs) and xs.min() > 0 and xs.max() / xs.min() >= SCATTER_LOG_SPAN:
            ax.set_xscale("log")
    elif cats is None:
        values = sorted(set(xs))
        if values and values[0] > 0 and values[-1] / values[0] >= 8:
            ax.set_xscale("log", base=2)
            ax.xaxis.set_minor_locator(NullLocator())
        if len(values) <= 16:
            ax.xaxis.set_major_locator(FixedLocator(values))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.6g}"))
    else:
        long = max(map(len, cats), default=0) > 8
        ax.set_xticks(range(len(cats)), cats, rotation=30 if long else 0, ha="right" if long else "center")


def _mark_outcomes(ax, checked: Checked, plot: Plot, d: pd.DataFrame, infeasible: pd.Series) -> int:
    """Over the runs already drawn: a black ring on each Pareto run, a grey 'x' on each infeasible
    one, a dashed grey line at each constraint on x or y; how many legend entries that added."""
    added = 0
    if "pareto" in d:
        front = d[d["pareto"].eq(True).fillna(False).astype(bool)]
        if len(front):
            ax.scatter(front["_x"], front["_y"], s=150, facecolors="none", edgecolors="black", linewidths=1.5,
                       zorder=3, label=f"Pareto front ({len(front)})")
            added += 1
    if infeasible.any():
        bad = d[infeasible]
        ax.scatter(bad["_x"], bad["_y"], marker="x", s=50, color="0.5", linewidths=1.5, zorder=4,
                   label=f"infeasible ({len(bad)})")
        added += 1
    for column, _, bound, text in constraints(checked):
        if column == plot.x and pd.api.types.is_numeric_dtype(d[plot.x]):
            ax.axvline(bound, color="0.5", linestyle="--", linewidth=1, label=f"constraint {text}")
            added += 1
        elif column == plot.y:
            ax.axhline(bound, color="0.5", linestyle="--", linewidth=1, label=f"constraint {text}")
            added += 1
    return added


def confusion_matrices_figure(checked: Checked, table: pd.DataFrame, cms: dict[str, dict]):
    """The runs' logged test confusion matrices side by side on one Figure (CM_COLUMNS per row,
    table order), each drawn by mlproject.figures.plot_confusion_matrix as in its own run and
    titled with the run and its varying hyperparameters."""
    from matplotlib.figure import Figure

    from mlproject.figures import confusion_matrix_figsize, plot_confusion_matrix

    labels = run_labels(checked, table)
    ids = [r for r in table["run_id"] if r in cms]
    ncols = min(CM_COLUMNS, len(ids))
    nrows = math.ceil(len(ids) / ncols)
    # every panel sized for the most classes, 0.4 in higher for the title's second line (the parameters)
    pw, ph = confusion_matrix_figsize(max(len(cms[r]["class_names"]) for r in ids))
    fw, fh = ncols * pw, nrows * (ph + 0.4) + 0.4
    # 100 dpi, less where the whole would pass CM_MAX_PIXELS (100 classes: 24 x 24 in a panel)
    fig = Figure(figsize=(fw, fh), dpi=min(100.0, math.sqrt(CM_MAX_PIXELS / (fw * fh))), layout="compressed")
    fig.suptitle(f"test confusion matrices of {len(ids)} runs")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, rid in zip(axes, ids):
        plot_confusion_matrix(ax, np.asarray(cms[rid]["matrix"]), cms[rid]["class_names"], title=labels[rid])
    for ax in axes[len(ids):]:
        ax.remove()
    return fig


def per_class_table(checked: Checked, table: pd.DataFrame, cms: dict[str, dict]) -> pd.DataFrame | None:
    """Test accuracy per class (columns, in the confusion matrices' class order) per run (rows,
    indexed by the run's label 'run (run_id8)'), from the metrics test_class_accuracy/<class>;
    None when no run has them."""
    data = checked.data.set_index("run_id").loc[table["run_id"]]
    keys = {checked.source[c][1][len(CLASS_PREFIX):]: c for c in checked.data.columns
            if checked.source[c][0] == "metric" and checked.source[c][1].startswith(CLASS_PREFIX)}
    keys = {k: c for k, c in keys.items() if data[c].notna().any()}
    if not keys:
        return None
    order = []  # class names, in the first logged confusion matrix's order
    for cm in cms.values():
        order += [str(n) for n in cm["class_names"] if tracking.metric_key(n) in keys and str(n) not in order]
    columns = {n: keys[tracking.metric_key(n)] for n in order}
    natural = lambda k: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", k)]  # noqa: E731
    for k in sorted(set(keys) - {tracking.metric_key(n) for n in order}, key=natural):
        columns[k] = keys[k]
    index = pd.Index([f"{r} ({i[:8]})" for r, i in zip(table["run"], table["run_id"])], name="run")
    return pd.DataFrame({n: data[c].to_numpy(dtype=float) for n, c in columns.items()}, index=index)


def per_class_figure(per_class: pd.DataFrame):
    """Heat map of per_class (runs x classes), values written in the cells up to 30 classes; the
    colours span the lowest accuracy (rounded down to 0.1) to 1."""
    from matplotlib.figure import Figure

    values = per_class.to_numpy(dtype=float)
    nr, nc = values.shape
    cell = 0.55 if nc <= 30 else 0.22
    label_w = max(len(s) for s in per_class.index) * 0.075
    fig = Figure(figsize=(max(5.0, nc * cell + label_w + 1.8), max(2.5, nr * 0.4 + 1.8)), layout="constrained")
    ax = fig.add_subplot()
    # from the lowest accuracy (rounded down to 0.1) to 1: runs that all score 0.8-1.0 still differ in colour
    low = np.nanmin(values) if np.isfinite(values).any() else 0.0
    vmin = min(0.9, math.floor(low * 10) / 10)
    im = ax.imshow(np.ma.masked_invalid(values), cmap="Blues", vmin=vmin, vmax=1, aspect="auto",
                   interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02, label="test accuracy")
    names = [str(c) for c in per_class.columns]
    rotate = nc > 10 or max(map(len, names), default=0) * nc > 60
    ax.set_xticks(range(nc), names, rotation=45 if rotate else 0, ha="right" if rotate else "center",
                  fontsize=9 if nc <= 30 else 6)
    ax.set_yticks(range(nr), list(per_class.index), fontsize=9)
    ax.set_xlabel("class")
    ax.set_title("test accuracy per class")
    if nc <= 30 and nr <= 60:
        rgba = im.cmap(im.norm(np.nan_to_num(values)))
        dark = (0.299 * rgba[..., 0] + 0.587 * rgba[..., 1] + 0.114 * rgba[..., 2]) < 0.5
        for i in range(nr):
            for j in range(nc):
                if not math.isnan(values[i, j]):
                    ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if dark[i, j] else "black")
    return fig


# ---------------------------------------------------------------------------------------------
# what the command prints

def report_text(result: Report) -> str:
    checked = result.checked
    lines = [table_markdown(checked, checked.table()).rstrip(), ""]
    if checked.group_by:
        lines += [f"by {checked.group_by}:", grouped_markdown(grouped_table(checked)).rstrip(), ""]
    lines.append("selected: " + "; ".join(checked.selection.sources))
    if result.no_matrix:
        lines.append(f"no logged confusion matrix in {len(result.no_matrix)} runs: "
                     + ", ".join(r[:8] for r in result.no_matrix))
    lines.append(f"wrote {', '.join(result.files)} to {result.out_dir}")
    if result.run_id:
        lines.append(f"logged as run {result.run_id} (artifacts under report/)")
    return "\n".join(lines)
