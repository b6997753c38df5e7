"""The shipped launches of `tune` workers (issue 20): deploy/slurm/tune.sbatch run on a real Slurm,
and the Kubernetes manifests in deploy/kubernetes/ checked against it.

- Slurm (slow): the script itself, as shipped, runs as a job array of 3 workers on a real
  single-node Slurm 22.05 (tests/slurm.py) against a real PostgreSQL and a real `mlflow server`
  (tests/test_tune_distributed.py's fixtures). The only change is on the sbatch line: `--gres=none`
  replaces the script's `--gres=gpu:1` (an option given to sbatch overrides the script's
  #SBATCH line; the test node has no GPU). Two workers are stopped mid-trial (each held still
  with SIGSTOP once it is in its epochs, so that its signal reaches it there on any machine), each
  the way a cluster stops one: one is preempted (a job in the higher-priority partition: Slurm's
  SIGTERM to the job's processes, then Slurm requeues it because the script asks for --requeue;
  the test cluster has JobRequeue=0), the other gets SIGUSR1 on its batch shell, what the script's
  `--signal=B:USR1@120` sends before the time limit (`scancel --signal=USR1 --batch`): the shell
  stops `tune` and requeues the task itself. Both come back (restart 1) and the study ends with
  exactly --trials finished trials, all different (the tasks' samplers are seeded apart), one
  parent run FINISHED, nothing RUNNING, and the two interrupted trials gone on from their
  checkpoints in their own runs, FINISHED with every epoch once.
- Kubernetes (quick): the manifests parse, hold a Secret with the URIs, PostgreSQL and MLflow
  Deployments and Services, and an Indexed Job of GPU workers whose command, arguments and
  environment are the sbatch script's (read from the script, not copied here), with a grace
  period no shorter than the script's.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import sys
import time
from pathlib import Path

import pytest
import yaml

import servers
from slurm import slurm  # noqa: F401  (module fixture)
from test_tune_distributed import mlflow_boot, postgres, runs_in, tracking_server, worker_env  # noqa: F401
from test_tune_outage import assert_study_complete

ROOT = Path(__file__).resolve().parents[1]
SBATCH = ROOT / "deploy" / "slurm" / "tune.sbatch"
KUBERNETES = ROOT / "deploy" / "kubernetes"
# measured: torch.save of a resnet18 SGD checkpoint, 90 MB, 0.2 s to a file on 2 cores; through a
# tracking server more
CHECKPOINT_S = 1.0

STUDY, TRIALS, TASKS, EXPERIMENT = "slurm", 4, 3, "slurm"
# softmax on digits, one batch size: 90 epochs, each epoch's metrics written to the server, took
# 6-12 s on a slow 2-core machine and under 1 s on a fast one (2026-12-04: 0.6 s of training), where
# Slurm takes 1-4 s to pick and signal a victim. So the test does not race the epochs: it stops
# (SIGSTOP) each running worker once it is seen in its epochs, checks that in the database while
# nothing can change it, and lets each go on (SIGCONT) only once its SIGTERM is pending
# (frozen_mid_epochs, go_on_once_signalled). 30 epochs: ~0.2 s of training on the fast machine,
# where a poll every 10 ms sees them
EPOCHS = 30
STUDY_OPTIONS = ["--study-name", STUDY, "--trials", str(TRIALS), "--experiment", EXPERIMENT, "--model", "softmax",
                 "--dataset", "digits", "--epochs", str(EPOCHS), "--batch-size", "32", "--num-workers", "0",
                 "--pruner", "none"]
JOB_TIMEOUT_S = 240  # the whole array on 2 busy cores; never reached when green
INTERRUPTED = "interrupted by SIGTERM"  # the reason a trial's run ends KILLED with (tracking.runs)


# ------------------------------------------------------------------------- the sbatch script, read

def sbatch_directives() -> dict[str, str]:
    """The script's #SBATCH options: {"--signal": "B:USR1@120", "--requeue": "", ...}."""
    options = {}
    for line in SBATCH.read_text().splitlines():
        if line.startswith("#SBATCH "):
            name, _, value = line.split(None, 1)[1].partition("=")
            options[name] = value
    return options


def sbatch_grace_s() -> int:
    """Seconds between the script's --signal and the time limit."""
    return int(re.fullmatch(r"(?:B:)?\w+@(\d+)", sbatch_directives()["--signal"]).group(1))


def sbatch_tune_command() -> list[str]:
    """The words of the script's `tune` line up to the study's options ("$@"), as the shell sees
    them before expansion: ['tune', '--storage', '$MLPROJECT_STORAGE', ...]."""
    lines = [line for line in SBATCH.read_text().splitlines() if re.match(r"\s*tune\s", line)]
    assert len(lines) == 1, lines
    words = shlex.split(lines[0], posix=False)  # quotes kept: "$X" stays one word
    words = [w[1:-1] if w[:1] == w[-1:] == '"' else w for w in words]
    assert words[-2:] == ["$@", "&"], words  # the study's options, then in the background
    return words[:-2]


def sbatch_example_options() -> list[str]:
    """The study's options in the script's example (`sbatch --array=... tune.sbatch OPTIONS`)."""
    lines = [line.lstrip("# ") for line in SBATCH.read_text().splitlines()
             if re.match(r"#\s+sbatch .*deploy/slurm/tune\.sbatch ", line)]
    assert len(lines) == 1, lines
    words = shlex.split(lines[0])
    return words[words.index("deploy/slurm/tune.sbatch") + 1:]


def sbatch_env_vars() -> list[str]:
    """The environment variables the script's `tune` line reads."""
    return [w[1:] for w in sbatch_tune_command() if w.startswith("$")]


# ------------------------------------------------------------------------------ Kubernetes: quick

def manifests() -> list[dict]:
    docs = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def one(docs, kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, (kind, name, [(d["kind"], d["metadata"]["name"]) for d in docs])
    return found[0]


def workers_job(docs) -> dict:
    jobs = [d for d in docs if d["kind"] == "Job"]
    assert len(jobs) == 1, [d["metadata"]["name"] for d in jobs]
    return jobs[0]


def container(pod_spec: dict, name: str) -> dict:
    (c,) = [c for c in pod_spec["containers"] if c["name"] == name]
    return c


def test_the_manifests_parse_and_hold_the_servers_the_secret_and_an_indexed_job_of_gpu_workers():
    docs = manifests()
    assert all(d.get("apiVersion") and d.get("kind") and d["metadata"].get("name") for d in docs), docs
    secret = one(docs, "Secret")
    uris = secret["stringData"]
    # the servers: a Deployment each, and a Service of the same name selecting its pods, at the
    # host and port the Secret's URIs name
    for name, uri in (("postgres", uris["MLPROJECT_STORAGE"]), ("mlflow", uris["MLFLOW_TRACKING_URI"])):
        deployment, service = one(docs, "Deployment", name), one(docs, "Service", name)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert service["spec"]["selector"].items() <= labels.items()
        port = service["spec"]["ports"][0]["port"]
        assert f"@{name}:{port}/" in uri or uri == f"http://{name}:{port}", (name, port, uri)
        claims = [v["persistentVolumeClaim"]["claimName"] for v in deployment["spec"]["template"]["spec"]["volumes"]
                  if "persistentVolumeClaim" in v]
        assert [one(docs, "PersistentVolumeClaim", c) for c in claims], name  # its data outlives the pod
    # the database's password is the one in the storage URL
    pg = container(one(docs, "Deployment", "postgres")["spec"]["template"]["spec"], "postgres")
    env = {e["name"]: e for e in pg["env"]}
    key = env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"]
    assert f"{env['POSTGRES_USER']['value']}:{uris[key]}@postgres:5432/{env['POSTGRES_DB']['value']}" \
        in uris["MLPROJECT_STORAGE"]

    job = workers_job(docs)
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["parallelism"] == spec["completions"] >= 2
    pod = spec["template"]["spec"]
    tune = container(pod, "tune")
    assert tune["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["restartPolicy"] == "Never"
    # a disruption (eviction, preemption, drain) is not a failure; bad input (exit 2) fails the Job
    rules = spec["podFailurePolicy"]["rules"]
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]} in rules, rules
    assert [r for r in rules if r["action"] == "FailJob" and r["onExitCodes"]["values"] == [2]], rules


def test_the_kubernetes_worker_runs_the_sbatch_scripts_command_with_its_environment():
    """Command, fixed options and environment variable names: those of the script's `tune` line;
    the study's options: those of the script's example; all of it parses as `tune` (click)."""
    from test_docs import check

    docs = manifests()
    secret = one(docs, "Secret")
    job = workers_job(docs)
    tune = container(job["spec"]["template"]["spec"], "tune")
    words = [*tune["command"], *tune["args"]]
    fixed = sbatch_tune_command()
    # the variables the script refuses to start without are the ones its `tune` line reads
    (required,) = re.findall(r"^for var in ([\w ]+); do$", SBATCH.read_text(), re.MULTILINE)
    assert required.split() == sbatch_env_vars() != [], fixed
    # shell's $VAR is Kubernetes' $(VAR)
    assert words[:len(fixed)] == [re.sub(r"^\$(\w+)$", r"$(\1)", w) for w in fixed], (words, fixed)
    assert words[len(fixed):] == sbatch_example_options()

    # every variable it reads comes from the Secret, which holds it; nothing else is set
    names = [e["name"] for e in tune["env"]]
    assert names == sbatch_env_vars()
    for e in tune["env"]:
        ref = e["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"], e
    # the wait for the servers reads the same variables
    for init in job["spec"]["template"]["spec"].get("initContainers", []):
        assert [e["name"] for e in init["env"]] == names, init["name"]

    expanded = [re.sub(r"\$\((\w+)\)", lambda m: secret["stringData"][m.group(1)], w) for w in words]
    check(expanded)  # tune's click command parses it (an unknown or renamed option fails)


@pytest.mark.slow  # MLflow's click commands: seconds to import (as in test_docs's slow tier)
def test_the_mlflow_server_manifest_parses_as_mlflow_server():
    from test_docs import check

    server = container(one(manifests(), "Deployment", "mlflow")["spec"]["template"]["spec"], "mlflow")
    words = [*server["command"], *server["args"]]
    assert words[:2] == ["mlflow", "server"]
    check(words, full=True)  # MLflow's own click command


def test_the_grace_periods_cover_a_checkpoint_and_kubernetes_waits_as_long_as_slurm():
    options = sbatch_directives()
    assert options["--gres"] == "gpu:1" and "--requeue" in options and options["--open-mode"] == "append"
    assert options["--signal"].startswith("B:"), options  # to the batch shell, which passes it on
    grace = sbatch_grace_s()
    assert grace > CHECKPOINT_S
    pod = workers_job(manifests())["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= grace > CHECKPOINT_S


# ----------------------------------------------------------------------------------- Slurm: slow

TRAINING = ("SELECT t.trial_id, a.value_json FROM trials t JOIN studies s ON s.study_id = t.study_id "
            "JOIN trial_user_attributes a ON a.trial_id = t.trial_id WHERE s.study_name = %s AND t.state = 'RUNNING' "
            "AND a.key = 'mlflow_run_id' AND (SELECT count(*) FROM trial_intermediate_values v "
            "WHERE v.trial_id = t.trial_id) BETWEEN 1 AND %s")


def trials_training(cursor) -> dict[int, str]:
    """Trials of the study RUNNING with their MLflow run started and between 1 and EPOCHS - 2 of
    their epochs reported: in their epochs (where a signal is answered with a checkpoint; a signal
    while a trial records its results, after its epochs, stops it without one), as {trial id: run
    id}. EPOCHS - 2: a worker stopped while it reports an epoch may add one more once it goes on.
    Empty before the study's tables exist."""
    import psycopg2

    try:
        cursor.execute(TRAINING, (STUDY, EPOCHS - 2))
    except psycopg2.errors.UndefinedTable:  # no worker has made them yet
        return {}
    return {trial_id: json.loads(run_id) for trial_id, run_id in cursor.fetchall()}


def tune_processes(job: str) -> dict:
    """The `tune` process of each running task of array job `job`, by task name (JOB_TASK), found by
    the Slurm variables in their environment."""
    import psutil

    found = {}
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if not any(Path(word).name == "tune" for word in cmd[:2]):
            continue
        with contextlib.suppress(psutil.Error):
            env = proc.environ()
            if env.get("SLURM_ARRAY_JOB_ID") == str(job):
                found[f"{job}_{env['SLURM_ARRAY_TASK_ID']}"] = proc
    return found


ALONE_S = 20  # a worker's set-up before its epochs: 1-2 s on a fast machine, ~10 s loaded


def frozen_mid_epochs(job: str, postgres, tracking_server: str, deadline_s: float) -> dict:
    """The two running workers' `tune` processes by task, each stopped (SIGSTOP) while its trial is
    in its epochs. Polled every 10 ms on one connection: a trial seen in its epochs has its worker
    (its run's tag mlproject.worker, host:pid) stopped, and is checked again once that worker is
    (a stopped worker writes nothing: what the check sees holds until SIGCONT); if it has left its
    epochs by then, the worker goes on. The first one stopped waits for the other for at most
    ALONE_S (its heartbeat's grace is 60 s), then goes on and both are looked for again.
    RuntimeError after `deadline_s` seconds, nothing left stopped."""
    import psutil
    from mlflow.tracking import MlflowClient

    client, pids = MlflowClient(tracking_server), {}  # run id -> its worker's pid

    def pid(run_id: str) -> int:
        if run_id not in pids:
            pids[run_id] = int(client.get_run(run_id).data.tags["mlproject.worker"].rpartition(":")[2])
        return pids[run_id]

    deadline = time.monotonic() + deadline_s
    conn = postgres.connect(autocommit=True)  # each query sees what has been committed since the last
    cursor, procs, frozen, since = conn.cursor(), {}, {}, 0.0
    try:
        while time.monotonic() < deadline:
            if len(procs) != 2 or not all(p.is_running() for p in procs.values()):
                procs = tune_processes(job)
            for trial_id, run_id in trials_training(cursor).items():
                task = next((t for t, p in procs.items() if p.pid == pid(run_id)), None)
                if task is None or task in frozen:
                    continue
                proc = procs[task]
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.suspend()  # then stopped once every thread is: the check must come after that
                    servers.wait_for(lambda: proc.status() == psutil.STATUS_STOPPED, 5, f"{task} stopped",
                                     interval_s=0.001)
                    if trial_id in trials_training(cursor):
                        frozen[task], since = proc, time.monotonic()
                    else:
                        go_on([proc])
            if len(frozen) == 2:
                return frozen
            if len(frozen) == 1 and time.monotonic() - since > ALONE_S:  # in a transaction the other waits on?
                go_on(frozen.values())
                frozen = {}
            time.sleep(0.01)
    except BaseException:
        go_on(frozen.values())
        raise
    finally:
        conn.close()
    go_on(frozen.values())
    raise RuntimeError(f"2 workers in their epochs not seen in {deadline_s:.0f} s (stopped: {sorted(frozen)})")


def go_on(procs) -> None:
    import psutil

    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.resume()


def sigterm_pending(proc) -> bool:
    """SIGTERM (15) waits for the process (stopped: it is delivered once it goes on), or it is no
    longer stopped (Slurm sends SIGCONT with its signals) or gone."""
    import psutil

    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines())
        return bool(int(fields["ShdPnd"], 16) & 1 << (15 - 1)) or proc.status() != psutil.STATUS_STOPPED
    except (OSError, psutil.Error):
        return True


def go_on_once_signalled(proc, what: str) -> None:
    servers.wait_for(lambda: sigterm_pending(proc), 30, f"SIGTERM for {what}")
    go_on([proc])


def starts(output: str) -> list[tuple[int, list[str]]]:
    """The script's runs in a task's output: (restart count, the lines it wrote) per start."""
    runs = []
    for line in output.splitlines():
        m = re.match(r"tune\.sbatch: start: task \d+ of job \d+, restart (\d+),", line)
        if m:
            runs.append((int(m.group(1)), []))
        elif runs:
            runs[-1][1].append(line)
    return runs


@pytest.mark.slow
@pytest.mark.xdist_group("slurm")
def test_a_job_array_of_workers_preempted_and_requeued_finishes_the_study(slurm, postgres, tracking_server,
                                                                         tmp_path):
    from mlflow.tracking import MlflowClient

    bin_dir = Path(sys.executable).parent  # `tune`, the console script of `pip install -e .`
    if not (bin_dir / "tune").exists():
        pytest.skip(f"no tune console script beside {sys.executable}")
    env = {**worker_env(), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "MLPROJECT_STORAGE": postgres.url, "MLFLOW_TRACKING_URI": tracking_server}
    started = time.monotonic()
    job = slurm.sbatch("--gres=none", f"--array=0-{TASKS - 1}", str(SBATCH), *STUDY_OPTIONS, cwd=tmp_path, env=env)
    outputs = {t: tmp_path / f"slurm-{job}_{t}.out" for t in range(TASKS)}
    events = []

    def note(what):
        events.append(f"{time.monotonic() - started:5.1f} s {what}")

    def state():
        return {name: (f["JobState"], int(f["Restarts"])) for name, f in slurm.tasks(job).items()}

    def describe() -> str:
        out = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:] if p.exists() else '(none)'}"
                        for p in outputs.values())
        return f"{chr(10).join(events)}\ntasks {state()}\n{out}\n{slurm.log_tail(1500)}"

    def requeued(task: str):
        """Wait for the task to be back in the queue (restart 1), then let it start at once (a
        requeued job waits ~2 minutes otherwise)."""
        servers.wait_for(lambda: state()[task] == ("PENDING", 1), 60, f"task {task} requeued")
        slurm.run("scontrol", "update", f"JobId={task}", "StartTime=now")
        note(f"{task} requeued")

    frozen = {}
    try:
        # both tasks that fit on the 2 CPUs are in their trials' epochs, stopped there (the third
        # waits for a CPU)
        frozen = frozen_mid_epochs(job, postgres, tracking_server, 120)
        running = sorted(t for t, (s, _) in state().items() if s == "RUNNING")
        note(f"stopped mid-epochs: {sorted(frozen)}")
        assert running == sorted(frozen), (running, sorted(frozen))
        # preempted: a job of the higher-priority partition needs a CPU, Slurm picks a victim and
        # requeues it at once (Restarts 1 while its processes stop; PreemptTime is not shown then)
        slurm.sbatch("--partition=high", "--job-name=preemptor", "--wrap", "sleep 1", cwd=tmp_path)
        preempted = servers.wait_for(lambda: [t for t in running if state()[t][1] == 1], 60, "a preemption")[0]
        go_on_once_signalled(frozen[preempted], f"the preempted {preempted}")
        note(f"{preempted} preempted")
        # the other: SIGUSR1 to its batch shell, as --signal sends it before the time limit
        (signalled,) = [t for t in running if t != preempted]
        slurm.run("scancel", "--signal=USR1", "--batch", signalled)
        go_on_once_signalled(frozen[signalled], f"{signalled}, from its batch shell")
        note(f"{signalled} signalled")
        requeued(preempted)
        requeued(signalled)
        servers.wait_for(lambda: all(s in ("COMPLETED", "FAILED", "CANCELLED", "PREEMPTED")
                                     for s, _ in state().values()), JOB_TIMEOUT_S, "the job array to end")
        note("all tasks ended")
    except BaseException:
        go_on(frozen.values())  # never left stopped (scancel's SIGTERM would wait for SIGCONT)
        print(describe())
        with contextlib.suppress(Exception):
            slurm.run("scancel", job)  # ours; the fixture's teardown waits for its processes
        raise
    finally:
        print("\n" + "\n".join(events))

    # --- Slurm: every task ended well; the two stopped ones ran twice ------------------------
    final = state()
    assert final == {f"{job}_{t}": ("COMPLETED", 1 if f"{job}_{t}" in (preempted, signalled) else 0)
                     for t in range(TASKS)}, describe()
    for task, path in outputs.items():
        name, runs = f"{job}_{task}", starts(path.read_text(errors="replace"))
        if name not in (preempted, signalled):
            assert [r for r, _ in runs] == [0], describe()
            assert re.search(r": tune exited 0,", "\n".join(runs[0][1])), describe()
            continue
        assert [r for r, _ in runs] == [0, 1], describe()  # two starts, the output appended
        first, second = "\n".join(runs[0][1]), "\n".join(runs[1][1])
        assert re.search(r": tune exited 143,", first), describe()
        assert INTERRUPTED in first, describe()  # tune's line on its way out
        assert re.search(r": tune exited 0,", second), describe()
        if name == preempted:  # Slurm's own line for a preemption
            assert "DUE TO PREEMPTION" in first and "requeueing it" not in first, describe()
        else:  # the script requeued it
            assert "stopped by SIGUSR1 (time limit near, or scancel --signal=USR1): requeueing it" in first, describe()

    # --- Optuna and MLflow: the study complete; the interrupted trials, stopped in their epochs,
    # went on from their checkpoints, each in its own run, which holds every epoch once. (Before the
    # workers were stopped to wait for their signals, Slurm's 1-4 s to pick a victim let a signal
    # reach a trial after its epochs or the next trial in its set-up, with nothing to checkpoint:
    # once in 5 runs on a slow machine, in every run on a fast one.)
    report = assert_study_complete(postgres, tracking_server, STUDY, EXPERIMENT, TRIALS)
    study, client = report["study"], MlflowClient(tracking_server)
    interrupted = [t for t in study.trials if t.state.name == "FAIL"]
    # the tasks' samplers are seeded apart (their array index): no two trials of the study alike
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len({tuple(sorted(t.params.items())) for t in complete}) == TRIALS, [t.params for t in complete]
    reason = f"Interrupted: {INTERRUPTED[len('interrupted by '):]}"  # Optuna's fail_reason for them
    assert [t.user_attrs.get("fail_reason") for t in interrupted] == [reason] * 2, (
        [(t.number, t.user_attrs, t.system_attrs, len(t.intermediate_values)) for t in interrupted], describe())
    resumed = {int(r.data.tags["optuna.resumed_trials"]): r for r in report["children"]
               if "optuna.resumed_trials" in r.data.tags}
    seen = {t.number: (t.user_attrs, t.system_attrs, sorted(t.intermediate_values)) for t in interrupted}
    checkpointed = [t.number for t in interrupted if "checkpoint" in t.user_attrs]
    assert len(checkpointed) == 2 and sorted(resumed) == checkpointed, (seen, describe())
    went_on = {}
    for t in interrupted:
        run = resumed[t.number]
        assert run.info.run_id == t.user_attrs["mlflow_run_id"] and run.info.status == "FINISHED"
        epoch = int(re.fullmatch(r"epoch (\d+), batch \d+", run.data.tags["mlproject.resumed_at"]).group(1))
        assert set(t.intermediate_values) >= set(range(1, epoch)), (epoch, t.intermediate_values)
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
        assert steps == list(range(1, EPOCHS + 1))  # one unbroken series: epochs before the checkpoint not redone
        went_on[t.number] = run.data.tags["mlproject.resumed_at"]
    assert report["runs"] == {"FINISHED": TRIALS}, report["runs"]  # the interrupted runs went on to the end
    print(f"array of {TASKS} in {time.monotonic() - started:.1f} s; trials {report['states']}; "
          f"runs {dict(report['runs'])}; interrupted trials went on from {went_on}")
    assert report["states"].get("FAIL", 0) == 2, report["states"]
    parent = next(r for r in runs_in(MlflowClient(tracking_server), EXPERIMENT)
                  if r.data.tags.get("mlproject.role") == "study")
    assert parent.info.status == "FINISHED"
