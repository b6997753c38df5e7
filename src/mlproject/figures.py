"""
Plotting and data helpers that turn training results into artifacts.

Every function returns a matplotlib Figure (or plain JSON/CSV-able data); the
caller decides where it goes, e.g.

    fig = confusion_matrix_figure(cm, class_names)
    mlflow.log_figure(fig, "confusion_matrix.png")
    mlflow.log_dict(confusion_matrix_data(cm, class_names), "confusion_matrix.json")

This module deliberately does not import mlflow, and never touches pyplot:
figures are built from matplotlib.figure.Figure directly, so no GUI backend is
selected, nothing is registered in pyplot's global figure list, and callers do
not need to close anything (the figure is garbage collected like any object).

Image arrays everywhere are uint8, shaped (N, C, H, W) with C in {1, 3}, i.e.
the torch layout; pass `tensor.detach().cpu().numpy()` for weights.

Speed: these figures are drawn for every training run, so they are built to be cheap to draw
(most of the cost is in savefig, not in building; see benchmarks/bench_figures.py):
- no layout engine (constrained layout measured every text several times): margins, title and
  axis-label positions are computed here from the label lengths;
- image grids are ONE montage array shown by ONE imshow on ONE axes (an axes per tile cost
  ~10-30 ms each to create and draw), the tile frames one collection;
- many small texts (tile titles, confusion-matrix counts) are ONE _TextCollection of cached
  glyph outlines: matplotlib 3.11's Agg lays out and renders every glyph of a Text separately
  in Python (~0.1 ms per glyph), which made text the largest remaining cost. Titles, axis labels
  and tick labels stay ordinary Text.
"""

import csv
import functools
import io
import math

import numpy as np
from matplotlib.collections import PathCollection, PolyCollection
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.path import Path
from matplotlib.textpath import TextPath, text_to_path
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import Affine2D

__all__ = [
    "confusion_matrix_figure",
    "confusion_matrix_data",
    "confusion_matrix_csv",
    "image_grid_figure",
    "samples_per_class_figure",
    "misclassified_figure",
    "first_layer_figure",
    "loss_curves_figure",
    "per_class_accuracy",
]

MAX_TILES = 64          # first_layer_figure never draws more tiles than this
CM_MAX_CELL_TEXT = 30   # above this many classes the per-cell counts are unreadable

# -----------------------------------------------------------------------------
# layout helpers (no renderer: sizes are estimated from the strings)

_PT = 1 / 72  # inches per point


def _text_width_in(s, fontsize):
    """Generous estimate of the rendered width (inches) of the widest line of `s` in DejaVu Sans:
    ~0.62 em per lowercase letter / digit, ~0.75 em for capitals. Only used for margins."""
    widest = 0.0
    for line in str(s).split("\n"):
        widest = max(widest, sum(0.75 if ch.isupper() else 0.62 for ch in line))
    return widest * fontsize * _PT


def _max_text_width_in(strings, fontsize):
    return max((_text_width_in(s, fontsize) for s in strings), default=0.0)


# -----------------------------------------------------------------------------
# many small texts, drawn cheaply

LINE_SPACING = 1.2  # baseline to baseline, in font sizes (what Text uses for DejaVu Sans)


@functools.lru_cache(maxsize=64)
def _font_metrics(fontsize):
    """(ascent, descent) in points of the default font at `fontsize`, as Text measures them ("lp")."""
    _, h, d = text_to_path.get_text_width_height_descent("lp", FontProperties(size=fontsize), ismath=False)
    return h - d, d


@functools.lru_cache(maxsize=4096)
def _line_outline(line, fontsize):
    """Glyph outlines of one line of text in points, baseline at y=0, ink centred on x=0."""
    if not line:
        return np.zeros((0, 2)), np.zeros(0, dtype=Path.code_type)
    tp = TextPath((0, 0), line, size=fontsize, prop=FontProperties(size=fontsize))
    v = tp.vertices.copy()
    if len(v):
        v[:, 0] -= (v[:, 0].min() + v[:, 0].max()) / 2
    return v, tp.codes.copy()


@functools.lru_cache(maxsize=4096)
def _text_outline(text, fontsize, ha, va, dy):
    """Path (in points, y up) of a possibly multi-line text anchored at (0, 0) like
    Text(ha=ha, va=va) would be, moved up by dy points; lines are centred on each other."""
    lines = text.split("\n")
    ascent, descent = _font_metrics(fontsize)
    pitch = LINE_SPACING * fontsize
    block = (len(lines) - 1) * pitch + ascent + descent
    # baseline of the last line, relative to the anchor
    base = {"bottom": descent, "center": descent - block / 2, "top": descent - block}[va] + dy
    verts, codes = [], []
    for k, line in enumerate(lines):
        v, c = _line_outline(line, fontsize)
        if len(v):
            verts.append(v + (0.0, base + (len(lines) - 1 - k) * pitch))
            codes.append(c)
    if not verts:
        return Path(np.zeros((1, 2)), [Path.MOVETO])
    v = np.concatenate(verts)
    if ha != "center":
        half = (v[:, 0].max() - v[:, 0].min()) / 2
        v = v + ((half if ha == "left" else -half), 0.0)
    return Path(v, np.concatenate(codes), readonly=True)


class _TextCollection(PathCollection):
    """Many short texts (tile titles, confusion-matrix counts) drawn as ONE collection of glyph
    outlines: Text renders every glyph separately (~0.1 ms each with matplotlib 3.11's Agg), so 64
    two-line titles cost ~100+ ms as Text objects and a few ms this way. The outlines of each line
    are cached, so repeated strings (class names, counts) are laid out once per process.

    Text i is `get_texts()[i]` at `get_offsets()[i]` (coordinates of `offset_transform`, e.g.
    ax.transData), anchored like Text(ha=ha, va=va) and `dy` points higher, in colour
    `get_facecolors()[i]` (or the only one). Sizes are in points, so it scales with the dpi."""

    def __init__(self, texts, offsets, offset_transform, figure, fontsize,
                 ha="center", va="center", dy=0.0, colors="black"):
        self._texts = [str(t) for t in texts]
        self._fontsize = float(fontsize)
        paths = [_text_outline(t, self._fontsize, ha, va, float(dy)) for t in self._texts]
        super().__init__(paths, offsets=np.asarray(offsets, dtype=float).reshape(-1, 2),
                         offset_transform=offset_transform,
                         transform=Affine2D().scale(1 / 72) + figure.dpi_scale_trans,
                         facecolors=colors, edgecolors="none", linewidths=0)
        self.set_clip_on(False)

    def get_texts(self):
        return list(self._texts)

    def get_fontsize(self):
        return self._fontsize


def _add_texts(ax, texts, positions, fontsize, **kwargs):
    """Add a _TextCollection of `texts` at data `positions` to ax and return it."""
    coll = _TextCollection(texts, positions, ax.transData, ax.get_figure(root=True), fontsize, **kwargs)
    ax.add_collection(coll, autolim=False)
    coll.set_clip_on(False)
    return coll


# -----------------------------------------------------------------------------
# confusion matrix

def _check_cm(cm, class_names):
    cm = np.asarray(cm)
    n = len(class_names)
    if cm.shape != (n, n):
        raise ValueError(f"confusion matrix shape {cm.shape} does not match {n} class names")
    return cm

def _is_integral(cm):
    return np.issubdtype(cm.dtype, np.integer) or bool(np.all(np.mod(cm, 1) == 0))

def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """Recall of every class: cm[i, i] / cm[i, :].sum(), rows = true label.
    A class with no samples gets 0.0 (not NaN), so the result can be logged as metrics."""
    cm = np.asarray(cm, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"expected a square confusion matrix, got shape {cm.shape}")
    support = cm.sum(axis=1)
    # where=... leaves the 0.0 from `out` for empty rows instead of dividing by zero
    return np.divide(np.diag(cm), support, out=np.zeros(len(cm)), where=support > 0)

def confusion_matrix_figure(cm: np.ndarray, class_names: list[str]) -> Figure:
    """Labelled confusion matrix: rows = true label, columns = predicted label.
    Counts are written in every cell for up to 30 classes; the figure grows with
    the number of classes. Works for raw counts and for normalised (float) matrices.

    fig.axes = [matrix, colorbar]; class names are the matrix's x and y tick labels. The counts
    are one _TextCollection in the matrix axes' collections: get_texts() in row-major order,
    get_offsets() (x=column, y=row), white on dark cells and black on light ones (face colours)."""
    cm = _check_cm(cm, class_names)
    n = len(class_names)
    show_counts = n <= CM_MAX_CELL_TEXT
    # cells must be big enough to hold a number when counts are shown; without them
    # 0.22 in per class keeps 100 class names (6 pt) legible on the axes
    cell = 0.45 if show_counts else 0.22
    fontsize = 10 if n <= 10 else 8 if n <= CM_MAX_CELL_TEXT else 6
    names = [str(c) for c in class_names]
    # long or many names collide horizontally; rotated and right-anchored they stay under their column
    rotate = n > 6 or max((len(s) for s in names), default=0) * n > 40
    integral = _is_integral(cm)

    # margins (inches) from the label lengths, instead of a layout engine
    label_w = _max_text_width_in(names, fontsize)
    tick = 7 * _PT                          # tick length + pad
    axis_label = (10 * 1.4 + 6) * _PT       # "true label" / "predicted label" line + its pad
    if rotate:
        # 45 degrees, anchored at the tick: the text's box reaches down (and left) by w/sqrt(2)
        xlab_h = (label_w + fontsize * _PT) * math.sqrt(0.5)
    else:
        xlab_h = fontsize * 1.4 * _PT
    left = 0.15 + axis_label + tick + max(label_w, xlab_h if rotate else 0.0)
    bottom = 0.1 + axis_label + tick + xlab_h
    top = 0.45                              # title
    vmax = float(np.nanmax(np.abs(cm))) if cm.size else 1.0
    vmax = vmax if math.isfinite(vmax) else 1.0
    cbar_digits = len(str(int(vmax))) + (0 if integral else 2) + (1 if cm.size and cm.min() < 0 else 0)
    cbar_pad, cbar_w = 0.15, 0.2
    right = cbar_pad + cbar_w + tick + _text_width_in("0" * cbar_digits, 10) + 0.15
    # the matrix: square cells, at least 3.5 in so a 2-class matrix is not a postage stamp
    side = max(3.5, n * cell)
    fw, fh = left + side + right, bottom + side + top

    fig = Figure(figsize=(fw, fh), layout=None)
    ax = fig.add_axes((left / fw, bottom / fh, side / fw, side / fh))
    im = ax.imshow(cm, cmap="Blues", interpolation="nearest")
    cax = fig.add_axes(((left + side + cbar_pad) / fw, bottom / fh, cbar_w / fw, side / fh))
    # ~5 colorbar ticks instead of ~9: every tick is a handful of artists to create and draw
    fig.colorbar(im, cax=cax, ticks=MaxNLocator(nbins=5))

    total = cm.sum()
    acc = np.trace(cm) / total if total > 0 else 0.0
    # fixed title / axis label positions: left to matplotlib they are found by measuring every
    # tick label at draw time; the margins above already know where they go
    ax.set_title(f"confusion matrix (accuracy {acc:.3f})", y=1.0)
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    ax.xaxis.set_label_coords(0.5, -(tick + xlab_h + 4 * _PT) / side)
    ax.yaxis.set_label_coords(-(tick + label_w + 4 * _PT) / side, 0.5)
    ticks = np.arange(n)
    if rotate:
        ax.set_xticks(ticks, names, fontsize=fontsize, rotation=45, ha="right", rotation_mode="anchor")
    else:
        ax.set_xticks(ticks, names, fontsize=fontsize)
    ax.set_yticks(ticks, names, fontsize=fontsize)

    if show_counts and n:
        # black/white from the luminance of the actual cell colour (stays right for any colormap
        # and value range); one vectorised colormap lookup instead of one per cell
        rgba = im.cmap(im.norm(cm.astype(np.float64)))
        dark = (0.299 * rgba[..., 0] + 0.587 * rgba[..., 1] + 0.114 * rgba[..., 2]) < 0.5
        values = cm.ravel().tolist()
        texts = [f"{int(v)}" for v in values] if integral else [f"{v:.2f}" for v in values]
        jj, ii = np.meshgrid(np.arange(n), np.arange(n))
        # cell (i, j) at x=j, y=i, row-major; one text collection (see _TextCollection), not n*n Texts
        _add_texts(ax, texts, np.stack([jj.ravel(), ii.ravel()], axis=1), fontsize, ha="center", va="center",
                   colors=np.where(dark.ravel(), "white", "black").tolist())
    return fig

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
    """CSV text: header `true\\pred,<names...>`, then one row per true class
    `<name>,<counts...>`. Read back with csv.reader (names with commas are quoted)."""
    data = confusion_matrix_data(cm, class_names)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["true\\pred", *data["class_names"]])
    for name, row in zip(data["class_names"], data["matrix"]):
        w.writerow([name, *row])
    return buf.getvalue()

# -----------------------------------------------------------------------------
# image grids

TILE_IN = 0.8         # displayed size of the longer side of one tile, inches (old grids: ~1.1)
TILE_GAP_IN = 0.12    # horizontal gap between tiles, inches
TITLE_FONTSIZE = 7
FIG_MARGIN_IN = 0.1


def _check_images(images):
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images shaped (N, C, H, W) with C in {{1, 3}}, got {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {images.dtype}")
    return images

def _interpolation(h, w):
    # tiny images (8x8 digits) get smeared by smoothing; larger ones alias without it
    return "nearest" if max(h, w) < 64 else "antialiased"

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
    interp = _interpolation(h, w)
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

def _empty_figure(title=None):
    fig = Figure(figsize=(4, 2))
    fig.text(0.5, 0.5, "no images", ha="center", va="center")
    if title:
        fig.suptitle(title)
    return fig

def _suptitle(fig, title, fh):
    # pinned 0.08 in below the top edge: the default y=0.98 drifts into the tiles of a tall figure
    fig.suptitle(title, y=1 - 0.08 / fh, va="top")

def image_grid_figure(images: np.ndarray, titles: list[str] | None, ncols: int = 8,
                      title: str | None = None) -> Figure:
    """Grid of images, each tile framed (no ticks) with its small title above it.
    images: uint8 (N, C, H, W), C in {1, 3}; titles: N strings (may contain one "\\n") or None.
    N == 0 gives a figure saying "no images".

    Drawn as ONE image on ONE axes (`fig.axes[0].images[0]`): a montage of the tiles, row-major,
    ncols per row, white between them, every tile framed. The titles are one _TextCollection in
    that axes' collections: title k is its get_texts()[k], at get_offsets()[k] = (x, y) = (tile
    centre column, tile top edge) in montage pixels: tile k is montage[y + 0.5:, x - (W - 1) / 2:][:H, :W]."""
    images = _check_images(images)
    n = len(images)
    if titles is not None and len(titles) != n:
        raise ValueError(f"got {len(titles)} titles for {n} images")
    if n == 0:
        return _empty_figure(title)
    titles = None if titles is None else [str(t) for t in titles]
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    _, _, h, w = images.shape
    px = TILE_IN / max(h, w)  # inches per image pixel
    # room above every row for the (possibly two-line) titles, and between tiles for their width
    lines = max(t.count("\n") + 1 for t in titles) if titles else 0
    title_w = _max_text_width_in(titles, TITLE_FONTSIZE) if titles else 0.0
    vgap = max(1, round(TILE_GAP_IN / px))
    gap = max(vgap, round((title_w - w * px + 0.06) / px))
    band = max(vgap, math.ceil((lines * TITLE_FONTSIZE * 1.25 * _PT + 0.05) / px)) if lines else vgap
    montage, x0, y0 = _montage(images, np.arange(n), nrows, ncols, band, gap)

    mh, mw = montage.shape[:2]
    top = 0.4 if title else FIG_MARGIN_IN
    fw, fh = mw * px + 2 * FIG_MARGIN_IN, mh * px + top + FIG_MARGIN_IN
    fig = Figure(figsize=(fw, fh), layout=None)
    ax = fig.add_axes((FIG_MARGIN_IN / fw, FIG_MARGIN_IN / fh, mw * px / fw, mh * px / fh))
    ax.set_axis_off()
    _show_montage(ax, montage, x0, y0, h, w)
    if titles is not None:
        # centred over the tile, 1.5 pt above its top edge
        _add_texts(ax, titles, np.stack([x0 + (w - 1) / 2, y0 - 0.5], axis=1), TITLE_FONTSIZE,
                   ha="center", va="bottom", dy=1.5)
    if title:
        _suptitle(fig, title, fh)
    return fig

def samples_per_class_figure(images: np.ndarray, labels: np.ndarray, class_names: list[str],
                             per_class: int = 5) -> Figure:
    """One row per class with the first `per_class` images of that class, in dataset order.
    labels are integer class indices into class_names.

    Drawn as ONE montage image on ONE axes (row r = class r, `per_class` cells per row, white
    where a class has fewer images); the class names are that axes' y tick labels, at the row
    centres; a class without any image gets the text "no samples" in its row."""
    images = _check_images(images)
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(images):
        raise ValueError(f"got {len(labels)} labels for {len(images)} images")
    nrows, ncols = len(class_names), max(1, per_class)
    names = [str(c) for c in class_names]
    suptitle = f"{per_class} samples per class"
    if nrows == 0:
        fig = Figure(figsize=(1.1 * ncols + 1.2, 0.4))
        fig.suptitle(suptitle)
        return fig
    # first per_class indices of every class in dataset order: one stable sort, not a pass per class
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    starts = np.searchsorted(sorted_labels, np.arange(nrows), side="left")
    ends = np.searchsorted(sorted_labels, np.arange(nrows), side="right")
    picked, cells = [], []
    for r in range(nrows):
        idx = order[starts[r]:min(ends[r], starts[r] + max(per_class, 0))]
        picked.append(idx)
        cells.append(r * ncols + np.arange(len(idx)))
    picked, cells = np.concatenate(picked), np.concatenate(cells)

    _, c, h, w = images.shape
    # many classes: smaller rows, so 100 classes stay under 30 inches (the old 1.1 in rows: 110 in)
    tile_in = min(TILE_IN, max(0.25, 24.0 / nrows))
    px = tile_in / max(h, w)
    gap = max(1, round(min(0.1, 0.15 * tile_in) / px))
    montage, x0, y0 = _montage(images[picked], cells, nrows, ncols, gap, gap)
    mh, mw = montage.shape[:2]
    pitch = (h + gap) * px                     # row pitch, inches
    fontsize = min(9.0, pitch / _PT * 0.6)
    left = FIG_MARGIN_IN + _max_text_width_in(names, fontsize) + 6 * _PT
    top = 0.4
    fw, fh = left + mw * px + FIG_MARGIN_IN, mh * px + top + FIG_MARGIN_IN
    fig = Figure(figsize=(fw, fh), layout=None)
    ax = fig.add_axes((left / fw, FIG_MARGIN_IN / fh, mw * px / fw, mh * px / fh))
    ax.set_frame_on(False)
    ax.tick_params(axis="y", length=0, pad=4)  # before the ticks exist: nothing to update
    ax.set_xticks([])
    if len(picked):
        _show_montage(ax, montage, x0, y0, h, w)
    else:
        # nothing to show at all: keep the rows (and their labels) with an invisible image
        ax.imshow(montage, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    row_centres = np.arange(nrows) * (h + gap) + gap + (h - 1) / 2
    ax.set_yticks(row_centres, names, fontsize=fontsize)
    # keep the row labelled and marked so a class missing from the data is visible, not silently dropped
    counts = np.minimum(ends - starts, max(per_class, 0))
    marker_fs = min(7.0, fontsize)
    # centred in the (empty) row, or left-aligned where the row is too short: never over the class name
    centred = _text_width_in("no samples", marker_fs) <= mw * px
    for r in np.flatnonzero(counts == 0).tolist():
        ax.text((mw - 1) / 2 if centred else gap // 2 - 0.5, row_centres[r], "no samples",
                ha="center" if centred else "left", va="center", fontsize=marker_fs)
    _suptitle(fig, suptitle, fh)
    return fig

def misclassified_figure(images: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray,
                         class_names: list[str], max_images: int = 64) -> Figure:
    """Grid of the first `max_images` misclassified images, each titled
    "true: <name>\\npred: <name>". With no mistakes it returns the "no images" figure."""
    images = _check_images(images)
    y_true, y_pred = np.asarray(y_true).reshape(-1), np.asarray(y_pred).reshape(-1)
    if not (len(images) == len(y_true) == len(y_pred)):
        raise ValueError(f"length mismatch: {len(images)} images, {len(y_true)} y_true, {len(y_pred)} y_pred")
    wrong = np.flatnonzero(y_true != y_pred)
    shown = wrong[:max_images]
    titles = [f"true: {class_names[y_true[k]]}\npred: {class_names[y_pred[k]]}" for k in shown]
    return image_grid_figure(images[shown], titles,
                             title=f"misclassified: {len(shown)} shown of {len(wrong)}")

# -----------------------------------------------------------------------------
# weights

def _to_uint8(x):
    """Min-max normalise every tile x[k] (any shape after the first axis) to 0..255, each on its own;
    a constant tile becomes all zeros."""
    x = x.astype(np.float64)
    axes = tuple(range(1, x.ndim))
    lo, hi = x.min(axis=axes, keepdims=True), x.max(axis=axes, keepdims=True)
    flat = hi <= lo
    out = np.round((x - lo) / np.where(flat, 1.0, hi - lo) * 255)
    return np.where(flat, 0, out).astype(np.uint8)

def first_layer_figure(weight: np.ndarray, in_shape: tuple[int, int, int] | None = None) -> Figure | None:
    """Visualise first-layer weights, one tile per output unit (at most 64), each min-max normalised.
    conv weight (out, in, kh, kw): RGB tiles when in == 3, else the channel mean in gray.
    linear weight (out, in_features) with in_shape=(C, H, W), C*H*W == in_features: every row
    reshaped to an image (the templates of a softmax classifier).
    Returns None when the weight cannot be shown as images (wrong shape / no in_shape).
    The tiles are titled with their unit index (see image_grid_figure for the figure's structure)."""
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
    return image_grid_figure(tiles, [str(i) for i in range(len(tiles))],
                             title=f"first layer weights ({kind})")

# -----------------------------------------------------------------------------
# training curves

def loss_curves_figure(history: dict[str, list[float]]) -> Figure:
    """Two side-by-side axes against epoch 1..n: losses ("train_loss", "val_loss") and
    accuracies ("train_accuracy", "val_accuracy"). Missing or empty keys are skipped."""
    fw, fh = 10.0, 4.0
    bottom, top, right = 0.55, 0.35, 0.2   # inches
    fig = Figure(figsize=(fw, fh), layout=None)
    ax_loss, ax_acc = fig.subplots(1, 2)
    ytick_w = 0.0
    for ax, keys, ylabel in ((ax_loss, ("train_loss", "val_loss"), "loss"),
                             (ax_acc, ("train_accuracy", "val_accuracy"), "accuracy")):
        for key in keys:
            values = history.get(key)
            if not values:
                continue
            epochs = np.arange(1, len(values) + 1)
            ax.plot(epochs, values, marker="o" if len(values) <= 30 else None,
                    markersize=3, label=key.replace("_", " "))
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(ylabel, y=1.0)  # fixed position: no measuring of the tick labels at draw time
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
        else:
            # an empty legend() would warn; say plainly that nothing was recorded
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        # the y tick labels decide the left margin / the gap between the axes: format them now
        # (cheap, no renderer) instead of measuring them with a layout engine
        lo, hi = ax.get_ylim()
        locs = [v for v in ax.yaxis.get_major_locator().tick_values(lo, hi) if lo <= v <= hi]
        ytick_w = max(ytick_w, _max_text_width_in(ax.yaxis.get_major_formatter().format_ticks(locs), 10))
    side = 0.15 + (10 * 1.4 + 4) * _PT + 7 * _PT + ytick_w   # edge + ylabel + ticks + tick labels
    gap = side + 0.1
    axw, axh = (fw - side - right - gap) / 2, fh - bottom - top
    fig.subplots_adjust(left=side / fw, right=1 - right / fw, bottom=bottom / fh, top=1 - top / fh,
                        wspace=gap / axw)
    for ax in (ax_loss, ax_acc):
        # axis labels at fixed positions too (same place matplotlib would find by measuring)
        ax.xaxis.set_label_coords(0.5, -(7 + 10 * 1.2 + 4) * _PT / axh)
        ax.yaxis.set_label_coords(-(7 * _PT + ytick_w + 4 * _PT) / axw, 0.5)
    return fig
