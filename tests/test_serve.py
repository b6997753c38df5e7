"""Serving: a registered model answers REST requests with class probabilities and labels, the
same labels `mlflow.pyfunc` gives; the curl request in docs/serving.md works as written."""
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
from sklearn.datasets import load_digits

import servers
import tracking
from mlproject.config import TrainConfig
from mlproject.app.experiment import run_training

ROOT = Path(__file__).resolve().parents[1]
NAME = "digits-best"


@pytest.fixture
def registered(store):
    """A softmax model trained one epoch on digits, registered as NAME version 1; its URI."""
    result = run_training(TrainConfig(model="softmax", epochs=1, lr=0.05, experiment="serve", num_workers=0))
    version = mlflow.register_model(result.model_uri, NAME)
    assert str(version.version) == "1"
    return f"models:/{NAME}/1"


def digits(n: int) -> np.ndarray:
    """The first n digits as the model reads them: float32 (n, 1, 8, 8) in [0, 1]."""
    return (load_digits().images[:n, None] / 16.0).astype(np.float32)


def readme_request() -> tuple[str, dict]:
    """(URL, JSON body) of the curl request in docs/serving.md (the README's former Serving section)."""
    section = (ROOT / "docs" / "serving.md").read_text()
    m = re.search(r"curl .*?(http://127\.0\.0\.1:\d+/invocations).*?-d '(\{.*?\})'", section, re.S)
    assert m, "no curl request in docs/serving.md"
    return m.group(1), json.loads(m.group(2))


def check_response(body: dict, x: np.ndarray, model) -> None:
    """One record per image with label, label_index, confidence and p_<class>; the labels and
    probabilities are pyfunc's for the same input."""
    expected = model.predict(x)
    records = body["predictions"]
    assert len(records) == len(x)
    assert [r["label"] for r in records] == list(expected["label"])
    assert [r["label_index"] for r in records] == list(expected["label_index"])
    probs = np.array([[r[f"p_{k}"] for k in range(10)] for r in records])
    np.testing.assert_allclose(probs, tracking.probabilities(expected), atol=1e-6)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert [r["confidence"] for r in records] == pytest.approx(list(probs.max(1)), abs=1e-6)


def test_rest_handler_answers_labels_and_probabilities(registered):
    """MLflow's scoring handler in-process (what `mlflow models serve` runs per request)."""
    from mlflow.pyfunc.scoring_server import invocations

    model = mlflow.pyfunc.load_model(registered)
    x = digits(16)
    answer = invocations(json.dumps({"inputs": x.tolist()}), "application/json", model,
                         model.metadata.get_input_schema())
    assert answer.status == 200, answer.response
    check_response(json.loads(answer.response), x, model)
    # the request body in docs/serving.md is valid for this model: 1 image, 1 x 8 x 8
    _, body = readme_request()
    assert np.asarray(body["inputs"]).shape == (1, 1, 8, 8)


@pytest.mark.slow
def test_mlflow_models_serve_on_loopback(registered, tmp_path):
    port = servers.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = mlflow.get_tracking_uri()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", registered, "--env-manager", "local",
             "-h", "127.0.0.1", "-p", str(port)],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)  # own process group: its workers stop with it
    try:
        url = f"http://127.0.0.1:{port}"

        def ping():
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as r:
                return r.status == 200

        servers.wait_for(ping, 120, f"mlflow models serve on port {port}", proc=proc, log=log)

        def post(body: dict):
            req = urllib.request.Request(f"{url}/invocations", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=60) as r:
                return json.loads(r.read())

        model = mlflow.pyfunc.load_model(registered)
        x = digits(16)
        check_response(post({"inputs": x.tolist()}), x, model)
        # docs/serving.md's request, as written (its port replaced by this server's)
        readme_url, body = readme_request()
        assert readme_url.endswith("/invocations")
        check_response(post(body), np.asarray(body["inputs"], dtype=np.float32), model)
        # an image of the wrong shape: 400 with the expected shape named
        with pytest.raises(urllib.error.HTTPError) as bad:
            post({"inputs": np.zeros((1, 1, 4, 4)).tolist()})
        assert bad.value.code == 400 and "(-1, 1, 8, 8)" in bad.value.read().decode()
    finally:
        servers._stop_group(proc)
    assert proc.poll() is not None
