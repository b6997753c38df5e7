"""The MLflow side of `mlproject report`: select runs, read their numbers and confusion matrices,
and log the finished report as a run of its own.

    sel = select_runs(run_ids=["3f2a..."], studies=["seed000"], experiments=[])   # RunsNotFound
    sel.runs                       # DataFrame: one row per run, params.* / metrics.* / tags.* columns
    cms = confusion_matrices(sel.runs["run_id"])    # {run_id: {"class_names": [...], "matrix": [[...]]}}
    run_id = log_files_run(experiment_name(sel.experiment_id), "report", "report/", files, params={...})

Which runs a selector picks (the union of all selectors, each run once, in start-time order):
  a run id           that run, whatever its status; the id of a study's parent run: its trials
  --study NAME       every trial run (tag optuna.study=NAME, any experiment); not the parent
  --experiment NAME  every training run in it: runs with a `model` param, not the parent runs of
                     studies nor report/outliers runs (tag mlproject.role)
Runs found through a study or an experiment count only when FINISHED (pruned trials are KILLED,
failed ones FAILED, and neither has test metrics) unless include_all; `excluded` counts the rest.
Runs are read with mlflow.search_runs(output_format="pandas"): deleted runs and runs of deleted
experiments are not found.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlproject.config import did_you_mean, listed
from mlproject.metrics import Tags

from .env import no_progress_bars

ROLE_TAG = Tags.ROLE
NOT_TRAINING = ("study", "report", "outliers")  # roles of runs that hold no trained model's numbers
STUDY_TAG = Tags.STUDY
PARENT_TAG = "mlflow.parentRunId"
CONFUSION_MATRIX = "test/confusion_matrix.json"
META = ["run_id", "run_name", "experiment_id", "experiment", "status", "start_time"]


class RunsNotFound(LookupError):
    """A selector names no runs; the message is one line saying which and what exists."""


@dataclass
class Selection:
    runs: pd.DataFrame  # run_id, run_name, experiment_id, experiment, status, start_time, params.*, metrics.*, tags.*
    experiment_id: str  # where the report's own run goes: that of the first selector
    excluded: dict[str, int] = field(default_factory=dict)  # status -> runs left out (not FINISHED)
    sources: list[str] = field(default_factory=list)  # "study s1 (4 runs)", ... for the summary


def _search(filter_string: str, experiment_ids: list[str] | None = None) -> pd.DataFrame:
    """mlflow.search_runs' DataFrame: run_id, experiment_id, status, start_time (UTC datetime), ...,
    metrics.*, params.*, tags.* (absent values None or NaN); all active experiments for None."""
    return mlflow.search_runs(experiment_ids=experiment_ids, filter_string=filter_string, output_format="pandas",
                              search_all_experiments=experiment_ids is None)


def _column(runs: pd.DataFrame, name: str) -> pd.Series:
    """runs[name], or None in every row where no run has it (search_runs leaves such columns out)."""
    return runs[name] if name in runs else pd.Series(None, index=runs.index, dtype=object)


def _training_role(runs: pd.DataFrame) -> pd.Series:
    return ~_column(runs, f"tags.{ROLE_TAG}").isin(NOT_TRAINING)


def _quoted(value: str) -> str | None:
    """`value` as a filter-string literal, or None where MLflow's filter grammar cannot hold it."""
    return None if "'" in value or "\\" in value else f"'{value}'"


def study_names() -> list[str]:
    """Names of the studies whose parent runs this tracking store holds, sorted."""
    parents = _search(f"tags.`{ROLE_TAG}` = 'study'")
    return sorted(set(_column(parents, f"tags.{STUDY_TAG}").dropna()) - {""})


def experiment_name(experiment_id: str) -> str:
    return MlflowClient().get_experiment(experiment_id).name


def _check_store(uri: str) -> None:
    """RunsNotFound for a local store that does not exist (MLflow would create an empty one)."""
    from urllib.parse import urlparse

    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):].split("?")[0]
    elif uri.startswith("file:"):
        path = urlparse(uri).path
    elif "://" not in uri:
        path = uri
    else:
        return
    if path and path != ":memory:" and not os.path.exists(path):
        raise RunsNotFound(f"no MLflow store at {uri}: run this in the folder holding mlflow.db, "
                           "or set MLFLOW_TRACKING_URI")


# ---------------------------------------------------------------------------------------------
# one function per selector kind: its runs, or RunsNotFound

def _experiment_runs(client: MlflowClient, name: str, uri: str) -> pd.DataFrame:
    """The training runs of experiment `name`: a `model` param, no role that holds no model."""
    exp = client.get_experiment_by_name(name)
    if exp is None or exp.lifecycle_stage != "active":
        names = sorted(e.name for e in client.search_experiments())
        raise RunsNotFound(f"no experiment {name!r}{did_you_mean(name, names)} in {uri}; "
                           + (f"experiments: {listed(names)}" if names else "it has no experiments"))
    runs = _search("", [exp.experiment_id])
    runs = runs[_column(runs, "params.model").notna() & _training_role(runs)]
    if runs.empty:
        raise RunsNotFound(f"experiment {name!r} has no training runs (runs with a 'model' param) in {uri}")
    return runs


def _study_runs(name: str, uri: str) -> pd.DataFrame:
    """The trial runs of study `name` (tag optuna.study), in any experiment; not its parent run."""
    literal = _quoted(name)
    if literal is not None:
        runs = _search(f"tags.`{STUDY_TAG}` = {literal}")
    else:  # a quote in the name: filter in Python
        runs = _search("")
        runs = runs[_column(runs, f"tags.{STUDY_TAG}") == name]
    runs = runs[_training_role(runs)]
    if runs.empty:
        names = study_names()
        if name in names:
            raise RunsNotFound(f"study {name!r} has a parent run but no trial runs in {uri}")
        raise RunsNotFound(f"no runs of study {name!r}{did_you_mean(name, names)} in {uri}; "
                           + (f"studies: {listed(names)}" if names else "it holds no study"))
    return runs


def _given_runs(run_ids: list[str], uri: str) -> list[pd.DataFrame]:
    """Each named run as a one-row DataFrame, in the order named (repeats once); RunsNotFound
    naming every id that is no active run of an active experiment (a deleted run's included)."""
    ids = list(dict.fromkeys(r.strip() for r in run_ids))
    literals = [q for q in map(_quoted, ids) if q is not None]  # an id with a quote is no run's
    found = _search(f"attributes.run_id IN ({', '.join(literals)})") if literals else pd.DataFrame(columns=["run_id"])
    missing = [rid for rid in ids if rid not in set(found["run_id"])]
    if missing:
        raise RunsNotFound(f"{'run' if len(missing) == 1 else 'runs'} {', '.join(repr(m) for m in missing)} "
                           f"{'does' if len(missing) == 1 else 'do'} not exist in {uri}")
    return [found[found["run_id"] == rid] for rid in ids]


def _id_selector(run: pd.DataFrame, include_all: bool) -> tuple[pd.DataFrame, str, bool]:
    """What a named run selects, for _Picked.add: a study's parent run its trial runs (FINISHED
    ones unless include_all), any other run itself whatever its status."""
    (row,) = run.to_dict("records")
    rid = row["run_id"]
    if row.get(f"tags.{ROLE_TAG}") != "study":
        return run, f"run {rid[:8]}", True
    trials = _search(f"tags.`{PARENT_TAG}` = '{rid}'", [row["experiment_id"]])
    name = row.get(f"tags.{STUDY_TAG}")
    name = name if isinstance(name, str) and name else rid
    if trials.empty:
        raise RunsNotFound(f"run {rid!r} is the parent of study {name!r}, which has no trial runs")
    return trials, f"study {name!r} (parent run {rid[:8]})", include_all


# ---------------------------------------------------------------------------------------------
# the union of the selectors

@dataclass
class _Picked:
    """The runs the selectors kept, those they left out as unfinished, and what each selected."""

    kept: list[pd.DataFrame] = field(default_factory=list)
    left_out: dict[str, str] = field(default_factory=dict)  # run id -> status, of runs left out as unfinished
    sources: list[str] = field(default_factory=list)
    experiments: list[str] = field(default_factory=list)  # per selector: the experiment of its first run

    def add(self, runs: pd.DataFrame, what: str, keep_all: bool) -> None:
        """Keep `runs` (only the FINISHED ones unless keep_all); RunsNotFound when none is."""
        finished = runs["status"] == "FINISHED"
        kept, left = (runs, runs.iloc[:0]) if keep_all else (runs[finished], runs[~finished])
        if kept.empty:
            counted = ", ".join(f"{n} {s}" for s, n in left["status"].value_counts().sort_index().items())
            raise RunsNotFound(f"{what} has no finished runs ({counted}); --all includes unfinished ones")
        self.kept.append(kept)
        self.left_out.update(zip(left["run_id"], left["status"]))
        self.sources.append(f"{what} ({len(kept)} runs)")
        self.experiments.append(kept["experiment_id"].iloc[0])

    def excluded(self, picked: pd.Series) -> dict[str, int]:
        """status -> runs left out that no selector took (a run id may have been given as well)."""
        left = pd.Series(self.left_out, dtype=object)
        return left[~left.index.isin(picked)].value_counts().sort_index().to_dict()


def _frame(parts: list[pd.DataFrame], client: MlflowClient) -> pd.DataFrame:
    """The selected runs, each once (first selector first), in start-time order: META, then the
    params.*, metrics.* and tags.* columns any of them has (each sorted by name), then the rest."""
    runs = pd.concat(parts, ignore_index=True).drop_duplicates("run_id")
    unused = [c for c in runs.columns if c.startswith(("params.", "metrics.", "tags.")) and runs[c].isna().all()]
    runs = runs.drop(columns=unused)  # those of runs a selector's search found but left out
    runs = runs.sort_values(["start_time", "run_id"], na_position="first", kind="stable").reset_index(drop=True)
    runs["run_name"] = _column(runs, "tags.mlflow.runName").fillna("").astype(str)
    names = {}
    for eid in runs["experiment_id"].unique():
        exp = client.get_experiment(eid)
        names[eid] = exp.name if exp else eid
    runs["experiment"] = runs["experiment_id"].map(names)
    grouped = [sorted(c for c in runs.columns if c.startswith(p)) for p in ("params.", "metrics.", "tags.")]
    first = META + [c for group in grouped for c in group]
    return runs[first + [c for c in runs.columns if c not in first]]


def select_runs(run_ids=(), experiments=(), studies=(), include_all: bool = False) -> Selection:
    """The runs the selectors name (see the module docstring), as one DataFrame row each.

    RunsNotFound, before anything is written: run ids that do not exist (all named), an unknown
    experiment or study (the existing ones listed, close names suggested), a selector whose runs
    are all unfinished (without include_all) or that has no training runs at all, no selector."""
    uri = mlflow.get_tracking_uri()
    run_ids, experiments, studies = list(run_ids), list(experiments), list(studies)
    if not (run_ids or experiments or studies):
        raise RunsNotFound("say which runs to report on: run ids, --study NAME or --experiment NAME")
    _check_store(uri)
    client = MlflowClient()
    picked = _Picked()
    for name in experiments:
        picked.add(_experiment_runs(client, name, uri), f"experiment {name!r}", include_all)
    for name in studies:
        picked.add(_study_runs(name, uri), f"study {name!r}", include_all)
    for run in _given_runs(run_ids, uri):
        picked.add(*_id_selector(run, include_all))
    runs = _frame(picked.kept, client)
    return Selection(runs, picked.experiments[0], picked.excluded(runs["run_id"]), picked.sources)


def confusion_matrices(run_ids, path: str = CONFUSION_MATRIX) -> dict[str, dict]:
    """{run_id: {"class_names": [...], "matrix": [[int, ...], ...]}} from each run's logged
    `path` (the format of mlproject.figures.confusion_matrix_data); runs without it are left out."""
    out = {}
    with no_progress_bars():
        for rid in run_ids:
            try:
                data = mlflow.artifacts.load_dict(f"runs:/{rid}/{path}")
            except (MlflowException, OSError, ValueError):  # no such artifact, or not JSON
                continue
            if isinstance(data, dict) and data.get("class_names") and data.get("matrix"):
                out[rid] = data
    return out


def study_params(names) -> dict[str, dict[str, str]]:
    """{study name: the params of its parent run (tag mlproject.role=study)}, e.g. `objectives`
    ("val_accuracy:max,model_size_mb:min") and `constraints` ("model_size_mb<=5" or ""); studies
    without a parent run are left out, and the latest parent counts where a study has several."""
    names = [n for n in dict.fromkeys(names) if isinstance(n, str) and n]
    if not names:
        return {}
    parents = _search(f"tags.`{ROLE_TAG}` = 'study'")
    if parents.empty:
        return {}
    parents = parents[_column(parents, f"tags.{STUDY_TAG}").isin(names)]
    out: dict[str, dict[str, str]] = {}
    for _, row in parents.sort_values("start_time", kind="stable").iterrows():  # later parents overwrite
        out[row[f"tags.{STUDY_TAG}"]] = {c[len("params."):]: v for c, v in row.items()
                                         if c.startswith("params.") and isinstance(v, str)}
    return out
