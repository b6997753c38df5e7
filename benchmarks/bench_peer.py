"""`tune` against the study script a user would write (PEER below), as processes, side by side.

    python benchmarks/bench_peer.py            # full: 3 pairs, 10 trials x 3 epochs of basecnn (minutes)
    python benchmarks/bench_peer.py --quick    # a smoke check: 1 pair side by side, 2 one-epoch softmax trials (15 s)
    python benchmarks/bench_peer.py --pairs 5 --json out.json

The real `tune` command (the console script next to this Python) and PEER, a minimal Optuna +
MLflow script, run as processes in turns (the first of each pair alternates), each in a fresh
temp folder with its own SQLite stores (MLflow sqlite:///.../mlflow.db, Optuna sqlite:///.../optuna.db;
the artifacts go to the folder's ./mlruns; MLflow's migrations of the new store are part of both
processes' times in the full mode, as a first study meets them). The full mode runs

    tune --model basecnn --trials 10 --epochs 3 --batch-size 64 --pruner none

(the sampler TPE, seed 0: tune's default) against PEER with the same options. Printed, and written
with --json: each pair's wall-time ratio tune / peer and their median (issue 19: 1.32-1.37 at
first, target <= 1.1), the same for CPU time (user + system of the process and its children:
less sensitive to other load on the machine than wall time), and for both the median per-trial
time outside fit (issue 19: target <= 0.5 s): a trial's MLflow run (end_time - start_time) minus
its `train_time_s` metric (training steps only, as mlproject.train.fit counts them) and its
epochs' `val_time_s` (each validation pass; PEER times and logs both the same way); the time
outside training (the validation passes counted in it: run minus train_time_s), and that over
Optuna's trial (datetime_complete - datetime_start: sampling, the model's construction and
Optuna's writes too).

PEER is what the comparison is against: the same digits split and the same network, because it
calls the project's `create_dataset` (digits, seed 0: 1257 / 180 / 360 images, stratified, as every
`tune` trial sees them) and `create_model` + `set_normalisation` (basecnn with its bilinear resize
to 28 px and the training set's mean and std, seeded as `tune` seeds it), so the data and
architecture are identical, not re-implemented; everything else is its own, as a user writes it:
plain SGD (TrainConfig's defaults: no Nesterov, no schedule) over the shuffled training set (a
torch.Generator seeded 0, batches by indexing, as mlproject's loop), validation after each epoch,
Optuna's TPESampler(seed=0) sampling lr (1e-4:1e-1, log), momentum (0.5:0.99) and weight decay
(1e-6:1e-2, log) in that order, tuning.space's defaults in its field order (batch size fixed, as
`--batch-size 64` fixes it), a parent MLflow run and a nested child run per trial recording the
sampled and fixed params, per-epoch train_loss, train_accuracy, val_loss, val_accuracy, lr,
epoch_time_s and val_time_s, final test_accuracy, test_loss, train_time_s and model_size_mb, and a
confusion-matrix PNG (sklearn's ConfusionMatrixDisplay, mlflow.log_figure). Both sample the same
parameters in every trial, and the same seeds and loop train the same weights: the JSON says
whether the two studies' sampled params, trial outcomes and objective values agree (`same_params`,
`max_value_diff`; CPU). As `tune`, PEER fails a trial whose training loss is no longer finite after
an epoch (seed 0's trial 9 on basecnn, lr 0.068) and runs trials until `trials` completed (Optuna's
MaxTrialsCallback), as `tune --trials` counts them.

What `tune` records that PEER does not (a real tune trial and study, inspected with MlflowClient):
  per trial: every TrainConfig field as a param (~40, with input_size, input_channels,
    num_classes, class_names; PEER: the sampled ones and 5 fixed), ~15 tags (versions of Python,
    torch, timm, MLflow, Optuna; device and its name; model source; optuna.study, trial number and
    state), the three splits as MLflow dataset inputs (with digests and tags), more final metrics
    (final_train_accuracy: one more pass over the training set; final_val_accuracy,
    test_time_s, test and train throughput, params_total, params_trainable, one
    test_class_accuracy/<class> per class), the confusion matrix as JSON and CSV besides the PNG, the
    classification report; for a trial that enters the best set when it ends: its model (an MLflow
    pyfunc model with its signature and environment) and three more figures (misclassified test
    images, loss/accuracy curves, first-layer weights); Optuna user attrs per trial (the run id,
    metrics, model URI).
  per study: the parent run's params (the fixed options, the search space, sampler, pruner),
    tags (best.* params, storage), metrics (best value and trial, trial counts, wall time, the
    dataset's sizes) and its system metrics (a sampler thread for the study's length), the
    dataset inputs and the input analysis (JSON, a samples-per-class figure), the study figures
    (optimization history, parallel coordinates, param importances, slices) and trials.csv, the
    best model registered in the Model Registry with its `champion` alias, the study's signature
    (Optuna user attr), a trials table and the UI link printed at the end, trial heartbeats in
    the Optuna storage.
  and PEER exits as a script does, through Python's finalisation (its heap sweeps: seconds with
    torch, MLflow, Optuna and matplotlib loaded), where `tune` skips them
    (mlproject.signals.leave_heap_to_the_os).

--quick is a smoke check of every part: 1 pair, 2 one-epoch softmax trials, the pair's two
processes side by side (one core each, where the full mode runs them in turns; CPU times come per
process from os.wait4 either way), and MLflow stores whose tables exist (copies of
common.kept_store_template(), made once for all runs, as bench_speed's quick `tune` runs get:
the migrations take 1.1 s of each process). The processes' own costs (imports; `tune`'s parent
run, figures and summary) are most of it: ~30 s of CPU in all (`tune` ~13 s, PEER ~12 s, this
process ~5 s), 14-15 s of wall time on 2 idle cores (2026-12-03; 30 s with the processes in
turns and their stores' template made here first). Its figures are rough (the processes share
the cores); the full mode's are noisy on a shared machine too (its wall and CPU times per pair;
--pairs 5 for a steadier median).
"""
from __future__ import annotations

import argparse
import atexit
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from common import join_or_kill, kept_store_template, run_main, write_json  # the benchmarks' common parts

# The user's script: argv MODEL TRIALS EPOCHS BATCH_SIZE OPTUNA_STORAGE; MLflow's store from
# MLFLOW_TRACKING_URI, its artifacts in ./mlruns.
PEER = r'''
import io, math, sys, time
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import mlflow, optuna, torch
import torch.nn.functional as F
from sklearn.metrics import ConfusionMatrixDisplay
from mlproject.config import TrainConfig
from mlproject.data import create_dataset, peek_dataset
from mlproject.models import create_model, set_normalisation

model_name, storage = sys.argv[1], sys.argv[5]
trials, epochs, batch_size = (int(a) for a in sys.argv[2:5])
cfg = TrainConfig(model=model_name, epochs=epochs, batch_size=batch_size)
data = create_dataset(cfg)  # digits, split as mlproject splits it (seed 0)

def evaluate(model, split):
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(split.images[i:i + 256]) for i in range(0, len(split), 256)])
    return F.cross_entropy(logits, split.labels).item(), logits.argmax(1)

def objective(trial):
    lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    momentum = trial.suggest_float("momentum", 0.5, 0.99)
    weight_decay = trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
    torch.manual_seed(0)
    model, _ = create_model(cfg, peek_dataset(cfg))
    set_normalisation(model, data.info.mean, data.info.std)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    shuffle = torch.Generator().manual_seed(0)
    with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True):
        mlflow.log_params({"model": model_name, "dataset": "digits", "optimizer": "sgd", "epochs": epochs,
                           "batch_size": batch_size, **trial.params})
        train_time = 0.0
        for epoch in range(1, epochs + 1):
            model.train()
            loss_sum, correct, start = 0.0, 0, time.perf_counter()
            for idx in torch.randperm(len(data.train), generator=shuffle).split(batch_size):
                images, labels = data.train.images[idx], data.train.labels[idx]
                logits = model(images)
                loss = F.cross_entropy(logits, labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                loss_sum += loss.item() * len(labels)
                correct += (logits.argmax(1) == labels).sum().item()
            epoch_time = time.perf_counter() - start
            train_time += epoch_time
            if not math.isfinite(loss_sum):  # the run ends FAILED, and so does the trial
                raise RuntimeError(f"training loss became {loss_sum} in epoch {epoch} (lr={lr})")
            start = time.perf_counter()
            val_loss, predicted = evaluate(model, data.val)
            val_accuracy = (predicted == data.val.labels).float().mean().item()
            val_time = time.perf_counter() - start
            mlflow.log_metrics({"train_loss": loss_sum / len(data.train), "train_accuracy": correct / len(data.train),
                                "val_loss": val_loss, "val_accuracy": val_accuracy, "lr": lr,
                                "epoch_time_s": epoch_time, "val_time_s": val_time}, step=epoch)
        test_loss, predicted = evaluate(model, data.test)
        size = io.BytesIO()
        torch.save(model.state_dict(), size)
        mlflow.log_metrics({"test_accuracy": (predicted == data.test.labels).float().mean().item(),
                            "test_loss": test_loss, "train_time_s": train_time, "model_size_mb": size.tell() / 1e6})
        figure = ConfusionMatrixDisplay.from_predictions(data.test.labels, predicted).figure_
        mlflow.log_figure(figure, "confusion_matrix.png")
        plt.close(figure)
    return val_accuracy

mlflow.set_experiment("peer")
study = optuna.create_study(study_name="peer", storage=storage, direction="maximize",
                            sampler=optuna.samplers.TPESampler(seed=0))
with mlflow.start_run(run_name="study"):
    # `trials` complete ones, as `tune --trials` counts: one that diverged fails and another is run
    complete = optuna.study.MaxTrialsCallback(trials, states=(optuna.trial.TrialState.COMPLETE,))
    study.optimize(objective, callbacks=[complete], catch=(RuntimeError,))
    mlflow.log_params({f"best.{k}": v for k, v in study.best_params.items()})
    mlflow.log_metric("best_value", study.best_value)
print(f"best trial {study.best_trial.number}: val_accuracy {study.best_value:.4f} {study.best_params}")
'''


def tune_command() -> list[str]:
    """The `tune` console script installed with this Python (as a user runs it), else the module."""
    script = shutil.which("tune", path=os.path.dirname(sys.executable))
    return [script] if script else [sys.executable, "-m", "mlproject.app.tune"]


class Process:
    """One process (kind: 'tune' or 'peer') started in a fresh temp folder with fresh stores
    (`template`: the MLflow store starts as a copy of it) and a thread that waits for its exit: its
    wall time (start to exit) and its CPU time (user + system, its own and its children's: the
    kernel's account of that one process, os.wait4, so that two can run at once); result() adds
    its trials' times, read back from its stores."""

    def __init__(self, kind: str, model: str, trials: int, epochs: int, batch_size: int, template: str | None = None):
        self.kind, self.trials = kind, trials
        self.tmp = tempfile.TemporaryDirectory(prefix=f"bench_peer_{kind}_")
        tmp = self.tmp.name
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        self.uri = f"sqlite:///{tmp}/mlflow.db"
        if template:
            shutil.copy(template, os.path.join(tmp, "mlflow.db"))
        env["MLFLOW_TRACKING_URI"] = self.uri
        self.storage = f"sqlite:///{tmp}/optuna.db"
        if kind == "tune":
            self.cmd = tune_command() + ["--model", model, "--trials", str(trials), "--epochs", str(epochs),
                                         "--batch-size", str(batch_size), "--pruner", "none", "--storage", self.storage]
        else:
            with open(os.path.join(tmp, "peer.py"), "w") as f:
                f.write(PEER)
            self.cmd = [sys.executable, "peer.py", model, str(trials), str(epochs), str(batch_size), self.storage]
        self.output = tempfile.TemporaryFile("w+")  # stdout and stderr, read if it fails
        self.start = time.perf_counter()
        self.proc = subprocess.Popen(self.cmd, cwd=tmp, env=env, stdout=self.output, stderr=subprocess.STDOUT, text=True)
        self.waiter = threading.Thread(target=self._wait, daemon=True)
        self.waiter.start()
        atexit.register(self._stop)  # where this process fails before waiting for it

    def _stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()

    def _wait(self) -> None:
        _, status, usage = os.wait4(self.proc.pid, 0)
        self.wall = time.perf_counter() - self.start
        self.cpu = usage.ru_utime + usage.ru_stime
        self.proc.returncode = os.waitstatus_to_exitcode(status)

    def result(self, timeout_s: float = 3600) -> dict:
        """Its figures, once it has ended (killed after `timeout_s`); the temp folder goes."""
        join_or_kill(self.waiter, self.proc, timeout_s)
        try:
            if self.proc.returncode != 0:
                self.output.seek(0)
                raise RuntimeError(f"{self.kind} failed ({self.proc.returncode}): {' '.join(self.cmd)}\n"
                                   f"{self.output.read()[-5000:]}")
            out = {"wall_s": self.wall, "cpu_s": self.cpu, **records(self.uri, self.storage)}
        finally:
            self.output.close()
            self.tmp.cleanup()
        if out["complete"] != self.trials:
            raise RuntimeError(f"{self.kind}: {out['complete']} complete trials recorded, {self.trials} expected")
        return out


def records(uri: str, storage: str) -> dict:
    """Per trial, from the stores: its state, params and value, its MLflow run's duration and
    train_time_s, Optuna's duration; the medians of the time outside training over the complete
    trials (a failed one, diverged, has no train_time_s), and how many trials ended which way."""
    import optuna
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])
            if "mlflow.parentRunId" in r.data.tags]
    by_name = {r.info.run_name: r for r in runs}
    names = optuna.get_all_study_names(storage)
    study = optuna.load_study(study_name=names[0], storage=storage)
    trials = []
    for t in study.trials:
        run = by_name[f"trial-{t.number}"]
        row = {"number": t.number, "state": t.state.name, "params": t.params, "value": t.value,
               "run_s": (run.info.end_time - run.info.start_time) / 1000,
               "trial_s": (t.datetime_complete - t.datetime_start).total_seconds()}
        if t.state == optuna.trial.TrialState.COMPLETE:
            train = run.data.metrics["train_time_s"]
            fit = train + sum(m.value for m in client.get_metric_history(run.info.run_id, "val_time_s"))
            row.update(train_time_s=train, fit_time_s=fit, outside_training_s=row["run_s"] - train,
                       outside_fit_s=row["run_s"] - fit, trial_outside_training_s=row["trial_s"] - train)
        trials.append(row)
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    return {"trials": trials, "complete": len(complete), "failed": len(trials) - len(complete),
            **{key: statistics.median(t[key] for t in complete)
               for key in ("outside_training_s", "outside_fit_s", "trial_outside_training_s", "train_time_s",
                           "fit_time_s")}}


def compare_trials(a: list[dict], b: list[dict]) -> tuple[bool, float]:
    """Whether two studies ran as many trials with the same params, trial by trial (to 1e-9
    relative) and ending the same way, and the largest difference of their objective values."""
    same = len(a) == len(b) and all(
        x["state"] == y["state"] and x["params"].keys() == y["params"].keys()
        and all(math.isclose(x["params"][k], y["params"][k], rel_tol=1e-9) for k in x["params"])
        for x, y in zip(a, b))
    diffs = [abs(x["value"] - y["value"]) for x, y in zip(a, b) if x["value"] is not None and y["value"] is not None]
    return same, max(diffs, default=float("nan"))


def t_runs(rows: list[dict], kind: str) -> str:
    """'10 complete + 1 failed' per pair, joined."""
    return ", ".join(f"{r[kind]['complete']} complete + {r[kind]['failed']} failed" for r in rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="seconds-long smoke mode (CI): 1 pair of 2 softmax trials, side by side")
    ap.add_argument("--pairs", type=int, default=None, help="tune/peer pairs (default 3; quick: 1)")
    ap.add_argument("--model", default=None, help="built-in model (default basecnn; quick: softmax)")
    ap.add_argument("--trials", type=int, default=None, help="trials per study (default 10; quick: 2)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs per trial (default 3; quick: 1)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    pairs = args.pairs or (1 if args.quick else 3)
    model = args.model or ("softmax" if args.quick else "basecnn")
    trials = args.trials or (2 if args.quick else 10)
    epochs = args.epochs or (1 if args.quick else 3)
    log = lambda s: print(s, flush=True)
    log(f"{pairs} pair(s): `{' '.join(['tune'] + tune_command()[1:])} --model {model} --trials {trials} "
        f"--epochs {epochs} --batch-size {args.batch_size} --pruner none` against the peer script, "
        f"{os.cpu_count()} CPUs")
    template = kept_store_template() if args.quick else None
    rows = []
    for i in range(pairs):
        order = ("peer", "tune") if i % 2 == 0 else ("tune", "peer")  # interleaved: neither always goes first
        row = {"order": list(order)}
        if args.quick:  # side by side, one core each; this process reads the first one's stores while the other runs
            started = {kind: Process(kind, model, trials, epochs, args.batch_size, template) for kind in order}
            import mlflow.tracking  # noqa: F401  what records() reads the stores with, imported meanwhile
            import optuna  # noqa: F401
            row.update((kind, started[kind].result()) for kind in order)
        else:
            for kind in order:
                row[kind] = Process(kind, model, trials, epochs, args.batch_size, template).result()
        for kind in order:  # the process's time outside its trials: imports, set-up, parent run, plots, registry, exit
            row[kind]["around_trials_s"] = row[kind]["wall_s"] - sum(t["trial_s"] for t in row[kind]["trials"])
        row["ratio"] = row["tune"]["wall_s"] / row["peer"]["wall_s"]
        row["cpu_ratio"] = row["tune"]["cpu_s"] / row["peer"]["cpu_s"]
        row["same_params"], row["max_value_diff"] = compare_trials(row["tune"]["trials"], row["peer"]["trials"])
        rows.append(row)
        log(f"pair {i + 1} ({'side by side' if args.quick else ' then '.join(order)}): tune {row['tune']['wall_s']:.1f} s, peer "
            f"{row['peer']['wall_s']:.1f} s, ratio {row['ratio']:.3f} (CPU time {row['cpu_ratio']:.3f}); per trial "
            f"outside fit: tune {row['tune']['outside_fit_s']:.3f} s, peer {row['peer']['outside_fit_s']:.3f} s "
            f"(outside training: {row['tune']['outside_training_s']:.3f} s, {row['peer']['outside_training_s']:.3f} s)")
    med = statistics.median
    summary = {kind: {key: med(r[kind][key] for r in rows) for key in
                      ("wall_s", "cpu_s", "outside_training_s", "outside_fit_s", "trial_outside_training_s",
                       "train_time_s", "fit_time_s", "around_trials_s")}
               for kind in ("tune", "peer")}
    results = {
        "quick": args.quick, "side_by_side": args.quick, "made_stores": template is not None, "cpus": os.cpu_count(),
        "model": model,
        "trials": trials, "epochs": epochs, "batch_size": args.batch_size, "pairs": rows,
        "ratios": [r["ratio"] for r in rows],
        "ratio_median": med(r["ratio"] for r in rows), "cpu_ratio_median": med(r["cpu_ratio"] for r in rows),
        **summary,
        "same_params": all(r["same_params"] for r in rows), "max_value_diff": max(r["max_value_diff"] for r in rows),
    }
    t, p = results["tune"], results["peer"]
    log(f"\nwall-time ratio tune / peer per pair: {', '.join(f'{r:.3f}' for r in results['ratios'])}; "
        f"median {results['ratio_median']:.3f} (target <= 1.1) {'PASS' if results['ratio_median'] <= 1.1 else 'MISS'}")
    log(f"median wall time: tune {t['wall_s']:.1f} s, peer {p['wall_s']:.1f} s; CPU time (user + system, the "
        f"process and its children): tune {t['cpu_s']:.1f} s, peer {p['cpu_s']:.1f} s, ratio median "
        f"{results['cpu_ratio_median']:.3f} (steadier than wall time on a shared machine)")
    log(f"per trial outside fit (median; MLflow run minus train_time_s and the epochs' val_time_s): tune "
        f"{t['outside_fit_s']:.3f} s, peer {p['outside_fit_s']:.3f} s (target for tune <= 0.5 s) "
        f"{'PASS' if t['outside_fit_s'] <= 0.5 else 'MISS'}; outside training (the "
        f"validation passes counted in it: MLflow run minus train_time_s): tune {t['outside_training_s']:.3f} s, peer {p['outside_training_s']:.3f} s; Optuna trial "
        f"minus train_time_s: tune {t['trial_outside_training_s']:.3f} s, peer {p['trial_outside_training_s']:.3f} s; "
        f"training {t['train_time_s']:.3f} s vs {p['train_time_s']:.3f} s, fit (validation too) "
        f"{t['fit_time_s']:.3f} s vs {p['fit_time_s']:.3f} s")
    around = t["around_trials_s"] - p["around_trials_s"]
    log(f"around the trials (median; wall time minus the Optuna trials' durations: imports, set-up, parent run, "
        f"plots, registration, exit): tune {t['around_trials_s']:.1f} s, peer {p['around_trials_s']:.1f} s, "
        f"tune {around:+.1f} s (target <= +2 s) {'PASS' if around <= 2 else 'MISS'}")
    log(f"trials run: tune {t_runs(rows, 'tune')}, peer {t_runs(rows, 'peer')}; same params and outcome in every "
        f"trial: {results['same_params']}; largest objective difference {results['max_value_diff']:.2g}")
    if args.json:
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    run_main(main)
