"""SIGTERM and SIGINT as one path (mlproject.signals), on real processes with real signals."""
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from mlproject.signals import SAME_REQUEST_S, Interrupted, exit_code

# a process that waits to be signalled, then "cleans up" for `cleanup` seconds and exits with
# mlproject.signals' status; it says where it is on stdout
SCRIPT = textwrap.dedent("""
    import sys, time
    from mlproject.signals import exit_code, handle_signals
    handle_signals()
    try:
        print("ready", flush=True)
        time.sleep(120)
    except KeyboardInterrupt as e:
        print(f"cleaning up after {e}", flush=True)
        time.sleep(float(sys.argv[1]))
        print("cleaned", flush=True)
        sys.exit(exit_code(e))
""")


def start(cleanup: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(cleanup)], stdout=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdout.readline() == "ready\n"
    return proc


@pytest.mark.parametrize("signum, code, name", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "SIGINT (Ctrl-C)")])
def test_either_signal_runs_the_clean_up_and_exits_128_plus_its_number(signum, code, name):
    proc = start(cleanup=0.2)
    proc.send_signal(signum)
    assert proc.wait(timeout=30) == code
    assert proc.stdout.read().splitlines() == [f"cleaning up after {name}", "cleaned"]


def test_a_second_signal_during_clean_up_ends_at_once():
    proc = start(cleanup=120)
    proc.send_signal(signal.SIGTERM)
    assert proc.stdout.readline() == "cleaning up after SIGTERM\n"
    time.sleep(SAME_REQUEST_S + 0.1)  # past the window in which a signal counts as the same request
    begin = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130 and time.monotonic() - begin < 10
    assert proc.stdout.read() == ""  # never "cleaned": the clean-up was cut short


def test_the_same_request_delivered_twice_does_not_cut_the_clean_up():
    """Slurm signals every process of a job and `tune` forwards the signal to its workers: a worker
    gets two at once, and must still clean up."""
    proc = start(cleanup=1.0)
    proc.send_signal(signal.SIGTERM)
    assert proc.stdout.readline() == "cleaning up after SIGTERM\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    assert proc.stdout.read() == "cleaned\n"


def test_exit_codes():
    assert exit_code(Interrupted(signal.SIGTERM)) == 143 and exit_code(KeyboardInterrupt()) == 130
    assert isinstance(Interrupted(signal.SIGTERM), KeyboardInterrupt)
