"""Tests for mlproject.figures: real digits images, real (if crude) predictions, saved PNGs."""

import csv
import io
import json

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.datasets import load_digits
from sklearn.metrics import confusion_matrix

from mlproject.figures import (
    TILE_IN,
    confusion_matrix_csv,
    confusion_matrix_data,
    confusion_matrix_figure,
    first_layer_figure,
    image_grid_figure,
    loss_curves_figure,
    misclassified_figure,
    plot_confusion_matrix,
    plot_first_layer,
    plot_image_grid,
    plot_loss_curves,
    plot_misclassified,
    plot_samples_per_class,
    samples_per_class_figure,
)

CLASS_NAMES = [str(i) for i in range(10)]
CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


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


def montage_of(fig):
    """The single montage image of an image grid figure: (axes, montage array)."""
    axes = [ax for ax in fig.axes if ax.images]
    assert len(axes) == len(fig.axes) == 1, "an image grid is ONE axes with ONE image"
    assert len(axes[0].images) == 1
    return axes[0], np.asarray(axes[0].images[0].get_array())


def titled_tiles(ax, h, w):
    """[(title, tile array)] of an image grid on ax, the tile cut out of the montage below its title
    (title k is ax.texts[k] at (tile centre column, tile top edge))."""
    m = np.asarray(ax.images[0].get_array())
    out = []
    for text in ax.texts:
        x, y = text.get_position()
        x0, y0 = int(round(x - (w - 1) / 2)), int(round(y + 0.5))
        assert 0 <= x0 and x0 + w <= m.shape[1] and 0 <= y0 and y0 + h <= m.shape[0]
        out.append((text.get_text(), m[y0:y0 + h, x0:x0 + w]))
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
    assert len(ax.collections) == 1
    return ax.collections[0]


def drawn(fig):
    """A renderer the figure was drawn with (layout done), for measuring what was drawn."""
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    return renderer


def png_pixels(fig, **kwargs):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", **kwargs)
    buf.seek(0)
    return mpimg.imread(buf, format="png")


# ---------------------------------------------------------------- every figure saves

BUILDERS = {
    "confusion": lambda d, rgb: confusion_matrix_figure(d["cm"], CLASS_NAMES),
    "confusion100": lambda d, rgb: confusion_matrix_figure(np.eye(100, dtype=int), [f"c{i}" for i in range(100)]),
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
def test_figure_saves_to_png_of_sensible_size(name, digits, rgb):
    fig = BUILDERS[name](digits, rgb)
    assert isinstance(fig, Figure)
    pixels = png_pixels(fig)
    h, w = pixels.shape[:2]
    assert 100 <= min(w, h) and max(w, h) <= 4000, (w, h)
    assert pixels.std() > 0


def test_no_pyplot_figures(digits, rgb):
    for build in BUILDERS.values():
        build(digits, rgb)
    assert plt.get_fignums() == []


# ---------------------------------------------------------------- confusion matrix

def cell_texts(ax):
    """{(row, col): (text, rgba)} of the per-cell counts: the texts at integer data positions."""
    out = {}
    for t in ax.texts:
        x, y = t.get_position()
        out[(round(y), round(x))] = (t.get_text(), t.get_color())
    return out


def luminance(color):
    from matplotlib.colors import to_rgb
    r, g, b = to_rgb(color)
    return 0.299 * r + 0.587 * g + 0.114 * b


def test_confusion_matrix_texts_and_labels(digits):
    cm = digits["cm"]
    fig = confusion_matrix_figure(cm, CLASS_NAMES)
    (ax,) = fig.axes
    (cax,) = ax.child_axes  # the colorbar, an inset beside the matrix
    assert len(ax.images) == 1 and np.array_equal(ax.images[0].get_array(), cm)
    cells = cell_texts(ax)
    assert len(ax.texts) == len(cells) == cm.size
    # cell (i, j) is drawn at x=j, y=i; every count sits in its cell
    for i in range(10):
        for j in range(10):
            assert cells[(i, j)][0] == str(cm[i, j])
    assert [t.get_text() for t in ax.get_xticklabels()] == CLASS_NAMES
    assert [t.get_text() for t in ax.get_yticklabels()] == CLASS_NAMES
    assert all(t.get_rotation() == 0 for t in ax.get_xticklabels())  # one-character names need no rotation
    assert ax.get_xlabel() == "Predicted label" and ax.get_ylabel() == "True label"
    assert ax.get_title() == f"confusion matrix (accuracy {np.trace(cm) / cm.sum():.3f})"
    assert cax.get_ylim()[1] >= cm.max()
    # contrast: the darkest (largest) cell gets light text, an empty cell dark text
    i, j = np.unravel_index(cm.argmax(), cm.shape)
    assert luminance(cells[(i, j)][1]) > 0.5
    zi, zj = np.argwhere(cm == 0)[0]
    assert luminance(cells[(zi, zj)][1]) < 0.5


def test_confusion_matrix_long_names_rotated_and_inside_figure():
    """The layout engine makes room: long names and axis titles are not cut off or overlapping."""
    names = [f"a rather long class name {i}" for i in range(12)]
    fig = confusion_matrix_figure(np.arange(144).reshape(12, 12), names)
    renderer = drawn(fig)
    (ax,) = fig.axes
    (cax,) = ax.child_axes
    assert all(t.get_rotation() == 45 and t.get_ha() == "right" for t in ax.get_xticklabels())
    box = fig.bbox
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
def test_confusion_matrix_counts_up_to_30_classes(n):
    rng = np.random.default_rng(n)
    cm = rng.integers(0, 50, size=(n, n))
    names = [f"class_{i}" for i in range(n)]
    fig = confusion_matrix_figure(cm, names)
    ax = fig.axes[0]
    assert len(ax.texts) == (n * n if n <= 30 else 0)
    if n <= 30:
        assert sorted(t.get_text() for t in ax.texts) == sorted(str(v) for v in cm.ravel())
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    assert [t.get_text() for t in ax.get_xticklabels()] == names
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


def test_plot_confusion_matrix_on_given_axes(digits):
    """A report page composes several on one figure: each on its axes, with its own title."""
    fig = Figure(layout="compressed")
    left, right = fig.subplots(1, 2)
    plot_confusion_matrix(left, digits["cm"], CLASS_NAMES, title="run a (1234abcd)\nlr=0.1")
    plot_confusion_matrix(right, np.eye(3, dtype=int), ["x", "y", "z"], title="run b", colorbar=False)
    acc = np.trace(digits["cm"]) / digits["cm"].sum()
    assert left.get_title() == f"run a (1234abcd) (accuracy {acc:.3f})\nlr=0.1"
    assert right.get_title() == "run b (accuracy 1.000)"
    assert len(left.child_axes) == 1 and not right.child_axes  # the colorbar
    assert len(left.texts) == 100 and len(right.texts) == 9
    assert png_pixels(fig).std() > 0


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


def test_confusion_matrix_csv_rejects_normalised():
    with pytest.raises(ValueError):
        confusion_matrix_csv(np.array([[0.5, 0.5], [0.0, 1.0]]), ["a", "b"])


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
    assert m.ndim == 2 and m.dtype == np.uint8
    # exactly one title per image, in order, each sitting right above its own image
    tiles = titled_tiles(ax, 8, 8)
    assert [t for t, _ in tiles] == titles
    for (_, tile), img in zip(tiles, images):
        np.testing.assert_array_equal(tile, img[0])
    for tile, img in zip(grid_tiles(m, n, cols, 8, 8), images):
        np.testing.assert_array_equal(tile, img[0])
    assert len(frames(ax).get_paths()) == n
    # everything outside the tiles is white background
    inside = np.zeros(m.shape, bool)
    for t in ax.texts:
        x, y = t.get_position()
        x0, y0 = int(round(x - 3.5)), int(round(y + 0.5))
        inside[y0:y0 + 8, x0:x0 + 8] = True
    assert (m[~inside] == 255).all()


def test_image_grid_titles_do_not_overlap(rgb):
    """Long two-line titles: the gaps between tiles are made wide and high enough for them."""
    titles = [f"true: {CIFAR[k % 10]}\npred: {CIFAR[(k + 1) % 10]}" for k in range(len(rgb))]
    fig = image_grid_figure(rgb, titles, ncols=4, title="grid")
    renderer = drawn(fig)
    ax, m = montage_of(fig)
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    for a in range(len(boxes)):
        assert fig.bbox.x0 <= boxes[a].x0 and boxes[a].x1 <= fig.bbox.x1
        for b in range(a + 1, len(boxes)):
            assert not boxes[a].overlaps(boxes[b]), (titles[a], titles[b])
    # ... nor the tiles: every title ends above the top edge of its tile
    to_px = ax.transData
    for t, box in zip(ax.texts, boxes):
        x, y = t.get_position()
        assert box.y0 >= to_px.transform((x, y))[1] - 0.5


def test_image_grid_png_not_blank(digits):
    pixels = png_pixels(image_grid_figure(digits["images"][:20], [f"#{i}" for i in range(20)]))[..., :3]
    assert pixels.std() > 0.1
    assert (pixels < 0.1).mean() > 0.15  # the digits' black backgrounds made it to the PNG


def dark_runs(line: np.ndarray) -> list[int]:
    """Lengths of the runs of True in a 1-D boolean array."""
    edges = np.diff(np.concatenate([[0], line.astype(int), [0]]))
    return (np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).tolist()


@pytest.mark.parametrize("dpi", [50, 100, 200])
def test_image_grid_tiles_are_tile_in_inches_at_any_dpi(dpi):
    """The figure is sized for its tiles: in a PNG at any dpi each tile (black, in its black frame)
    is TILE_IN inches, TILE_IN * dpi pixels, wide and high."""
    fig = image_grid_figure(np.zeros((4, 1, 8, 8), np.uint8), ["a", "b", "c", "d"], title="t")
    dark = png_pixels(fig, dpi=dpi)[..., :3].mean(-1) < 0.5
    row = dark[dark.sum(1).argmax()]  # a row through the tiles
    widths = dark_runs(row)
    left = int(np.argmax(row))
    heights = [n for n in dark_runs(dark[:, left + widths[0] // 2]) if n > 0.5 * TILE_IN * dpi]
    expected = TILE_IN * dpi
    assert len(widths) == 4 and len(heights) == 1, (widths, heights)
    # + a frame line's width (0.6 pt) and what the layout's last fit of the axes adds: 5 % seen
    for n in widths + heights:
        assert expected - 2 <= n <= 1.1 * expected + 2, (n, expected)


def test_image_grid_rgb(rgb):
    fig = image_grid_figure(rgb, None, ncols=5, title="rgb")
    ax, m = montage_of(fig)
    assert m.ndim == 3 and m.shape[2] == 3  # RGB shown as RGB, no colormap
    assert not ax.texts  # no titles given, none drawn
    tiles = grid_tiles(m, len(rgb), 5, 32, 32)
    assert len(tiles) == len(rgb) == len(frames(ax).get_paths())
    for tile, img in zip(tiles, rgb):
        np.testing.assert_array_equal(tile, img.transpose(1, 2, 0))
    assert ax.images[0].get_interpolation() == "nearest"
    assert ax.get_title() == "rgb"


def test_image_grid_large_images_antialiased():
    big = np.random.default_rng(0).integers(0, 256, size=(2, 1, 64, 64), dtype=np.uint8)
    ax, _ = montage_of(image_grid_figure(big, None))
    assert ax.images[0].get_interpolation() == "antialiased"


def test_image_grid_empty():
    fig = image_grid_figure(np.zeros((0, 1, 8, 8), dtype=np.uint8), None, title="nothing")
    (ax,) = fig.axes
    assert not ax.images and [t.get_text() for t in ax.texts] == ["no images"]
    assert ax.get_title() == "nothing"
    assert png_pixels(fig).std() > 0


@pytest.mark.parametrize("bad", [
    np.zeros((2, 2, 8, 8), dtype=np.uint8),   # 2 channels
    np.zeros((2, 8, 8), dtype=np.uint8),      # no channel axis
    np.zeros((2, 1, 8, 8), dtype=np.float32), # not uint8
])
def test_image_grid_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        image_grid_figure(bad, None)


def test_image_grid_titles_count_checked(digits):
    with pytest.raises(ValueError):
        image_grid_figure(digits["images"][:3], ["a", "b"])


def samples_tiles(ax, nrows, ncols, h, w):
    """{(row, col): tile} of a samples-per-class montage (class rows, `ncols` cells per row)."""
    m = np.asarray(ax.images[0].get_array())
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
    np.testing.assert_allclose(np.diff(ax.get_yticks()), m.shape[0] // 10)
    assert ax.get_xticks().size == 0
    assert ax.get_title() == "5 samples per class"
    assert ax.images[0].get_interpolation() == "nearest" and ax.images[0].get_cmap().name == "gray"
    tiles = samples_tiles(ax, 10, 5, 8, 8)
    # row 3 holds the first five 3s, in order, and every row its own class
    for j, img in enumerate(images[np.flatnonzero(labels == 3)[:5]]):
        np.testing.assert_array_equal(tiles[(3, j)], img[0])
    for r in range(10):
        np.testing.assert_array_equal(tiles[(r, 0)], images[np.flatnonzero(labels == r)[0]][0])
    assert not ax.texts  # every class has samples


def test_samples_per_class_marks_a_class_without_samples(digits):
    images, labels = digits["images"][:30], digits["y_true"][:30].copy()
    labels[labels == 9] = 0           # class 9 now has no samples
    fig = samples_per_class_figure(images, labels, CLASS_NAMES, per_class=3)
    counts = [min(3, int((labels == c).sum())) for c in range(10)]
    ax, _ = montage_of(fig)
    assert len(frames(ax).get_paths()) == sum(counts)
    assert [t.get_text() for t in ax.get_yticklabels()] == CLASS_NAMES
    tiles = samples_tiles(ax, 10, 3, 8, 8)
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
    assert fig.get_size_inches()[1] <= 30


@pytest.mark.parametrize("max_images", [1, 10, 64, 10_000])
def test_misclassified_count(digits, max_images):
    y_true, y_pred = digits["y_true"], digits["y_pred"]
    wrong = np.flatnonzero(y_true != y_pred)
    assert len(wrong) > 0
    fig = misclassified_figure(digits["images"], y_true, y_pred, CLASS_NAMES, max_images=max_images)
    shown = min(len(wrong), max_images)
    ax, m = montage_of(fig)
    # one titled tile per misclassified sample shown, in order, each above the right image
    tiles = titled_tiles(ax, 8, 8)
    assert len(tiles) == shown
    for (title, tile), k in zip(tiles, wrong):
        assert title == f"true: {CLASS_NAMES[y_true[k]]}\npred: {CLASS_NAMES[y_pred[k]]}"
        np.testing.assert_array_equal(tile, digits["images"][k][0])
    # the montage holds exactly that grid: min(shown, 8) columns, ceil(shown / 8) rows
    for tile, k in zip(grid_tiles(m, shown, min(shown, 8), 8, 8), wrong):
        np.testing.assert_array_equal(tile, digits["images"][k][0])
    assert len(frames(ax).get_paths()) == shown
    assert ax.get_title() == f"misclassified: {shown} shown of {len(wrong)}"


def test_misclassified_none_wrong(digits):
    y = digits["y_true"]
    fig = misclassified_figure(digits["images"], y, y, CLASS_NAMES)
    (ax,) = fig.axes
    assert not ax.images and [t.get_text() for t in ax.texts] == ["no images"]
    assert ax.get_title() == "misclassified: 0 shown of 0"


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
    ax = Figure().add_subplot()
    assert plot_first_layer(ax, np.ones(shape), in_shape) is None
    assert not ax.images and not ax.texts  # nothing drawn


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
    found = titled_tiles(ax, *tile_shape[:2])
    assert [t for t, _ in found] == [str(i) for i in range(tiles)]  # tiles titled by unit index
    assert len(frames(ax).get_paths()) == tiles
    for _, arr in found:
        # every tile is min-max normalised to the full range, on its own
        assert arr.shape == tile_shape and arr.min() == 0 and arr.max() == 255
    # and tile k is unit k
    unit = w.reshape(len(w), *(in_shape or w.shape[1:]))[1].astype(np.float64)
    if unit.shape[0] != 3:
        unit = unit.mean(axis=0, keepdims=True)
    expected = np.round((unit - unit.min()) / (unit.max() - unit.min()) * 255).astype(np.uint8)
    expected = expected[0] if expected.shape[0] == 1 else expected.transpose(1, 2, 0)
    np.testing.assert_array_equal(found[1][1], expected)
    assert ax.get_title().startswith("first layer weights (")


def test_first_layer_constant_weight():
    ax, _ = montage_of(first_layer_figure(np.zeros((4, 3, 5, 5))))
    found = titled_tiles(ax, 5, 5)
    assert len(found) == 4
    assert all((arr == 0).all() for _, arr in found)  # a constant tile is all zeros, not NaN


def test_first_layer_of_trained_linear_model():
    from sklearn.linear_model import LogisticRegression
    d = load_digits()
    clf = LogisticRegression(max_iter=200).fit(d.data[:500], d.target[:500])
    fig = first_layer_figure(clf.coef_, (1, 8, 8))
    ax, _ = montage_of(fig)
    assert len(titled_tiles(ax, 8, 8)) == 10
    assert png_pixels(fig).std() > 0


# ---------------------------------------------------------------- curves

@pytest.mark.parametrize("history, n_loss, n_acc", [
    ({"train_loss": [1.0, 0.5, 0.2], "val_loss": [1.1, 0.7, 0.6],
      "train_accuracy": [0.5, 0.7, 0.9], "val_accuracy": [0.4, 0.6, 0.7]}, 2, 2),
    ({"train_loss": [1.0, 0.5]}, 1, 0),
    ({"val_accuracy": [0.1], "other": [3.0]}, 0, 1),
    ({}, 0, 0),
])
def test_loss_curves(history, n_loss, n_acc):
    fig = loss_curves_figure(history)
    ax_loss, ax_acc = fig.axes
    assert len(ax_loss.lines) == n_loss and len(ax_acc.lines) == n_acc
    for ax, ylabel in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == ylabel and ax.get_title() == ylabel
        assert (ax.get_legend() is not None) == bool(ax.lines)
        assert [t.get_text() for t in ax.texts] == ([] if ax.lines else ["no data"])
        for line in ax.lines:
            np.testing.assert_array_equal(line.get_xdata(), np.arange(1, len(line.get_ydata()) + 1))
    assert png_pixels(fig).std() > 0


# ---------------------------------------------------------------- composing

def test_plot_functions_compose_on_one_page(digits):
    """Every plot_* draws on the Axes it is given: one page holds them all."""
    d = digits
    fig = Figure(figsize=(14, 10), layout="constrained")
    axes = fig.subplots(2, 3).ravel()
    plot_confusion_matrix(axes[0], d["cm"], CLASS_NAMES)
    plot_misclassified(axes[1], d["images"], d["y_true"], d["y_pred"], CLASS_NAMES, max_images=16)
    plot_samples_per_class(axes[2], d["images"], d["y_true"], CLASS_NAMES, per_class=3)
    assert plot_first_layer(axes[3], np.random.default_rng(0).normal(size=(10, 64)), (1, 8, 8)) is not None
    plot_image_grid(axes[4], d["images"][:6], None, ncols=3, title="six")
    plot_loss_curves(axes[5], axes[5].twinx(), {"train_loss": [1.0, 0.5], "val_accuracy": [0.5, 0.8]})
    assert [len(ax.images) for ax in axes[:5]] == [1] * 5
    assert len(axes[1].texts) == 16 and axes[4].get_title() == "six"
    assert png_pixels(fig).std() > 0
    assert plt.get_fignums() == []


def test_confusion_matrix_layout_is_reused_with_identical_pixels():
    """A study's trials draw one matrix each with the same class names: the first is laid out by
    constrained layout, the next reuse its placement and must look exactly as if laid out anew."""
    import mlproject.figures as figures

    rng = np.random.default_rng(0)
    names = [f"class {k}" for k in range(7)]
    first, second = rng.integers(0, 60, (7, 7)), rng.integers(0, 60, (7, 7))
    figures._cm_positions.clear()
    png_pixels(confusion_matrix_figure(first, names))
    assert len(figures._cm_positions) == 1
    reused = png_pixels(confusion_matrix_figure(second, names))
    figures._cm_positions.clear()
    fresh = png_pixels(confusion_matrix_figure(second, names))
    assert reused.shape == fresh.shape and np.array_equal(reused, fresh)
    # counts with more digits widen the colorbar's labels: a layout of its own
    png_pixels(confusion_matrix_figure(first * 100, names))
    assert len(figures._cm_positions) == 2
