"""
Figures of a training run, and the confusion matrix as data.

Two layers, so a report page can compose figures directly:
- `plot_*(ax, ...)` draw onto Axes the caller gives (mlproject.app.report puts one confusion
  matrix per run on one page);
- `*_figure(...)` create a Figure sized for one plot and call its plot_* function; tracking.record
  logs these, e.g.

    mlflow.log_figure(confusion_matrix_figure(cm, class_names), "test/confusion_matrix.png")
    mlflow.log_dict(confusion_matrix_data(cm, class_names), "test/confusion_matrix.json")

No pyplot: Figures are matplotlib.figure.Figure objects on an Agg canvas, so no GUI backend is
selected, nothing enters pyplot's figure list and nothing needs closing. matplotlib's constrained
layout (once per figure: see _laid_out) places titles, labels and colorbars; scikit-learn's
ConfusionMatrixDisplay draws the matrix. This module does not import mlflow.

Image arrays everywhere are uint8, shaped (N, C, H, W) with C in {1, 3}, i.e. the torch layout;
pass `tensor.detach().cpu().numpy()` for weights. An image grid is ONE montage array shown by ONE
imshow (an Axes per tile cost ~10-30 ms each to create and draw), its tile titles ordinary Text.
"""

import math

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.textpath import text_to_path
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import offset_copy

from .metrics import curves
from sklearn.metrics import ConfusionMatrixDisplay

__all__ = [
    "plot_confusion_matrix", "confusion_matrix_figure", "confusion_matrix_figsize", "confusion_matrix_data",
    "confusion_matrix_csv",
    "plot_image_grid", "image_grid_figure", "plot_samples_per_class", "samples_per_class_figure",
    "plot_misclassified", "misclassified_figure", "plot_first_layer", "first_layer_figure",
    "plot_loss_curves", "loss_curves_figure",
]

MAX_TILES = 64          # first-layer figures never draw more tiles than this
CM_MAX_CELL_TEXT = 30   # above this many classes the per-cell counts are unreadable
TILE_IN = 0.8           # intended displayed size of the longer side of one tile, inches
TILE_GAP_IN = 0.12      # least gap between tiles, inches
TITLE_FONTSIZE = 7      # tile titles, points


def _figure(figsize) -> Figure:
    """A Figure on its own Agg canvas (not pyplot's), with "compressed" constrained layout: it also
    closes the gaps that fixed-aspect axes (a square matrix, a montage) leave beside them."""
    fig = Figure(figsize=figsize, layout="compressed")
    FigureCanvasAgg(fig)
    return fig


# savefig runs an extra, unrendered draw of every artist before the real one whenever a figure has
# a layout engine, for the engine to lay it out. Done once here instead, a 10-class confusion matrix
# (100 counts and 20 tick labels, all Text, laid out again in every draw) built and saved in ~70 %
# of the time: ~350 vs ~500 ms CPU on 2 loaded cores (benchmarks/bench_figures.py).
def _laid_out(fig: Figure) -> Figure:
    """fig laid out once, now, by its layout engine, which is then dropped (later changes to the
    figure are not laid out again)."""
    fig.get_layout_engine().execute(fig)
    fig.set_layout_engine(None)
    return fig


# -----------------------------------------------------------------------------
# confusion matrix

def _check_cm(cm, class_names):
    cm = np.asarray(cm)
    n = len(class_names)
    if cm.shape != (n, n):
        raise ValueError(f"confusion matrix shape {cm.shape} does not match {n} class names")
    return cm


def _integral(cm) -> bool:
    return np.issubdtype(cm.dtype, np.integer) or bool(np.all(np.mod(cm, 1) == 0))


def _cm_cell_in(n: int) -> float:
    """Intended side of one confusion-matrix cell, inches: 0.45 when counts are shown (a 4-digit
    count at 8-10 pt fits), 0.22 without (100 class names at 6 pt stay apart)."""
    return 0.45 if n <= CM_MAX_CELL_TEXT else 0.22


def plot_confusion_matrix(ax, cm: np.ndarray, class_names: list[str], title: str = "confusion matrix",
                          colorbar: bool = True) -> ConfusionMatrixDisplay:
    """Labelled confusion matrix on `ax` (rows = true label, columns = predicted label) by
    sklearn's ConfusionMatrixDisplay: counts in the cells for up to 30 classes (2 decimals for a
    normalised matrix), a colorbar right of it (an inset: `ax.child_axes[0]`), the class names as
    tick labels, and the title `title` with " (accuracy 0.xxx)" after its first line.
    Returns the display (`.im_`, `.text_`: the cell texts, None above 30 classes)."""
    cm = _check_cm(cm, class_names)
    n = len(class_names)
    names = [str(c) for c in class_names]
    integral = _integral(cm)
    fontsize = 10 if n <= 10 else 8 if n <= CM_MAX_CELL_TEXT else 6
    # names of more than 4 characters (2 with > 30 classes) are wider than their cell at that size:
    # rotated and anchored at their right end they stay under their own column
    longest = max((len(s) for s in names), default=0)
    rotate = longest > (4 if n <= CM_MAX_CELL_TEXT else 2)
    disp = ConfusionMatrixDisplay(cm.astype(np.int64) if integral else cm, display_labels=names).plot(
        ax=ax, include_values=n <= CM_MAX_CELL_TEXT, cmap="Blues", colorbar=False,
        values_format="d" if integral else ".2f", text_kw={"fontsize": fontsize},
        xticks_rotation=45 if rotate else "horizontal")
    if colorbar:
        # an inset beside the matrix: as high as the (square) matrix wherever the layout puts it, and
        # ~0.2 in wide and away at the intended cell size (fig.colorbar's default: 1/20 of its height,
        # 1.1 in at 100 classes)
        width = min(0.05, 0.2 / max(3.5, n * _cm_cell_in(n)))
        ax.figure.colorbar(disp.im_, cax=ax.inset_axes((1 + width, 0, width, 1)))
    if disp.text_ is not None:
        # the counts lie inside their cells: the layout need not measure n*n texts on every pass
        for text in disp.text_.flat:
            text.set_in_layout(False)
    if rotate:
        for label in ax.get_xticklabels():
            label.set(ha="right", rotation_mode="anchor")
    ax.tick_params(labelsize=fontsize)
    total = cm.sum()
    lines = str(title).split("\n")
    lines[0] += f" (accuracy {np.trace(cm) / total if total > 0 else 0.0:.3f})"
    ax.set_title("\n".join(lines))
    return disp


def confusion_matrix_figsize(n: int) -> tuple[float, float]:
    """Figure size (inches) for an n-class confusion matrix with its colorbar: square cells of
    _cm_cell_in(n), at least 3.5 in so 2 classes are not a postage stamp, plus room for tick
    labels, axis labels, title and colorbar (the layout engine places them)."""
    side = max(3.5, n * _cm_cell_in(n))
    return side + 2.4, side + 1.8


def confusion_matrix_figure(cm: np.ndarray, class_names: list[str]) -> Figure:
    """plot_confusion_matrix on a Figure of its own, growing with the number of classes.
    fig.axes = [matrix]; the colorbar is the matrix's inset, fig.axes[0].child_axes[0].

    Every trial of a study draws one, with the same class names: the constrained layout's
    placement of the matrix is computed for the first and reused (`_cm_positions`), as it depends
    only on the tick labels (class names, and the colorbar's, by the count's digits)."""
    # the layout pass was ~0.13 of ~0.45 s per figure on 2 loaded cores (cProfile), a study's
    # largest per-trial tracking cost (benchmarks/bench_speed.py)
    cm = _check_cm(cm, class_names)
    key = (tuple(str(c) for c in class_names), len(str(int(np.nanmax(np.abs(cm))))) if cm.size else 1,
           _integral(cm))
    size = confusion_matrix_figsize(len(class_names))
    if key in _cm_positions:
        fig = Figure(figsize=size)
        FigureCanvasAgg(fig)
        plot_confusion_matrix(fig.add_axes(_cm_positions[key]), cm, class_names)
        return fig
    fig = _figure(size)
    ax = fig.add_subplot()
    plot_confusion_matrix(ax, cm, class_names)
    _laid_out(fig)
    if len(_cm_positions) < 64:
        _cm_positions[key] = ax.get_position(original=True).bounds
    return fig


_cm_positions: dict[tuple, tuple[float, float, float, float]] = {}  # layout key -> the matrix axes' rect


def confusion_matrix_data(cm: np.ndarray, class_names: list[str]) -> dict:
    """JSON-serialisable {"class_names": [...], "matrix": [[int, ...], ...]} (rows true,
    cols predicted), e.g. for mlflow.log_dict, so runs can be compared later.
    Raises ValueError for a non-integral (normalised) matrix: store raw counts."""
    cm = _check_cm(cm, class_names)
    if not (np.issubdtype(cm.dtype, np.integer) or np.all(np.mod(cm, 1) == 0)):
        raise ValueError("confusion_matrix_data expects raw counts, got non-integral values")
    # tolist() turns numpy ints into python ints, which json can serialise
    return {"class_names": [str(c) for c in class_names], "matrix": cm.astype(np.int64).tolist()}


def confusion_matrix_csv(cm: np.ndarray, class_names: list[str]) -> str:
    """CSV text: header `true\\pred,<names...>`, then one row per true class `<name>,<counts...>`
    (names with commas are quoted). Raw counts only, as confusion_matrix_data."""
    data = confusion_matrix_data(cm, class_names)
    names = data["class_names"]
    return pd.DataFrame(data["matrix"], index=names, columns=names).to_csv(index_label="true\\pred")


# -----------------------------------------------------------------------------
# image grids

def _check_images(images):
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images shaped (N, C, H, W) with C in {{1, 3}}, got {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {images.dtype}")
    return images


def _check_titles(titles, n):
    if titles is not None and len(titles) != n:
        raise ValueError(f"got {len(titles)} titles for {n} images")
    return None if titles is None else [str(t) for t in titles]


def _titles_extent(titles, fontsize):
    """(widest line in inches, most lines) of the titles, measured by matplotlib's own font code."""
    prop = FontProperties(size=fontsize)
    lines = {line for t in titles for line in t.split("\n") if line}
    widths = [text_to_path.get_text_width_height_descent(line, prop, ismath=False)[0] for line in lines]
    return max(widths, default=0.0) / 72, max(t.count("\n") + 1 for t in titles)


def _grid_geometry(shape, titles, ncols, tile_in):
    """(nrows, ncols, band, gap, inches per pixel) of a montage of images `shape` (N, C, H, W):
    `band` image pixels above every tile hold its title, `gap` pixels between tiles its width,
    both sized for tiles displayed at `tile_in` inches (longer side)."""
    n, _, h, w = shape
    ncols = max(1, min(ncols, n))
    px = tile_in / max(h, w)
    gap = band = max(1, round(TILE_GAP_IN / px))
    if titles:
        width_in, lines = _titles_extent(titles, TITLE_FONTSIZE)
        gap = max(gap, math.ceil((width_in + 0.06) / px) - w)
        # a line of Text is ~1.4 font sizes high (DejaVu Sans ascent + descent 1.16 em, line spacing 1.2)
        band = max(band, math.ceil((lines * 1.4 * TITLE_FONTSIZE / 72 + 0.04) / px))
    return math.ceil(n / ncols), ncols, band, gap, px


def _montage(images, cells, nrows, ncols, band, gap, fill=255):
    """Place (N, C, H, W) uint8 images into one array: a grid of nrows x ncols cells, each
    (band + H) x (gap + W) pixels, image k in cell cells[k] = row * ncols + col, at the bottom of
    its cell (the band above it holds its title) and centred horizontally. Empty space is `fill`
    (white). Returns (montage, x0, y0): (rows, cols) gray or (rows, cols, 3) RGB, and the column /
    row of every image's top-left pixel."""
    n, c, h, w = images.shape
    ph, pw = band + h, gap + w
    grid = np.full((nrows * ncols, ph, pw, c), fill, dtype=np.uint8)
    grid[cells, band:, gap // 2:gap // 2 + w] = images.transpose(0, 2, 3, 1)
    montage = grid.reshape(nrows, ncols, ph, pw, c).transpose(0, 2, 1, 3, 4).reshape(nrows * ph, ncols * pw, c)
    cells = np.asarray(cells)
    return (montage[..., 0] if c == 1 else montage), cells % ncols * pw + gap // 2, cells // ncols * ph + band


def _show_montage(ax, montage, x0, y0, h, w):
    """One imshow of the whole montage (gray: cmap "gray" on a fixed 0..255 range, so the real
    intensities show, not a per-image contrast stretch; RGB as RGB), plus a thin black frame
    around every tile, all frames in one collection."""
    # tiny images (8x8 digits) get smeared by smoothing; larger ones alias without it
    interp = "nearest" if max(h, w) < 64 else "antialiased"
    if montage.ndim == 2:
        im = ax.imshow(montage, cmap="gray", vmin=0, vmax=255, interpolation=interp)
    else:
        im = ax.imshow(montage, interpolation=interp)
    left, top = np.asarray(x0) - 0.5, np.asarray(y0) - 0.5
    verts = np.stack([np.stack([left, top], -1), np.stack([left + w, top], -1),
                      np.stack([left + w, top + h], -1), np.stack([left, top + h], -1)], axis=1)
    frames = PolyCollection(verts, facecolors="none", edgecolors="black", linewidths=0.6)
    ax.add_collection(frames, autolim=False)
    frames.set_clip_on(False)  # the last row's bottom edges lie on the axes' edge
    return im


def plot_image_grid(ax, images: np.ndarray, titles: list[str] | None, ncols: int = 8,
                    title: str | None = None, tile_in: float = TILE_IN):
    """Grid of images on `ax`, row-major, `ncols` per row, each tile framed with its small title
    (Text at TITLE_FONTSIZE, may hold "\\n") above it; `title` is the axes title.
    images: uint8 (N, C, H, W), C in {1, 3}; titles: N strings or None. The room between tiles is
    made for the titles at tiles `tile_in` inches large, the size image_grid_figure gives them.

    Drawn as ONE image (`ax.images[0]`, returned): a montage of the tiles on white; title k is
    ax.texts[k], at (tile centre column, tile top edge) in montage pixels. N == 0 says "no images"
    (ax.texts[0]) and returns None."""
    images = _check_images(images)
    titles = _check_titles(titles, len(images))
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    if len(images) == 0:
        ax.text(0.5, 0.5, "no images", ha="center", va="center", transform=ax.transAxes)
        return None
    _, _, h, w = images.shape
    nrows, ncols, band, gap, _ = _grid_geometry(images.shape, titles, ncols, tile_in)
    montage, x0, y0 = _montage(images, np.arange(len(images)), nrows, ncols, band, gap)
    im = _show_montage(ax, montage, x0, y0, h, w)
    if titles is not None:
        above = offset_copy(ax.transData, fig=ax.figure, y=1.5, units="points")  # 1.5 pt above the frame
        for t, x, y in zip(titles, x0 + (w - 1) / 2, y0 - 0.5):
            # inside the montage by construction: no need for the layout to measure them
            ax.text(x, y, t, ha="center", va="bottom", fontsize=TITLE_FONTSIZE, transform=above, in_layout=False)
    return im


def image_grid_figure(images: np.ndarray, titles: list[str] | None, ncols: int = 8,
                      title: str | None = None, tile_in: float = TILE_IN) -> Figure:
    """plot_image_grid on a Figure of its own, sized so the tiles are `tile_in` inches large."""
    images = _check_images(images)
    titles = _check_titles(titles, len(images))
    if len(images) == 0:
        fig = _figure((4, 2))
    else:
        _, _, h, w = images.shape
        nrows, cols, band, gap, px = _grid_geometry(images.shape, titles, ncols, tile_in)
        fig = _figure((cols * (w + gap) * px + 0.2, nrows * (h + band) * px + (0.45 if title else 0.2)))
    plot_image_grid(fig.add_subplot(), images, titles, ncols, title, tile_in)
    return _laid_out(fig)


def _samples_tile_in(nclasses):
    """(tile, gap) in inches of a samples-per-class row: many classes get smaller rows, so 100
    classes stay under 30 inches (TILE_IN rows: 90 in)."""
    tile_in = min(TILE_IN, max(0.25, 24.0 / max(nclasses, 1)))
    return tile_in, min(0.1, 0.15 * tile_in)


def _first_per_class(labels, nclasses, per_class):
    """(indices, cells, counts): the first `per_class` indices of every class in dataset order,
    their montage cells (row = class) and how many every class got."""
    # one stable sort, not a pass per class
    order = np.argsort(labels, kind="stable")
    starts = np.searchsorted(labels[order], np.arange(nclasses), side="left")
    ends = np.searchsorted(labels[order], np.arange(nclasses), side="right")
    counts = np.minimum(ends - starts, per_class)
    picked = [order[s:s + k] for s, k in zip(starts, counts)]
    cells = [r * per_class + np.arange(k) for r, k in enumerate(counts)]
    return np.concatenate(picked).astype(np.intp), np.concatenate(cells).astype(np.intp), counts


def plot_samples_per_class(ax, images: np.ndarray, labels: np.ndarray, class_names: list[str],
                           per_class: int = 5, tile_in: float | None = None):
    """One row per class with its first `per_class` images, in dataset order; labels are integer
    class indices into class_names. ONE montage image (white where a class has fewer images); the
    class names are the y tick labels at the row centres; a class without images gets the text
    "no samples" in its row. `tile_in`: the rows' intended height (default: smaller for many classes)."""
    images = _check_images(images)
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(images):
        raise ValueError(f"got {len(labels)} labels for {len(images)} images")
    nrows, per_class = len(class_names), max(1, per_class)
    ax.set_title(f"{per_class} samples per class")
    ax.set_frame_on(False)
    ax.set_xticks([])
    if nrows == 0:
        ax.set_yticks([])
        return None
    picked, cells, counts = _first_per_class(labels, nrows, per_class)
    _, _, h, w = images.shape
    tile_in, gap_in = _samples_tile_in(nrows) if tile_in is None else (tile_in, min(0.1, 0.15 * tile_in))
    px = tile_in / max(h, w)
    gap = max(1, round(gap_in / px))
    montage, x0, y0 = _montage(images[picked], cells, nrows, per_class, gap, gap)
    if len(picked):
        im = _show_montage(ax, montage, x0, y0, h, w)
    else:  # nothing to show at all: keep the rows (and their labels) with a blank image
        im = ax.imshow(montage, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    row_centres = np.arange(nrows) * (h + gap) + gap + (h - 1) / 2
    # names at most 60 % of the row pitch high (in points), so neighbouring rows' names stay apart
    fontsize = min(9.0, (h + gap) * px * 72 * 0.6)
    ax.tick_params(axis="y", length=0, pad=4)
    ax.set_yticks(row_centres, [str(c) for c in class_names], fontsize=fontsize)
    # the row stays labelled and marked, so a class missing from the data is visible, not dropped
    for r in np.flatnonzero(counts == 0).tolist():
        ax.text(gap // 2 - 0.5, row_centres[r], "no samples", ha="left", va="center", fontsize=min(7.0, fontsize))
    return im


def samples_per_class_figure(images: np.ndarray, labels: np.ndarray, class_names: list[str],
                             per_class: int = 5) -> Figure:
    """plot_samples_per_class on a Figure of its own: rows of at most TILE_IN inches, 100 classes
    under 30 inches high."""
    images = _check_images(images)
    n, per_class = len(class_names), max(1, per_class)
    tile_in, gap_in = _samples_tile_in(n)
    # room for the class names on the left and the title on top
    fig = _figure((per_class * (tile_in + gap_in) + 1.2, n * (tile_in + gap_in) + 0.6))
    plot_samples_per_class(fig.add_subplot(), images, labels, class_names, per_class, tile_in)
    return _laid_out(fig)


def _misclassified(images, y_true, y_pred, class_names, max_images):
    """(images, titles, title) of the first `max_images` misclassified images."""
    images = _check_images(images)
    y_true, y_pred = np.asarray(y_true).reshape(-1), np.asarray(y_pred).reshape(-1)
    if not (len(images) == len(y_true) == len(y_pred)):
        raise ValueError(f"length mismatch: {len(images)} images, {len(y_true)} y_true, {len(y_pred)} y_pred")
    wrong = np.flatnonzero(y_true != y_pred)
    shown = wrong[:max_images]
    titles = [f"true: {class_names[y_true[k]]}\npred: {class_names[y_pred[k]]}" for k in shown]
    return images[shown], titles, f"misclassified: {len(shown)} shown of {len(wrong)}"


def plot_misclassified(ax, images: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray,
                       class_names: list[str], max_images: int = 64):
    """plot_image_grid of the first `max_images` misclassified images, each titled
    "true: <name>\\npred: <name>", the axes titled "misclassified: <shown> shown of <wrong>"."""
    shown, titles, title = _misclassified(images, y_true, y_pred, class_names, max_images)
    return plot_image_grid(ax, shown, titles, title=title)


def misclassified_figure(images: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray,
                         class_names: list[str], max_images: int = 64) -> Figure:
    """plot_misclassified on a Figure of its own ("no images" when nothing is wrong)."""
    shown, titles, title = _misclassified(images, y_true, y_pred, class_names, max_images)
    return image_grid_figure(shown, titles, title=title)


# -----------------------------------------------------------------------------
# weights

def _to_uint8(x):
    """Min-max normalise every tile x[k] (any shape after the first axis) to 0..255, each on its own;
    a constant tile becomes all zeros. (torchvision's make_grid(normalize=True, scale_each=True)
    does the same but returns one joined image: each tile here gets its own axes and title.)"""
    x = x.astype(np.float64)
    axes = tuple(range(1, x.ndim))
    lo, hi = x.min(axis=axes, keepdims=True), x.max(axis=axes, keepdims=True)
    flat = hi <= lo
    out = np.round((x - lo) / np.where(flat, 1.0, hi - lo) * 255)
    return np.where(flat, 0, out).astype(np.uint8)


def _weight_tiles(weight, in_shape):
    """(tiles, titles, title) of first-layer weights, or None when they cannot be shown as images."""
    w = np.asarray(weight)
    shape = w.shape
    if w.ndim == 2:
        if in_shape is None or len(in_shape) != 3 or int(np.prod(in_shape)) != w.shape[1]:
            return None
        w = w.reshape(w.shape[0], *in_shape)
        kind = f"linear {shape[1]} -> {shape[0]}, rows as {tuple(in_shape)}"
    elif w.ndim == 4:
        kind = f"conv {w.shape[1]} -> {w.shape[0]}, {w.shape[2]}x{w.shape[3]} kernels"
    else:
        return None
    w = w[:MAX_TILES]
    if w.shape[1] != 3:
        # no faithful way to colour an arbitrary channel count: average it into one gray image
        w = w.mean(axis=1, keepdims=True)
    tiles = _to_uint8(w)
    return tiles, [str(i) for i in range(len(tiles))], f"first layer weights ({kind})"


def plot_first_layer(ax, weight: np.ndarray, in_shape: tuple[int, int, int] | None = None):
    """First-layer weights on `ax`, one tile per output unit (at most 64, titled with its index),
    each min-max normalised. conv weight (out, in, kh, kw): RGB tiles when in == 3, else the channel
    mean in gray. linear weight (out, in_features) with in_shape=(C, H, W), C*H*W == in_features:
    every row reshaped to an image (the templates of a softmax classifier).
    Returns the montage image, or None (nothing drawn) when the weight cannot be shown as images."""
    grid = _weight_tiles(weight, in_shape)
    return None if grid is None else plot_image_grid(ax, *grid[:2], title=grid[2])


def first_layer_figure(weight: np.ndarray, in_shape: tuple[int, int, int] | None = None) -> Figure | None:
    """plot_first_layer on a Figure of its own; None when the weight cannot be shown."""
    grid = _weight_tiles(weight, in_shape)
    return None if grid is None else image_grid_figure(*grid[:2], title=grid[2])


# -----------------------------------------------------------------------------
# training curves

def plot_loss_curves(ax_loss, ax_acc, series: dict[str, list[float]]) -> None:
    """The catalogue's curves (mlproject.metrics.curves: train and validation loss, then train and
    validation accuracy) from `series`, losses on ax_loss and accuracies on ax_acc, against epoch 1..n. Missing or empty keys are skipped; an axes
    with nothing to show says "no data"."""
    for ax, keys, ylabel in ((ax_loss, [n for n in curves() if n.endswith("_loss")], "loss"),
                             (ax_acc, [n for n in curves() if n.endswith("_accuracy")], "accuracy")):
        for key in keys:
            values = series.get(key)
            if not values:
                continue
            ax.plot(np.arange(1, len(values) + 1), values, marker="o" if len(values) <= 30 else None,
                    markersize=3, label=key.replace("_", " "))
        ax.set(xlabel="epoch", ylabel=ylabel, title=ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
        else:  # an empty legend() would warn; say plainly that nothing was recorded
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)


def loss_curves_figure(series: dict[str, list[float]]) -> Figure:
    """plot_loss_curves on a Figure of its own: two side-by-side axes, fig.axes = [loss, accuracy]."""
    fig = _figure((10.0, 4.0))
    plot_loss_curves(*fig.subplots(1, 2), series)
    return _laid_out(fig)
