#!/usr/bin/env python
"""Figure benchmark: build + savefig(PNG) time of every figure `mlproject.figures` draws.

    python benchmarks/bench_figures.py                                   # current module only
    python benchmarks/bench_figures.py --baseline /tmp/old/artifacts.py  # side by side with an older copy
    python benchmarks/bench_figures.py --png-dir /tmp/figs                # also keep the PNGs to look at

Every case is "build the figure, then fig.savefig(BytesIO, format='png')", as mlflow.log_figure does.
Reported: milliseconds per figure, median of --repeats runs (after one untimed warm-up). With
--baseline the old and the new module run interleaved (old, new, old, new, ...) in this one process,
so the ratio is measured under the same machine load (absolute times are noisy on shared CPUs).

Inputs (realistic for the project's datasets):
  digits  : 10 classes, 8x8 gray (sklearn's digits, or random if sklearn is missing):
            64 misclassified images, 5 samples per class, linear first layer (10, 64) as (1, 8, 8)
  cifar   : 10 classes, 3x32x32 RGB (random smooth colour fields + noise): 64 misclassified, 5 per class,
            conv first layer (64, 3, 7, 7)
  cm100   : a 100-class confusion matrix (no per-cell counts)
  curves  : 30 epochs of train/val loss and accuracy
The "run total" lines add up one training run's set of figures: confusion matrix + misclassified
+ samples per class + loss curves + first layer.
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import os
import statistics
import sys
import time

import numpy as np

TARGET_RUN_MS = 300.0


def load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_inputs():
    rng = np.random.default_rng(0)
    names10 = [str(i) for i in range(10)]
    try:
        from sklearn.datasets import load_digits
        d = load_digits()
        dig_x = np.round(d.images / 16.0 * 255).astype(np.uint8)[:, None]
        dig_y = d.target.astype(np.int64)
    except ImportError:  # pragma: no cover - sklearn is a test dependency
        dig_x = rng.integers(0, 256, size=(1797, 1, 8, 8), dtype=np.uint8)
        dig_y = rng.integers(0, 10, size=1797)
    # predictions: wrong on a fixed random ~10%, so there are well over 64 mistakes
    dig_pred = dig_y.copy()
    flip = rng.random(len(dig_y)) < 0.1
    dig_pred[flip] = (dig_y[flip] + rng.integers(1, 10, size=flip.sum())) % 10

    n = 2000
    # photo-like: smooth random colour fields (4x4 blocks, blurred) plus pixel noise, so the PNGs
    # compress roughly like real photos do (pure noise would be the incompressible worst case)
    raw = np.repeat(np.repeat(rng.integers(0, 256, size=(n, 3, 4, 4)).astype(np.float32), 8, axis=2), 8, axis=3)
    for _ in range(3):
        raw = (raw + np.roll(raw, 2, axis=2) + np.roll(raw, -2, axis=2) + np.roll(raw, 2, axis=3)
               + np.roll(raw, -2, axis=3)) / 5
    raw += rng.normal(0, 12, size=raw.shape)
    cif_x = np.clip(raw, 0, 255).astype(np.uint8)
    cif_y = rng.integers(0, 10, size=n)
    cif_pred = np.where(rng.random(n) < 0.3, rng.integers(0, 10, size=n), cif_y)
    cifar_names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

    def cm_of(y, p, k):
        cm = np.zeros((k, k), dtype=np.int64)
        np.add.at(cm, (y, p), 1)
        return cm

    y100 = rng.integers(0, 100, size=10_000)
    p100 = np.where(rng.random(10_000) < 0.6, y100, rng.integers(0, 100, size=10_000))
    epochs = 30
    t = np.arange(1, epochs + 1)
    history = {"train_loss": list(2.3 * np.exp(-t / 8) + 0.1), "val_loss": list(2.3 * np.exp(-t / 9) + 0.2),
               "train_accuracy": list(1 - 0.9 * np.exp(-t / 6)), "val_accuracy": list(0.95 - 0.85 * np.exp(-t / 7))}
    return {
        "names10": names10, "cifar_names": cifar_names,
        "dig_x": dig_x, "dig_y": dig_y, "dig_pred": dig_pred, "dig_cm": cm_of(dig_y, dig_pred, 10),
        "dig_w": rng.normal(size=(10, 64)).astype(np.float32),
        "cif_x": cif_x, "cif_y": cif_y, "cif_pred": cif_pred, "cif_cm": cm_of(cif_y, cif_pred, 10),
        "cif_w": rng.normal(size=(64, 3, 7, 7)).astype(np.float32),
        "cm100": cm_of(y100, p100, 100), "names100": [f"class_{i:03d}" for i in range(100)],
        "history": history,
    }


def cases(a, d):
    """name -> zero-argument builder, for module `a`."""
    return {
        "digits confusion_matrix (10)": lambda: a.confusion_matrix_figure(d["dig_cm"], d["names10"]),
        "digits misclassified (64, 8x8)": lambda: a.misclassified_figure(
            d["dig_x"], d["dig_y"], d["dig_pred"], d["names10"]),
        "digits samples_per_class (10x5)": lambda: a.samples_per_class_figure(
            d["dig_x"], d["dig_y"], d["names10"], per_class=5),
        "digits first_layer linear (10,64)": lambda: a.first_layer_figure(d["dig_w"], (1, 8, 8)),
        "cifar confusion_matrix (10)": lambda: a.confusion_matrix_figure(d["cif_cm"], d["cifar_names"]),
        "cifar misclassified (64, 3x32x32)": lambda: a.misclassified_figure(
            d["cif_x"], d["cif_y"], d["cif_pred"], d["cifar_names"]),
        "cifar samples_per_class (10x5)": lambda: a.samples_per_class_figure(
            d["cif_x"], d["cif_y"], d["cifar_names"], per_class=5),
        "cifar first_layer conv (64,3,7,7)": lambda: a.first_layer_figure(d["cif_w"]),
        "confusion_matrix (100 classes)": lambda: a.confusion_matrix_figure(d["cm100"], d["names100"]),
        "loss_curves (30 epochs)": lambda: a.loss_curves_figure(d["history"]),
    }


RUNS = {
    "digits run total": ["digits confusion_matrix (10)", "digits misclassified (64, 8x8)",
                         "digits samples_per_class (10x5)", "loss_curves (30 epochs)",
                         "digits first_layer linear (10,64)"],
    "cifar run total": ["cifar confusion_matrix (10)", "cifar misclassified (64, 3x32x32)",
                        "cifar samples_per_class (10x5)", "loss_curves (30 epochs)",
                        "cifar first_layer conv (64,3,7,7)"],
}


def build_and_save(builder):
    """(wall ms, this process's CPU ms, PNG bytes) of building the figure and saving it as PNG."""
    t0, c0 = time.perf_counter(), time.process_time()
    fig = builder()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return (time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3, buf.getvalue()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", help="path of an older artifacts.py to compare against, side by side")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--png-dir", help="write the PNGs of the last repeat here")
    args = p.parse_args(argv)

    import matplotlib
    matplotlib.use("Agg")
    from mlproject import figures as new
    mods = {"new": new}
    if args.baseline:
        mods = {"old": load_module(args.baseline, "artifacts_baseline"), "new": new}

    d = make_inputs()
    builders = {tag: cases(m, d) for tag, m in mods.items()}
    names = list(builders["new"])
    wall = {tag: {n: [] for n in names} for tag in mods}
    cpu = {tag: {n: [] for n in names} for tag in mods}
    pngs = {}
    for tag in mods:  # warm-up: font cache, colormaps, first-call imports
        for n in names:
            build_and_save(builders[tag][n])
    for _ in range(args.repeats):
        for n in names:
            for tag in mods:  # interleaved, so both see the same load
                w, c, png = build_and_save(builders[tag][n])
                wall[tag][n].append(w)
                cpu[tag][n].append(c)
                pngs[(tag, n)] = png

    def medians(times):
        med = {tag: {n: statistics.median(v) for n, v in times[tag].items()} for tag in mods}
        # run totals: median over repeats of the per-repeat sums (not the sum of medians)
        for run, parts in RUNS.items():
            for tag in mods:
                med[tag][run] = statistics.median(
                    sum(times[tag][n][r] for n in parts) for r in range(args.repeats))
        return med

    mw, mc = medians(wall), medians(cpu)
    try:
        load = " load avg %.1f %.1f %.1f;" % os.getloadavg()
    except OSError:
        load = ""
    print(f"build + savefig(PNG) in ms, median of {args.repeats}; wall clock, and in [] this process's CPU "
          f"time (less sensitive to other processes on a shared machine)")
    print(f"python {sys.version.split()[0]}, matplotlib {matplotlib.__version__}, {os.cpu_count()} CPUs;{load}")
    cols = list(mods)
    two = len(cols) == 2
    header = (f"{'figure':36s}" + "".join(f"{c + ' wall':>11s}{'[cpu]':>9s}" for c in cols)
              + (f"{'old/new wall':>14s}{'[cpu]':>8s}" if two else ""))
    print(header)
    print("-" * len(header))
    for n in names + ["-"] + list(RUNS):
        if n == "-":
            print("-" * len(header))
            continue
        line = f"{n:36s}" + "".join(f"{mw[c][n]:11.1f}{'[%.1f]' % mc[c][n]:>9s}" for c in cols)
        if two:
            line += f"{mw['old'][n] / mw['new'][n]:13.1f}x{'[%.1fx]' % (mc['old'][n] / mc['new'][n]):>8s}"
        print(line)
    worst = max(RUNS, key=lambda r: mw["new"][r])
    print(f"\nslowest run total (new): {worst}: {mw['new'][worst]:.1f} ms wall [{mc['new'][worst]:.1f} ms cpu]; "
          f"target <= {TARGET_RUN_MS:.0f} ms: {'PASS' if mw['new'][worst] <= TARGET_RUN_MS else 'MISS'} (wall)"
          f", {'PASS' if mc['new'][worst] <= TARGET_RUN_MS else 'MISS'} (cpu)")

    if args.png_dir:
        os.makedirs(args.png_dir, exist_ok=True)
        for (tag, n), png in pngs.items():
            fname = "".join(ch if ch.isalnum() else "_" for ch in n).strip("_")
            with open(os.path.join(args.png_dir, f"{tag}_{fname}.png"), "wb") as f:
                f.write(png)
        print(f"PNGs written to {args.png_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
