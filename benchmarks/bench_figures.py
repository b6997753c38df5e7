#!/usr/bin/env python
"""Figure benchmark: what `mlproject.figures` costs a run and a 40-trial `tune` study.

    python benchmarks/bench_figures.py                        # full: 5 repeats, a 40-trial study drawn
    python benchmarks/bench_figures.py --quick --json f.json  # seconds: 1 repeat, no warm-up, 2 of the 40 trials drawn
    python benchmarks/bench_figures.py --baseline /tmp/old_figures.py   # side by side with an older copy
    python benchmarks/bench_figures.py --png-dir /tmp/figs    # also keep the PNGs to look at

Every case is "build the figure, then fig.savefig(BytesIO, format='png')", as mlflow.log_figure does.
Wall clock and, in [], this process's CPU time (less sensitive to other processes on a shared machine).

1. Every figure: milliseconds per figure, median of --repeats (after one untimed warm-up; none in --quick), for
   realistic inputs:
     digits : 10 classes, 8x8 gray (sklearn's digits): 64 misclassified, 5 samples per class,
              linear first layer (10, 64) as (1, 8, 8)
     cifar  : 10 classes, 3x32x32 RGB (smooth random colour fields + noise): 64 misclassified,
              5 per class, conv first layer (64, 3, 7, 7)
     cm100  : a 100-class confusion matrix (no per-cell counts); curves: 30 epochs
   "run total" lines add up one training run's figures (confusion matrix + misclassified + samples
   per class + loss curves + first layer).
2. A 40-trial study (digits), as `tune` draws it: every trial draws and saves one confusion-matrix
   PNG (10 classes); once per study the best trial's figures (loss curves, misclassified, first
   layer) and the parent run's samples per class. The figures' time is set beside the study's:
   40 trials of --trial-s seconds (default 10 s, the fast end of real studies: a digits trial of a
   few epochs; CIFAR-sized trials take minutes, where the share is far smaller).
   Target: figures <= 2 % of a 40-trial study.

With --baseline the older module (same *_figure functions) and the current one run interleaved
(old, new, old, new, ...) in this one process, so both see the same machine load.
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
from common import run_main, write_json  # the benchmarks' common ending

TARGET_SHARE_PCT = 2.0
STUDY_TRIALS = 40


def load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_inputs():
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(0)
    d = load_digits()
    dig_x = np.round(d.images / 16.0 * 255).astype(np.uint8)[:, None]
    dig_y = d.target.astype(np.int64)
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
    cif_y = rng.integers(0, 10, size=n)

    def cm_of(y, p, k):
        cm = np.zeros((k, k), dtype=np.int64)
        np.add.at(cm, (y, p), 1)
        return cm

    y100 = rng.integers(0, 100, size=10_000)
    p100 = np.where(rng.random(10_000) < 0.6, y100, rng.integers(0, 100, size=10_000))
    t = np.arange(1, 31)
    cif_pred = np.where(rng.random(n) < 0.3, rng.integers(0, 10, size=n), cif_y)
    return {
        "names10": [str(i) for i in range(10)],
        "cifar_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
        "dig_x": dig_x, "dig_y": dig_y, "dig_pred": dig_pred, "dig_cm": cm_of(dig_y, dig_pred, 10),
        "dig_w": rng.normal(size=(10, 64)).astype(np.float32),
        "cif_x": np.clip(raw, 0, 255).astype(np.uint8), "cif_y": cif_y, "cif_pred": cif_pred,
        "cif_cm": cm_of(cif_y, cif_pred, 10), "cif_w": rng.normal(size=(64, 3, 7, 7)).astype(np.float32),
        "cm100": cm_of(y100, p100, 100), "names100": [f"class_{i:03d}" for i in range(100)],
        "history": {"train_loss": list(2.3 * np.exp(-t / 8) + 0.1), "val_loss": list(2.3 * np.exp(-t / 9) + 0.2),
                    "train_accuracy": list(1 - 0.9 * np.exp(-t / 6)),
                    "val_accuracy": list(0.95 - 0.85 * np.exp(-t / 7))},
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
# a study: one confusion matrix per trial; the rest once (best trial, parent run's samples)
PER_TRIAL = "digits confusion_matrix (10)"
ONCE = ["loss_curves (30 epochs)", "digits misclassified (64, 8x8)", "digits first_layer linear (10,64)",
        "digits samples_per_class (10x5)"]


def build_and_save(builder):
    """(wall ms, this process's CPU ms, PNG bytes) of building the figure and saving it as PNG."""
    t0, c0 = time.perf_counter(), time.process_time()
    fig = builder()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return (time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3, buf.getvalue()


def time_figures(builders, repeats, warm_up=True):
    """{tag: {name: [(wall, cpu), ...]}} and the last PNG of each, the modules interleaved."""
    times = {tag: {n: [] for n in b} for tag, b in builders.items()}
    pngs = {}
    for tag, b in builders.items():  # warm-up: font cache, colormaps, first-call imports
        for builder in b.values() if warm_up else ():
            build_and_save(builder)
    for _ in range(repeats):
        for n in next(iter(builders.values())):
            for tag, b in builders.items():  # interleaved, so all see the same load
                w, c, pngs[(tag, n)] = build_and_save(b[n])
                times[tag][n].append((w, c))
    return times, pngs


def time_study(builders, drawn):
    """{tag: (per-trial confusion matrices [(wall, cpu)] for `drawn` trials, once-per-study (wall, cpu))}."""
    per_trial = {tag: [] for tag in builders}
    for _ in range(drawn):
        for tag, b in builders.items():
            per_trial[tag].append(build_and_save(b[PER_TRIAL])[:2])
    out = {}
    for tag, b in builders.items():
        once = [build_and_save(b[n])[:2] for n in ONCE]
        out[tag] = (per_trial[tag], (sum(w for w, _ in once), sum(c for _, c in once)))
    return out


def print_table(times, repeats):
    tags = list(times)
    names = list(times[tags[0]])
    med = {tag: {} for tag in tags}
    for tag in tags:
        for n in names:
            med[tag][n] = tuple(statistics.median(x[i] for x in times[tag][n]) for i in (0, 1))
        for run, parts in RUNS.items():  # median over repeats of the per-repeat sums
            med[tag][run] = tuple(statistics.median(sum(times[tag][n][r][i] for n in parts) for r in range(repeats))
                                  for i in (0, 1))
    two = len(tags) == 2
    header = (f"{'figure':36s}" + "".join(f"{t + ' wall':>11s}{'[cpu]':>9s}" for t in tags)
              + (f"{'new/old wall':>14s}{'[cpu]':>8s}" if two else ""))
    print(header)
    print("-" * len(header))
    for n in names + ["-"] + list(RUNS):
        if n == "-":
            print("-" * len(header))
            continue
        line = f"{n:36s}" + "".join(f"{med[t][n][0]:11.1f}{'[%.1f]' % med[t][n][1]:>9s}" for t in tags)
        if two:
            line += f"{med['new'][n][0] / med['old'][n][0]:13.2f}x{'[%.2fx]' % (med['new'][n][1] / med['old'][n][1]):>8s}"
        print(line)
    return med


def study_summary(per_trial, once, trials, trial_s):
    """Figures of a `trials`-trial study (seconds, wall and CPU) and their share of its time."""
    wall = statistics.median(w for w, _ in per_trial) / 1e3 * trials + once[0] / 1e3
    cpu = statistics.median(c for _, c in per_trial) / 1e3 * trials + once[1] / 1e3
    study_s = trials * trial_s
    return {"trials": trials, "trials_drawn": len(per_trial), "trial_s": trial_s, "study_s": study_s,
            "per_trial_cm_ms": statistics.median(w for w, _ in per_trial),
            "per_trial_cm_cpu_ms": statistics.median(c for _, c in per_trial),
            "once_ms": once[0], "once_cpu_ms": once[1], "figures_s": wall, "figures_cpu_s": cpu,
            "share_pct": 100 * wall / study_s, "share_cpu_pct": 100 * cpu / study_s, "target_pct": TARGET_SHARE_PCT}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", help="path of an older figures module (same *_figure functions), side by side")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true",
                   help="smoke check: 1 repeat without the warm-up (its times include first calls), "
                        "2 of the study's trials drawn (the rest at their median)")
    p.add_argument("--trial-s", type=float, default=10.0, help="seconds of one trial (default 10: the fast end)")
    p.add_argument("--png-dir", help="write the PNGs of the last repeat here")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    drawn = 2 if args.quick else STUDY_TRIALS

    import matplotlib
    matplotlib.use("Agg")
    from mlproject import figures as new
    mods = {"old": load_module(args.baseline, "figures_baseline"), "new": new} if args.baseline else {"new": new}
    d = make_inputs()
    builders = {tag: cases(m, d) for tag, m in mods.items()}
    try:
        load = " load avg %.1f %.1f %.1f;" % os.getloadavg()
    except OSError:
        load = ""
    print(f"python {sys.version.split()[0]}, matplotlib {matplotlib.__version__}, {os.cpu_count()} CPUs;{load}")
    print(f"\n1. build + savefig(PNG) in ms, median of {repeats}{' (no warm-up)' if args.quick else ''}: wall clock "
          "[this process's CPU time]")
    times, pngs = time_figures(builders, repeats, warm_up=not args.quick)
    med = print_table(times, repeats)

    print(f"\n2. a {STUDY_TRIALS}-trial study of {args.trial_s:g} s trials (digits): one confusion matrix per trial"
          f" ({drawn} drawn), the best trial's figures and samples per class once")
    study = {}
    for tag, (per_trial, once) in time_study(builders, drawn).items():
        s = study[tag] = study_summary(per_trial, once, STUDY_TRIALS, args.trial_s)
        print(f"  {tag}: {s['per_trial_cm_ms']:.0f} ms [{s['per_trial_cm_cpu_ms']:.0f}] per trial x {STUDY_TRIALS}"
              f" + {s['once_ms']:.0f} ms [{s['once_cpu_ms']:.0f}] once = {s['figures_s']:.1f} s"
              f" [{s['figures_cpu_s']:.1f}] of a {s['study_s']:.0f} s study: {s['share_pct']:.2f} %"
              f" [{s['share_cpu_pct']:.2f} %]")
    s = study["new"]
    verdict = lambda v: "PASS" if v <= TARGET_SHARE_PCT else "MISS"  # noqa: E731
    print(f"\nfigures share of a {STUDY_TRIALS}-trial study: {s['share_pct']:.2f} % wall [{s['share_cpu_pct']:.2f} % cpu]"
          f"; target <= {TARGET_SHARE_PCT:g} % of a {STUDY_TRIALS}-trial study: {verdict(s['share_pct'])} (wall),"
          f" {verdict(s['share_cpu_pct'])} (cpu)")

    if args.png_dir:
        os.makedirs(args.png_dir, exist_ok=True)
        for (tag, n), png in pngs.items():
            fname = "".join(ch if ch.isalnum() else "_" for ch in n).strip("_")
            with open(os.path.join(args.png_dir, f"{tag}_{fname}.png"), "wb") as f:
                f.write(png)
        print(f"PNGs written to {args.png_dir}")
    if args.json:
        write_json(args.json, {"quick": args.quick, "repeats": repeats,
                               "figures_ms": {t: {n: v[0] for n, v in m.items()} for t, m in med.items()},
                               "figures_cpu_ms": {t: {n: v[1] for n, v in m.items()} for t, m in med.items()},
                               "study": study})
    return 0


if __name__ == "__main__":
    run_main(main)
