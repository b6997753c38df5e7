"""SIGTERM and SIGINT as one path: both raise `Interrupted` (a KeyboardInterrupt), so every
clean-up written for Ctrl-C (runs ended KILLED with the reason, Optuna trials failed and re-run
later, the study's parent run KILLED) runs for the SIGTERM that Slurm, Kubernetes, systemd and
`docker stop` send before they kill. A second signal while cleaning up ends the process at once.

    handle_signals()               # in a command's main process and in each worker process
    try: ...
    except KeyboardInterrupt as e:
        sys.exit(exit_code(e))     # 130 (SIGINT) or 143 (SIGTERM), the shells' 128 + signal number

Where the process is at a signal decides how it stops. Outside a tracked run `Interrupted` is
raised at once, wherever the main thread is. Inside one (`deferred()`: tracking.training_run, from
the run's creation to its end) the signal is only noted, and `Interrupted` is raised at the next
`stop_point()`: in the training loop (`stop_points()`: the loop, its validation passes and its
per-epoch callbacks, where a process spends nearly all its time) after the current batch, else
once the run's body is done, before the run would end FINISHED. An exception raised inside
SQLAlchemy, MLflow or Optuna (a trial reporting its epoch to the storage, a batch of metrics on its
way, a run's params) can leave a lock held or a transaction open, and the clean-up that follows
then waits on it, or fails.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

NAMES = {signal.SIGINT: "SIGINT (Ctrl-C)", signal.SIGTERM: "SIGTERM"}


class Interrupted(KeyboardInterrupt):
    """A signal asked the process to stop; str() names it ('SIGTERM')."""

    def __init__(self, signum: int):
        super().__init__(NAMES.get(signum, signal.Signals(signum).name))
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def exit_code(e: BaseException) -> int:
    """The exit status for an interruption: 128 + its signal (a bare KeyboardInterrupt is SIGINT's)."""
    return e.exit_code if isinstance(e, Interrupted) else 128 + signal.SIGINT


# A signal within this many seconds of the first is the same request delivered twice, not a
# second one: Slurm and systemd signal every process of a job, and `tune` forwards the signal to
# its worker processes too, so a worker may get one from each within milliseconds.
SAME_REQUEST_S = 0.5
_first_at: float | None = None
_caught: int | None = None  # the first signal, until it is raised
_deferring = 0  # depth of stop_points() regions (fit in cross_validate: nested)


def _second(signum, frame):
    """A signal during clean-up: no more waiting on it."""
    if _first_at is not None and time.monotonic() - _first_at < SAME_REQUEST_S:
        return
    os._exit(128 + signum)


def _first(signum, frame):
    global _first_at, _caught
    _first_at = time.monotonic()
    for s in NAMES:
        signal.signal(s, _second)
    if _deferring:
        _caught = signum  # raised at the next stop_point()
        return
    raise Interrupted(signum)


def pending() -> bool:
    """Whether a signal was noted inside stop_points() and its Interrupted not raised yet: the
    training loop saves its checkpoint when this is true, before the stop_point() that raises."""
    return _caught is not None


def stop_point() -> None:
    """Raise the Interrupted that a signal asked for inside stop_points(), if any (once), in the
    main thread (Python runs signal handlers there); in another thread (a pass over a split that
    runs beside the main thread's recording) it does nothing, leaving the signal to the main thread."""
    global _caught
    if _caught is not None and threading.current_thread() is threading.main_thread():
        signum, _caught = _caught, None
        raise Interrupted(signum)


@contextlib.contextmanager
def stop_points():
    """Inside, a signal raises Interrupted only at a stop_point() (and, at the latest, on leaving)."""
    with deferred():
        yield
    stop_point()  # after the region's last batch (not in `finally`: an exception on its way out goes on)


@contextlib.contextmanager
def deferred():
    """Inside, a signal is only noted (pending()); the caller raises it with stop_point() where it
    can clean up after it: an MLflow run being created exists once this is left, and is then ended
    KILLED (tracking.training_run), where a signal in the middle left it RUNNING for good."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1


def handle_signals() -> None:
    """SIGINT and SIGTERM raise Interrupted in the main thread (once; a second one exits at once
    with 128 + its number). A SIGINT that the process inherited ignored (`cmd &` in a script)
    stays ignored, as the shell meant."""
    for s in NAMES:
        if s == signal.SIGINT and signal.getsignal(s) is signal.SIG_IGN:
            continue
        signal.signal(s, _first)


# Why: a command's imports (torch, MLflow, Optuna, scikit-learn, SQLAlchemy, pandas) leave ~800k
# objects that live as long as the process. CPython 3.11 collects the oldest generation each time 10
# collections of the middle one have run and the objects that survived them grew by a quarter: as
# the imports grow the heap, 10 full collections in a 4-trial `tune` of basecnn, each a scan of the
# whole heap (0.02 s at 50k objects, 0.4 s at 800k): 1.6 s of CPU, nearly all while importing. With
# 100 instead of 10: 1 full collection (0.28 s); the young generations, where nearly all garbage
# dies, are collected as often as before. In the test processes (pytest's workers, which import
# every module and run hundreds of tests): 6 s of full collections each in `-m "not slow"`, 2.9 s.
# Measured with gc.callbacks, 2026-12-04.
OLDEST_GENERATION_EVERY = 100


def collect_old_objects_rarely() -> None:
    """Call first in a process that imports the whole stack (a command, a worker's fork server):
    a full collection after 100 collections of the middle generation, not Python's 10."""
    import gc

    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, OLDEST_GENERATION_EVERY)


# Why: glibc's malloc serves a block of over 128 KiB from pages mapped for it alone, and after each
# such block is freed raises that threshold to its size (up to 32 MiB); torch's CPU allocator keeps
# no cache of its own, so whether a training step's activations (basecnn on digits: 6-13 MB blocks)
# land in memory the process already holds, or in new pages that the kernel zeroes on first touch,
# depends on what the process allocated before. The same 3 basecnn epochs on digits (2 cores,
# 2026-12-04), after the same other work: 0 to 176k minor page faults and 1.38-1.69 s from process
# to process (the evaluation batch of the run before, 55 or 256, moved them either way); with the
# threshold at its 32 MiB ceiling and up to 1 GiB of freed memory kept for reuse: 0-2 faults and
# 1.39-1.50 s whatever ran before, the same peak memory (0.93-1.1 GB).
MMAP_THRESHOLD_BYTES = 32 * 2**20
TRIM_THRESHOLD_BYTES = 2**30
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h


def reuse_freed_memory() -> bool:
    """Call first in a process that trains (a command, a worker's fork server): glibc's malloc
    keeps freed memory for the next allocations instead of mapping fresh pages each step. Whether
    it applied: not where the C library is not glibc (macOS, Windows, musl), which keep theirs."""
    import ctypes

    try:
        if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):  # "glibc 2.36"
            return False
    except (AttributeError, OSError, ValueError):  # not POSIX, or no GNU C library
        return False
    libc = ctypes.CDLL(None)  # the process's own C library
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
                and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))


# Why: with torch, MLflow, Optuna and matplotlib loaded, Python's exit-time sweeps took 2.5-3.5 s of
# every command's and worker's exit on 2 cores, 0.4-0.7 s frozen (measured side by side).
def leave_heap_to_the_os() -> None:
    """Call when a process's work is done and it is about to exit: Python's finalisation then
    skips sweeping the objects alive now; the OS frees the memory either way."""
    import gc

    gc.freeze()
