"""What a person sees in a terminal while `tune` runs: a progress bar with one line per trial
above it, no log chatter breaking it, a traceback only for a bug. `tune` runs in a real pty and
the screen is read through a terminal emulator (pyte)."""
import fcntl
import os
import pty
import select
import struct
import sys
import termios
import time

import pyte
import pytest
from click.testing import CliRunner

from mlproject.app.tune import tune, tune_args
from conftest import new_mlflow_store

COLUMNS, ROWS = 140, 60


def run_in_pty(args: list[str], cwd, timeout_s: float = 300) -> tuple[int, str]:
    """`tune ARGS` with a pty as its terminal (stdin, stdout, stderr); (exit status, raw output)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_TRACKING_URI=new_mlflow_store(cwd), TERM="xterm", COLUMNS=str(COLUMNS),
               LINES=str(ROWS), OMP_NUM_THREADS="1")
    pid, fd = pty.fork()
    if pid == 0:  # the child: tune, in its terminal
        os.chdir(cwd)
        os.execve(sys.executable, [sys.executable, "-c", "from mlproject.app.tune import main; main()", *args], env)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
    out, deadline = b"", time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # EIO: the child closed the terminal (it exited)
                    break
                if not chunk:
                    break
                out += chunk
        else:
            os.kill(pid, 9)
            pytest.fail("tune did not finish in time:\n" + out.decode(errors="replace")[-3000:])
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


def screen_of(raw: str) -> list[str]:
    """The terminal's lines as a person reads them once `tune` has exited, scrolled-off ones included."""
    screen = pyte.HistoryScreen(COLUMNS, ROWS, history=1000)
    pyte.Stream(screen).feed(raw.replace("\n", "\r\n"))
    history = ["".join(ch.data for ch in line.values()).rstrip() if isinstance(line, dict)
               else "".join(line[x].data for x in sorted(line)).rstrip() for line in screen.history.top]
    return [line for line in history + [line.rstrip() for line in screen.display] if line]


@pytest.mark.slow
def test_tune_in_a_terminal_shows_one_line_per_trial_and_an_unbroken_bar(tmp_path):
    # a grid of four trials, one of which diverges (an expected outcome: one line, no traceback)
    code, raw = run_in_pty(["--model", "softmax,mlp", "--lr", "0.05,1e30", "--sampler", "grid", "--epochs", "2",
                            "--batch-size", "64", "--weight-decay", "0", "--momentum", "0.9", "--num-workers", "0",
                            "--study-name", "term"], tmp_path)
    lines = screen_of(raw)
    text = "\n".join(lines)
    assert code == 0, text[-3000:]
    outcomes = [line for line in lines if line.startswith("trial ") and ("complete" in line or "failed" in line)]
    assert len(outcomes) == 4, text
    assert sum(": complete: val_accuracy=" in line or " complete: val_accuracy=" in line for line in outcomes) == 3
    (failed,) = [line for line in outcomes if "failed" in line]
    assert failed.startswith("trial ") and "failed: TrainingDiverged: training loss became nan" in failed
    assert "model=mlp" in failed and "lr=1e+30" in failed
    assert "Traceback" not in text  # an expected failure is one line
    assert " INFO " not in text and "[I 20" not in text  # MLflow's and Optuna's chatter is off
    # the bar was drawn, whole, on its own line: no log text glued to it mid-line (it counts the
    # finished trials: the diverged one is failed, and the grid has no fifth point to run)
    (bar,) = [line for line in lines if line.startswith("study term:") and "|" in line]
    assert "3/4" in bar and bar.endswith("]"), text
    assert all(line.startswith("trial ") for line in lines if "complete:" in line or "failed:" in line)
    assert "study term: 3 complete, 0 pruned, 1 failed" in text


@pytest.mark.slow
def test_a_trial_failing_outside_its_run_has_its_reason_and_traceback_too(store, monkeypatch):
    """A bug before the trial's run starts (here: in preparing its model) fails the trial with the
    same fail_reason and traceback as one inside training; it had neither (Optuna's log only)."""
    import optuna
    import mlproject.app.experiment as experiment

    real_prepare = experiment.StudyTrainer.prepare

    def prepare(self, cfg, data=()):
        if cfg.run_name == "trial-0":
            raise RuntimeError("injected bug in preparing")
        return real_prepare(self, cfg, data)

    monkeypatch.setattr(experiment.StudyTrainer, "prepare", prepare)
    args = ["--model", "softmax", "--lr", "0.05", "--epochs", "1", "--num-workers", "0", "--pruner", "none",
            "--trials", "1", "--study-name", "early"]
    result = CliRunner().invoke(tune, tune_args(args))
    assert result.exit_code == 0, result.output
    assert "trial 0 failed: RuntimeError: injected bug in preparing" in result.stderr
    assert 'raise RuntimeError("injected bug in preparing")' in result.stderr
    trials = optuna.load_study(study_name="early", storage="sqlite:///optuna.db").trials
    assert trials[0].user_attrs["fail_reason"] == "RuntimeError: injected bug in preparing"
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]


def test_an_unexpected_exception_shows_its_traceback_and_verbose_shows_every_one(store, monkeypatch):
    """A bug (here: an exception injected into training) is shown with its traceback; an expected
    failure (a diverged trial) is one line unless --verbose."""
    import mlproject.app.experiment as experiment

    real_fit = experiment.fit

    def fit(*args, **kwargs):
        if args[2].model == "mlp":  # cfg
            raise RuntimeError("injected bug")
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(experiment, "fit", fit)
    common = ["--model", "softmax,mlp", "--lr", "0.05", "--sampler", "grid", "--epochs", "1", "--batch-size", "64",
              "--weight-decay", "0", "--momentum", "0.9", "--num-workers", "0", "--pruner", "none"]
    result = CliRunner().invoke(tune, tune_args([*common, "--study-name", "bug"]))
    assert result.exit_code == 0, result.output
    err = result.stderr
    assert "failed: RuntimeError: injected bug [model=mlp" in err
    assert "Traceback (most recent call last)" in err and 'raise RuntimeError("injected bug")' in err
    # diverging is expected: one line; with --verbose its traceback too
    diverge = ["--model", "mlp", "--lr", "1e30", "--batch-size", "64", "--weight-decay", "0", "--momentum", "0.9",
               "--epochs", "1", "--num-workers", "0", "--trials", "1", "--pruner", "none"]
    monkeypatch.setattr(experiment, "fit", real_fit)
    quiet = CliRunner().invoke(tune, tune_args([*diverge, "--study-name", "d1"]))
    assert "trial 0 failed: TrainingDiverged" in quiet.stderr and "Traceback" not in quiet.stderr
    loud = CliRunner().invoke(tune, tune_args([*diverge, "--study-name", "d2", "--verbose"]))
    assert "trial 0 failed: TrainingDiverged" in loud.stderr and "Traceback" in loud.stderr
