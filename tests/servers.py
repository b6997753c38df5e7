"""Real servers for integration tests: a throw-away PostgreSQL cluster and an `mlflow server`.

    with postgres_cluster(user="tuner", password="pw", database="optuna") as pg:
        pg.url  # postgresql+psycopg2://tuner:pw@127.0.0.1:PORT/optuna
    with mlflow_server(tmp_dir) as uri:
        uri     # http://127.0.0.1:PORT
    server = MlflowServer(tmp_dir); ...; server.wait_ready(); ...; server.stop()   # start overlapped
    server.start_again(); server.wait_ready()     # after stop(): an outage ends (same port and store)
    pg.stop_server(); pg.start_server(); pg.restart()   # a PostgreSQL outage (same port and data)

Both raise Unavailable (the caller skips) when the software cannot be found or installed.
Readiness is polled in bounded loops; teardown stops what was started, by its own process.
"""
from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path


class Unavailable(RuntimeError):
    """The server's software is missing and could not be installed here."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, timeout: float, what: str, proc=None, log: Path | None = None, interval_s: float = 0.25):
    """Poll `check()` every `interval_s` until it returns a truthy value (returned), for at most
    `timeout` seconds; RuntimeError (with the tail of `log`) on timeout or as soon as `proc` (a
    Popen, or a list of them) has exited."""
    procs = [] if proc is None else proc if isinstance(proc, (list, tuple)) else [proc]
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            break
        try:
            value = check()
            if value:
                return value
        except Exception as e:  # not up yet
            last = e
        time.sleep(interval_s)
    tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
    exited = [p.returncode for p in procs if p.poll() is not None]
    state = f"exited with {exited}" if exited else f"timed out after {timeout:.0f} s"
    raise RuntimeError(f"{what} not ready ({state}; last error {last!r})\n{tail}")


# --------------------------------------------------------------------------------------- PostgreSQL

def apt_install(package: str, timeout: float = 900) -> None:
    """`apt-get install -y --no-install-recommends PACKAGE` (after one `apt-get update` if the
    package lists are stale); Unavailable when apt-get is missing or the install fails."""
    apt = shutil.which("apt-get")
    if not apt:
        raise Unavailable(f"{package} is not installed and apt-get is not available")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = [apt, "install", "-y", "--no-install-recommends", package]
    import fcntl

    # test processes side by side (pytest-xdist) may both find the package missing: one apt-get at
    # a time (dpkg's own lock would fail the second at once); the second then finds it installed
    with open(os.path.join(tempfile.gettempdir(), "mlproject-tests-apt.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
            if proc.returncode != 0:  # stale package lists: update once and retry
                subprocess.run([apt, "update"], env=env, capture_output=True, text=True, timeout=300)
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise Unavailable(f"apt-get install {package} failed: {e}") from None
    if proc.returncode != 0:
        raise Unavailable(f"apt-get install {package} failed ({proc.returncode}): {proc.stderr[-500:]}")


def postgres_bindir() -> Path:
    """The directory holding initdb/pg_ctl; installs Debian's `postgresql` package if needed."""

    tools = ("initdb", "pg_ctl", "pg_isready", "psql")

    def find():
        candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True,
                            key=lambda d: int(Path(d).parent.name) if Path(d).parent.name.isdigit() else 0)
        on_path = shutil.which("pg_ctl")  # often a symlink (/usr/local/bin/pg_ctl -> .../15/bin/pg_ctl)
        if on_path:
            candidates += [os.path.dirname(os.path.realpath(on_path)), os.path.dirname(on_path)]
        for d in candidates:
            if all((Path(d) / n).exists() for n in tools):
                return Path(d)
        return None

    found = find()
    if found:
        return found
    apt_install("postgresql")
    found = find()
    if not found:
        raise Unavailable("apt-get installed postgresql but no initdb/pg_ctl was found")
    return found


def ensure_psycopg2() -> None:
    """psycopg2, the PostgreSQL driver of postgresql+psycopg2:// URLs (SQLAlchemy, so Optuna's
    RDBStorage); `pip install psycopg2-binary` when it is missing."""
    try:
        import psycopg2  # noqa: F401
        return
    except ImportError:
        pass
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "psycopg2-binary"],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise Unavailable(f"pip install psycopg2-binary failed: {proc.stderr[-500:]}")
    import importlib

    importlib.invalidate_caches()
    import psycopg2  # noqa: F401


@dataclass
class Postgres:
    bindir: Path
    root: Path  # data directory's parent, also the unix socket directory
    port: int
    user: str
    password: str
    database: str
    host: str = "127.0.0.1"
    # the driver named: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, 2.0 to psycopg2
    scheme: str = "postgresql+psycopg2"

    @property
    def url(self) -> str:
        return self.url_with()

    def url_with(self, password: str | None = None, port: int | None = None, database: str | None = None) -> str:
        return (f"{self.scheme}://{self.user}:{self.password if password is None else password}@{self.host}:"
                f"{self.port if port is None else port}/{database or self.database}")

    def superuser(self, database: str = "postgres", autocommit: bool = True):
        """A psycopg2 connection as the cluster's superuser over its unix socket (trust auth)."""
        import psycopg2

        conn = psycopg2.connect(host=str(self.root), port=self.port, user="postgres", dbname=database)
        conn.autocommit = autocommit
        return conn

    def connect(self, autocommit: bool = False):
        """A psycopg2 connection as the user, over TCP as the workers connect (5 s to connect)."""
        import psycopg2

        conn = psycopg2.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                                dbname=self.database, connect_timeout=5)
        conn.autocommit = autocommit
        return conn

    def create_database(self, name: str) -> str:
        """A new empty database owned by the user; returns its URL (with the password)."""
        conn = self.superuser()
        try:
            conn.cursor().execute(f"CREATE DATABASE {name} OWNER {self.user}")
        finally:
            conn.close()
        return self.url_with(database=name)

    def redacted(self, port: int | None = None) -> str:
        return f"{self.scheme}://{self.user}:***@{self.host}:{self.port if port is None else port}/{self.database}"

    # ---- outages: the server stopped, started, restarted (same data directory, port and options)

    def pg_ctl(self, *args: str, timeout: float = 120) -> None:
        """`pg_ctl -D DATA -l LOG -w ARGS...` as the cluster's owner (`postgres` when running as
        root), with the options postgres_cluster started it with."""
        owner = "postgres" if os.geteuid() == 0 else None
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c max_connections=100"
        cmd = [str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-l", str(self.root / "server.log"),
               "-w", "-t", str(int(timeout)), "-o", opts, *args]
        proc = subprocess.run(_as_db_owner(cmd, owner), capture_output=True, text=True, timeout=timeout + 30)
        if proc.returncode != 0:
            raise RuntimeError(f"pg_ctl {' '.join(args)} failed ({proc.returncode}): "
                               f"{proc.stdout[-1500:]}{proc.stderr[-1500:]}")

    def stop_server(self) -> None:
        """`pg_ctl stop -m fast`: open sessions are ended (their clients see the connection drop)."""
        self.pg_ctl("-m", "fast", "stop")

    def start_server(self) -> None:
        self.pg_ctl("start")

    def restart(self) -> None:
        """`pg_ctl restart -m fast`: every session ended, the server back within about a second."""
        self.pg_ctl("-m", "fast", "restart")


def _as_db_owner(cmd: list[str], owner: str | None) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the `postgres` user then."""
    if owner is None:
        return cmd
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", owner, "--", *cmd]
    import shlex

    return ["su", owner, "-s", "/bin/sh", "-c", shlex.join(cmd)]


@contextlib.contextmanager
def postgres_cluster(user: str, password: str, database: str, start_timeout: float = 60):
    """initdb into a fresh temporary directory, start on a free 127.0.0.1 port (unix socket in
    that directory), create `user` WITH PASSWORD (scram-sha-256 over TCP) owning `database`;
    `pg_ctl stop -m fast` and remove the directory on exit."""
    bindir = postgres_bindir()
    owner = None
    if os.geteuid() == 0:
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            raise Unavailable("running as root and there is no 'postgres' user to run PostgreSQL as") from None
        owner = "postgres"
    # /tmp directly: pytest's tmp_path lives under a 0700 directory of root's the postgres user can't enter
    root = Path(tempfile.mkdtemp(prefix="pg-"))
    data = root / "data"
    if owner:
        os.chown(root, pw.pw_uid, pw.pw_gid)
    port = free_port()
    log = root / "server.log"

    def run(cmd, **kw):
        proc = subprocess.run(_as_db_owner(cmd, owner), capture_output=True, text=True, timeout=120, **kw)
        if proc.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stdout[-1500:]}{proc.stderr[-1500:]}")
        return proc

    started = False
    try:
        run([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
             "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"])
        run([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", str(int(start_timeout)),
             "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=100",
             "start"])
        started = True

        def ready():  # pg_isready over TCP: exit 0 once it accepts connections
            return subprocess.run([str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-t", "2"],
                                  capture_output=True, timeout=10).returncode == 0

        wait_for(ready, start_timeout, f"PostgreSQL on port {port}", log=log)
        psql = [str(bindir / "psql"), "-v", "ON_ERROR_STOP=1", "-h", str(root), "-p", str(port), "-U", "postgres",
                "-d", "postgres", "-c"]
        run([*psql, f"CREATE ROLE {user} LOGIN PASSWORD '{password}'"])
        run([*psql, f"CREATE DATABASE {database} OWNER {user}"])
        yield Postgres(bindir, root, port, user, password, database)
    finally:
        if started:
            try:
                run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "60", "stop"])
            except Exception as e:  # teardown must not hide the test's own failure
                print(f"pg_ctl stop failed: {e}", file=sys.stderr)
        shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------------------------------------------ MLflow server

class MlflowServer:
    """`mlflow server` on a free 127.0.0.1 port with a SQLite backend and proxied artifacts under
    `tmp`, started at once (Popen); `wait_ready()` polls GET /health; `stop()` terminates it."""

    def __init__(self, tmp: Path, workers: int = 1):
        tmp = Path(tmp)
        tmp.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "mlflow-server.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        # no job runner + 7 huey consumer processes (GenAI jobs, unused here): a faster start and
        # stop on 2 cores
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        from conftest import new_mlflow_store  # its tables made: the server starts without MLflow's migrations

        cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
               "--workers", str(workers), "--backend-store-uri", new_mlflow_store(tmp),
               "--artifacts-destination", str(tmp / "artifacts")]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL,
                                         start_new_session=True)  # own group: its workers stop with it
        self.ready = False
        self._cmd, self._cwd, self._env = cmd, tmp, env  # for start_again

    def start_again(self) -> None:
        """Start the stopped server again: the same command, port and backend store (an outage
        that ends); its log is appended to. `wait_ready()` polls it up again."""
        if self.proc.poll() is None:
            raise RuntimeError(f"mlflow server on port {self.port} is still running")
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self._cmd, cwd=self._cwd, env=self._env, stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        self.ready = False

    def wait_ready(self, timeout: float = 120) -> str:
        def healthy():
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                return r.status == 200

        if not self.ready:
            wait_for(healthy, timeout, f"mlflow server on port {self.port}", proc=self.proc, log=self.log)
            self.ready = True
        return self.uri

    def stop(self) -> None:
        _stop_group(self.proc)


@contextlib.contextmanager
def mlflow_server(tmp: Path, start_timeout: float = 120, workers: int = 1):
    """An MlflowServer that is up (yields its http:// URI); stopped on exit."""
    server = MlflowServer(tmp, workers)
    try:
        yield server.wait_ready(start_timeout)
    finally:
        server.stop()


def _stop_group(proc: subprocess.Popen, grace: float = 15) -> None:
    """SIGTERM the process group this test started (proc leads it), SIGKILL after `grace` s."""
    import signal

    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    else:  # leader gone: reap any of its children left in the group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
