"""Where a training run's checkpoint lives, and the run it resumes: `mlproject train --resume RUN_ID`.

    where = store_checkpoint(run_id, ckpt.save, checkpoint_dir="", position={"epoch": 2, "batch": 7})
    run = stored_run(run_id)                       # None: no such run; its status, params and tags
    path = fetch_checkpoint(run, tmp_dir)          # a local file to Checkpoint.load
    delete_checkpoint(run_id)                      # once the run ended FINISHED (unless --keep-checkpoints)

A checkpoint is one file, `checkpoint.pt`: by default the run's own artifact `checkpoint/checkpoint.pt`
(through the tracking server where there is one, so any machine that can reach it can resume the run),
else `<checkpoint_dir>/<run_id>/checkpoint.pt` on a (shared) file system. The run's tags say where
and what it holds, so `--resume` and the MLflow UI find it:

    mlproject.checkpoint          runs:/<run_id>/checkpoint/checkpoint.pt, or the file's absolute path
    mlproject.checkpoint_epoch    the epoch in progress (1-based; epochs + 1: every epoch done)
    mlproject.checkpoint_batch    batches of that epoch already trained on
    mlproject.checkpoint_fold     with --cv: the fold in progress (folds + 1: the refit)
    mlproject.resumed_at          on a resumed run: where its last resume went on from
    mlproject.resumed_run         under `mlflow run --resume`: the run MLflow created points to the run resumed
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import mlflow
from mlflow.entities import RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlproject.errors import first_line
from mlproject.metrics import Tags

from .env import no_progress_bars

CHECKPOINT_TAG, CHECKPOINT_EPOCH_TAG = Tags.CHECKPOINT, Tags.CHECKPOINT_EPOCH  # declared in mlproject.metrics
CHECKPOINT_BATCH_TAG, CHECKPOINT_FOLD_TAG = Tags.CHECKPOINT_BATCH, Tags.CHECKPOINT_FOLD
RESUMED_AT_TAG, RESUMED_RUN_TAG = Tags.RESUMED_AT, Tags.RESUMED_RUN
CHECKPOINT_TAGS = (CHECKPOINT_TAG, CHECKPOINT_EPOCH_TAG, CHECKPOINT_BATCH_TAG, CHECKPOINT_FOLD_TAG)
CHECKPOINT_ARTIFACT_DIR = "checkpoint"
CHECKPOINT_FILE = "checkpoint.pt"


class CheckpointUnavailable(LookupError):
    """The checkpoint a run's tags point to cannot be had (deleted, unreachable); one line."""


@dataclass
class StoredRun:
    """A run as the tracking store holds it: what `--resume` checks before anything changes."""

    run_id: str
    experiment_id: str
    status: str  # RUNNING, SCHEDULED, FINISHED, FAILED, KILLED
    params: dict[str, str]
    tags: dict[str, str]

    @property
    def checkpoint(self) -> str | None:
        """Where its checkpoint is (tag mlproject.checkpoint), or None."""
        return self.tags.get(CHECKPOINT_TAG) or None


def stored_run(run_id: str) -> StoredRun | None:
    """The run `run_id` of the tracking store, or None where there is none (or it is deleted).
    Other errors (an unreachable server) are raised."""
    try:
        run = MlflowClient().get_run(run_id)
    except MlflowException as e:
        if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):  # unknown, malformed id
            return None
        raise
    if run.info.lifecycle_stage == "deleted":
        return None
    return StoredRun(run.info.run_id, run.info.experiment_id, run.info.status, dict(run.data.params),
                     dict(run.data.tags))


def checkpoint_file(checkpoint_dir: str, run_id: str) -> Path:
    """`<checkpoint_dir>/<run_id>/checkpoint.pt`, absolute: where --checkpoint-dir keeps a run's checkpoint."""
    return Path(checkpoint_dir).expanduser().resolve() / run_id / CHECKPOINT_FILE


def store_checkpoint(run_id: str, write: Callable[[str], None], checkpoint_dir: str = "",
                     position: dict | None = None) -> str:
    """`write(path)` writes the checkpoint file (Checkpoint.save); this puts it where the run keeps
    it and tags the run with where and `position` ({"epoch": 2, "batch": 7, "fold": 0}). Returns
    where (the tag's value).

    In `checkpoint_dir`, `write` goes to the final path itself (Checkpoint.save writes beside it
    and renames: the previous checkpoint stays whole until the new one is). As an artifact it is
    written to a temporary folder and uploaded over the previous one (a process killed mid-upload
    can leave a partial file on a local store: `--resume` then says it cannot be read)."""
    if checkpoint_dir:
        path = checkpoint_file(checkpoint_dir, run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        write(str(path))
        where = str(path)
    else:
        with tempfile.TemporaryDirectory(prefix="mlproject-checkpoint-") as tmp:
            local = os.path.join(tmp, CHECKPOINT_FILE)
            write(local)
            with no_progress_bars():
                MlflowClient().log_artifact(run_id, local, CHECKPOINT_ARTIFACT_DIR)
        where = f"runs:/{run_id}/{CHECKPOINT_ARTIFACT_DIR}/{CHECKPOINT_FILE}"
    position = position or {}
    tags = {CHECKPOINT_TAG: where, CHECKPOINT_EPOCH_TAG: position.get("epoch", ""),
            CHECKPOINT_BATCH_TAG: position.get("batch", "")}
    if position.get("fold"):
        tags[CHECKPOINT_FOLD_TAG] = position["fold"]
    MlflowClient().log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()], synchronous=True)
    return where


def fetch_checkpoint(run: StoredRun, dst_dir: str) -> str:
    """A local path of `run`'s checkpoint, to read: an artifact downloaded into `dst_dir`, a file
    in a checkpoint dir as it is. CheckpointUnavailable (one line) where it cannot be had."""
    where = run.checkpoint
    if where is None:
        raise CheckpointUnavailable(f"run {run.run_id} has no checkpoint")
    if not where.startswith("runs:/"):
        if not os.path.isfile(where):
            raise CheckpointUnavailable(f"checkpoint {where} of run {run.run_id} is not there (deleted, or "
                                        "on a file system this machine does not mount)")
        return where
    try:
        with no_progress_bars():
            return mlflow.artifacts.download_artifacts(artifact_uri=where, dst_path=dst_dir)
    except (MlflowException, OSError) as e:
        first = first_line(e)
        raise CheckpointUnavailable(f"checkpoint {where} of run {run.run_id} cannot be downloaded: {first}") from None


def delete_checkpoint(run_id: str, also: Iterable[str] = ()) -> None:
    """Delete the checkpoint `run_id`'s tags point to (a file in a checkpoint dir, with its run's
    folder when that is left empty, or the run's `checkpoint/` artifacts) and those tags; `also`:
    other places it had one (a resumed run's previous checkpoint, where it now writes elsewhere).

    MLflow has no public call that deletes one artifact of a run (MlflowClient and the fluent API
    only add artifacts). The artifact repository behind the run's artifact URI can:
    `get_artifact_repository(run.info.artifact_uri).delete_artifacts("checkpoint")` works for local
    stores and for a tracking server proxying artifacts (mlflow-artifacts:/, an HTTP DELETE;
    `mlflow server` serves it unless started with --no-serve-artifacts); a repository without it
    (some cloud stores) raises, and the checkpoint is left where it is, its tags still pointing to it.
    This is the one place that relies on it."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    client = MlflowClient()
    run = client.get_run(run_id)
    for where in dict.fromkeys([run.data.tags.get(CHECKPOINT_TAG), *also]):
        if not where:
            continue
        if where.startswith("runs:/"):
            get_artifact_repository(run.info.artifact_uri).delete_artifacts(CHECKPOINT_ARTIFACT_DIR)
            continue
        path = Path(where)
        path.unlink(missing_ok=True)
        if path.parent.name == run_id:
            try:
                path.parent.rmdir()
            except OSError:  # not empty: something else lives there
                pass
    for tag in CHECKPOINT_TAGS:
        if tag in run.data.tags:
            client.delete_tag(run_id, tag)


def logged_steps(run_id: str) -> dict[str, int]:
    """{metric: its highest step} of `run_id`'s metrics but the system metrics: what a resumed run
    logged before it stopped, so its epochs are not logged twice."""
    client = MlflowClient()
    keys = [k for k in client.get_run(run_id).data.metrics if not k.startswith("system/")]
    return {k: max((m.step for m in client.get_metric_history(run_id, k)), default=-1) for k in keys}
