"""Run a DAG of shell commands (experiment steps) locally or through submitit.

    from tools.sweep import Job, LocalLauncher, run_jobs

    train = Job("coop/eurosat/seed1/train", ("bash", "scripts/coop/train.sh", "eurosat", "1"))
    test = Job("coop/eurosat/seed1/test", ("bash", "scripts/coop/test.sh", "eurosat", "1"),
               deps=(train.name,))
    report = run_jobs([train, test], LocalLauncher(gpus=[0, 1], per_gpu=2), "output/sweeps/coop")
    sys.exit(0 if report.ok else 1)

A job starts as soon as all its dependencies are done, with at most the launcher's
parallelism in flight. A failed job never stops the others; the jobs that depend on
it (transitively) are skipped. Commands run with cwd = the repository root and the
environment os.environ + job.env + DPC_WAIT_FOR_LOCK=1 (train.py then waits for a run
directory locked by another process, so two sweeps over one output root cooperate).

Launchers:
  LocalLauncher(workers=N)                 N subprocesses at a time on this machine
  LocalLauncher(gpus=[0, 1], per_gpu=2)    4 slots; each job gets CUDA_VISIBLE_DEVICES=<its GPU>
  SubmititLauncher(cluster="slurm", ...)   one submitit job per step (also "local" and "debug")

Logs: <log_dir>/<name with / -> __>.log per local job (submitit jobs: submitit's
<job id>_0_log.out in <log_dir>/submitit), and <log_dir>/sweep.json rewritten
after every event. A log folder belongs to one running sweep at a time (tools/sweep_args.py's
log_dir_from_args makes a new one per sweep), and a job log is a new file each time its job starts.
The command-line flags that choose a launcher are in tools/sweep_args.py.
"""

import fcntl
import graphlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from tabulate import tabulate

if __package__ in (None, ""):  # run as a script: make the repository's packages importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from trainers.dpc.errors import UserError  # noqa: E402
from trainers.dpc.files import atomic_write_text  # noqa: E402  (torch-free)

REPO = Path(__file__).resolve().parent.parent
# train.py waits for a run directory another sweep holds, and redraws its progress bar in the job log every 5 s
WAIT_FOR_LOCK_ENV = {"DPC_WAIT_FOR_LOCK": "1", "DPC_PROGRESS_SECONDS": "5"}
HEARTBEAT_SECONDS = 15  # a progress line at least this often while jobs run
# the last stage header and progress bar that train.py wrote into a job log
STAGE_LINE = re.compile(r"\[(train|eval)\] (\S+) on \S+?: (\w+) classes")
BAR_STATE = re.compile(r"(train|eval): +(\d+)%\|[^|]*\| *\d+/\d+ \[[^,\]]*, ETA ([^,\]]+)")
CLUSTERS = ("slurm", "local", "debug")
STATUSES = ("done", "failed", "skipped")
TAIL_LINES = 5
# submitit's local executor kills a job after timeout_min (its default is 2 minutes).
LOCAL_EXECUTOR_TIMEOUT_MIN = 7 * 24 * 60
# Parameters AutoExecutor translates itself; every other one gets the "slurm_" prefix.
GENERIC_SUBMITIT_PARAMETERS = {
    "timeout_min", "mem_gb", "nodes", "cpus_per_task", "gpus_per_node", "tasks_per_node", "stderr_to_stdout",
}


# ----------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class Job:
    """One step of a sweep: a command and the names of the jobs it needs first."""

    name: str
    argv: Tuple[str, ...]
    env: Tuple[Tuple[str, str], ...] = ()
    deps: Tuple[str, ...] = ()

    def __post_init__(self):
        # Lists and dicts are accepted for convenience; tuples keep the job hashable.
        env_pairs = self.env.items() if isinstance(self.env, Mapping) else self.env
        object.__setattr__(self, "argv", tuple(str(arg) for arg in self.argv))
        object.__setattr__(self, "env", tuple((str(k), str(v)) for k, v in env_pairs))
        object.__setattr__(self, "deps", tuple(self.deps))
        if not self.name:
            raise ValueError(f"a job has an empty name (command {self.argv})")
        if not self.argv:
            raise ValueError(f"job {self.name!r} has an empty command")

    def command_key(self) -> Tuple[Tuple[str, ...], Tuple[Tuple[str, str], ...]]:
        """Two jobs with the same key run the same thing (the order of env entries does not matter)."""
        return self.argv, tuple(sorted(self.env))

    def log_name(self) -> str:
        return self.name.replace("/", "__") + ".log"


def merge_duplicates(jobs: Iterable[Job]) -> List[Job]:
    """Jobs with identical (argv, env) become one job: the first name is kept, deps are
    united and dependents re-pointed. Raises ValueError for a name used by two different
    commands, an unknown dependency or a cycle."""
    jobs = list(jobs)
    first_job: Dict[str, Job] = {}  # kept name -> its first job
    name_for_command: Dict[tuple, str] = {}
    alias: Dict[str, str] = {}  # any name -> kept name
    declared_deps: Dict[str, List[Tuple[str, str]]] = {}  # kept name -> (declaring job, dep)
    for job in jobs:
        if job.name in alias and first_job[alias[job.name]].command_key() != job.command_key():
            raise ValueError(f"job name {job.name!r} is used by two different commands: "
                             f"{first_job[alias[job.name]].argv} and {job.argv}")
        kept = name_for_command.setdefault(job.command_key(), job.name)
        alias.setdefault(job.name, kept)
        first_job.setdefault(kept, job)
        declared_deps.setdefault(kept, []).extend((job.name, dep) for dep in job.deps)
    merged = [replace(job, deps=_resolve_deps(name, declared_deps[name], alias))
              for name, job in first_job.items()]
    _check_acyclic(merged)
    return merged


def _resolve_deps(name: str, declared: List[Tuple[str, str]], alias: Dict[str, str]) -> Tuple[str, ...]:
    """Kept names of the dependencies, without repeats, in declaration order."""
    resolved: List[str] = []
    for declaring_job, dep in declared:
        if dep not in alias:
            raise ValueError(f"job {declaring_job!r} depends on unknown job {dep!r}")
        if dep == declaring_job:
            raise ValueError(f"dependency cycle: job {dep!r} depends on itself")
        if alias[dep] == name:
            raise ValueError(f"dependency cycle: job {declaring_job!r} depends on {dep!r}, "
                             f"which runs the same command (merged into {name!r})")
        if alias[dep] not in resolved:
            resolved.append(alias[dep])
    return tuple(resolved)


def _check_acyclic(jobs: Sequence[Job]) -> None:
    """Raises ValueError naming the jobs of a cycle (a -> b: a depends on b), if there is one."""
    try:
        graphlib.TopologicalSorter({job.name: job.deps for job in jobs}).prepare()
    except graphlib.CycleError as error:  # its cycle runs from a dependency to its dependent
        raise ValueError("dependency cycle: " + " -> ".join(reversed(error.args[1]))) from None


def new_log(path: Path):
    """A new, empty file at `path`, open for writing by one job alone: a file already there (an earlier sweep's;
    its job may still write to it) is unlinked first, never truncated, so the two writers never mix."""
    path.unlink(missing_ok=True)
    return open(path, "x")


def job_environment(job: Job, extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """os.environ + job.env + WAIT_FOR_LOCK_ENV + launcher extras (e.g. CUDA_VISIBLE_DEVICES)."""
    return {**os.environ, **dict(job.env), **WAIT_FOR_LOCK_ENV, **(extra or {})}


def _assignments(variables: Mapping[str, str]) -> List[str]:
    return [f"{key}={value}" for key, value in variables.items()]


# ----------------------------------------------------------------------------- outcomes


@dataclass(frozen=True)
class Outcome:
    """How a started job ended."""

    ok: bool
    reason: str = ""  # why it failed, e.g. "exit code 1"


def _exit_reason(returncode: int) -> str:
    if returncode < 0:
        return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


# ----------------------------------------------------------------------------- local launcher


class _LocalRun:
    """One subprocess in its own process group, stdout+stderr to its log file."""

    def __init__(self, job: Job, log_path: Path, extra_env: Mapping[str, str]):
        self.log_path = log_path
        self.process: Optional[subprocess.Popen] = None
        self.start_error = ""
        with new_log(log_path) as log:
            log.write("$ " + shlex.join(_assignments({**dict(job.env), **extra_env}) + list(job.argv)) + "\n")
            log.flush()
            try:
                self.process = subprocess.Popen(
                    job.argv, cwd=REPO, env=job_environment(job, extra_env), stdin=subprocess.DEVNULL,
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as error:  # e.g. the program does not exist
                self.start_error = f"cannot start: {error}"
                log.write(self.start_error + "\n")

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def poll(self) -> Optional[Outcome]:
        if self.process is None:
            return Outcome(False, self.start_error)
        returncode = self.process.poll()
        if returncode is None:
            return None
        return Outcome(returncode == 0, "" if returncode == 0 else _exit_reason(returncode))

    def cancel(self) -> None:
        self._signal_group(signal.SIGTERM)

    def kill_if_alive(self, deadline: float) -> None:
        """Waits until deadline (time.monotonic()) for the process, then kills its group."""
        if not self.alive:
            return
        try:
            self.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.process.wait()

    def _signal_group(self, signum: int) -> None:
        if self.alive:
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signum)  # start_new_session: group id == pid


class LocalLauncher:
    """Subprocesses on this machine: `workers` CPU slots, or `per_gpu` slots per GPU id."""

    poll_seconds = 0.05

    def __init__(self, workers: Optional[int] = None, gpus: Optional[Sequence[Union[int, str]]] = None,
                 per_gpu: int = 1):
        if gpus is not None and workers is not None:
            raise ValueError("LocalLauncher: give workers or gpus, not both "
                             "(with gpus the pool has len(gpus) x per_gpu slots)")
        if gpus is not None:
            gpus = [str(gpu) for gpu in gpus]
            if not gpus or per_gpu < 1 or len(set(gpus)) != len(gpus):
                raise ValueError(f"LocalLauncher: need distinct GPU ids and per_gpu >= 1, got gpus={gpus} "
                                 f"per_gpu={per_gpu}")
            # Interleaved (0, 1, 0, 1) so that a few jobs spread over all GPUs.
            self.slots: List[Optional[str]] = [gpu for _ in range(per_gpu) for gpu in gpus]
        else:
            workers = 1 if workers is None else workers
            if workers < 1:
                raise ValueError(f"LocalLauncher: workers must be >= 1, got {workers}")
            self.slots = [None] * workers
        self._runs: List[Optional[_LocalRun]] = [None] * len(self.slots)

    @property
    def parallelism(self) -> int:
        return len(self.slots)

    def describe(self) -> str:
        if self.slots[0] is None:
            return f"local, {len(self.slots)} worker(s)"
        gpus = sorted(set(self.slots), key=self.slots.index)
        return f"local, GPUs {','.join(gpus)} x {len(self.slots) // len(gpus)} job(s) each"

    def prepare(self, log_dir: Path) -> None:
        self._runs = [None] * len(self.slots)

    def start(self, job: Job, log_dir: Path) -> Tuple[_LocalRun, str]:
        """Starts job in a free slot; returns the run and where it runs (for the progress line)."""
        index = self._free_slot()
        gpu = self.slots[index]
        extra_env = {} if gpu is None else {"CUDA_VISIBLE_DEVICES": gpu}
        run = _LocalRun(job, log_dir / job.log_name(), extra_env)
        self._runs[index] = run
        return run, ("" if gpu is None else f"GPU {gpu}")

    def _free_slot(self) -> int:
        for index, run in enumerate(self._runs):
            if run is None or run.poll() is not None:
                return index
        raise RuntimeError("LocalLauncher.start called with every slot busy")


# ----------------------------------------------------------------------------- submitit launcher


class _SubmititRun:
    """One submitit job. Debug jobs run in this process when polled."""

    def __init__(self, submitted, debug_log: Optional[Path] = None, submit_error: str = ""):
        self.job = submitted
        self.debug_log = debug_log
        self.submit_error = submit_error
        self.log_path = debug_log if debug_log or submitted is None else submitted.paths.stdout

    def poll(self) -> Optional[Outcome]:
        if self.job is None:
            return Outcome(False, self.submit_error)
        if self.debug_log is not None:
            return self._run_debug_job()
        if not self.job.done():
            return None
        error = self.job.exception()
        return Outcome(True) if error is None else Outcome(False, _submitit_reason(error))

    def _run_debug_job(self) -> Outcome:
        # job.exception() runs the function; job.result() would open pdb on a failure.
        error = self.job.exception()
        command = self.job.submission().function.command
        with new_log(self.debug_log) as log:
            log.write("$ " + shlex.join(command) + "\n")
            if error is None:
                log.write(self.job.submission().result() + "\n")
                return Outcome(True)
            cause = error.__cause__
            if isinstance(cause, subprocess.CalledProcessError):
                log.write(f"{cause.output}\n{cause.stderr}\n")
                return Outcome(False, _exit_reason(cause.returncode))
            log.write(f"{error!r}\n")
            return Outcome(False, _submitit_reason(error))

    def cancel(self) -> None:
        if self.job is not None and self.debug_log is None:
            self.job.cancel(check=False)

    def kill_if_alive(self, deadline: float) -> None:
        pass  # the cluster (or submitit's local controller) ends cancelled jobs


def _submitit_reason(error: BaseException) -> str:
    """A one-line reason; the full trace is in the job's log."""
    text = str(error)
    exit_status = re.search(r"returned non-zero exit status (-?\d+)", text)
    if exit_status:
        return _exit_reason(int(exit_status.group(1)))
    no_result = re.search(r"has not produced any output \(state: ([^)]*)\)", text)
    if no_result:  # e.g. Slurm's TIMEOUT, or killed
        return f"no result (state: {no_result.group(1)})"
    first_line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(error).__name__}: {first_line[:200]}"


class SubmititLauncher:
    """One submitit job per sweep step (cluster "slurm", "local" or "debug").

    Slurm parameters go to AutoExecutor.update_parameters: timeout_min, mem_gb,
    cpus_per_task, gpus_per_node (and nodes, tasks_per_node) as they are, every other
    one with the slurm_ prefix (partition -> slurm_partition, account, qos, constraint...).
    folder defaults to <log_dir>/submitit; max_parallel (jobs submitted and not finished)
    defaults to unlimited on Slurm and 1 for the local executor ("debug" runs one at a time).
    """

    def __init__(self, cluster: str = "slurm", folder: Optional[Union[str, Path]] = None,
                 max_parallel: Optional[int] = None, **slurm_params):
        if cluster not in CLUSTERS:
            raise ValueError(f"SubmititLauncher: cluster must be one of {CLUSTERS}, got {cluster!r}")
        if max_parallel is not None and max_parallel < 1:
            raise ValueError(f"SubmititLauncher: max_parallel must be >= 1, got {max_parallel}")
        self.cluster = cluster
        self.folder = None if folder is None else Path(folder)
        self.max_parallel = max_parallel
        self.executor_parameters = self._executor_parameters(slurm_params)
        self.poll_seconds = 5.0 if cluster == "slurm" else 0.1
        self._executor = None

    def _executor_parameters(self, params: Mapping[str, object]) -> Dict[str, object]:
        """AutoExecutor names: generic ones as they are, the others prefixed with slurm_."""
        named = {key if key in GENERIC_SUBMITIT_PARAMETERS or key.startswith("slurm_") else f"slurm_{key}": value
                 for key, value in params.items() if value is not None}
        named["stderr_to_stdout"] = True  # one log file per job, like the local launcher
        if self.cluster == "local":
            named.setdefault("timeout_min", LOCAL_EXECUTOR_TIMEOUT_MIN)
        return named

    @property
    def parallelism(self) -> int:
        if self.cluster == "debug":
            return 1
        if self.max_parallel is not None:
            return self.max_parallel
        return 1 if self.cluster == "local" else sys.maxsize

    def describe(self) -> str:
        limit = "no limit" if self.parallelism == sys.maxsize else f"at most {self.parallelism} at once"
        return f"submitit {self.cluster}, {limit}"

    def prepare(self, log_dir: Path) -> None:
        import submitit  # here: importing it costs time that local sweeps do not need

        folder = self.folder or Path(log_dir) / "submitit"
        self._executor = submitit.AutoExecutor(folder=folder, cluster=self.cluster)
        self._executor.update_parameters(**self.executor_parameters)

    def start(self, job: Job, log_dir: Path) -> Tuple[_SubmititRun, str]:
        from submitit.helpers import CommandFunction

        # `env` adds the job's variables to the environment of the node running it
        # (CommandFunction's env= would replace it, dropping e.g. Slurm's CUDA_VISIBLE_DEVICES).
        command = ["env", *_assignments({**dict(job.env), **WAIT_FOR_LOCK_ENV}), *job.argv]
        debug = self.cluster == "debug"
        function = CommandFunction(command, verbose=not debug, cwd=REPO)
        self._executor.update_parameters(name=job.name)
        try:
            submitted = self._executor.submit(function)
        except Exception as error:  # sbatch refused it: this job fails, the sweep goes on
            return _SubmititRun(None, submit_error=f"submission failed: {error}"), ""
        debug_log = log_dir / job.log_name() if debug else None
        return _SubmititRun(submitted, debug_log), f"{self.cluster} job {submitted.job_id}"


# ----------------------------------------------------------------------------- report


@dataclass
class JobResult:
    """Where one job stands; status ends as one of STATUSES ("interrupted" after Ctrl-C)."""

    job: Job
    status: str = "pending"
    seconds: float = 0.0
    log: Optional[str] = None
    reason: str = ""  # exit code of a failed job, failed dependency of a skipped one

    def to_json(self) -> dict:
        return {"name": self.job.name, "argv": list(self.job.argv), "env": dict(self.job.env),
                "deps": list(self.job.deps), "status": self.status, "seconds": round(self.seconds, 3),
                "log": self.log, "reason": self.reason}


@dataclass
class SweepReport:
    results: List[JobResult]
    seconds: float
    log_dir: str

    @property
    def ok(self) -> bool:
        return all(result.status == "done" for result in self.results)

    def __getitem__(self, name: str) -> JobResult:
        for result in self.results:
            if result.job.name == name:
                return result
        raise KeyError(name)

    def with_status(self, status: str) -> List[JobResult]:
        return [result for result in self.results if result.status == status]

    def counts(self) -> Dict[str, int]:
        return {status: len(self.with_status(status)) for status in STATUSES}

    def summary(self) -> str:
        parts = [self._failed_text(), self._skipped_text(), self._totals_text()]
        return "\n\n".join(part for part in parts if part)

    def _failed_text(self) -> str:
        failed = self.with_status("failed")
        if not failed:
            return ""
        rows = [(r.job.name, r.reason, format_duration(r.seconds), r.log) for r in failed]
        text = ["Failed jobs:", tabulate(rows, headers=("job", "reason", "time", "log"))]
        for result in failed:
            text.append(f"\nLast lines of {result.job.name} ({result.log}):")
            text.extend("    " + line for line in tail_lines(result.log, TAIL_LINES))
        return "\n".join(text)

    def _skipped_text(self) -> str:
        skipped = self.with_status("skipped")
        if not skipped:
            return ""
        rows = [(r.job.name, r.reason) for r in skipped]
        return "Skipped jobs:\n" + tabulate(rows, headers=("job", "why"))

    def _totals_text(self) -> str:
        row = [*self.counts().values(), len(self.results), format_duration(self.seconds)]
        verdict = "all jobs done" if self.ok else "NOT all jobs done"
        table = tabulate([row], headers=(*STATUSES, "total", "elapsed"))
        return f"Sweep: {verdict} (logs in {self.log_dir})\n{table}"


def _tail(path: Optional[str], size: int) -> Optional[str]:
    """The last `size` bytes of a text file, None when there is none."""
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - size))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return None


def tail_lines(path: Optional[str], count: int) -> List[str]:
    """The last count lines of a text file (reads only its end)."""
    text = _tail(path, 64 * 1024)
    return ["(no log file)"] if text is None else text.rstrip("\n").splitlines()[-count:]


def job_progress(log_path: Optional[str]) -> str:
    """Where a running job is, from its log: the last train.py stage and bar ('DPC_CoOp base train 42%, ETA 00:40'),
    else the last progress line with an ETA that the job printed (e.g. tools/epoch_curve.py's)."""
    tail = _tail(log_path, 16384)
    if tail is None:
        return ""
    stages, bars = list(STAGE_LINE.finditer(tail)), list(BAR_STATE.finditer(tail))
    stage = f"{stages[-1].group(2)} {stages[-1].group(3)}" if stages else ""
    if bars and (not stages or bars[-1].start() > stages[-1].start()):
        kind, percent, eta = bars[-1].groups()
        return f"{stage} {kind} {percent}%, ETA {eta}".strip()
    if stage:
        return f"{stage} starting"
    lines = [line.strip() for line in re.split(r"[\r\n]", tail) if "ETA" in line]
    return " ".join(lines[-1].split())[:80] if lines else ""


def format_duration(seconds: float) -> str:
    """0.4s, 12s, 3m10s, 1h02m."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    seconds = int(round(seconds))
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_eta(seconds: Optional[float]) -> str:
    """?, ~40s, ~7m, ~2h05m."""
    if seconds is None:
        return "?"
    if seconds < 60:
        return f"~{seconds:.0f}s"
    if seconds < 3600:
        return f"~{round(seconds / 60)}m"
    return "~" + format_duration(seconds)


# ----------------------------------------------------------------------------- the sweep


def run_jobs(jobs: Iterable[Job], launcher, log_dir: Union[str, Path], stream=sys.stdout) -> SweepReport:
    """Runs the jobs (duplicates merged, see merge_duplicates) with the launcher; prints one
    progress line per event and a summary to stream. Ctrl-C (or SIGTERM / SIGHUP) stops the
    running jobs, writes sweep.json and raises KeyboardInterrupt."""
    jobs = merge_duplicates(jobs)
    _check_log_names(jobs)
    log_dir = Path(log_dir).resolve()
    log_dir.mkdir(parents=True, exist_ok=True)
    with _own_log_dir(log_dir):
        launcher.prepare(log_dir)
        with _signals_as_keyboard_interrupt():
            return _Sweep(jobs, launcher, log_dir, stream).run()


class LogDirInUseError(UserError, RuntimeError):
    """Another running sweep writes its job logs and sweep.json into this folder."""


@contextmanager
def _own_log_dir(log_dir: Path):
    """Holds log_dir for this sweep (an flock on <log_dir>/.sweep.lock, released by the kernel however the sweep
    ends); a second sweep into it fails at once, naming the first."""
    with open(log_dir / ".sweep.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            raise LogDirInUseError(f"{log_dir} holds the logs of a running sweep ({lock.read().strip()}); give "
                                   "this sweep another --log-dir, or wait for that one to end") from None
        lock.truncate(0)
        lock.write(f"process {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        lock.flush()
        yield


@contextmanager
def _signals_as_keyboard_interrupt():
    """SIGTERM and SIGHUP (e.g. `kill`, a closed terminal) stop the sweep like Ctrl-C, so
    that its jobs (in their own process groups) do not run on unattended."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    previous = {signum: signal.signal(signum, interrupt) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _check_log_names(jobs: Sequence[Job]) -> None:
    owners: Dict[str, str] = {}
    for job in jobs:
        other = owners.setdefault(job.log_name(), job.name)
        if other != job.name:
            raise ValueError(f"jobs {other!r} and {job.name!r} would share the log file {job.log_name()}")


class _Sweep:
    """The event loop: start ready jobs, poll running ones, skip dependents of failures."""

    def __init__(self, jobs: List[Job], launcher, log_dir: Path, stream):
        self.launcher = launcher
        self.log_dir = log_dir
        self.stream = stream
        self.results = {job.name: JobResult(job) for job in jobs}
        self.pending: List[str] = [job.name for job in jobs]  # in the order given
        self.running: Dict[str, object] = {}  # name -> run handle
        self.started_at: Dict[str, float] = {}
        self.dependents: Dict[str, List[str]] = {job.name: [] for job in jobs}
        for job in jobs:
            for dep in job.deps:
                self.dependents[dep].append(job.name)
        self.start_time = time.monotonic()
        self.last_line = self.start_time

    def run(self) -> SweepReport:
        self._emit(f"{len(self.results)} jobs, {self.launcher.describe()}, logs in {self.log_dir}")
        try:
            while self.pending or self.running:
                started = self._start_ready_jobs()
                finished = self._collect_finished_jobs()
                if not (started or finished):
                    if self.running and time.monotonic() - self.last_line >= HEARTBEAT_SECONDS:
                        self._heartbeat()
                    time.sleep(self.launcher.poll_seconds)
        except BaseException:  # Ctrl-C (or a bug): leave no job behind
            self._stop_running_jobs()
            raise
        report = SweepReport(list(self.results.values()), self._elapsed(), str(self.log_dir))
        self.stream.write(report.summary() + "\n")
        self.stream.flush()
        return report

    def _start_ready_jobs(self) -> bool:
        started = False
        for name in list(self.pending):
            if len(self.running) >= self.launcher.parallelism:
                break
            if all(self.results[dep].status == "done" for dep in self.results[name].job.deps):
                self._start(name)
                started = True
        return started

    def _start(self, name: str) -> None:
        result = self.results[name]
        run, where = self.launcher.start(result.job, self.log_dir)
        self.pending.remove(name)
        self.running[name] = run
        self.started_at[name] = time.monotonic()
        result.status = "running"
        result.log = None if run.log_path is None else str(run.log_path)
        self._emit(f"start {name}" + (f" ({where})" if where else ""))

    def _collect_finished_jobs(self) -> bool:
        finished = False
        for name, run in list(self.running.items()):
            outcome = run.poll()
            if outcome is not None:
                self._finish(name, outcome)
                finished = True
        return finished

    def _finish(self, name: str, outcome: Outcome) -> None:
        result = self.results[name]
        del self.running[name]
        result.seconds = time.monotonic() - self.started_at[name]
        result.status = "done" if outcome.ok else "failed"
        result.reason = outcome.reason
        if outcome.ok:
            self._emit(f"done {name} in {format_duration(result.seconds)}")
            return
        self._emit(f"FAILED {name} ({outcome.reason}), log: {result.log}")
        self._skip_dependents_of(name)

    def _skip_dependents_of(self, failed: str) -> None:
        """Every pending job that needs `failed`, directly or not, is skipped."""
        to_visit = list(self.dependents[failed])
        while to_visit:
            name = to_visit.pop(0)
            result = self.results[name]
            if result.status != "pending":
                continue  # already skipped through another path
            result.status = "skipped"
            result.reason = f"dependency {failed} failed"
            self.pending.remove(name)
            self._emit(f"skip {name} (dependency {failed} failed)")
            to_visit.extend(self.dependents[name])

    def _stop_running_jobs(self, grace_seconds: float = 5.0) -> None:
        for run in self.running.values():
            run.cancel()
        deadline = time.monotonic() + grace_seconds
        for name, run in self.running.items():
            run.kill_if_alive(deadline)
            self.results[name].status = "interrupted"
            self.results[name].seconds = time.monotonic() - self.started_at[name]
        self._emit(f"interrupted: {len(self.running)} running job(s) stopped")

    # -- progress

    def _elapsed(self) -> float:
        return time.monotonic() - self.start_time

    def _eta_seconds(self) -> Optional[float]:
        """Mean time of the finished jobs x jobs left / parallelism; None before any finished."""
        durations = [r.seconds for r in self.results.values() if r.status in ("done", "failed")]
        if not durations:
            return None
        left = len(self.pending) + len(self.running)
        if left == 0:
            return 0.0
        return sum(durations) / len(durations) * left / min(self.launcher.parallelism, left)

    def _counts_text(self) -> str:
        statuses = [r.status for r in self.results.values()]
        return (f"{statuses.count('done')}/{len(statuses)} done, {len(self.running)} running, "
                f"{statuses.count('failed')} failed, {statuses.count('skipped')} skipped, "
                f"elapsed {format_duration(self._elapsed())}, ETA {format_eta(self._eta_seconds())}")

    def _emit(self, event: str) -> None:
        """One progress line, then sweep.json so that it always matches what was printed."""
        self.stream.write(f"[sweep] {self._counts_text()} | {event}\n")
        self.stream.flush()
        self.last_line = time.monotonic()
        self._write_json()

    def _heartbeat(self) -> None:
        """What each running job is doing (its train.py stage and progress bar), while nothing starts or ends."""
        now = time.monotonic()
        parts = []
        for name in self.running:
            where = job_progress(self.results[name].log)
            parts.append(f"{name} {format_duration(now - self.started_at[name])}" + (f": {where}" if where else ""))
        self._emit("running " + "; ".join(parts))

    def _write_json(self) -> None:
        statuses = [r.status for r in self.results.values()]
        atomic_write_text(str(self.log_dir / "sweep.json"), json.dumps({
            "launcher": self.launcher.describe(),
            "elapsed_seconds": round(self._elapsed(), 3),
            "counts": {status: statuses.count(status) for status in sorted(set(statuses))},
            "jobs": [r.to_json() for r in self.results.values()],
        }, indent=1))
