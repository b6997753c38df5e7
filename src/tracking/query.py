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
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlproject.config import listed, suggest

ROLE_TAG = "mlproject.role"
NOT_TRAINING = ("study", "report", "outliers")  # roles of runs that hold no trained model's numbers
STUDY_TAG = "optuna.study"
PARENT_TAG = "mlflow.parentRunId"
CONFUSION_MATRIX = "test/confusion_matrix.json"


class RunsNotFound(LookupError):
    """A selector names no runs; the message is one line saying which and what exists."""


@dataclass
class Selection:
    runs: pd.DataFrame  # run_id, run_name, experiment_id, experiment, status, start_time, params.*, metrics.*, tags.*
    experiment_id: str  # where the report's own run goes: that of the first selector
    excluded: dict[str, int] = field(default_factory=dict)  # status -> runs left out (not FINISHED)
    sources: list[str] = field(default_factory=list)  # "study s1 (4 runs)", ... for the summary


def _search(filter_string: str, experiment_ids: list[str] | None = None) -> list:
    return mlflow.search_runs(experiment_ids=experiment_ids, filter_string=filter_string, output_format="list",
                              search_all_experiments=experiment_ids is None)


def _quoted(value: str) -> str | None:
    """`value` as a filter-string literal, or None where MLflow's filter grammar cannot hold it."""
    return None if "'" in value or "\\" in value else f"'{value}'"


def _study_runs(name: str) -> list:
    literal = _quoted(name)
    if literal is not None:
        runs = _search(f"tags.`{STUDY_TAG}` = {literal}")
    else:  # a quote in the name: filter in Python
        runs = [r for r in _search("") if r.data.tags.get(STUDY_TAG) == name]
    return [r for r in runs if r.data.tags.get(ROLE_TAG) not in NOT_TRAINING]


def study_names() -> list[str]:
    """Names of the studies whose parent runs this tracking store holds, sorted."""
    return sorted({r.data.tags.get(STUDY_TAG, "") for r in _search(f"tags.`{ROLE_TAG}` = 'study'")} - {""})


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


def _is_training(run) -> bool:
    return "model" in run.data.params and run.data.tags.get(ROLE_TAG) not in NOT_TRAINING


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
    picked: dict[str, object] = {}  # run id -> Run, first selector first
    left_out: dict[str, str] = {}  # run id -> status, of runs a selector left out as unfinished
    sources: list[str] = []
    first_experiment: list[str] = []  # experiment id per selector, in the order they come below

    def add(runs, what: str, keep_all: bool):
        kept = [r for r in runs if keep_all or r.info.status == "FINISHED"]
        left = [r for r in runs if not (keep_all or r.info.status == "FINISHED")]
        if not kept:
            states = {}
            for r in left:
                states[r.info.status] = states.get(r.info.status, 0) + 1
            counted = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
            raise RunsNotFound(f"{what} has no finished runs ({counted}); --all includes unfinished ones")
        for r in left:
            left_out[r.info.run_id] = r.info.status
        for r in kept:
            picked.setdefault(r.info.run_id, r)
        sources.append(f"{what} ({len(kept)} runs)")
        first_experiment.append(kept[0].info.experiment_id)

    for name in experiments:
        exp = client.get_experiment_by_name(name)
        if exp is None or exp.lifecycle_stage != "active":
            names = sorted(e.name for e in client.search_experiments())
            raise RunsNotFound(f"no experiment {name!r}{suggest(name, names)} in {uri}; "
                               + (f"experiments: {listed(names)}" if names else "it has no experiments"))
        runs = [r for r in _search("", [exp.experiment_id]) if _is_training(r)]
        if not runs:
            raise RunsNotFound(f"experiment {name!r} has no training runs (runs with a 'model' param) in {uri}")
        add(runs, f"experiment {name!r}", include_all)

    for name in studies:
        runs = _study_runs(name)
        if not runs:
            names = study_names()
            if name in names:
                raise RunsNotFound(f"study {name!r} has a parent run but no trial runs in {uri}")
            raise RunsNotFound(f"no runs of study {name!r}{suggest(name, names)} in {uri}; "
                               + (f"studies: {listed(names)}" if names else "it holds no study"))
        add(runs, f"study {name!r}", include_all)

    missing, given = [], []
    for rid in dict.fromkeys(r.strip() for r in run_ids):
        try:
            run = client.get_run(rid)
        except MlflowException as e:
            if getattr(e, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE") \
                    or "not found" in str(e).lower():
                missing.append(rid)
                continue
            raise
        if run.info.lifecycle_stage == "deleted":
            missing.append(rid)
        else:
            given.append(run)
    if missing:
        raise RunsNotFound(f"{'run' if len(missing) == 1 else 'runs'} {', '.join(repr(m) for m in missing)} "
                           f"{'does' if len(missing) == 1 else 'do'} not exist in {uri}")
    for run in given:
        if run.data.tags.get(ROLE_TAG) == "study":  # a study's parent: its trials
            trials = _search(f"tags.`{PARENT_TAG}` = '{run.info.run_id}'", [run.info.experiment_id])
            name = run.data.tags.get(STUDY_TAG, run.info.run_id)
            if not trials:
                raise RunsNotFound(f"run {run.info.run_id!r} is the parent of study {name!r}, which has no trial runs")
            add(trials, f"study {name!r} (parent run {run.info.run_id[:8]})", include_all)
        else:
            add([run], f"run {run.info.run_id[:8]}", True)

    runs = sorted(picked.values(), key=lambda r: (r.info.start_time or 0, r.info.run_id))
    excluded: dict[str, int] = {}
    for rid, status in left_out.items():
        if rid not in picked:  # another selector may have taken it (a run id given as well)
            excluded[status] = excluded.get(status, 0) + 1
    names = {}
    for r in runs:
        if r.info.experiment_id not in names:
            exp = client.get_experiment(r.info.experiment_id)
            names[r.info.experiment_id] = exp.name if exp else r.info.experiment_id
    return Selection(frame(runs, names), first_experiment[0], excluded, sources)


def frame(runs, experiment_names: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per Run, like mlflow.search_runs' DataFrame: run_id, run_name, experiment_id,
    experiment, status, start_time, then params.<name> (strings), metrics.<name> (the latest
    value), tags.<name>. Absent values are NaN."""
    rows = []
    for r in runs:
        row = {"run_id": r.info.run_id, "run_name": r.info.run_name or "", "experiment_id": r.info.experiment_id,
               "experiment": (experiment_names or {}).get(r.info.experiment_id, r.info.experiment_id),
               "status": r.info.status, "start_time": r.info.start_time}
        row.update({f"params.{k}": v for k, v in r.data.params.items()})
        row.update({f"metrics.{k}": float(v) for k, v in r.data.metrics.items()})
        row.update({f"tags.{k}": v for k, v in r.data.tags.items()})
        rows.append(row)
    columns = ["run_id", "run_name", "experiment_id", "experiment", "status", "start_time"]
    return pd.DataFrame(rows, columns=None if rows else columns).reset_index(drop=True)


def confusion_matrices(run_ids, path: str = CONFUSION_MATRIX) -> dict[str, dict]:
    """{run_id: {"class_names": [...], "matrix": [[int, ...], ...]}} from each run's logged
    `path` (the format of mlproject.figures.confusion_matrix_data); runs without it are left out."""
    from .logged_models import _no_progress_bars

    client = MlflowClient()
    out = {}
    folder = os.path.dirname(path)
    with tempfile.TemporaryDirectory() as tmp, _no_progress_bars():
        for rid in run_ids:
            try:
                if not any(a.path == path for a in client.list_artifacts(rid, folder)):
                    continue
                local = client.download_artifacts(rid, path, os.path.join(tmp, rid))
                with open(local, encoding="utf-8") as f:
                    data = json.load(f)
            except (MlflowException, OSError, ValueError):
                continue
            if isinstance(data, dict) and data.get("class_names") and data.get("matrix"):
                out[rid] = data
    return out
