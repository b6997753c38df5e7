"""A real single-node Slurm for integration tests (tests/test_deploy.py): its own munged, slurmctld
and slurmd, as root, with everything (munge key and socket, slurm.conf, state, spool, logs) in one
temporary directory; nothing in /etc is read or changed, and a Slurm or munge already running on
the machine is left alone (other ports, another munge socket).

    with slurm_cluster() as slurm:          # or the module-scoped fixture `slurm` below
        job = slurm.sbatch("--array=0-2", "script.sbatch", "--arg", cwd=tmp, env=env)   # "12"
        slurm.tasks(job)                    # {"12_0": {"JobState": "RUNNING", "Restarts": "0", ...}, ...}
        slurm.run("scontrol", "update", "JobId=12_1", "StartTime=now")

The node has the machine's CPUs (no GPU gres: a script's `--gres=gpu:1` must be dropped, e.g.
`sbatch --gres=none`) and sits in two partitions for real preemption: `low` (the default) and
`high`, whose jobs preempt `low`'s by requeueing them (PreemptType=preempt/partition_prio,
PreemptMode=REQUEUE, no GraceTime: the preempted job's processes get SIGTERM at once and SIGKILL
KillWait seconds later). JobRequeue=0: a job is requeued only if it asked (`--requeue`).

Debian's packages (slurmctld slurmd slurm-client munge: Slurm 22.05 on Debian 12) are installed
when missing; servers.Unavailable (the fixture skips) where they cannot be, or where this is not
root (the daemons run as root: SlurmUser=root). Readiness is polled with a deadline
(servers.wait_for); teardown cancels every job, waits for them to end, and stops the daemons and
any job process left, each by its own process id.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import servers

# Debian package -> a program it installs
PACKAGES = {"slurmctld": "slurmctld", "slurmd": "slurmd", "slurm-client": "sbatch", "munge": "munged"}
START_TIMEOUT_S = 60  # munged, slurmctld and slurmd up, the node idle: about a second when idle
KILL_WAIT_S = 30  # slurm.conf KillWait (Slurm's default): SIGTERM to SIGKILL of a job ended by Slurm


def _which(program: str) -> str | None:
    # sbin is not on every root PATH (su without -l)
    return shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin:/usr/bin")


def install() -> dict[str, str]:
    """{program: path} for the daemons and commands used here; Debian's packages installed when
    missing (servers.apt_install); servers.Unavailable where they cannot be or this is not root."""
    if os.geteuid() != 0:
        raise servers.Unavailable("a test Slurm runs its daemons as root (SlurmUser=root); not root here")
    for package, program in PACKAGES.items():
        if not _which(program):
            servers.apt_install(package)
    programs = ["munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "scancel"]
    found = {p: _which(p) for p in programs}
    missing = [p for p, path in found.items() if not path]
    if missing:
        raise servers.Unavailable(f"installed {', '.join(PACKAGES)} but found no {', '.join(missing)}")
    try:
        import pwd

        pwd.getpwnam("munge")
    except KeyError:
        raise servers.Unavailable("no 'munge' user to run munged as (Debian's munge package makes it)") from None
    return found


@dataclass
class Slurm:
    root: Path  # everything of this cluster: slurm.conf, munge/, state/, spool/, logs
    conf: Path
    node: str
    programs: dict[str, str]
    procs: list[subprocess.Popen]  # munged, slurmctld, slurmd

    @property
    def env(self) -> dict[str, str]:
        """The environment for Slurm's commands (and the jobs, which inherit it): SLURM_CONF set."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *cmd: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 30) -> str:
        """A Slurm command (sbatch, squeue, scontrol, ...) against this cluster; its stdout.
        RuntimeError with its output when it fails."""
        args = [self.programs.get(cmd[0], cmd[0]), *cmd[1:]]
        proc = subprocess.run(args, env={**(env or os.environ), "SLURM_CONF": str(self.conf)}, cwd=cwd,
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stdout[-1500:]}{proc.stderr[-1500:]}")
        return proc.stdout

    def sbatch(self, *args: str, cwd: Path, env: dict | None = None) -> str:
        """`sbatch --parsable ARGS` from `cwd` with `env` (the job inherits it); the job id."""
        return self.run("sbatch", "--parsable", *args, env=env, cwd=cwd).strip().split(";")[0]

    def tasks(self, job: str) -> dict[str, dict[str, str]]:
        """`scontrol -o show job JOB`: each job (or array task, as "JOB_TASK") and its fields;
        {} once Slurm has forgotten the job (MinJobAge after it ended)."""
        try:
            out = self.run("scontrol", "-o", "show", "job", job)
        except RuntimeError as e:
            if "Invalid job id" in str(e):
                return {}
            raise
        tasks = {}
        for line in out.splitlines():
            fields = dict(re.findall(r"(\w+)=(\S*)", line))
            if not fields:
                continue
            name = (f"{fields['ArrayJobId']}_{fields['ArrayTaskId']}" if fields.get("ArrayTaskId", "").isdigit()
                    else fields["JobId"])
            tasks[name] = fields
        return tasks

    def idle(self) -> bool:
        states = self.run("sinfo", "-h", "-n", self.node, "-o", "%T").split()
        return bool(states) and set(states) == {"idle"}

    def log_tail(self, chars: int = 3000) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-chars:]}"
                         for p in (self.root / "slurmctld.log", self.root / "slurmd.log") if p.exists())


def _conf(root: Path, node: str, cpus: int, ports: tuple[int, int]) -> str:
    return f"""\
# a single-node test cluster (tests/slurm.py): everything under {root}
ClusterName=mlproject-test
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ports[0]}
SlurmdPort={ports[1]}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
# no cgroups, no accounting: what runs in a container as root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
# the main scheduler every 2 s (default 60): a job waiting on a freed CPU or a StartTime update
# starts within seconds
SchedulerParameters=sched_interval=2
ReturnToService=2
KillWait={KILL_WAIT_S}
# requeued only when asked (sbatch --requeue): the tests prove a script's --requeue does it
JobRequeue=0
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=low Nodes={node} Default=YES PriorityTier=1 MaxTime=INFINITE State=UP
PartitionName=high Nodes={node} PriorityTier=2 PreemptMode=OFF MaxTime=INFINITE State=UP
"""


def _start(cmd: list[str], log: Path, env: dict, user: str | None = None) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                user=user, group=user,  # munged as the munge user, no runuser between
                                start_new_session=True)  # own group: slurmctld's slurmscriptd stops with it


def _job_processes(slurm: Slurm) -> list[int]:
    """Processes of this cluster's jobs still alive (slurmstepd and what runs under it): those
    whose environment names its slurm.conf, bar the daemons' own process groups (they were given
    SLURM_CONF too) and this test process."""
    daemons = {p.pid for p in slurm.procs}
    mark = f"SLURM_CONF={slurm.conf}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if mark not in (entry / "environ").read_bytes().split(b"\0") or os.getpgid(int(entry.name)) in daemons:
                continue
        except OSError:  # gone meanwhile
            continue
        pids.append(int(entry.name))
    return pids


@contextlib.contextmanager
def slurm_cluster(cpus: int | None = None):
    """munged (as the munge user, its own key and socket), `slurmctld -D` and `slurmd -D` as
    subprocesses on free ports, the node idle in both partitions; yields a Slurm. On exit: every
    job cancelled and waited for, then the daemons and any process left stopped."""
    programs = install()
    node = socket.gethostname().split(".")[0]
    cpus = cpus or os.cpu_count() or 1
    root = Path(tempfile.mkdtemp(prefix="slurm-"))
    root.chmod(0o755)  # munged (the munge user) must reach its directory below
    munge = root / "munge"
    munge.mkdir(mode=0o755)  # munged wants its socket directory executable by all, writable by it alone
    import pwd

    pw = pwd.getpwnam("munge")
    os.chown(munge, pw.pw_uid, pw.pw_gid)
    for d in ("state", "spool"):
        (root / d).mkdir()
    conf = root / "slurm.conf"
    conf.write_text(_conf(root, node, cpus, (servers.free_port(), servers.free_port())))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    procs: list[subprocess.Popen] = []
    slurm = Slurm(root, conf, node, programs, procs)
    try:
        subprocess.run([programs["mungekey"], "--create", f"--keyfile={munge}/munge.key"], user="munge",
                       group="munge", check=True, capture_output=True, timeout=30)
        procs.append(_start([programs["munged"], "--foreground", f"--socket={munge}/munge.socket",
                             f"--key-file={munge}/munge.key", f"--log-file={munge}/munged.log",
                             f"--pid-file={munge}/munged.pid", f"--seed-file={munge}/munged.seed"],
                            root / "munged.out", env, user="munge"))
        servers.wait_for(lambda: (munge / "munge.socket").exists(), START_TIMEOUT_S, "munged", proc=procs,
                         log=root / "munged.out")
        procs.append(_start([programs["slurmctld"], "-D", "-i"], root / "slurmctld.out", env))
        procs.append(_start([programs["slurmd"], "-D", "-N", node], root / "slurmd.out", env))
        servers.wait_for(slurm.idle, START_TIMEOUT_S, f"Slurm node {node}", proc=procs, log=root / "slurmctld.log")
        yield slurm
    finally:
        _teardown(slurm)
        shutil.rmtree(root, ignore_errors=True)


def _teardown(slurm: Slurm) -> None:
    """Cancel every job and wait for them to end (their processes stopped by slurmd), then stop the
    daemons (slurmd, slurmctld, munged: the reverse order); SIGKILL whatever job process is left."""
    daemons_up = len(slurm.procs) == 3 and all(p.poll() is None for p in slurm.procs)
    if daemons_up:
        with contextlib.suppress(Exception):
            slurm.run("scancel", "--full", "--user", "root")
            servers.wait_for(lambda: not _job_processes(slurm), KILL_WAIT_S + 30, "Slurm's jobs to end")
    for proc in reversed(slurm.procs):
        servers._stop_group(proc)
    for pid in _job_processes(slurm):  # ours: started by this cluster's slurmd
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _job_processes(slurm) and time.monotonic() < deadline:
        time.sleep(0.1)


@pytest.fixture(scope="module")
def slurm():
    """A running single-node Slurm (slurm_cluster) for the module; skipped where Slurm cannot be
    installed (servers.Unavailable), as the PostgreSQL tests are."""
    try:
        t = time.monotonic()
        with slurm_cluster() as cluster:
            print(f"\nSlurm up in {time.monotonic() - t:.1f} s")
            yield cluster
    except servers.Unavailable as e:
        pytest.skip(str(e))
