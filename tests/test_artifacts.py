"""Tests for tracking.artifacts: real digits images, real (if crude) predictions, saved PNGs."""

import csv
import io
import json

import matplotlib.image as mpimg
import numpy as np
import pytest
from matplotlib.figure import Figure
from sklearn.datasets import load_digits
from sklearn.metrics import confusion_matrix

from tracking.artifacts import (
    confusion_matrix_csv,
    confusion_matrix_data,
    confusion_matrix_figure,
    first_layer_figure,
    image_grid_figure,
    loss_curves_figure,
    misclassified_figure,
    per_class_accuracy,
    samples_per_class_figure,
)

CLASS_NAMES = [str(i) for i in range(10)]


@pytest.fixture(scope="module")
def digits():
    """digits as uint8 (N, 1, 8, 8) images, labels, and nearest-centroid predictions (~90% right)."""
    d = load_digits()
    images = np.round(d.images / 16.0 * 255).astype(np.uint8)[:, None]
    # nearest class mean fitted on the first 1000 digits: fast, and wrong often enough to test with
    centroids = np.stack([d.data[:1000][d.target[:1000] == c].mean(axis=0) for c in range(10)])
    x, y = images[1000:], d.target[1000:]
    y_pred = ((d.data[1000:, None, :] - centroids[None]) ** 2).sum(axis=-1).argmin(axis=1)
    return {"images": x, "y_true": y, "y_pred": y_pred,
            "cm": confusion_matrix(y, y_pred, labels=range(10))}


@pytest.fixture(scope="module")
def rgb():
    return np.random.default_rng(0).integers(0, 256, size=(12, 3, 32, 32), dtype=np.uint8)


def image_axes(fig):
    return [ax for ax in fig.axes if ax.images]


# ---------------------------------------------------------------- every figure saves

BUILDERS = {
    "confusion": lambda d, rgb: confusion_matrix_figure(d["cm"], CLASS_NAMES),
    "grid_gray": lambda d, rgb: image_grid_figure(d["images"][:20], [f"#{i}" for i in range(20)]),
    "grid_rgb": lambda d, rgb: image_grid_figure(rgb, None, ncols=4, title="random"),
    "grid_empty": lambda d, rgb: image_grid_figure(rgb[:0], None),
    "samples": lambda d, rgb: samples_per_class_figure(d["images"], d["y_true"], CLASS_NAMES),
    "misclassified": lambda d, rgb: misclassified_figure(d["images"], d["y_true"], d["y_pred"], CLASS_NAMES),
    "conv_weights": lambda d, rgb: first_layer_figure(np.random.default_rng(1).normal(size=(6, 3, 5, 5))),
    "linear_weights": lambda d, rgb: first_layer_figure(np.random.default_rng(2).normal(size=(10, 64)), (1, 8, 8)),
    "curves": lambda d, rgb: loss_curves_figure({"train_loss": [2.0, 1.0, 0.5], "val_loss": [2.1, 1.2, 0.9],
                                                 "train_accuracy": [0.3, 0.6, 0.8], "val_accuracy": [0.3, 0.5, 0.7]}),
}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_figure_saves_to_png(name, digits, rgb, tmp_path):
    fig = BUILDERS[name](digits, rgb)
    assert isinstance(fig, Figure)
    out = tmp_path / "x.png"
    fig.savefig(out)
    assert out.stat().st_size > 0


def test_no_pyplot_figures_leak(digits):
    from matplotlib._pylab_helpers import Gcf
    before = Gcf.get_num_fig_managers()
    confusion_matrix_figure(digits["cm"], CLASS_NAMES)
    misclassified_figure(digits["images"], digits["y_true"], digits["y_pred"], CLASS_NAMES)
    assert Gcf.get_num_fig_managers() == before


# ---------------------------------------------------------------- confusion matrix

def test_confusion_matrix_png_not_blank(digits, tmp_path):
    out = tmp_path / "x.png"
    confusion_matrix_figure(digits["cm"], CLASS_NAMES).savefig(out)
    pixels = mpimg.imread(out)
    assert pixels.std() > 0


def test_confusion_matrix_texts_and_labels(digits):
    cm = digits["cm"]
    fig = confusion_matrix_figure(cm, CLASS_NAMES)
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == cm.size
    # cell (i, j) is drawn at x=j, y=i; check every count sits in its cell
    by_pos = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    for i in range(10):
        for j in range(10):
            assert by_pos[(i, j)] == str(cm[i, j])
    assert [t.get_text() for t in ax.get_xticklabels()] == CLASS_NAMES
    assert [t.get_text() for t in ax.get_yticklabels()] == CLASS_NAMES
    assert ax.get_xlabel() == "predicted label"
    assert ax.get_ylabel() == "true label"
    assert len(fig.axes) == 2  # matrix + colorbar
    # contrast: the darkest (largest) cell gets white text, an empty cell black text
    i, j = np.unravel_index(cm.argmax(), cm.shape)
    assert by_pos_color(ax, i, j) == "white"
    zi, zj = np.argwhere(cm == 0)[0]
    assert by_pos_color(ax, zi, zj) == "black"


def by_pos_color(ax, i, j):
    for t in ax.texts:
        x, y = t.get_position()
        if (round(y), round(x)) == (i, j):
            return t.get_color()


@pytest.mark.parametrize("n", [2, 10, 30, 31, 100])
def test_confusion_matrix_scales_with_classes(n):
    rng = np.random.default_rng(n)
    cm = rng.integers(0, 50, size=(n, n))
    names = [f"class_{i}" for i in range(n)]
    fig = confusion_matrix_figure(cm, names)
    ax = fig.axes[0]
    assert len(ax.texts) == (n * n if n <= 30 else 0)
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    assert fig.get_size_inches()[1] >= 4


def test_confusion_matrix_size_grows():
    small = confusion_matrix_figure(np.eye(2, dtype=int), ["a", "b"]).get_size_inches()
    big = confusion_matrix_figure(np.eye(20, dtype=int), [str(i) for i in range(20)]).get_size_inches()
    assert big[0] > small[0] and big[1] > small[1]


def test_confusion_matrix_float_counts_formatted():
    cm = np.array([[0.75, 0.25], [0.1, 0.9]])
    texts = [t.get_text() for t in confusion_matrix_figure(cm, ["a", "b"]).axes[0].texts]
    assert sorted(texts) == sorted(["0.75", "0.25", "0.10", "0.90"])


def test_confusion_matrix_shape_mismatch_raises():
    with pytest.raises(ValueError):
        confusion_matrix_figure(np.eye(3, dtype=int), ["a", "b"])


def test_confusion_matrix_data_json(digits):
    data = confusion_matrix_data(digits["cm"], CLASS_NAMES)
    back = json.loads(json.dumps(data))
    assert back["class_names"] == CLASS_NAMES
    assert np.array_equal(np.array(back["matrix"]), digits["cm"])
    assert all(type(v) is int for row in data["matrix"] for v in row)


@pytest.mark.parametrize("names", [CLASS_NAMES, [f"cat, {i}" for i in range(10)]])
def test_confusion_matrix_csv_roundtrip(digits, names):
    text = confusion_matrix_csv(digits["cm"], names)
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["true\\pred", *names]
    assert [r[0] for r in rows[1:]] == names
    assert np.array_equal(np.array([[int(v) for v in r[1:]] for r in rows[1:]]), digits["cm"])
    assert text.splitlines()[0].startswith("true\\pred,")


@pytest.mark.parametrize("cm, expected", [
    (np.array([[5, 0, 0], [0, 0, 0], [1, 1, 2]]), [1.0, 0.0, 0.5]),
    (np.zeros((2, 2), dtype=int), [0.0, 0.0]),
    (np.array([[3, 1], [2, 2]]), [0.75, 0.5]),
])
def test_per_class_accuracy(cm, expected):
    acc = per_class_accuracy(cm)
    assert not np.isnan(acc).any()
    np.testing.assert_allclose(acc, expected)


def test_per_class_accuracy_matches_sklearn_recall(digits):
    from sklearn.metrics import recall_score
    expected = recall_score(digits["y_true"], digits["y_pred"], average=None, labels=range(10))
    np.testing.assert_allclose(per_class_accuracy(digits["cm"]), expected)


# ---------------------------------------------------------------- image grids

@pytest.mark.parametrize("n, ncols", [(1, 8), (7, 8), (20, 8), (12, 4)])
def test_image_grid_axes(digits, n, ncols):
    titles = [f"img {i}\nline 2" for i in range(n)]
    fig = image_grid_figure(digits["images"][:n], titles, ncols=ncols)
    axes = image_axes(fig)
    assert len(axes) == len(fig.axes) == n
    assert [ax.get_title() for ax in axes] == titles
    for ax in axes:
        assert ax.get_xticks().size == 0 and ax.get_yticks().size == 0
        im = ax.images[0]
        assert im.get_interpolation() == "nearest"  # 8x8 digits must not be smoothed
        assert im.get_cmap().name == "gray"
        assert im.get_array().shape == (8, 8)


def test_image_grid_rgb(rgb):
    fig = image_grid_figure(rgb, None, ncols=5, title="rgb")
    axes = image_axes(fig)
    assert len(axes) == len(rgb)
    assert axes[0].images[0].get_array().shape == (32, 32, 3)
    np.testing.assert_array_equal(axes[3].images[0].get_array(), rgb[3].transpose(1, 2, 0))
    assert fig.get_suptitle() == "rgb"


def test_image_grid_empty(tmp_path):
    fig = image_grid_figure(np.zeros((0, 1, 8, 8), dtype=np.uint8), None)
    assert not fig.axes
    assert [t.get_text() for t in fig.texts] == ["no images"]
    fig.savefig(tmp_path / "x.png")
    assert (tmp_path / "x.png").stat().st_size > 0


@pytest.mark.parametrize("bad", [
    np.zeros((2, 2, 8, 8), dtype=np.uint8),   # 2 channels
    np.zeros((2, 8, 8), dtype=np.uint8),      # no channel axis
    np.zeros((2, 1, 8, 8), dtype=np.float32), # not uint8
])
def test_image_grid_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        image_grid_figure(bad, None)


def test_samples_per_class(digits):
    images, labels = digits["images"], digits["y_true"]
    fig = samples_per_class_figure(images, labels, CLASS_NAMES, per_class=5)
    axes = image_axes(fig)
    assert len(axes) == 10 * 5
    assert [ax.get_ylabel() for ax in axes if ax.get_ylabel()] == CLASS_NAMES
    # row 3 holds the first five 3s, in order
    first_threes = images[np.flatnonzero(labels == 3)[:5]]
    row = axes[3 * 5:4 * 5]
    for ax, img in zip(row, first_threes):
        np.testing.assert_array_equal(ax.images[0].get_array(), img[0])
        assert ax.images[0].get_interpolation() == "nearest"


def test_samples_per_class_missing_and_rare_classes(digits):
    images, labels = digits["images"][:30], digits["y_true"][:30].copy()
    labels[labels == 9] = 0           # class 9 now has no samples
    names = CLASS_NAMES
    fig = samples_per_class_figure(images, labels, names, per_class=3)
    counts = [min(3, int((labels == c).sum())) for c in range(10)]
    assert len(image_axes(fig)) == sum(counts)
    assert [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()] == names


@pytest.mark.parametrize("max_images", [1, 10, 64, 10_000])
def test_misclassified_count(digits, max_images):
    y_true, y_pred = digits["y_true"], digits["y_pred"]
    n_wrong = int((y_true != y_pred).sum())
    assert n_wrong > 0
    fig = misclassified_figure(digits["images"], y_true, y_pred, CLASS_NAMES, max_images=max_images)
    axes = image_axes(fig)
    assert len(axes) == min(n_wrong, max_images)
    k = np.flatnonzero(y_true != y_pred)[0]
    assert axes[0].get_title() == f"true: {CLASS_NAMES[y_true[k]]}\npred: {CLASS_NAMES[y_pred[k]]}"


def test_misclassified_none_wrong(digits):
    y = digits["y_true"]
    fig = misclassified_figure(digits["images"], y, y, CLASS_NAMES)
    assert not image_axes(fig)
    assert "no images" in [t.get_text() for t in fig.texts]


# ---------------------------------------------------------------- weights

@pytest.mark.parametrize("shape, in_shape", [
    ((10, 64), None),          # linear without an input shape
    ((10, 64), (1, 8, 9)),     # 72 != 64
    ((10, 3072), (3, 32, 31)),
    ((10, 64), (64,)),         # not (C, H, W)
    ((4, 5, 5), None),         # neither linear nor conv
])
def test_first_layer_incompatible_returns_none(shape, in_shape):
    assert first_layer_figure(np.ones(shape), in_shape) is None


@pytest.mark.parametrize("shape, in_shape, tiles, tile_shape", [
    ((6, 3, 5, 5), None, 6, (5, 5, 3)),          # RGB conv filters
    ((16, 1, 3, 3), None, 16, (3, 3)),           # gray conv
    ((8, 6, 3, 3), None, 8, (3, 3)),             # channel mean in gray
    ((100, 3, 3, 3), None, 64, (3, 3, 3)),       # capped at 64 tiles
    ((10, 64), (1, 8, 8), 10, (8, 8)),           # softmax templates on digits
    ((10, 3072), (3, 32, 32), 10, (32, 32, 3)),  # CIFAR-style templates
])
def test_first_layer_tiles(shape, in_shape, tiles, tile_shape):
    w = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    fig = first_layer_figure(w, in_shape)
    axes = image_axes(fig)
    assert len(axes) == tiles
    arr = axes[0].images[0].get_array()
    assert arr.shape == tile_shape
    # every tile is min-max normalised to the full range
    assert arr.min() == 0 and arr.max() == 255


def test_first_layer_constant_weight():
    fig = first_layer_figure(np.zeros((4, 3, 5, 5)))
    assert len(image_axes(fig)) == 4


def test_first_layer_of_trained_linear_model(digits, tmp_path):
    from sklearn.linear_model import LogisticRegression
    d = load_digits()
    clf = LogisticRegression(max_iter=200).fit(d.data[:500], d.target[:500])
    fig = first_layer_figure(clf.coef_, (1, 8, 8))
    assert len(image_axes(fig)) == 10
    fig.savefig(tmp_path / "x.png")
    assert mpimg.imread(tmp_path / "x.png").std() > 0


# ---------------------------------------------------------------- curves

@pytest.mark.parametrize("history, n_loss, n_acc", [
    ({"train_loss": [1.0, 0.5, 0.2], "val_loss": [1.1, 0.7, 0.6],
      "train_accuracy": [0.5, 0.7, 0.9], "val_accuracy": [0.4, 0.6, 0.7]}, 2, 2),
    ({"train_loss": [1.0, 0.5]}, 1, 0),
    ({"val_accuracy": [0.1], "other": [3.0]}, 0, 1),
    ({}, 0, 0),
])
def test_loss_curves(history, n_loss, n_acc, tmp_path):
    fig = loss_curves_figure(history)
    ax_loss, ax_acc = fig.axes
    assert len(ax_loss.lines) == n_loss and len(ax_acc.lines) == n_acc
    for ax, ylabel in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == ylabel
        assert (ax.get_legend() is not None) == bool(ax.lines)
        for line in ax.lines:
            np.testing.assert_array_equal(line.get_xdata(), np.arange(1, len(line.get_ydata()) + 1))
    fig.savefig(tmp_path / "x.png")
    assert (tmp_path / "x.png").stat().st_size > 0
