"""Tests for mlproject.figures: real digits images, real (if crude) predictions, saved PNGs."""

import csv
import io
import json

import matplotlib.image as mpimg
import numpy as np
import pytest
from matplotlib.figure import Figure
from sklearn.datasets import load_digits
from sklearn.metrics import confusion_matrix

from mlproject.figures import (
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


def text_collection(ax):
    """The collection of many small texts (tile titles / cell counts) on ax, or None."""
    found = [c for c in ax.collections if hasattr(c, "get_texts")]
    assert len(found) <= 1
    return found[0] if found else None


def montage_of(fig):
    """The single montage image of an image grid figure: (axes, montage array)."""
    axes = image_axes(fig)
    assert len(axes) == len(fig.axes) == 1, "an image grid is ONE axes with ONE image"
    assert len(axes[0].images) == 1
    return axes[0], np.asarray(axes[0].images[0].get_array())


def titled_tiles(fig, h, w):
    """[(title, tile array)] of an image grid, the tile cut out of the montage below its title."""
    ax, m = montage_of(fig)
    coll = text_collection(ax)
    out = []
    for title, (x, y) in zip(coll.get_texts(), coll.get_offsets()):
        x0, y0 = int(round(x - (w - 1) / 2)), int(round(y + 0.5))  # title: centre column, top edge
        assert 0 <= x0 and x0 + w <= m.shape[1] and 0 <= y0 and y0 + h <= m.shape[0]
        out.append((title, m[y0:y0 + h, x0:x0 + w]))
    return out


def grid_tiles(m, n, ncols, h, w):
    """Tiles of a montage of n images, ncols per row: equal cells, the image at the bottom of its
    cell (room for the title above), centred horizontally."""
    nrows = -(-n // ncols)
    assert m.shape[0] % nrows == 0 and m.shape[1] % ncols == 0
    ph, pw = m.shape[0] // nrows, m.shape[1] // ncols
    assert ph > h and pw > w, "tiles need a gap between them"
    tiles = []
    for k in range(n):
        r, c = divmod(k, ncols)
        y0, x0 = r * ph + ph - h, c * pw + (pw - w) // 2
        tiles.append(m[y0:y0 + h, x0:x0 + w])
    return tiles


def frames(ax):
    """The collection of tile frames (one rectangle per image shown)."""
    polys = [c for c in ax.collections if not hasattr(c, "get_texts")]
    assert len(polys) == 1
    return polys[0]


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


def cell_texts(ax):
    """{(row, col): (text, rgba)} of the per-cell counts (drawn as one text collection)."""
    coll = text_collection(ax)
    if coll is None:
        return {}
    colors = coll.get_facecolors()
    if len(colors) == 1:
        colors = np.repeat(colors, len(coll.get_texts()), axis=0)
    return {(round(y), round(x)): (t, tuple(c)) for t, (x, y), c in
            zip(coll.get_texts(), coll.get_offsets(), colors)}


WHITE, BLACK = (1.0, 1.0, 1.0, 1.0), (0.0, 0.0, 0.0, 1.0)


def test_confusion_matrix_texts_and_labels(digits):
    cm = digits["cm"]
    fig = confusion_matrix_figure(cm, CLASS_NAMES)
    ax = fig.axes[0]
    cells = cell_texts(ax)
    assert len(text_collection(ax).get_texts()) == cm.size
    # cell (i, j) is drawn at x=j, y=i; check every count sits in its cell
    for i in range(10):
        for j in range(10):
            assert cells[(i, j)][0] == str(cm[i, j])
    assert [t.get_text() for t in ax.get_xticklabels()] == CLASS_NAMES
    assert [t.get_text() for t in ax.get_yticklabels()] == CLASS_NAMES
    assert ax.get_xlabel() == "predicted label"
    assert ax.get_ylabel() == "true label"
    assert ax.get_title() == f"confusion matrix (accuracy {np.trace(cm) / cm.sum():.3f})"
    assert len(fig.axes) == 2  # matrix + colorbar
    assert fig.get_layout_engine() is None  # no constrained layout: it measured every text, slowly
    # contrast: the darkest (largest) cell gets white text, an empty cell black text
    i, j = np.unravel_index(cm.argmax(), cm.shape)
    assert cells[(i, j)][1] == WHITE
    zi, zj = np.argwhere(cm == 0)[0]
    assert cells[(zi, zj)][1] == BLACK


def test_confusion_matrix_labels_inside_figure(tmp_path):
    """Margins come from the label lengths now: long names and axis titles must not be cut off."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    names = [f"a rather long class name {i}" for i in range(12)]
    fig = confusion_matrix_figure(np.arange(144).reshape(12, 12), names)
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    box = fig.bbox
    ax, cax = fig.axes
    for a in (ax, cax):  # everything drawn for either axes: tick labels, axis titles, title
        ext = a.get_tightbbox(renderer)
        assert ext.x0 >= box.x0 - 1 and ext.x1 <= box.x1 + 1, (a, ext, box)
        assert ext.y0 >= box.y0 - 1 and ext.y1 <= box.y1 + 1, (a, ext, box)
    # the axis titles sit outside their tick labels
    assert ax.xaxis.label.get_window_extent(renderer).y1 <= min(
        t.get_window_extent(renderer).y0 for t in ax.get_xticklabels()) + 1
    assert ax.yaxis.label.get_window_extent(renderer).x1 <= min(
        t.get_window_extent(renderer).x0 for t in ax.get_yticklabels()) + 1


@pytest.mark.parametrize("n", [2, 10, 30, 31, 100])
def test_confusion_matrix_scales_with_classes(n):
    rng = np.random.default_rng(n)
    cm = rng.integers(0, 50, size=(n, n))
    names = [f"class_{i}" for i in range(n)]
    fig = confusion_matrix_figure(cm, names)
    ax = fig.axes[0]
    assert len(cell_texts(ax)) == (n * n if n <= 30 else 0)
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    assert fig.get_size_inches()[1] >= 4


def test_confusion_matrix_size_grows():
    small = confusion_matrix_figure(np.eye(2, dtype=int), ["a", "b"]).get_size_inches()
    big = confusion_matrix_figure(np.eye(20, dtype=int), [str(i) for i in range(20)]).get_size_inches()
    assert big[0] > small[0] and big[1] > small[1]


def test_confusion_matrix_float_counts_formatted():
    cm = np.array([[0.75, 0.25], [0.1, 0.9]])
    texts = text_collection(confusion_matrix_figure(cm, ["a", "b"]).axes[0]).get_texts()
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
def test_image_grid_montage(digits, n, ncols):
    images = digits["images"][:n]
    titles = [f"img {i}\nline 2" for i in range(n)]
    fig = image_grid_figure(images, titles, ncols=ncols)
    ax, m = montage_of(fig)
    assert not ax.axison  # no ticks, no spines: the frames are drawn per tile
    im = ax.images[0]
    assert im.get_interpolation() == "nearest"  # 8x8 digits must not be smoothed
    assert im.get_cmap().name == "gray"
    assert im.get_clim() == (0, 255)  # real intensities, no per-image contrast stretch
    # montage: nrows x min(n, ncols) cells, each bigger than an image (gap, room for the title)
    cols = min(n, ncols)
    rows = -(-n // cols)
    assert m.ndim == 2 and m.dtype == np.uint8
    assert m.shape[0] % rows == 0 and m.shape[1] % cols == 0
    assert m.shape[0] // rows > 8 and m.shape[1] // cols > 8
    # exactly one title per image, in order, each sitting right above its own image
    tiles = titled_tiles(fig, 8, 8)
    assert [t for t, _ in tiles] == titles
    for (_, tile), img in zip(tiles, images):
        np.testing.assert_array_equal(tile, img[0])
    for tile, img in zip(grid_tiles(m, n, cols, 8, 8), images):
        np.testing.assert_array_equal(tile, img[0])
    assert len(frames(ax).get_paths()) == n
    # everything outside the tiles is white background
    inside = np.zeros(m.shape, bool)
    coll = text_collection(ax)
    for x, y in coll.get_offsets():
        x0, y0 = int(round(x - 3.5)), int(round(y + 0.5))
        inside[y0:y0 + 8, x0:x0 + 8] = True
    assert (m[~inside] == 255).all()


def test_image_grid_png_not_blank(digits, tmp_path):
    fig = image_grid_figure(digits["images"][:20], [f"#{i}" for i in range(20)])
    fig.savefig(tmp_path / "x.png")
    pixels = mpimg.imread(tmp_path / "x.png")[..., :3]
    assert pixels.std() > 0.1
    assert (pixels < 0.1).mean() > 0.2  # the digits' black backgrounds made it to the PNG


@pytest.mark.parametrize("dpi", [50, 100, 200])
def test_image_grid_any_dpi(digits, tmp_path, dpi):
    """Titles are sized in points: saving at another dpi scales the whole figure consistently."""
    fig = image_grid_figure(digits["images"][:4], ["a", "b", "c", "d"], title="t")
    fig.savefig(tmp_path / "x.png", dpi=dpi)
    pixels = mpimg.imread(tmp_path / "x.png")
    w, h = fig.get_size_inches()
    assert abs(pixels.shape[1] - w * dpi) <= 1 and abs(pixels.shape[0] - h * dpi) <= 1
    assert pixels.std() > 0


def test_image_grid_rgb(rgb):
    fig = image_grid_figure(rgb, None, ncols=5, title="rgb")
    ax, m = montage_of(fig)
    assert m.ndim == 3 and m.shape[2] == 3  # RGB shown as RGB, no colormap
    assert text_collection(ax) is None  # no titles given, none drawn
    tiles = grid_tiles(m, len(rgb), 5, 32, 32)
    assert len(tiles) == len(rgb) == len(frames(ax).get_paths())
    assert tiles[0].shape == (32, 32, 3)
    for tile, img in zip(tiles, rgb):
        np.testing.assert_array_equal(tile, img.transpose(1, 2, 0))
    assert ax.images[0].get_interpolation() == "nearest"
    assert fig.get_suptitle() == "rgb"


def test_image_grid_large_images_antialiased():
    big = np.random.default_rng(0).integers(0, 256, size=(2, 1, 64, 64), dtype=np.uint8)
    ax, _ = montage_of(image_grid_figure(big, None))
    assert ax.images[0].get_interpolation() == "antialiased"


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


def samples_tiles(fig, nrows, ncols, h, w):
    """{(row, col): tile} of a samples-per-class montage (class rows, `ncols` cells per row)."""
    ax, m = montage_of(fig)
    assert m.shape[0] % nrows == 0 and m.shape[1] % ncols == 0
    ph, pw = m.shape[0] // nrows, m.shape[1] // ncols
    return {(r, c): m[r * ph + ph - h:(r + 1) * ph, c * pw + (pw - w) // 2:][:, :w]
            for r in range(nrows) for c in range(ncols)}


def test_samples_per_class(digits):
    images, labels = digits["images"], digits["y_true"]
    fig = samples_per_class_figure(images, labels, CLASS_NAMES, per_class=5)
    ax, m = montage_of(fig)
    assert len(frames(ax).get_paths()) == 10 * 5
    # class names label the rows: y tick labels at the row centres, in order
    assert [t.get_text() for t in ax.get_yticklabels()] == CLASS_NAMES
    ph = m.shape[0] // 10
    np.testing.assert_allclose(np.diff(ax.get_yticks()), ph)
    assert ax.get_xticks().size == 0
    assert fig.get_suptitle() == "5 samples per class"
    assert ax.images[0].get_interpolation() == "nearest"
    assert ax.images[0].get_cmap().name == "gray"
    # row 3 holds the first five 3s, in order
    tiles = samples_tiles(fig, 10, 5, 8, 8)
    first_threes = images[np.flatnonzero(labels == 3)[:5]]
    for j, img in enumerate(first_threes):
        np.testing.assert_array_equal(tiles[(3, j)], img[0])
    # ... and every row its own class
    for r in range(10):
        np.testing.assert_array_equal(tiles[(r, 0)], images[np.flatnonzero(labels == r)[0]][0])
    assert not ax.texts  # every class has samples


def test_samples_per_class_missing_and_rare_classes(digits):
    images, labels = digits["images"][:30], digits["y_true"][:30].copy()
    labels[labels == 9] = 0           # class 9 now has no samples
    names = CLASS_NAMES
    fig = samples_per_class_figure(images, labels, names, per_class=3)
    counts = [min(3, int((labels == c).sum())) for c in range(10)]
    ax, m = montage_of(fig)
    assert len(frames(ax).get_paths()) == sum(counts)
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    tiles = samples_tiles(fig, 10, 3, 8, 8)
    for r in range(10):
        idx = np.flatnonzero(labels == r)[:3]
        for j in range(3):
            if j < len(idx):
                np.testing.assert_array_equal(tiles[(r, j)], images[idx[j]][0])
            else:
                assert (tiles[(r, j)] == 255).all()  # an empty cell stays blank
    # the empty class keeps its row, marked "no samples" in it
    assert [t.get_text() for t in ax.texts] == ["no samples"]
    assert round(ax.texts[0].get_position()[1]) == round(ax.get_yticks()[9])


def test_samples_per_class_many_classes_stay_bounded(digits):
    names = [f"class {i}" for i in range(100)]
    labels = np.arange(len(digits["images"])) % 100
    fig = samples_per_class_figure(digits["images"], labels, names, per_class=5)
    ax, _ = montage_of(fig)
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    assert fig.get_size_inches()[1] <= 30  # the old 1.1 in per row made this 110 in tall


@pytest.mark.parametrize("max_images", [1, 10, 64, 10_000])
def test_misclassified_count(digits, max_images):
    y_true, y_pred = digits["y_true"], digits["y_pred"]
    wrong = np.flatnonzero(y_true != y_pred)
    n_wrong = len(wrong)
    assert n_wrong > 0
    fig = misclassified_figure(digits["images"], y_true, y_pred, CLASS_NAMES, max_images=max_images)
    shown = min(n_wrong, max_images)
    # one titled tile per misclassified sample shown, in order, each above the right image
    tiles = titled_tiles(fig, 8, 8)
    assert len(tiles) == shown
    for (title, tile), k in zip(tiles, wrong):
        assert title == f"true: {CLASS_NAMES[y_true[k]]}\npred: {CLASS_NAMES[y_pred[k]]}"
        np.testing.assert_array_equal(tile, digits["images"][k][0])
    # the montage holds exactly that grid: min(shown, 8) columns, ceil(shown / 8) rows
    ax, m = montage_of(fig)
    for tile, k in zip(grid_tiles(m, shown, min(shown, 8), 8, 8), wrong):
        np.testing.assert_array_equal(tile, digits["images"][k][0])
    assert len(frames(ax).get_paths()) == shown
    assert fig.get_suptitle() == f"misclassified: {shown} shown of {n_wrong}"


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
    ax, m = montage_of(fig)
    assert m.ndim == len(tile_shape)  # gray montage for gray tiles, RGB for RGB
    h, wd = tile_shape[:2]
    found = titled_tiles(fig, h, wd)
    assert len(found) == tiles
    assert [t for t, _ in found] == [str(i) for i in range(tiles)]  # tiles titled by unit index
    assert len(frames(ax).get_paths()) == tiles
    for k, (_, arr) in enumerate(found):
        assert arr.shape == tile_shape
        # every tile is min-max normalised to the full range, on its own
        assert arr.min() == 0 and arr.max() == 255
    # and tile k is unit k
    unit = w.reshape(len(w), *(in_shape or w.shape[1:]))[1].astype(np.float64)
    if unit.shape[0] != 3:
        unit = unit.mean(axis=0, keepdims=True)
    expected = np.round((unit - unit.min()) / (unit.max() - unit.min()) * 255).astype(np.uint8)
    expected = expected[0] if expected.shape[0] == 1 else expected.transpose(1, 2, 0)
    np.testing.assert_array_equal(found[1][1], expected)
    assert fig.get_suptitle().startswith("first layer weights (")


def test_first_layer_constant_weight():
    fig = first_layer_figure(np.zeros((4, 3, 5, 5)))
    found = titled_tiles(fig, 5, 5)
    assert len(found) == 4
    assert all((arr == 0).all() for _, arr in found)  # a constant tile is all zeros, not NaN


def test_first_layer_of_trained_linear_model(digits, tmp_path):
    from sklearn.linear_model import LogisticRegression
    d = load_digits()
    clf = LogisticRegression(max_iter=200).fit(d.data[:500], d.target[:500])
    fig = first_layer_figure(clf.coef_, (1, 8, 8))
    assert len(titled_tiles(fig, 8, 8)) == 10
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
