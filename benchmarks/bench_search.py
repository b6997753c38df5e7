"""Searching architectures with two objectives, measured side by side in one run on digits.

    python benchmarks/bench_search.py            # full: 30-trial studies over four architectures (~10 min on 2 cores)
    python benchmarks/bench_search.py --quick    # 10-20 s (below); what tests/test_benchmarks.py runs

Every study is `tune`'s own code path (tuning.runner.plan + execute, StudyTrainer), logging to a
temporary MLflow store:

1. Default sampler against random, same budget and seed: a two-objective study (validation
   accuracy up, model size down) over softmax, mlp, lenet5 and smallcnn, with epochs and
   learning rate searched too. Figures: the hypervolume of each Pareto front (reference point:
   accuracy 0 and 1.1 x the largest model; the ratio default/random is the figure that matters)
   and wall time.
2. Models stored only on entering the best set (what `tune` does) against one per trial (the
   same study, same seed, every trial keeping its model): models stored, seconds inside
   log_model, and bytes of artifacts.

The per-trial framework overhead of a tracked trial is bench_tune.py's figure.

--quick is a smoke check of both parts on the smallest inputs that exercise them: 2-trial studies
over mlp and softmax, 1 epoch each (enough for a front and a trial off it: fewer models stored
than trials), without the untimed warm-up study (its only use is fair timing); its stores are
copies of common.kept_store_template() (made once for all runs: MLflow's migrations take 1.1 s)
and its cache folder holds the model names (no timm import: 0.7 s). 19-20 s on 2 idle cores
(2026-12-03; 26-27 s with 3 trials, before the template and the names): each of the three
studies costs ~4 s on `tune`'s path whatever its trials (parent run, figures, registry,
summary), the first ~5 s more (first imports), so 15 s is out of its reach; the three forked
side by side measured 17-18 s (each fork paid MLflow's scan of the installed packages again).
On 2026-12-04's machine, about twice as fast: 9.8 s. Its figures are rough.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import keep_store_template, new_store  # noqa: E402  (a store's tables made once, copied after)

import mlproject.app.experiment as experiment  # noqa: E402
from tuning import goals, runner  # noqa: E402
from common import run_main, use_cache_dir, write_json  # noqa: E402  # the benchmarks' common parts

optuna.logging.set_verbosity(optuna.logging.WARNING)
OBJECTIVES = ("val_accuracy", "model_size_mb")


class KeepEveryModel(experiment.StudyTrainer):
    """The comparison's other arm: every trial logs its model, as if the best set were unknown."""

    def train_trial(self, cfg, prepared, parent_run_id, tags, params, on_epoch, on_run_start, keep_model, **kwargs):
        return super().train_trial(cfg, prepared, parent_run_id, tags, params, on_epoch, on_run_start,
                                   keep_model=lambda metrics, history: True, **kwargs)


def hypervolume(points: list[tuple[float, float]], ref_size: float) -> float:
    """Area dominated by (accuracy up, size down) points, bounded by accuracy 0 and `ref_size`."""
    front = sorted((s, a) for a, s in points if s < ref_size)
    area, best = 0.0, 0.0
    for size, acc in front:  # by size ascending: each point adds the accuracy it gains over smaller ones
        if acc > best:
            area += (ref_size - size) * (acc - best)
            best = acc
    return area


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run_study(tmp: Path, name: str, sampler: str, trials: int, searched: dict, trainer) -> dict:
    """One study in its own store; its trials' (accuracy, size), wall time, models and bytes."""
    root = tmp / name
    root.mkdir()
    uri = new_store(root)  # before the timed part, as the experiment
    mlflow.set_tracking_uri(uri)
    mlflow.MlflowClient().create_experiment(name, artifact_location=str(root / "artifacts"))
    in_log_model = []
    real = experiment.log_trained_model

    def timed(*a, **k):
        start = time.perf_counter()
        try:
            return real(*a, **k)
        finally:
            in_log_model.append(time.perf_counter() - start)

    experiment.log_trained_model = timed
    options = runner.StudyOptions(trials=trials, sampler=sampler, study_name=name, objectives=OBJECTIVES,
                                  storage=f"sqlite:///{root}/optuna.db", tracking_uri=uri)
    try:
        plan = runner.plan({"num_workers": 0, "experiment": name}, searched, options, trainer)
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = runner.execute(plan)
        wall = time.perf_counter() - start
    finally:
        experiment.log_trained_model = real
        mlflow.set_tracking_uri(None)
    assert code == 0, f"study {name} exited {code}"
    study = optuna.load_study(study_name=name, storage=options.storage)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    front = goals.best_set(study, plan.objectives)
    return {"sampler": sampler, "trials": len(done), "wall_s": wall,
            "points": [tuple(t.values) for t in done], "front": [tuple(t.values) for t in front],
            "models_stored": len(in_log_model), "log_model_s": sum(in_log_model),
            "registered": len(study.user_attrs.get("registered_versions", {})),
            "artifact_bytes": dir_bytes(root / "artifacts"),
            "models": sorted({t.params.get("model") for t in done})}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke mode (CI): 2-trial studies of mlp and softmax")
    ap.add_argument("--trials", type=int, default=None)
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    trials = args.trials or (2 if args.quick else 30)
    # quick: seed 0 draws softmax at lr 0.26 first (validation accuracy 0.944, 0.005 MB), then an mlp
    # at lr 0.28 (0.828, 0.08 MB): off the front, so fewer models are stored than trials run
    searched = {"model": "mlp,softmax" if args.quick else "softmax,mlp,lenet5,smallcnn",
                "epochs": "1" if args.quick else "1:4", "lr": "0.1:0.5" if args.quick else "0.01:0.5", "batch_size": "64",
                "weight_decay": "0", "momentum": "0.9"}
    if args.quick:  # stores from a template kept across runs; a cache folder with the model names (no timm import)
        keep_store_template()
        cache = tempfile.TemporaryDirectory(prefix="bench_cache_")
        use_cache_dir(cache.name, keep_model_names=True)
    else:  # no feature cache is used; keep it out of the user's anyway, in a folder removed at exit
        cache = tempfile.TemporaryDirectory(prefix="bench_cache_")
        os.environ.setdefault("MLPROJECT_CACHE_DIR", cache.name)
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        # imports, MLflow's first store and environment scan: paid here, by neither arm (quick: by
        # the default arm, whose wall time is rough anyway; a study costs seconds of fixed work)
        if not args.quick:
            run_study(tmp, "warmup", "random", 1, {**searched, "model": "softmax", "epochs": "1"},
                      experiment.StudyTrainer())
        default = run_study(tmp, "default", "tpe", trials, searched, experiment.StudyTrainer())
        random = run_study(tmp, "random", "random", trials, searched, experiment.StudyTrainer())
        every = run_study(tmp, "every", "tpe", trials, searched, KeepEveryModel())
    ref = 1.1 * max(s for study in (default, random) for _, s in study["points"])
    for study in (default, random):
        study["hypervolume"] = hypervolume(study["front"], ref)
    results = {
        "trials": trials, "objectives": list(OBJECTIVES), "searched": searched, "reference_size_mb": ref,
        "default": default, "random": random, "keep_every_model": every,
        "hypervolume_ratio": default["hypervolume"] / random["hypervolume"] if random["hypervolume"] else float("nan"),
        "models_ratio": default["models_stored"] / max(1, every["models_stored"]),
        "bytes_ratio": default["artifact_bytes"] / max(1, every["artifact_bytes"]),
        "cpus": os.cpu_count(), "quick": args.quick,
    }
    print(f"{trials}-trial two-objective studies ({', '.join(OBJECTIVES)}) over {searched['model']}:")
    for name in ("default", "random"):
        s = results[name]
        print(f"  {name:7s} ({s['sampler']}): hypervolume {s['hypervolume']:.4f}, front of {len(s['front'])}, "
              f"wall {s['wall_s']:.0f} s")
    print(f"  hypervolume default/random: {results['hypervolume_ratio']:.3f}")
    print(f"models stored on entering the front: {default['models_stored']} of {default['trials']} trials, "
          f"{default['log_model_s']:.1f} s in log_model, {default['artifact_bytes'] / 1e6:.1f} MB of artifacts "
          f"({default['registered']} registered)")
    print(f"one model per trial:                 {every['models_stored']} of {every['trials']} trials, "
          f"{every['log_model_s']:.1f} s in log_model, {every['artifact_bytes'] / 1e6:.1f} MB of artifacts")
    print(f"  ratio models {results['models_ratio']:.2f}, bytes {results['bytes_ratio']:.2f}, "
          f"wall {default['wall_s'] / every['wall_s']:.2f}")
    if args.json:
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    run_main(main)
