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


# fit with a callback that signals its own process (as if the signal came while the callback wrote to
# Optuna's storage or MLflow), then prints where Interrupted was raised and how many batches ran after
FIT = textwrap.dedent("""
    import os, signal, sys, traceback
    import torch
    from mlproject.config import TrainConfig
    from mlproject.data import create_dataset, peek_dataset
    from mlproject.models import create_model
    from mlproject.signals import exit_code, handle_signals
    from mlproject.train import fit

    cfg = TrainConfig(model="softmax", epochs=3, batch_size=64, num_workers=0).validate()
    data = create_dataset(cfg)
    model, _ = create_model(cfg, peek_dataset(cfg))
    batches = []
    model.net.register_forward_hook(lambda *a: batches.append(1))
    handle_signals()

    def on_epoch(stats):
        os.kill(os.getpid(), signal.SIG{name})  # the handler runs now; the callback must go on
        batches.clear()
        print("callback finished", flush=True)

    try:
        fit(model, data, cfg, torch.device("cpu"), on_epoch=on_epoch)
    except KeyboardInterrupt as e:
        where = traceback.extract_tb(e.__traceback__)[-1].name
        print(f"{{e}} in {{where}} after {{len(batches)}} batches", flush=True)
        sys.exit(exit_code(e))
""")


@pytest.mark.parametrize("name, code", [("TERM", 143), ("INT", 130)])
def test_a_signal_inside_fit_is_raised_at_the_next_stop_point_not_inside_the_callback(name, code):
    proc = subprocess.run([sys.executable, "-c", FIT.format(name=name)], capture_output=True, text=True, timeout=120,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.returncode == code, proc.stderr[-3000:]
    shown = "SIGTERM" if name == "TERM" else "SIGINT (Ctrl-C)"
    assert proc.stdout.splitlines() == ["callback finished",
                                        f"{shown} in stop_point after 0 batches"]


# a signal that comes inside stop_points() while another thread (the final pass over the training
# split, beside the main thread's recording) reaches a stop point: that thread goes on, the main
# thread's next stop point raises it
OTHER_THREAD = textwrap.dedent("""
    import os, signal, threading
    from mlproject.signals import exit_code, handle_signals, stop_point, stop_points
    handle_signals()
    try:
        with stop_points():
            os.kill(os.getpid(), signal.SIGTERM)
            raised = []
            def other():
                try:
                    stop_point()
                except BaseException as e:
                    raised.append(type(e).__name__)
            thread = threading.Thread(target=other)
            thread.start()
            thread.join()
            print(f"other thread raised {raised}", flush=True)
            stop_point()
            print("main thread went on", flush=True)
    except KeyboardInterrupt as e:
        print(f"main thread: {e}", flush=True)
        raise SystemExit(exit_code(e))
""")


def test_a_stop_point_in_another_thread_leaves_the_signal_to_the_main_thread():
    proc = subprocess.run([sys.executable, "-c", OTHER_THREAD], capture_output=True, text=True, timeout=60)
    assert proc.stdout.splitlines() == ["other thread raised []", "main thread: SIGTERM"], proc.stderr[-2000:]
    assert proc.returncode == 143


def test_commands_and_the_workers_fork_server_collect_the_oldest_generation_rarely():
    # what each process's imports run under; fresh interpreters, where Python's default is 10
    code = textwrap.dedent("""
        import gc, importlib, sys
        from mlproject.app import cli, tune
        print(gc.get_threshold()[2], file=sys.stderr)
        for main, argv in ((tune.main, ["--help"]), (cli.main, ["--help"])):
            gc.set_threshold(700, 10, 10)
            try:
                main(argv)
            except SystemExit:
                pass
            print(gc.get_threshold()[2], file=sys.stderr)
        gc.set_threshold(700, 10, 10)
        importlib.import_module("tuning._fork_server")  # the fork server's first preload
        print(gc.get_threshold()[2], file=sys.stderr)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stderr
    from mlproject.signals import OLDEST_GENERATION_EVERY
    assert out.split() == ["10"] + [str(OLDEST_GENERATION_EVERY)] * 3, out


# a fresh interpreter runs 4 "training steps" (8 blocks of 6 MB alive at once, as a step's
# activations, then freed) after HOW set up the process; prints the minor page faults of the last 3
FRESH_PAGES = textwrap.dedent("""
    import resource, sys
    import numpy as np
    how = sys.argv[1]
    if how in ("tune", "mlproject"):
        from mlproject.app import cli, tune
        try:
            (tune if how == "tune" else cli).main(["--help"])
        except SystemExit:
            pass
    elif how == "fork-server":
        import tuning._fork_server  # the workers' fork server's first preload
    faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    def step():
        held = [np.ones(6 * 2**18, np.float32) for _ in range(8)]
    np.ones(8 * 2**18, np.float32)  # an 8 MB block freed before: malloc's threshold follows it
    step()
    before = faults()
    for _ in range(3):
        step()
    print(faults() - before)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc: Linux")
def test_commands_and_the_workers_fork_server_reuse_freed_memory_instead_of_fresh_pages():
    def faults(how: str) -> int:
        proc = subprocess.run([sys.executable, "-c", FRESH_PAGES, how], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return int(proc.stdout.split()[-1])

    # glibc's defaults: the freed blocks go back to the OS and the next steps fault fresh pages in
    # (9,156 of the 36,864 pages of 4 KiB the 3 steps touch, 2026-12-04)
    assert faults("nothing") > 3000
    for how in ("tune", "mlproject", "fork-server"):
        assert faults(how) < 100, how
