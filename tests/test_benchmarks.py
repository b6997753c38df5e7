"""The benchmarks still run: each one's `--quick` mode end to end, figures in its JSON.

A quick mode is a smoke check: every part of its benchmark on the smallest inputs that exercise it
(seconds each). Only that the figures exist and are well-formed is checked, and the floors that
hold whatever the machine (a cached study scores as the uncached one, pruning never trains more
epochs, ...), not the targets: CI machines are too noisy for performance assertions.
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# one test process, one benchmark at a time: they time work and load the cores on purpose
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("benchmarks")]

KEYS = ["throughput_ratio", "mlflow_share_pct", "mlflow_share_pct_without_log_model", "tracked_untracked_ratio"]


def run_quick(tmp_path, script: str, timeout: float = 300):
    """`benchmarks/SCRIPT --quick --json FILE` in tmp_path with no MLflow settings inherited;
    (stdout, figures from the JSON)."""
    out = tmp_path / f"{script}.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--json", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


def only_json_left(tmp_path) -> bool:
    """Stores, artifacts and caches went to temp dirs: the working directory holds the JSON alone."""
    return all(p.suffix == ".json" for p in tmp_path.iterdir())


def test_bench_train_quick(tmp_path):
    stdout, figures = run_quick(tmp_path, "bench_train.py")
    assert "trainer/bare throughput ratio" in stdout and "MLflow share" in stdout
    for key in KEYS:
        value = figures[key]
        assert isinstance(value, float) and math.isfinite(value) and value > 0, (key, value)
    # the two loops of the throughput comparison did the same arithmetic
    assert figures["throughput"]["max_weight_diff"] < 1e-3
    # every MLflow entry point was timed and restored: the runs logged through the wrappers
    calls = figures["tracking"]["run_with_log_model"]["mlflow_calls"]
    assert calls["mlflow.start_run"] == 1 and calls["mlflow.pyfunc.log_model"] == 1
    assert only_json_left(tmp_path)


def test_bench_tune_quick(tmp_path):
    _, figures = run_quick(tmp_path, "bench_tune.py")
    o, p, s = figures["overhead"], figures["pruning"], figures["sampler"]
    assert 0 < o["fit_s"] < o["trial_wall_s"] and 0 < o["overhead_share"] < 1
    assert p["pruned"]["epochs"] <= p["unpruned"]["epochs"] and 0 <= p["epoch_reduction"] < 1
    assert s["trials"] > 10 and s["ms_per_trial_mean"] > 0  # past TPE's 10 random start-up trials
    assert only_json_left(tmp_path)


def test_bench_figures_quick(tmp_path):
    stdout, figures = run_quick(tmp_path, "bench_figures.py")
    assert "digits run total" in stdout and "figures share of a 40-trial study" in stdout
    assert figures["quick"] and figures["repeats"] == 1
    for kind in ("figures_ms", "figures_cpu_ms"):
        ms = figures[kind]["new"]
        assert "digits run total" in ms and "cifar run total" in ms and len(ms) == 12, ms  # 10 figures + 2 runs
        assert all(math.isfinite(v) and v > 0 for v in ms.values()), (kind, ms)
    s = figures["study"]["new"]
    assert s["trials"] == 40 and 1 <= s["trials_drawn"] <= s["trials"]
    assert 0 < s["per_trial_cm_ms"] and 0 < s["once_ms"] and math.isfinite(s["share_pct"]) and s["share_pct"] > 0
    assert only_json_left(tmp_path)


def test_bench_speed_quick(tmp_path):
    _, figures = run_quick(tmp_path, "bench_speed.py", timeout=600)
    c, t, w = figures["cache"], figures["tracking"], figures["workers"]
    # the cached and uncached studies sampled and scored the same trials
    assert c["same_best"] and c["max_value_diff"] < 1e-6
    assert c["cached"]["complete"] == c["uncached"]["complete"] == c["trials"] >= 2  # one trial reads the cache
    assert math.isfinite(c["ratio"]) and 0 < c["ratio"]
    assert 0 < t["tracking_s"] < t["trial_wall_s"] and 0 < t["tracking_share_pct"] < 100
    # entered and left once per trial, without and with --system-metrics
    assert t["calls"]["tracking.training_run"] == 2 * t["trials"] * 2
    # --system-metrics: the sampled trials logged steps, its thread and start/stop cost something, not the trial
    m = t["system_metrics"]
    assert m["steps_per_trial"] >= 1 and 0 < m["start_stop_s"] < m["trial_wall_s"] and 0 < m["share_pct"] < 100
    assert 0 <= m["thread_cpu_s"] < m["trial_wall_s"] and 0 <= m["thread_cpu_pct"] < 100 and m["wall_ratio"] > 0
    assert set(w) == {"2"} and all(v["trials_per_hour"] > 0 for v in w.values())  # quick: the worker processes
    assert w["2"]["threads_per_worker"] == max(1, (os.cpu_count() or 1) // 2)
    assert only_json_left(tmp_path)


def test_bench_search_quick(tmp_path):
    stdout, figures = run_quick(tmp_path, "bench_search.py")
    assert "hypervolume default/random" in stdout and "one model per trial" in stdout
    d, r, every = figures["default"], figures["random"], figures["keep_every_model"]
    assert d["trials"] == r["trials"] == every["trials"] == figures["trials"]
    assert d["hypervolume"] > 0 and r["hypervolume"] > 0 and math.isfinite(figures["hypervolume_ratio"])
    # the best set's models only: no more than one per trial, registered once each; quick's inputs
    # put a trial off the front (an mlp below the first's accuracy), so fewer than one per trial
    assert 1 <= d["models_stored"] < every["models_stored"] == every["trials"]
    assert d["registered"] == len(d["front"]) and d["artifact_bytes"] < every["artifact_bytes"]
    assert only_json_left(tmp_path)


def test_bench_peer_quick(tmp_path):
    stdout, figures = run_quick(tmp_path, "bench_peer.py")
    assert "wall-time ratio tune / peer" in stdout and "per trial outside fit" in stdout and "around the trials" in stdout
    assert figures["quick"] and figures["side_by_side"] and len(figures["pairs"]) == len(figures["ratios"]) == 1
    for value in [figures["ratio_median"], figures["cpu_ratio_median"], *figures["ratios"]]:
        assert isinstance(value, float) and math.isfinite(value) and value > 0, value
    for kind in ("tune", "peer"):
        for key in ("wall_s", "cpu_s", "outside_training_s", "outside_fit_s", "trial_outside_training_s",
                    "train_time_s", "fit_time_s"):
            value = figures[kind][key]
            assert isinstance(value, float) and math.isfinite(value) and value > 0, (kind, key, value)
        # fit is the training steps and the validation passes: more than the first, less than the run
        assert figures[kind]["train_time_s"] < figures[kind]["fit_time_s"], figures[kind]
        assert figures[kind]["outside_fit_s"] < figures[kind]["outside_training_s"], figures[kind]
        # around the trials: the process's wall time less its trials', a few seconds (imports at least)
        assert 0 < figures[kind]["around_trials_s"] < figures[kind]["wall_s"], figures[kind]
        assert figures["pairs"][0][kind]["complete"] == figures["trials"]
    # the peer script and `tune` ran the same trials (TPE, seed 0, one search space)
    assert figures["same_params"]
    assert only_json_left(tmp_path)


def test_bench_accuracy_quick(tmp_path):
    stdout, figures = run_quick(tmp_path, "bench_accuracy.py")
    assert "SVC GridSearchCV: test accuracy" in stdout and "rank correlation" in stdout
    r, base = figures["recipe"], figures["baselines"]
    assert r["complete"] == r["trials_requested"] and 0 < r["registered_test_accuracy"] <= 1
    # the registered champion predicts exactly what its trial logged
    assert r["registered_test_accuracy"] == r["champion"]["test_accuracy_logged"]
    assert base["svc"]["test_accuracy"] > 0.98 and base["logistic_regression"]["test_accuracy"] > 0.9
    # every trial's settings retrained on the hold-out; Spearman's rho of each objective (NaN where one ties)
    assert len(figures["holdout"]) == r["complete"]
    assert all(math.isnan(v) or -1 <= v <= 1 for v in figures["rank_correlation"].values())
    assert only_json_left(tmp_path)
