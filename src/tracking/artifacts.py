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
"""

import csv
import io
import math

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

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
# confusion matrix

def _check_cm(cm, class_names):
    cm = np.asarray(cm)
    n = len(class_names)
    if cm.shape != (n, n):
        raise ValueError(f"confusion matrix shape {cm.shape} does not match {n} class names")
    return cm

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
    the number of classes. Works for raw counts and for normalised (float) matrices."""
    cm = _check_cm(cm, class_names)
    n = len(class_names)
    show_counts = n <= CM_MAX_CELL_TEXT
    # cells must be big enough to hold a number when counts are shown; without them
    # a quarter inch per class keeps 100 class names legible on the axes
    cell = 0.45 if show_counts else 0.22
    side = max(4.5, n * cell + 2.5)
    fontsize = 10 if n <= 10 else 8 if n <= CM_MAX_CELL_TEXT else 6
    fig = Figure(figsize=(side + 1.0, side), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(cm, cmap="Blues", interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)

    total = cm.sum()
    acc = np.trace(cm) / total if total > 0 else 0.0
    ax.set_title(f"confusion matrix (accuracy {acc:.3f})")
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    names = [str(c) for c in class_names]
    # long or many names collide horizontally; rotated and right-anchored they stay under their column
    rotate = n > 6 or max(len(s) for s in names) * n > 40
    if rotate:
        ax.set_xticklabels(names, fontsize=fontsize, rotation=45, ha="right", rotation_mode="anchor")
    else:
        ax.set_xticklabels(names, fontsize=fontsize)
    ax.set_yticklabels(names, fontsize=fontsize)

    if show_counts:
        integral = np.issubdtype(cm.dtype, np.integer) or np.all(np.mod(cm, 1) == 0)
        for i in range(n):
            for j in range(n):
                v = cm[i, j]
                # pick black/white from the luminance of the actual cell colour, which
                # stays right for any colormap and any value range
                r, g, b, _ = im.cmap(im.norm(v))
                color = "white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black"
                s = f"{int(v)}" if integral else f"{v:.2f}"
                ax.text(j, i, s, ha="center", va="center", color=color, fontsize=fontsize)
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

def _check_images(images):
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images shaped (N, C, H, W) with C in {{1, 3}}, got {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {images.dtype}")
    return images

def _draw_image(ax, img, title=None):
    """Draw one (C, H, W) uint8 image into ax, without ticks, with an optional small title."""
    c, h, w = img.shape
    # tiny images (8x8 digits) get smeared by smoothing; larger ones alias without it
    interp = "nearest" if max(h, w) < 64 else "antialiased"
    if c == 1:
        # fixed vmin/vmax: show the real intensities, not a per-image contrast stretch
        ax.imshow(img[0], cmap="gray", vmin=0, vmax=255, interpolation=interp)
    else:
        ax.imshow(img.transpose(1, 2, 0), interpolation=interp)
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=7)

def _empty_figure(title=None):
    fig = Figure(figsize=(4, 2))
    fig.text(0.5, 0.5, "no images", ha="center", va="center")
    if title:
        fig.suptitle(title)
    return fig

def image_grid_figure(images: np.ndarray, titles: list[str] | None, ncols: int = 8,
                      title: str | None = None) -> Figure:
    """Grid of images, one axis per image (no ticks), each with its small title.
    images: uint8 (N, C, H, W), C in {1, 3}; titles: N strings (may contain one "\\n") or None.
    N == 0 gives a figure saying "no images". The figure has exactly N axes."""
    images = _check_images(images)
    n = len(images)
    if titles is not None and len(titles) != n:
        raise ValueError(f"got {len(titles)} titles for {n} images")
    if n == 0:
        return _empty_figure(title)
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    # reserve vertical room per row for the (possibly two-line) tile titles
    lines = max((str(t).count("\n") + 1 for t in titles), default=0) if titles else 0
    fig = Figure(figsize=(1.3 * ncols, (1.3 + 0.15 * lines) * nrows + (0.4 if title else 0)),
                 layout="constrained")
    for i in range(n):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        _draw_image(ax, images[i], None if titles is None else str(titles[i]))
    if title:
        fig.suptitle(title)
    return fig

def samples_per_class_figure(images: np.ndarray, labels: np.ndarray, class_names: list[str],
                             per_class: int = 5) -> Figure:
    """One row per class (row label = class name) with the first `per_class` images
    of that class, in dataset order. labels are integer class indices into class_names."""
    images = _check_images(images)
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(images):
        raise ValueError(f"got {len(labels)} labels for {len(images)} images")
    nrows, ncols = len(class_names), max(1, per_class)
    fig = Figure(figsize=(1.1 * ncols + 1.2, 1.1 * nrows + 0.4), layout="constrained")
    for r, name in enumerate(class_names):
        idx = np.flatnonzero(labels == r)[:per_class]
        for j, k in enumerate(idx):
            ax = fig.add_subplot(nrows, ncols, r * ncols + j + 1)
            _draw_image(ax, images[k])
            if j == 0:
                ax.set_ylabel(str(name), rotation=0, ha="right", va="center", fontsize=9)
        if len(idx) == 0:
            # keep the row labelled so a class missing from the data is visible, not silently dropped
            ax = fig.add_subplot(nrows, ncols, r * ncols + 1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_frame_on(False)
            ax.set_ylabel(str(name), rotation=0, ha="right", va="center", fontsize=9)
            ax.text(0.5, 0.5, "no samples", ha="center", va="center", fontsize=7, transform=ax.transAxes)
    fig.suptitle(f"{per_class} samples per class")
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
    """Min-max normalise one tile to 0..255; a constant tile becomes all zeros."""
    x = x.astype(np.float64)
    lo, hi = x.min(), x.max()
    if hi <= lo:
        return np.zeros(x.shape, dtype=np.uint8)
    return np.round((x - lo) / (hi - lo) * 255).astype(np.uint8)

def first_layer_figure(weight: np.ndarray, in_shape: tuple[int, int, int] | None = None) -> Figure | None:
    """Visualise first-layer weights, one tile per output unit (at most 64), each min-max normalised.
    conv weight (out, in, kh, kw): RGB tiles when in == 3, else the channel mean in gray.
    linear weight (out, in_features) with in_shape=(C, H, W), C*H*W == in_features: every row
    reshaped to an image (the templates of a softmax classifier).
    Returns None when the weight cannot be shown as images (wrong shape / no in_shape)."""
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
    tiles = np.stack([_to_uint8(t) for t in w])
    return image_grid_figure(tiles, [str(i) for i in range(len(tiles))],
                             title=f"first layer weights ({kind})")

# -----------------------------------------------------------------------------
# training curves

def loss_curves_figure(history: dict[str, list[float]]) -> Figure:
    """Two side-by-side axes against epoch 1..n: losses ("train_loss", "val_loss") and
    accuracies ("train_accuracy", "val_accuracy"). Missing or empty keys are skipped."""
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
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
        ax.set_title(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
        else:
            # an empty legend() would warn; say plainly that nothing was recorded
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    return fig
