#!/usr/bin/env python
"""Study speed benchmarks, measured side by side in one run (absolute times here are noise).

    python benchmarks/bench_speed.py            # full: ~15 min on 2 CPU cores
    python benchmarks/bench_speed.py --quick    # 12-23 s (below); what tests/test_benchmarks.py runs
    python benchmarks/bench_speed.py --only cache,tracking,workers --json out.json

1. cache: a frozen-backbone study (--freeze backbone, resnet18 from scratch, digits; TPE seed 0,
   no pruner, so both studies sample the same trials; 10 epochs, as seed 000's pretrained
   backbones for its outlier test), tracked in a real sqlite store, once with
   cached features (cache emptied first: the first trial computes them) and once without:
   wall-time ratio cached / uncached (target <= 0.1) and both best validation accuracies (equal).
2. tracking: trials of ~10 s of training (smallcnn on digits, tracked as `tune` tracks them):
   time inside the `tracking` package and MLflow's API (one timer, nested calls counted once;
   figure building included) over the trial's wall time (target <= 2 %). Interleaved with them,
   the same trials with `--system-metrics` (MLflow's sampler thread in every trial): the thread's
   CPU time plus its start and stop on the trial's path, over the trial's wall time, and the two
   arms' median wall times side by side.
3. workers: the real `tune` command (a subprocess, sqlite stores in a temp dir) with --workers
   1, 2 and 4 on this machine, the same 16 trials of ~4 s each: trials per hour, and the torch
   threads each worker gets (cores // workers).

--quick is a smoke check of every part on the smallest inputs that exercise it: 2 cached and 2
uncached lenet5 trials of 1 epoch (the first computes the features, the second reads them; no
warm-up), one softmax trial of ~0.3 s of training in each tracking arm, and `tune --workers 2`
with a one-epoch softmax trial per worker, started first and run beside parts 1 and 2 (this
process then has one torch thread). Its stores are copies of common.kept_store_template() (made
once for all runs) and its cache folders hold the model names (no process imports timm to list
them). Most of its time is fixed costs (imports, runs, figures; a `tune` process's own start and
summary, and its workers' imports): 22-24 s on 2 idle cores (2026-12-03; 32-34 s with part 3
after the others, 36-37 s before the store template and the model names), of which the `tune`
alone takes 17-19 s, so 15 s is out of its reach. 2026-12-04: 18.6-20.5 s, with `tune` starting
its workers' fork server before its data (alone 0.82-0.88x) or after its study (the same: here the
parts keep both cores busy; ~24 s of CPU in all, the `tune`'s workers not counted). The same
afternoon, on a machine about twice as fast (the suite 5 min 19 s against 10 min 6 s): 11.9 s.
Its figures are rough.
"""
from __future__ import annotations

import argparse
import atexit
import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import mlflow
import optuna
import torch
from optuna.trial import TrialState

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import CallTimer, keep_store_template, new_store, temp_store  # noqa: E402  (the same timers and temp stores)

import mlproject.app.experiment as experiment  # noqa: E402
import mlproject.features as features  # noqa: E402
import tracking  # noqa: E402
from mlproject.config import TrainConfig  # noqa: E402
from tuning.objective import Worker  # noqa: E402
from tuning.space import SearchSpace  # noqa: E402
from common import join_or_kill, run_main, use_cache_dir, write_json  # noqa: E402  # the benchmarks' common parts

optuna.logging.set_verbosity(optuna.logging.WARNING)
CACHE_TARGET = 0.1
TRACKING_TARGET_PCT = 2.0
ROOT = Path(__file__).resolve().parents[1]


def study(base: TrainConfig, space: SearchSpace, trials: int, experiment_name: str, seed: int = 0):
    """A tracked study run by tuning's Worker in the current store; (optuna study, wall seconds)."""
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(experiment_name) or client.get_experiment(
        client.create_experiment(experiment_name))
    parent = client.create_run(exp.experiment_id).info.run_id
    s = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed),
                            pruner=optuna.pruners.NopPruner())
    start = time.perf_counter()
    Worker(dataclasses.replace(base, experiment=experiment_name), space, experiment.StudyTrainer(), parent, trials).run(s)
    wall = time.perf_counter() - start
    client.set_terminated(parent)
    return s, wall


def bench_cache(trials: int, epochs: int, model: str, log, quick: bool = False) -> dict:
    """quick: without the warm-up (fair timing is its only use: its imports and first convolutions
    fall in the cached study's first trial instead) and with the model names kept in the emptied
    cache folder (no timm import in the first trial). Either way the cache folder in effect before
    is in effect again after."""
    base = TrainConfig(model=model, freeze="backbone", epochs=epochs, num_workers=0, log_model=False)
    space = SearchSpace.parse({"lr": "1e-3:1", "batch_size": "32,64,128", "weight_decay": "1e-6:1e-2",
                               "momentum": "0.5:0.99"})
    out = {"trials": trials, "epochs": epochs, "model": model}
    from mlproject.train import fit

    if not quick:
        warm = dataclasses.replace(base, epochs=1, cache_features=False)  # imports, first convolutions: outside both
        p = experiment.prepare(warm)
        fit(p.model, p.data, warm, p.device)
    before = os.environ.get(features.ENV)
    with tempfile.TemporaryDirectory(prefix="bench_features_") as cache_dir:
        use_cache_dir(cache_dir, keep_model_names=quick)  # features.ENV
        features._memo.clear()
        for name, cached in (("cached", True), ("uncached", False)):
            with temp_store(f"bench-{name}"):
                s, wall = study(dataclasses.replace(base, cache_features=cached), space, trials, f"bench-{name}")
            complete = [t for t in s.trials if t.state == TrialState.COMPLETE]
            out[name] = {"wall_s": wall, "best_val_accuracy": s.best_value, "complete": len(complete),
                         "values": [t.value for t in s.trials]}
            log(f"  {name}: {trials} trials in {wall:.1f} s, best val accuracy {s.best_value:.4f}")
    if before is not None:  # the cache folder in effect before (quick: with the model names), not the removed one
        os.environ[features.ENV] = before
    else:
        os.environ.pop(features.ENV, None)
    out["ratio"] = out["cached"]["wall_s"] / out["uncached"]["wall_s"]
    out["same_best"] = abs(out["cached"]["best_val_accuracy"] - out["uncached"]["best_val_accuracy"]) < 1e-9
    out["max_value_diff"] = max(abs(a - b) for a, b in zip(out["cached"]["values"], out["uncached"]["values"]))
    return out


def epochs_for(seconds: float, model: str) -> int:
    """Epochs of `model` on digits whose training and validation take about `seconds` here
    (timed over 5 epochs of fit, after 2 untimed ones)."""
    from mlproject.train import fit

    cfg = TrainConfig(model=model, epochs=2, num_workers=0)
    p = experiment.prepare(cfg)
    fit(p.model, p.data, cfg, p.device)  # warm-up
    start = time.perf_counter()
    fit(p.model, p.data, dataclasses.replace(cfg, epochs=5), p.device)
    return max(1, round(seconds / ((time.perf_counter() - start) / 5)))


def sampler_thread_cpu_s() -> float | None:
    """CPU seconds (user + system) the live system-metrics sampler thread has used so far; None
    where none runs or the platform's thread ids do not match psutil's (Linux: they do). 0.0 is a
    real reading: the kernel counts thread CPU in 10 ms ticks and a quick trial's sampler, asleep
    between samples, may not reach one (CI, stop 15: every trial read 0.0)."""
    import threading

    import psutil

    ids = {t.native_id for t in threading.enumerate() if t.name == "SystemMetricsMonitor" and t.is_alive()}
    found = [t.user_time + t.system_time for t in psutil.Process().threads() if t.id in ids]
    return sum(found) if found else None


def bench_tracking(trials: int, seconds: float, model: str, log) -> dict:
    """Share of each trial's wall time spent in tracking (MLflow calls, figures, dataset logging),
    and what `tune --system-metrics` adds: the same trials with a sampler each, interleaved with
    those without (off, on, off, on, ...), in one store."""
    import tracking.runs as runs

    epochs = epochs_for(seconds, model)
    base = TrainConfig(model=model, epochs=epochs, num_workers=0, log_model=False)
    space = SearchSpace.parse({"lr": "0.05", "batch_size": "64", "weight_decay": "1e-4", "momentum": "0.9"})
    timer = CallTimer()
    per_trial: dict[str, list[float]] = {"off": [], "on": []}  # seconds in tracking, per trial
    sampler = {"start_stop_s": [], "thread_cpu_s": []}  # per sampled trial
    from mlflow.tracking import MlflowClient

    # tracking's functions as experiment and objective call them, and MLflow's entry points
    # underneath (and those called directly, e.g. MetricBuffer's batches): nested calls count once
    for fn in ("log_params", "log_dataset", "log_metrics", "log_evaluation", "log_figures", "set_tags",
               "set_run_tags", "log_run_metrics"):
        timer.wrap(tracking, fn, f"tracking.{fn}")
    timer.wrap_context_manager(tracking, "training_run", "tracking.training_run")
    for fn in ("start_run", "end_run", "set_tags", "set_tag", "log_metrics", "log_figure", "log_dict",
               "log_text", "log_table"):
        timer.wrap(mlflow, fn, f"mlflow.{fn}")
    for fn in ("log_batch", "get_run", "set_tag", "set_terminated", "log_inputs", "log_figure", "log_dict"):
        timer.wrap(MlflowClient, fn, f"MlflowClient.{fn}")
    # the sampler's start and stop, on the trial's path (inside training_run: counted there too)
    start_original, stop_original = runs.start_system_metrics, runs.stop_system_metrics
    on_path = [0.0]

    def start_timed(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return start_original(*args, **kwargs)
        finally:
            on_path[0] += time.perf_counter() - t0

    def stop_timed(*args, **kwargs):
        cpu = sampler_thread_cpu_s()  # the thread is gone once stopped
        t0 = time.perf_counter()
        try:
            return stop_original(*args, **kwargs)
        finally:
            if cpu is not None:
                sampler["thread_cpu_s"].append(cpu)
            on_path[0] += time.perf_counter() - t0

    runs.start_system_metrics, runs.stop_system_metrics = start_timed, stop_timed
    try:
        with temp_store("bench-tracking"):
            client = mlflow.MlflowClient()
            exp = client.get_experiment_by_name("bench-tracking")
            data = [experiment.prepare(base).data]  # loaded once per worker, as `tune` does
            arms = {}
            for arm in ("off", "on"):
                parent = client.create_run(exp.experiment_id).info.run_id
                worker = Worker(dataclasses.replace(base, experiment="bench-tracking"), space, experiment.StudyTrainer(), parent,
                                trials, system_metrics=arm == "on")
                worker.data = data
                arms[arm] = (optuna.create_study(direction="maximize"), worker)
            last = 0.0
            for _ in range(trials):
                for arm, (s, worker) in arms.items():
                    on_path[0] = 0.0
                    s.optimize(worker.objective, n_trials=1)
                    per_trial[arm].append(timer.total - last)
                    last = timer.total
                    if arm == "on":
                        sampler["start_stop_s"].append(on_path[0])
            steps = [len(client.get_metric_history(t.user_attrs["mlflow_run_id"], "system/cpu_utilization_percentage"))
                     for t in arms["on"][0].trials]
    finally:
        timer.restore()
        runs.start_system_metrics, runs.stop_system_metrics = start_original, stop_original
    walls = {arm: [t.duration.total_seconds() for t in s.trials] for arm, (s, _) in arms.items()}
    shares = [100 * t / w for t, w in zip(per_trial["off"], walls["off"])]
    sampled_pct = [100 * (c + p) / w for c, p, w in zip(sampler["thread_cpu_s"], sampler["start_stop_s"], walls["on"])]
    med = statistics.median
    log(f"  {trials} trials of {epochs} epochs: wall {med(walls['off']):.1f} s, in tracking "
        f"{med(per_trial['off']):.3f} s")
    system = {"trial_wall_s": med(walls["on"]), "tracking_s": med(per_trial["on"]),
              "wall_ratio": med(walls["on"]) / med(walls["off"]),
              "thread_cpu_s": med(sampler["thread_cpu_s"]) if sampler["thread_cpu_s"] else 0.0,
              "start_stop_s": med(sampler["start_stop_s"]), "share_pct": med(sampled_pct) if sampled_pct else 0.0,
              # the thread alone, over the run's time: what any sampled run pays (a train run, a study's parent)
              "thread_cpu_pct": 100 * med(c / w for c, w in zip(sampler["thread_cpu_s"], walls["on"]))
              if sampler["thread_cpu_s"] else 0.0,
              "steps_per_trial": med(steps), "interval_s": runs.SYSTEM_METRICS_INTERVAL_S,
              "samples_per_step": runs.SYSTEM_METRICS_SAMPLES}
    log(f"  the same trials with --system-metrics: wall {system['trial_wall_s']:.1f} s, sampler thread "
        f"{system['thread_cpu_s']:.3f} s CPU, its start + stop {system['start_stop_s']:.3f} s, "
        f"{system['steps_per_trial']:g} step(s) logged")
    return {"trials": trials, "epochs": epochs, "model": model, "trial_wall_s": med(walls["off"]),
            "tracking_s": med(per_trial["off"]),
            "tracking_share_pct": med(shares), "by_call_s": dict(sorted(timer.by_name.items(), key=lambda kv: -kv[1])),
            "calls": timer.calls, "system_metrics": system}


class TuneRun:
    """The real `tune` command with --workers N, started now in a temp dir with fresh stores, and a
    thread that waits for its exit; wall_s() its seconds from start to exit. `made_store`: `tune`
    gets an MLflow store whose tables exist (quick: their migrations take seconds, a tenth of a
    2-trial study; the full mode leaves them to `tune`, as a first study meets them). `cache_dir`
    (quick): its and its workers' MLPROJECT_CACHE_DIR, holding the model names, so that none of
    them imports timm to list them (0.7 s of CPU each, common.use_cache_dir)."""

    def __init__(self, n: int, trials: int, epochs: int, model: str, made_store: bool = False,
                 cache_dir: str | None = None):
        self.n = n
        self.tmp = tempfile.TemporaryDirectory(prefix="bench_workers_")
        tmp = self.tmp.name
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env["MLFLOW_TRACKING_URI"] = new_store(tmp) if made_store else f"sqlite:///{tmp}/mlflow.db"
        if cache_dir:
            env[features.ENV] = cache_dir
        cmd = [sys.executable, "-m", "mlproject.app.tune", "--model", model, "--epochs", str(epochs),
               "--num-workers", "0", "--trials", str(trials), "--workers", str(n), "--pruner", "none",
               "--storage", f"sqlite:///{tmp}/optuna.db", "--study-name", f"w{n}", "--no-log-model"]
        self.stderr = tempfile.TemporaryFile("w+")
        self.start = time.perf_counter()
        self.proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=self.stderr, text=True)
        self.waiter = threading.Thread(target=self._wait, daemon=True)
        self.waiter.start()
        atexit.register(self._stop)  # where this process fails before waiting for it

    def _wait(self) -> None:
        self.proc.wait()
        self.end = time.perf_counter()

    def _stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()

    def wall_s(self, timeout_s: float = 3600) -> float:
        join_or_kill(self.waiter, self.proc, timeout_s)
        try:
            if self.proc.returncode != 0:
                self.stderr.seek(0)
                raise RuntimeError(f"tune --workers {self.n} failed:\n{self.stderr.read()[-3000:]}")
        finally:
            self.stderr.close()
            self.tmp.cleanup()
        return self.end - self.start


def bench_workers(counts: list[int], trials: int, epochs: int, model: str, log, made_store: bool = False,
                  cache_dir: str | None = None, started: TuneRun | None = None) -> dict:
    """Trials per hour of the real `tune` command with --workers N (fresh stores each), one after
    the other; `started`: the run of counts[0], started earlier (quick). The rest: TuneRun's."""
    out = {}
    cores = os.cpu_count() or 1
    for n in counts:
        run = started if started is not None and started.n == n else TuneRun(n, trials, epochs, model, made_store, cache_dir)
        wall = run.wall_s()
        out[str(n)] = {"wall_s": wall, "trials_per_hour": trials / wall * 3600,
                       "threads_per_worker": max(1, cores // n)}
        log(f"  --workers {n}: {trials} trials in {wall:.1f} s = {trials / wall * 3600:.0f} trials/hour "
            f"({max(1, cores // n)} torch threads each, {cores} cores)")
    one = out[str(counts[0])]["trials_per_hour"]
    for n in counts:
        out[str(n)]["speedup_vs_first"] = out[str(n)]["trials_per_hour"] / one
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="CI smoke mode (figures are rough)")
    ap.add_argument("--only", default="cache,tracking,workers", help="comma-separated parts to run")
    ap.add_argument("--json", metavar="PATH", help="write the figures as JSON to PATH")
    args = ap.parse_args(argv)
    parts = set(args.only.split(","))
    log = lambda s: print(s, flush=True)  # noqa: E731
    res: dict = {"quick": args.quick, "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                 "device": "cuda" if torch.cuda.is_available() else "cpu"}
    # part 3's runs: counts, trials, epochs, model. Full: 16 trials of ~4 s, so each worker's start
    # (spawn, imports, data: ~6 s) is a small part. Quick: --workers 2 alone (the worker processes,
    # their threads; 1 worker runs in `tune`'s own process: nothing else), a one-epoch softmax trial
    # each; a `tune` costs ~16 s on 2 cores whatever its trials (imports, store, parent run,
    # summary), and each worker process ~7 s more
    workers = ([2], 2, 1, "softmax") if args.quick else ([1, 2, 4], 16, 20, "smallcnn")
    started = None
    if args.quick:  # stores from a template kept across runs; a cache folder of its own with the model names
        keep_store_template()
        cache = tempfile.TemporaryDirectory(prefix="bench_cache_")
        use_cache_dir(cache.name, keep_model_names=True)
        if "workers" in parts:
            # part 3's `tune` starts first and runs beside parts 1 and 2 (its imports, parent run and
            # summary keep one core busy, not two): 22-24 s on 2 idle cores against 32-34 s in turns
            # (2026-12-03). This process then has one torch thread: two hand work back and forth on
            # cores the `tune` keeps busy
            started = TuneRun(workers[0][0], *workers[1:], made_store=True, cache_dir=cache.name)
            torch.set_num_threads(1)
    if "cache" in parts:
        log("1. frozen-backbone study, cached vs uncached features")
        # 10 epochs: as seed 000's pretrained backbones for its outlier test (its own CNNs ran 30)
        # trials, epochs, model; quick: 2 trials, the fewest where one reads what another cached
        res["cache"] = bench_cache(*((2, 1, "lenet5") if args.quick else (20, 10, "resnet18")), log, quick=args.quick)
    if "tracking" in parts:
        log("2. tracking share of a tracked trial")
        # trials per arm, seconds of training each, model
        res["tracking"] = bench_tracking(*((1, 0.3, "softmax") if args.quick else (3, 10.0, "smallcnn")), log)
    if "workers" in parts:
        log("3. trials per hour by --workers" + (" (quick: started with part 1, beside parts 1 and 2)" if started else ""))
        res["workers"] = bench_workers(*workers, log, made_store=args.quick, cache_dir=cache.name if args.quick else None,
                                       started=started)
    log("\nsummary")
    if "cache" in res:
        c = res["cache"]
        log(f"cached / uncached wall time ({c['trials']} trials, {c['model']}, {c['epochs']} epochs): "
            f"{c['ratio']:.3f} (target <= {CACHE_TARGET}) {'PASS' if c['ratio'] <= CACHE_TARGET else 'MISS'}; "
            f"best val accuracy {c['cached']['best_val_accuracy']:.4f} vs {c['uncached']['best_val_accuracy']:.4f} "
            f"({'identical' if c['same_best'] else 'DIFFERENT'}; largest trial difference {c['max_value_diff']:.2g})")
    if "tracking" in res:
        t = res["tracking"]
        log(f"tracking share of a {t['trial_wall_s']:.1f} s trial: {t['tracking_s']:.3f} s = "
            f"{t['tracking_share_pct']:.2f} % (target <= {TRACKING_TARGET_PCT} %) "
            f"{'PASS' if t['tracking_share_pct'] <= TRACKING_TARGET_PCT else 'MISS'}")
        m = t["system_metrics"]
        log(f"--system-metrics per {m['trial_wall_s']:.1f} s trial (a sample every {m['interval_s']:g} s): sampler "
            f"thread {m['thread_cpu_s']:.3f} s CPU + start/stop {m['start_stop_s']:.3f} s = {m['share_pct']:.2f} % "
            f"(the thread alone: {m['thread_cpu_pct']:.2f} % of a core); trial wall time with / without "
            f"{m['wall_ratio']:.3f}")
    if "workers" in res:
        log("trials per hour: " + ", ".join(f"{n} worker(s) {w['trials_per_hour']:.0f} (x{w['speedup_vs_first']:.2f})"
                                            for n, w in res["workers"].items()))
    if args.json:
        write_json(args.json, res)
    return 0


if __name__ == "__main__":
    run_main(main)
