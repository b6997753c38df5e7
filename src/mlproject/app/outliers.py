"""Outlier test (seed 000 section 4, seed 001 experiment 2): logged models shown images from
outside their training domain.

    checked = check(["3f2a...", "digits-best/2"], "photos/")   # bad input: ConfigError, nothing run
    result = run(checked, "outliers/", experiment="mlproject")  # experiment=None: no MLflow run
    print(outliers_text(result))

Every image is adapted to each model exactly as that model's training data was: decoded by
data.py's ImageFolder decoder, converted to the training data's mode (L or RGB) and resized
(bilinear) to its stored H x W, both read from the model's input signature; then float32 / 255.
The model's own preprocessing (channels, input size, normalisation) does the rest, as in training.

Files written to the output folder (and logged under `outliers/` of a run named "outliers"):
    raw_probs.csv        one row per image and model: label, confidence and every p_<class>
    raw_K_probs.txt      the same vectors as text, one block per model (seed 000's raw_K_probs.txt)
    predictions.csv/.md  seed 000's Table 2: one row per model, one column per image, the label
    outlier_scores.csv   per image and model: max probability, entropy (nats), entropy / ln K
    predictions_grid.png the images, each titled with every model's label and confidence
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

import tracking

from mlproject.config import ConfigError, listed
from mlproject.data import DataError, ImageFiles
from mlproject.app.report import markdown

GRID_SIZE = 64  # px per tile in predictions_grid.png
GRID_MAX = 64  # images drawn in the grid at most
LIST_MAX = 10  # bad files named in an error at most


@dataclass
class Checked:
    """Everything `run` needs, validated: the models (found, not loaded) and the image files."""

    models: list  # tracking.FoundModel
    images_dir: Path
    files: list[Path]

    @property
    def names(self) -> list[str]:
        return [f.relative_to(self.images_dir).as_posix() for f in self.files]


@dataclass
class Predictions:
    checked: Checked
    probs: list[np.ndarray]  # per model: (N images, K classes), rows sum to 1
    out_dir: Path
    files: list[str] = field(default_factory=list)  # written, relative to out_dir
    run_id: str | None = None

    @property
    def names(self) -> list[str]:
        return self.checked.names

    def labels(self, m: int) -> list[str]:
        classes = self.checked.models[m].class_names
        return [classes[k] for k in self.probs[m].argmax(1)]


# ---------------------------------------------------------------------------------------------
# checks

def check(refs, images_dir) -> Checked:
    """All bad input, before anything is loaded or logged: ConfigError naming a run id that does
    not exist, a run without a logged model, an unknown registered model or version; DataError for
    a missing or empty images folder and for files in it that are not images (all named)."""
    refs = list(refs)
    if not refs:
        raise ConfigError("give at least one model: a run id, a registered model NAME[/VERSION] or a models:/ URI")
    found = []
    for ref in refs:
        try:
            found.append(tracking.find_model(ref))
        except tracking.ModelNotFound as e:
            raise ConfigError(str(e)) from None
    seen: dict[str, int] = {}
    for m in found:  # one column per model: the same short name twice gets #2, #3
        seen[m.name] = seen.get(m.name, 0) + 1
        if seen[m.name] > 1:
            m.name = f"{m.name}#{seen[m.name]}"
    root = Path(images_dir)
    return Checked(found, root, scan_images(root))


def scan_images(root: Path) -> list[Path]:
    """The image files under `root` (recursively, sorted, hidden files skipped); DataError if the
    folder is missing or empty or holds files that do not decode as images (named, all of them)."""
    if not root.is_dir():
        raise DataError(f"images folder not found: {root}")
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files += [Path(dirpath) / f for f in sorted(filenames) if not f.startswith(".")]
    files.sort()
    if not files:
        raise DataError(f"images folder {root} is empty: put the out-of-domain images (.jpg, .png, ...) in it")
    # data.py's ImageFolder decoder at 1x1: a full decode, so truncated files are caught too
    decoder = ImageFiles([str(f) for f in files], [0] * len(files), (1, 1), "L")
    bad = [f.relative_to(root).as_posix() for i, f in enumerate(files) if not decoder[i][2]]
    if bad:
        named = listed(bad, LIST_MAX)
        raise DataError(f"{len(bad)} of {len(files)} files in {root} are not images (cannot decode): {named}; "
                        "remove them")
    return files


# ---------------------------------------------------------------------------------------------
# adapt, predict, score

def adapt(files: list[Path], shape: tuple[int, int, int]) -> np.ndarray:
    """float32 images in [0, 1], (N, C, H, W): each file decoded as an ImageFolder image of
    training data shaped `shape` = (C, H, W) was (mode L for C = 1, else RGB; bilinear to H x W)."""
    c, h, w = shape
    decoder = ImageFiles([str(f) for f in files], [0] * len(files), (h, w), "L" if c == 1 else "RGB")
    images = np.stack([decoder[i][0].numpy() for i in range(len(files))])
    return images.astype(np.float32) / 255.0


def scores(probs: np.ndarray) -> dict[str, np.ndarray]:
    """Out-of-domain scores per row of probabilities: max probability (low: unsure), entropy in
    nats and entropy / ln K (1: uniform, nothing recognised)."""
    from scipy.stats import entropy as shannon  # here: scipy.stats takes a second to import

    p = np.clip(probs.astype(np.float64), 0, None)
    entropy = shannon(p, axis=1)  # natural log; each row normalised to sum 1 (softmax rows already do)
    k = probs.shape[1]
    return {"max_prob": p.max(1), "entropy": entropy, "entropy_norm": entropy / math.log(k) if k > 1 else entropy * 0}


def run(checked: Checked, out_dir, experiment: str | None = "mlproject") -> Predictions:
    """Predict every image with every model, write the files into `out_dir`, and log them as a
    run named "outliers" in `experiment` (None: no run)."""
    cache: dict[tuple, np.ndarray] = {}
    probs = []
    for m in checked.models:
        x = cache.get(m.input_shape)
        if x is None:
            x = cache[m.input_shape] = adapt(checked.files, m.input_shape)
        p = tracking.probabilities(tracking.load_model(m.uri).predict(x))
        if p.shape != (len(x), len(m.class_names)):
            raise RuntimeError(f"{m.ref}: {p.shape} probabilities for {len(x)} images and {len(m.class_names)} classes")
        probs.append(p)
    result = Predictions(checked, probs, Path(out_dir))
    result.files = write(result)
    if experiment:
        metrics = {}
        for m, p in zip(checked.models, probs):
            s = scores(p)
            metrics[tracking.metric_key(f"mean_max_prob/{m.name}")] = float(s["max_prob"].mean())
            metrics[tracking.metric_key(f"mean_entropy/{m.name}")] = float(s["entropy"].mean())
        params = {"models": ", ".join(m.uri for m in checked.models), "images": str(checked.images_dir.resolve()),
                  "num_images": len(checked.files), "num_models": len(checked.models)}
        result.run_id = tracking.log_files_run(experiment, "outliers", str(result.out_dir), result.files, params, metrics)
    return result


# ---------------------------------------------------------------------------------------------
# outputs

def _by_image(result: Predictions, rows) -> pd.DataFrame:
    """One row per image and model, image by image (the models in order within each): rows(j)
    gives model j's rows, one per image in order."""
    frames = [rows(j) for j in range(len(result.checked.models))]
    return pd.concat(frames).sort_index(kind="stable").reset_index(drop=True)


def raw_probs(result: Predictions) -> pd.DataFrame:
    """raw_probs.csv: image, model, model_uri, label, confidence, then p_<class> for every class
    (the first model's class order, then any class another model adds; empty where a model has
    no such class)."""
    classes: list[str] = []
    for m in result.checked.models:
        classes += [c for c in m.class_names if c not in classes]

    def rows(j):
        m, p = result.checked.models[j], result.probs[j]
        head = pd.DataFrame({"image": result.names, "model": m.name, "model_uri": m.uri, "label": result.labels(j),
                             "confidence": p.max(1)})
        return head.join(pd.DataFrame(p, columns=[f"p_{c}" for c in m.class_names]))

    columns = ["image", "model", "model_uri", "label", "confidence", *[f"p_{c}" for c in classes]]
    return _by_image(result, rows).reindex(columns=columns)


def outlier_scores(result: Predictions) -> pd.DataFrame:
    """outlier_scores.csv: image, model, label, max_prob, entropy, entropy_norm (see scores)."""
    def rows(j):
        m, p = result.checked.models[j], result.probs[j]
        return pd.DataFrame({"image": result.names, "model": m.name, "label": result.labels(j), **scores(p)})

    return _by_image(result, rows)


def table2(result: Predictions) -> pd.DataFrame:
    """Seed 000's Table 2: one row per model (column `model`) with its label for every image (a
    column per image)."""
    rows = [[m.name, *result.labels(i)] for i, m in enumerate(result.checked.models)]
    return pd.DataFrame(rows, columns=["model", *result.names], dtype=str)


def write(result: Predictions) -> list[str]:
    """Write every output file into result.out_dir; return their names."""
    out = result.out_dir
    out.mkdir(parents=True, exist_ok=True)
    models, names = result.checked.models, result.names
    files = {"raw_probs.csv": raw_probs(result).to_csv(index=False, float_format="%.6f", lineterminator="\n")}

    blocks = []
    for m, p in zip(models, result.probs):
        blocks.append(f"# {m.name} ({m.uri}): {len(m.class_names)} classes: {' '.join(m.class_names)}")
        blocks += [f"{name}: " + " ".join(f"{v:.6f}" for v in row) for name, row in zip(names, p)]
        blocks.append("")
    files["raw_K_probs.txt"] = "\n".join(blocks)

    table = table2(result)
    files["predictions.csv"] = table.to_csv(index=False, lineterminator="\n")
    files["predictions.md"] = markdown(table)
    files["outlier_scores.csv"] = outlier_scores(result).to_csv(index=False, float_format="%.6f", lineterminator="\n")

    for fname, text in files.items():
        (out / fname).write_text(text, encoding="utf-8")
    grid_figure(result).savefig(out / "predictions_grid.png")
    return [*files, "predictions_grid.png"]


def grid_figure(result: Predictions):
    """The first GRID_MAX images (RGB, GRID_SIZE px), each titled with its name and every model's
    'name: label (confidence)'."""
    from mlproject.figures import image_grid_figure

    n = min(len(result.names), GRID_MAX)
    images = (adapt(result.checked.files[:n], (3, GRID_SIZE, GRID_SIZE)) * 255).round().astype(np.uint8)
    labels = [result.labels(j) for j in range(len(result.checked.models))]
    titles = ["\n".join([_short(result.names[i], 24)] +
                        [f"{m.name}: {labels[j][i]} ({result.probs[j][i].max():.2f})"
                         for j, m in enumerate(result.checked.models)]) for i in range(n)]
    more = f" (first {n} of {len(result.names)})" if n < len(result.names) else ""
    return image_grid_figure(images, titles, ncols=min(n, 5), title=f"predictions on out-of-domain images{more}")


def _short(s: str, n: int) -> str:
    return s if len(s) <= n else "..." + s[-(n - 3):]


def outliers_text(result: Predictions) -> str:
    """What the command prints: Table 2, the scores per model, where the files and the run are."""
    table = tabulate(table2(result), headers="keys", tablefmt="plain", showindex=False, disable_numparse=True)
    lines = [table, ""]
    for m, p in zip(result.checked.models, result.probs):
        s = scores(p)
        lines.append(f"{m.name}: mean max probability {s['max_prob'].mean():.3f}, mean entropy "
                     f"{s['entropy'].mean():.3f} nats ({s['entropy_norm'].mean():.2f} of ln {p.shape[1]})")
    lines.append(f"wrote {', '.join(result.files)} to {result.out_dir}")
    if result.run_id:
        lines.append(f"logged as run {result.run_id} (artifacts under outliers/)")
    return "\n".join(lines)
