"""The MLflow UI shows a study: a real `mlflow ui` on 127.0.0.1, read by a real headless Chromium.

A 3-trial study is tuned (the real `tune` code path, SQLite MLflow and Optuna stores in tmp_path),
`mlflow ui` serves that store, and Chromium (Debian's package, driven by Playwright) opens the
experiment: the parent run `study-NAME` is listed alone until expanded, then its trials show nested
under it; the key metrics are columns, with the values MLflow recorded, in the view `tune` saved
and printed a link to;
a trial's artifacts view renders test/confusion_matrix.png (an <img> that has loaded, the size of
the stored file). Screenshots of both views are saved in tmp_path (paths printed) and must not be
blank.

MLflow 3.17's UI defaults, which no run tag changes: it opens every experiment in its GenAI view
(the "GenAI / Model training" switch, kept in the browser's localStorage, or
`?workflowType=machine_learning` in the URL), shows no metric or param columns until they are
chosen in "Columns" (or a saved view is opened), and shows child runs only under an expanded parent.
A failing run leaves `ui-failure.png` in tmp_path.
"""
from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from browser import chromium_page, chromium_path
from mlproject.app.cli import bool_flags_from_values
from servers import Unavailable, _stop_group, free_port, wait_for
from mlproject.app.tune import tune

pytestmark = pytest.mark.slow

STUDY = "ui"
TRIALS = 3
KEY_METRICS = ("best_value", "val_accuracy", "test_accuracy")  # the parent's best, each trial's own


@contextlib.contextmanager
def mlflow_ui(tmp: Path, backend_uri: str):
    """`mlflow ui --backend-store-uri URI --host 127.0.0.1 --port PORT`, as docs/tracking.md starts it,
    on a free port; yields at once a handle whose `ready()` waits for GET /health and returns the
    URL; stopped (its process group) on exit."""
    port = free_port()
    log = tmp / "mlflow-ui.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no GenAI job runner processes on 2 cores
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", backend_uri, "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)

    class Server:
        url = f"http://127.0.0.1:{port}"

        def ready(self, timeout: float = 120) -> str:
            def healthy():
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    return r.status == 200

            wait_for(healthy, timeout, f"mlflow ui on port {port}", proc=proc, log=log)
            return self.url

    try:
        yield Server()
    finally:
        _stop_group(proc)


def not_blank(path: Path, min_colours: int, min_std: float) -> tuple[int, float]:
    """(distinct colours, pixel standard deviation) of an image; AssertionError when it is blank."""
    pixels = np.asarray(Image.open(path).convert("RGB"))
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    std = float(pixels.std())
    assert colours >= min_colours and std >= min_std, f"{path} looks blank: {colours} colours, std {std:.1f}"
    return colours, std


def cell_number(row, column: str) -> float:
    """The number shown in `row`'s cell of column id `column` (e.g. metrics.`val_accuracy`)."""
    return float(row.locator(f'[col-id="{column}"]').inner_text().strip())  # in full (CSS ellipsis)


def test_mlflow_ui_shows_the_study_nested_with_metric_columns_and_confusion_matrix(store, tmp_path):
    from playwright.sync_api import expect

    try:
        chromium_path()  # before any work: installs Debian's chromium, or skips here
    except Unavailable as e:
        pytest.skip(f"no Chromium: {e}")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    store.search_experiments()  # the tables exist before the server starts: it and the study never race
    with mlflow_ui(tmp_path, uri) as ui:  # the server starts (imports) while the study trains
        result = CliRunner().invoke(tune, bool_flags_from_values([
            "--model", "softmax", "--num-workers", "0", "--epochs", "2", "--trials", str(TRIALS),
            "--pruner", "none", "--sampler", "random", "--lr", "0.02:0.5", "--study-name", STUDY,
            "--storage", f"sqlite:///{tmp_path}/optuna.db", "--tracking-uri", uri]))
        assert result.exit_code == 0, result.output + repr(result.exception)

        exp = store.get_experiment_by_name("mlproject")
        runs = store.search_runs([exp.experiment_id])
        (parent,) = [r for r in runs if r.data.tags.get("mlproject.role") == "study"]
        trials = sorted((r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id),
                        key=lambda r: int(r.data.tags["optuna.trial_number"]))
        assert parent.info.run_name == f"study-{STUDY}" and len(trials) == TRIALS
        assert [t.info.run_name for t in trials] == [f"trial-{i}" for i in range(TRIALS)]
        trial = trials[0]
        matrix_file = store.download_artifacts(trial.info.run_id, "test/confusion_matrix.png", str(tmp_path))
        with Image.open(matrix_file) as im:
            matrix_size = im.size
        base = ui.ready()

        table_png, artifact_png, matrix_png = (
            tmp_path / n for n in ("ui-study-runs.png", "ui-trial-artifacts.png", "ui-confusion-matrix.png"))
        with chromium_page(tmp_path, viewport=(1920, 1080)) as page:
            # a fresh profile, set as a user leaves it: "Model training" chosen in the GenAI / Model
            # training switch (the URL parameter opens it; the stored choice keeps it on the run page),
            # and the assistant panel, which opens itself on a first visit, closed
            page.add_init_script("""try {
                localStorage.setItem('mlflow.workflowType_v1', JSON.stringify('machine_learning'));
                localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');
                localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');
            } catch (e) {}""")
            try:
                # the link `tune` printed: the study's saved view of the runs table
                (link,) = re.findall(r"http://127\.0\.0\.1:5000/(#/experiments/\S+)", result.output)
                assert link == f"#/experiments/{exp.experiment_id}/runs?viewStateShareKey=study-{STUDY}" \
                               "&workflowType=machine_learning"
                page.goto(f"{base}/{link}")

                # the parent run, alone until expanded: its trials are nested under it, not beside it
                def row(run):
                    return page.locator(f'.ag-row[row-id="{run.info.run_id}"]')

                def name_link(run):
                    return row(run).get_by_role("link", name=run.info.run_name, exact=True)

                expect(name_link(parent)).to_be_visible(timeout=60_000)
                expect(page.get_by_text(f"{TRIALS + 1} matching runs")).to_be_visible()
                for t in trials:
                    expect(name_link(t)).to_have_count(0)
                row(parent).locator('[col-id="attributes.`Run Name`"]').get_by_role("button").click()
                for t in trials:
                    expect(name_link(t)).to_be_visible()
                parent_x = name_link(parent).bounding_box()["x"]
                for t in trials:  # indented under the parent
                    assert name_link(t).bounding_box()["x"] > parent_x + 10, t.info.run_name

                # the key metrics as columns, from the view `tune` saved (MLflow shows none by default)
                for metric in KEY_METRICS:
                    expect(page.locator(f'.ag-header-cell[col-id="metrics.`{metric}`"]')).to_be_visible()
                expect(row(parent).locator('[col-id="metrics.`best_value`"]')).not_to_be_empty()
                assert cell_number(row(parent), "metrics.`best_value`") == pytest.approx(
                    parent.data.metrics["best_value"], rel=1e-12)
                for t in trials:
                    for metric in ("val_accuracy", "test_accuracy"):
                        assert cell_number(row(t), f"metrics.`{metric}`") == pytest.approx(
                            t.data.metrics[metric], rel=1e-12), (t.info.run_name, metric)
                page.screenshot(path=str(table_png))

                # a trial's artifacts view renders its confusion matrix
                name_link(trial).click()
                page.get_by_role("tab", name="Artifacts").click()

                def tree_node(name):
                    return page.locator(f'[data-testid="artifact-tree-node"][aria-label="{name}"]')

                tree_node("test").click()
                tree_node("confusion_matrix.png").click()
                img = page.locator('img[alt="test/confusion_matrix.png"]')
                expect(img).to_be_visible()
                page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle())
                assert tuple(img.evaluate("img => [img.naturalWidth, img.naturalHeight]")) == matrix_size
                # the folder has finished opening (its files slide in): every tree row below the one before
                page.wait_for_function("""() => {
                    const rows = [...document.querySelectorAll('[data-testid="artifact-tree-node"]')]
                        .map(e => e.getBoundingClientRect());
                    return rows.length > 3 && rows.every((r, i) => i === 0 || r.top >= rows[i - 1].bottom - 1);
                }""")
                page.screenshot(path=str(artifact_png))
                img.screenshot(path=str(matrix_png))
            except Exception:
                page.screenshot(path=str(tmp_path / "ui-failure.png"))  # what the browser showed
                print(f"screenshot of the failure: {tmp_path / 'ui-failure.png'}")
                raise

    for path, colours, std in ((table_png, 50, 5.0), (artifact_png, 200, 10.0), (matrix_png, 100, 20.0)):
        print(f"screenshot {path}: {not_blank(path, colours, std)}")
