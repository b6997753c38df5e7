"""`mlproject outliers`: two real logged models (softmax by run id, lenet5 by registered name)
shown scikit-learn's sample photos and noise images of odd sizes and modes."""
import csv
import math
import os

import mlflow
import numpy as np
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from PIL import Image

import tracking
from conftest import module_store
from mlproject.app.cli import cli
from mlproject.config import TrainConfig
from mlproject.app.experiment import run_training
from mlproject.app.outliers import adapt, check, scores

REGISTERED = "digits-lenet"


# one test process: its tests share two trained models (module-scoped)
pytestmark = pytest.mark.xdist_group("outliers")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(store client, softmax run id, lenet5 run id registered as REGISTERED, run without a model),
    in a sqlite store in a tmp dir that is also the working directory while this module runs."""
    with module_store(tmp_path_factory, "outliers-store") as uri:
        ids = [run_training(TrainConfig(model=m, epochs=1, lr=0.05, experiment="train", num_workers=0)).run_id
               for m in ("softmax", "lenet5")]
        mlflow.register_model(f"runs:/{ids[1]}/model", REGISTERED)
        client = MlflowClient(uri)
        bare = client.create_run(client.get_experiment_by_name("train").experiment_id).info.run_id
        client.set_terminated(bare)
        yield client, ids[0], ids[1], bare


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """The two sample photos (JPEG and PNG) and noise images: grey, RGBA, palette, 1-bit."""
    from sklearn.datasets import load_sample_images

    root = tmp_path_factory.mktemp("ood-images")
    sample = load_sample_images()
    for path, arr in zip(sample.filenames, sample.images):
        name = os.path.splitext(os.path.basename(path))[0]
        Image.fromarray(arr).save(root / (f"{name}.jpg" if name == "china" else f"{name}.png"))
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (13, 17), dtype=np.uint8), "L").save(root / "noise_grey.png")
    Image.fromarray(rng.integers(0, 256, (40, 23, 4), dtype=np.uint8), "RGBA").save(root / "noise_rgba.png")
    Image.fromarray(rng.integers(0, 256, (31, 9, 3), dtype=np.uint8)).convert("P").save(root / "noise_palette.gif")
    Image.fromarray(rng.integers(0, 2, (7, 50), dtype=np.uint8) * 255).convert("1").save(root / "noise_1bit.bmp")
    return root


def invoke(*args):
    return CliRunner().invoke(cli, ["outliers", *map(str, args)])


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def all_runs(client):
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


@pytest.mark.slow
def test_two_models_probabilities_tables_scores_grid_and_run(models, images, tmp_path):
    client, softmax_id, lenet_id, _ = models
    out = tmp_path / "out"
    result = invoke(softmax_id, REGISTERED, "--images", images, "--out", out, "--experiment", "ood")
    assert result.exit_code == 0, result.output + str(result.exception)
    names = sorted(p.name for p in images.iterdir())
    model_names = [f"softmax-{softmax_id[:8]}", f"{REGISTERED}/v1"]

    # raw_probs.csv: one row per image and model, K probabilities summing to 1, label = argmax
    head, *rows = read_csv(out / "raw_probs.csv")
    classes = [h[2:] for h in head if h.startswith("p_")]
    assert classes == [str(k) for k in range(10)]
    assert sorted((r[0], r[1]) for r in rows) == sorted((n, m) for n in names for m in model_names)
    probs = {(r[0], r[1]): np.array([float(v) for v in r[5:]]) for r in rows}
    for r in rows:
        p = probs[(r[0], r[1])]
        assert p.sum() == pytest.approx(1.0, abs=1e-4) and (p >= 0).all()
        assert r[3] == classes[int(p.argmax())] and float(r[4]) == pytest.approx(p.max(), abs=1e-6)

    # the same numbers as the logged models give for the adapted images (pyfunc, by URI)
    files = sorted(images.iterdir())
    x = adapt(files, (1, 8, 8))
    for ref, name in ((f"runs:/{softmax_id}/model", model_names[0]), (f"models:/{REGISTERED}/1", model_names[1])):
        direct = tracking.probabilities(tracking.load_model(ref).predict(x))
        got = np.stack([probs[(f.name, name)] for f in files])
        np.testing.assert_allclose(got, direct, atol=2e-6)

    # predictions.csv / .md: seed 000's Table 2, models x images
    table = read_csv(out / "predictions.csv")
    assert table[0] == ["model", *names] and [row[0] for row in table[1:]] == model_names
    for row in table[1:]:
        assert row[1:] == [classes[int(probs[(n, row[0])].argmax())] for n in names]
    md = (out / "predictions.md").read_text().splitlines()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in md]
    assert cells[0] == ["model", *names] and [row[0] for row in cells[2:]] == model_names
    assert [row[1:] for row in cells[2:]] == [row[1:] for row in table[1:]] and len(md) == 2 + len(model_names)

    # outlier_scores.csv: max probability and entropy per image and model
    head, *rows = read_csv(out / "outlier_scores.csv")
    assert head == ["image", "model", "label", "max_prob", "entropy", "entropy_norm"] and len(rows) == 2 * len(names)
    for r in rows:
        p = probs[(r[0], r[1])]
        assert float(r[3]) == pytest.approx(p.max(), abs=1e-5)
        assert float(r[4]) == pytest.approx(-(p[p > 0] * np.log(p[p > 0])).sum(), abs=1e-3)
        assert 0 <= float(r[5]) <= 1 and float(r[5]) == pytest.approx(float(r[4]) / math.log(10), abs=1e-5)
    raw_k = (out / "raw_K_probs.txt").read_text()
    assert raw_k.count("# ") == 2 and f"{names[0]}: " in raw_k
    with Image.open(out / "predictions_grid.png") as im:
        assert im.format == "PNG" and im.size[0] > 200

    # logged: one run named "outliers-1" (the first in its experiment) holding the same files, no other run created
    (run,) = client.search_runs([client.get_experiment_by_name("ood").experiment_id])
    assert run.info.run_name == "outliers-1" and run.info.status == "FINISHED"
    assert run.data.tags["mlproject.role"] == "outliers" and run.data.params["num_images"] == str(len(names))
    assert {a.path for a in client.list_artifacts(run.info.run_id, "outliers")} == {
        f"outliers/{f}" for f in ("raw_probs.csv", "raw_K_probs.txt", "predictions.csv", "predictions.md",
                                  "outlier_scores.csv", "predictions_grid.png")}
    assert run.data.metrics[f"mean_max_prob/{model_names[0]}"] == pytest.approx(
        np.mean([probs[(n, model_names[0])].max() for n in names]), abs=1e-5)
    assert run.info.run_id in result.output and "china.jpg" in result.output


def test_images_are_adapted_like_training_data(images):
    """Mode and size as data.py decodes ImageFolders (PIL convert, bilinear resize), then / 255."""
    files = sorted(images.iterdir())
    grey = adapt(files, (1, 8, 8))
    rgb = adapt(files, (3, 5, 7))
    assert grey.shape == (len(files), 1, 8, 8) and rgb.shape == (len(files), 3, 5, 7)
    assert grey.dtype == rgb.dtype == np.float32 and 0 <= grey.min() and grey.max() <= 1
    for i, f in enumerate(files):
        with Image.open(f) as im:
            want = np.asarray(im.convert("RGB").resize((7, 5), Image.BILINEAR), np.float32).transpose(2, 0, 1) / 255
        np.testing.assert_array_equal(rgb[i], want)


def test_scores_extremes():
    s = scores(np.array([[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]], np.float32))
    np.testing.assert_allclose(s["max_prob"], [1.0, 0.25])
    np.testing.assert_allclose(s["entropy"], [0.0, math.log(4)], atol=1e-6)
    np.testing.assert_allclose(s["entropy_norm"], [0.0, 1.0], atol=1e-6)


@pytest.mark.slow
def test_no_log_writes_files_only(models, images, tmp_path):
    client, softmax_id, *_ = models
    before = len(all_runs(client))
    result = invoke(f"runs:/{softmax_id}/model", "--images", images, "--out", tmp_path / "o", "--no-log")
    assert result.exit_code == 0, result.output + str(result.exception)
    assert (tmp_path / "o" / "raw_probs.csv").exists() and len(all_runs(client)) == before


@pytest.mark.parametrize("case, message", [
    ("missing_run", "run '0123456789abcdef0123456789abcdef' does not exist in sqlite:"),
    ("bare_run", "has no logged model"),
    ("unknown_name", "no run or registered model 'digits-lenett' (did you mean: digits-lenet?)"),
    ("unknown_version", "registered model 'digits-lenet' has no version '7'; versions: 1"),
    ("empty", "is empty"),
    ("missing_folder", "images folder not found"),
    ("not_images", "2 of 8 files in"),
])
@pytest.mark.slow
def test_bad_input_exits_2_with_one_line_and_no_run(models, images, tmp_path, case, message):
    client, softmax_id, _, bare = models
    model, folder = softmax_id, images
    if case == "missing_run":
        model = "0123456789abcdef0123456789abcdef"
    elif case == "bare_run":
        model = bare
    elif case == "unknown_name":
        model = "digits-lenett"
    elif case == "unknown_version":
        model = f"{REGISTERED}/7"
    elif case == "empty":
        folder = tmp_path / "empty"
        folder.mkdir()
    elif case == "missing_folder":
        folder = tmp_path / "nowhere"
    elif case == "not_images":
        folder = tmp_path / "mixed"
        folder.mkdir()
        for f in sorted(images.iterdir())[:6]:
            (folder / f.name).write_bytes(f.read_bytes())
        (folder / "notes.txt").write_text("not an image")
        (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    before = len(all_runs(client))
    result = invoke(model, "--images", folder, "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output + str(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.stderr
    if case == "not_images":
        assert "broken.png" in lines[0] and "notes.txt" in lines[0]
    if case == "bare_run":
        assert bare in lines[0]
    assert len(all_runs(client)) == before and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_check_resolves_every_reference_form(models, images):
    _, softmax_id, lenet_id, _ = models
    checked = check([softmax_id, f"runs:/{lenet_id}/model", REGISTERED, f"{REGISTERED}/1",
                     f"models:/{REGISTERED}/1"], images)
    assert [m.uri for m in checked.models] == [f"runs:/{softmax_id}/model", f"runs:/{lenet_id}/model",
                                               f"models:/{REGISTERED}/1", f"models:/{REGISTERED}/1",
                                               f"models:/{REGISTERED}/1"]
    assert len({m.name for m in checked.models}) == 5  # unique columns
    assert all(m.input_shape == (1, 8, 8) and m.class_names == [str(k) for k in range(10)] for m in checked.models)
    assert checked.models[1].params["model"] == "lenet5"
