"""tools/sweep.py with real subprocesses: each job is a small Python script that appends
its start and end (time, CUDA_VISIBLE_DEVICES, DPC_WAIT_FOR_LOCK) to a shared file."""
import argparse
import io
import json
import os
import signal
import sys
import time
from collections import defaultdict

import pytest

from tools.sweep import Job, LocalLauncher, SubmititLauncher, merge_duplicates, run_jobs
from tools.sweep_args import add_launcher_args, launcher_from_args, log_dir_from_args

RECORDER = """
import os, sys, time
record_file, name, seconds, exit_code = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
def record(event):
    fields = [event, name, repr(time.time()), os.environ.get("CUDA_VISIBLE_DEVICES", "-"),
              os.environ.get("DPC_WAIT_FOR_LOCK", "-"), os.environ.get("SWEEP_TEST_VAR", "-")]
    with open(record_file, "a") as out:
        out.write(" ".join(fields) + "\\n")
record("start")
time.sleep(seconds)
print("stdout of", name)
if exit_code:
    print("boom in", name, file=sys.stderr)
record("end")
sys.exit(exit_code)
"""


# 1 s: long enough for the jobs of a sweep to overlap even when Python starts slowly on a loaded machine
def recorder_job(record_file, name, seconds=1.0, exit_code=0, deps=(), env=()):
    argv = (sys.executable, "-c", RECORDER, str(record_file), name, str(seconds), str(exit_code))
    return Job(name, argv, env=env, deps=tuple(deps))


def read_records(record_file):
    """name -> {"start": time, "end": time, "gpu": ..., "lock": ..., "var": ...}."""
    runs = defaultdict(dict)
    for line in record_file.read_text().splitlines():
        event, name, when, gpu, lock, var = line.split(" ")
        runs[name].update({event: float(when), "gpu": gpu, "lock": lock, "var": var})
    return dict(runs)


def max_overlap(intervals):
    """Largest number of (start, end) intervals open at one time."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
                    key=lambda event: (event[0], event[1]))
    open_now = best = 0
    for _, change in events:
        open_now += change
        best = max(best, open_now)
    return best


def intervals(runs, names=None):
    return [(run["start"], run["end"]) for name, run in runs.items() if names is None or name in names]


def assert_dependencies_respected(jobs, runs):
    for job in jobs:
        for dep in job.deps:
            assert runs[dep]["end"] < runs[job.name]["start"], f"{job.name} started before {dep} ended"


def test_local_workers_run_concurrently_and_respect_dependencies(tmp_path):
    record = tmp_path / "record.txt"
    jobs = [recorder_job(record, f"exp/seed{i}/stage1") for i in range(1, 7)]
    jobs += [recorder_job(record, "exp/seed1/stage2", deps=["exp/seed1/stage1"]),
             recorder_job(record, "exp/seed2/stage2", deps=["exp/seed2/stage1", "exp/seed3/stage1"],
                          env={"SWEEP_TEST_VAR": "x"}),
             recorder_job(record, "exp/table", seconds=0.1, deps=["exp/seed1/stage2", "exp/seed2/stage2"])]
    stream = io.StringIO()
    report = run_jobs(jobs, LocalLauncher(workers=3), tmp_path / "logs", stream=stream)

    assert report.ok and [r.status for r in report.results] == ["done"] * 9
    runs = read_records(record)
    assert sorted(runs) == sorted(job.name for job in jobs)
    assert 2 <= max_overlap(intervals(runs)) <= 3
    assert_dependencies_respected(jobs, runs)
    assert {run["lock"] for run in runs.values()} == {"1"}
    assert runs["exp/seed2/stage2"]["var"] == "x"
    # logs: one per job, "/" -> "__"
    log = tmp_path / "logs" / "exp__seed1__stage2.log"
    assert report["exp/seed1/stage2"].log == str(log)
    assert "stdout of exp/seed1/stage2" in log.read_text()
    progress = stream.getvalue()
    assert "[sweep] 9/9 done, 0 running, 0 failed, 0 skipped" in progress
    assert "ETA ?" in progress and "ETA ~" in progress
    saved = json.loads((tmp_path / "logs" / "sweep.json").read_text())
    assert [job["status"] for job in saved["jobs"]] == ["done"] * 9


def test_failure_skips_transitive_dependents_only(tmp_path):
    record = tmp_path / "record.txt"
    jobs = [recorder_job(record, "bad", seconds=0.1, exit_code=1),
            recorder_job(record, "child", deps=["bad"]),
            recorder_job(record, "grandchild", deps=["child"]),
            recorder_job(record, "independent", seconds=0.2),
            recorder_job(record, "after_independent", seconds=0.1, deps=["independent"]),
            recorder_job(record, "needs_both", deps=["after_independent", "grandchild"])]
    stream = io.StringIO()
    report = run_jobs(jobs, LocalLauncher(workers=2), tmp_path / "logs", stream=stream)

    statuses = {r.job.name: r.status for r in report.results}
    assert statuses == {"bad": "failed", "child": "skipped", "grandchild": "skipped", "independent": "done",
                        "after_independent": "done", "needs_both": "skipped"}
    assert not report.ok
    assert sorted(read_records(record)) == ["after_independent", "bad", "independent"]
    assert report["bad"].reason == "exit code 1"
    assert report["needs_both"].reason == "dependency bad failed"
    summary = report.summary()
    bad_log = str(tmp_path / "logs" / "bad.log")
    assert "bad" in summary and bad_log in summary
    assert "boom in bad" in summary  # the last lines of its log
    assert "dependency bad failed" in summary
    assert summary in stream.getvalue()
    assert "skip grandchild (dependency bad failed)" in stream.getvalue()
    saved = {job["name"]: job for job in json.loads((tmp_path / "logs" / "sweep.json").read_text())["jobs"]}
    assert {name: job["status"] for name, job in saved.items()} == statuses
    assert saved["bad"]["log"] == bad_log and saved["child"]["deps"] == ["bad"]


def test_gpu_slots_give_each_job_one_gpu(tmp_path):
    record = tmp_path / "record.txt"
    jobs = [recorder_job(record, f"job{i}") for i in range(8)]
    report = run_jobs(jobs, LocalLauncher(gpus=[0, 1], per_gpu=2), tmp_path / "logs", stream=io.StringIO())

    assert report.ok
    runs = read_records(record)
    assert {run["gpu"] for run in runs.values()} == {"0", "1"}
    for gpu in ("0", "1"):
        on_gpu = [name for name, run in runs.items() if run["gpu"] == gpu]
        assert max_overlap(intervals(runs, on_gpu)) <= 2
    assert 2 <= max_overlap(intervals(runs)) <= 4


def wait_for_file(path, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)


@pytest.mark.parametrize("interrupt", ["ctrl-c", "sigterm"])
def test_interrupt_stops_running_jobs_and_saves_json(tmp_path, interrupt):
    record = tmp_path / "record.txt"
    jobs = [recorder_job(record, "long", seconds=30), recorder_job(record, "later", deps=["long"])]

    class InterruptAfterStart(io.StringIO):
        def write(self, text):
            if "start long" in text:
                wait_for_file(record)  # the job has recorded its start
                if interrupt == "ctrl-c":
                    raise KeyboardInterrupt
                os.kill(os.getpid(), signal.SIGTERM)
            return super().write(text)

    handler_before = signal.getsignal(signal.SIGTERM)
    began = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_jobs(jobs, LocalLauncher(workers=1), tmp_path / "logs", stream=InterruptAfterStart())
    assert time.monotonic() - began < 10
    saved = {job["name"]: job["status"] for job in json.loads((tmp_path / "logs" / "sweep.json").read_text())["jobs"]}
    assert saved == {"long": "interrupted", "later": "pending"}
    assert "end" not in read_records(record)["long"]  # terminated, not finished
    assert signal.getsignal(signal.SIGTERM) is handler_before  # handler restored


def test_merge_duplicates_merges_identical_commands_and_repoints_dependents():
    a = Job("a", ("echo", "a"))
    a_again = Job("a_again", ("echo", "a"), deps=("b",))
    b = Job("b", ("echo", "b"))
    c = Job("c", ("echo", "c"), deps=("a_again",))
    merged = merge_duplicates([a, b, a_again, c])
    assert [job.name for job in merged] == ["a", "b", "c"]
    by_name = {job.name: job for job in merged}
    assert by_name["a"].deps == ("b",)  # deps united
    assert by_name["c"].deps == ("a",)  # re-pointed
    # env is part of the command; its order is not
    with_env = [Job("x", ("run",), env={"A": "1", "B": "2"}), Job("y", ("run",), env=(("B", "2"), ("A", "1"))),
                Job("z", ("run",), env={"A": "2"})]
    assert [job.name for job in merge_duplicates(with_env)] == ["x", "z"]


@pytest.mark.parametrize("jobs, message", [
    ([Job("a", ("echo",), deps=("nope",))], "job 'a' depends on unknown job 'nope'"),
    ([Job("a", ("echo",), deps=("a",))], "dependency cycle: job 'a' depends on itself"),
    ([Job("a", ("echo", "1")), Job("a", ("echo", "2"))], "job name 'a' is used by two different commands"),
    ([Job("a", ("echo", "a"), deps=("c",)), Job("b", ("echo", "b"), deps=("a",)),
      Job("c", ("echo", "c"), deps=("b",))], "dependency cycle: a -> c -> b -> a"),
    ([Job("a", ("echo", "a")), Job("a2", ("echo", "a"), deps=("a",))], "dependency cycle: job 'a2'"),
])
def test_merge_duplicates_rejects_bad_graphs(jobs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        merge_duplicates(jobs)


def test_log_names_must_not_collide(tmp_path):
    jobs = [Job("a/b", ("echo", "1")), Job("a__b", ("echo", "2"))]
    with pytest.raises(ValueError, match="would share the log file a__b.log"):
        run_jobs(jobs, LocalLauncher(), tmp_path, stream=io.StringIO())


def submitit_dag(record):
    return [recorder_job(record, "first", seconds=0.2),
            recorder_job(record, "second", seconds=0.1, deps=["first"], env={"SWEEP_TEST_VAR": "y"}),
            recorder_job(record, "bad", seconds=0.1, exit_code=3),
            recorder_job(record, "after_bad", deps=["bad"])]


@pytest.mark.parametrize("cluster", ["local", "debug"])
def test_submitit_runs_the_dag_in_order(tmp_path, cluster):
    record = tmp_path / "record.txt"
    jobs = submitit_dag(record)
    launcher = SubmititLauncher(cluster=cluster, max_parallel=2)
    report = run_jobs(jobs, launcher, tmp_path / "logs", stream=io.StringIO())

    statuses = {r.job.name: r.status for r in report.results}
    assert statuses == {"first": "done", "second": "done", "bad": "failed", "after_bad": "skipped"}
    assert report["bad"].reason == "exit code 3"
    runs = read_records(record)
    assert sorted(runs) == ["bad", "first", "second"]
    assert runs["first"]["end"] < runs["second"]["start"]
    assert runs["second"]["var"] == "y" and {run["lock"] for run in runs.values()} == {"1"}
    assert "boom in bad" in open(report["bad"].log).read()
    if cluster == "local":
        assert report["bad"].log.startswith(str(tmp_path / "logs" / "submitit"))


def parse(argv):
    parser = argparse.ArgumentParser()
    add_launcher_args(parser)
    args = parser.parse_args(argv)
    return launcher_from_args(args, parser)


def test_launcher_args():
    workers = parse(["--workers", "2"])
    assert isinstance(workers, LocalLauncher) and workers.parallelism == 2
    gpus = parse(["--gpus", "0,1", "--per-gpu", "2"])
    assert isinstance(gpus, LocalLauncher) and sorted(gpus.slots) == ["0", "0", "1", "1"]
    debug = parse(["--cluster", "debug"])
    assert isinstance(debug, SubmititLauncher) and debug.cluster == "debug"
    slurm = parse(["--slurm", "--partition", "gpu", "--gpus-per-job", "1", "--time-min", "60", "--qos", "high",
                   "--max-parallel", "8"])
    assert slurm.cluster == "slurm" and slurm.parallelism == 8
    assert slurm.executor_parameters == {"slurm_partition": "gpu", "gpus_per_node": 1, "timeout_min": 60,
                                         "slurm_qos": "high", "stderr_to_stdout": True}
    assert parse([]).parallelism == 1


@pytest.mark.parametrize("argv, message", [
    (["--gpus", "0,x"], "argument --gpus: expected GPU ids"),
    (["--gpus", "0,0"], "argument --gpus: GPU id listed twice"),
    (["--workers", "0"], "argument --workers: must be >= 1"),
    (["--workers", "2", "--gpus", "0"], "--workers and --gpus exclude each other"),
    (["--partition", "gpu"], "--partition need --slurm or --cluster"),
    (["--cluster", "local", "--gpus", "0"], "--gpus only apply to local runs"),
    (["--slurm", "--cluster", "debug"], "not allowed with argument"),
])
def test_bad_launcher_args_name_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit):
        parse(argv)
    assert message in capsys.readouterr().err


def test_a_running_jobs_progress_is_read_from_its_log(tmp_path):
    from tools.sweep import job_progress

    log = tmp_path / "job.log"
    log.write_text("$ bash scripts/dpc/base2new_train.sh toyworld 1\n[train] CoOp on ToyWorld: base classes, 16 shots\n"
                   "train:   0%|      | 0/240 [00:00, ETA ?]\rtrain:  42%|###   | 101/240 [00:05, ETA 00:07, epoch 9/20]\n"
                   "[train] DPC_CoOp on ToyWorld: base classes, 16 shots, seed 1\n")
    assert job_progress(str(log)) == "DPC_CoOp base starting"  # a new stage, before its first bar
    with open(log, "a") as f:
        f.write("train:  12%|#     | 240/2000 [00:30, ETA 03:40, epoch 3/20, loss 1.2]")
    assert job_progress(str(log)) == "DPC_CoOp base train 12%, ETA 03:40"
    other = tmp_path / "curve.log"
    other.write_text("\r  epoch curve 3/42 (base, epoch 2), ETA   40s\r  epoch curve 4/42 (base, epoch 3), ETA   38s")
    assert job_progress(str(other)) == "epoch curve 4/42 (base, epoch 3), ETA 38s"
    assert job_progress(str(tmp_path / "absent.log")) == "" and job_progress(None) == ""


def test_sweeps_started_in_the_same_second_get_their_own_log_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(time, "strftime", lambda fmt, *when: "20250301-120000")  # both start in one second
    parser = argparse.ArgumentParser()
    add_launcher_args(parser)
    args = parser.parse_args([])
    first, second = log_dir_from_args(args, "table1", tmp_path), log_dir_from_args(args, "table1", tmp_path)
    assert (first.name, second.name) == ("table1-20250301-120000", "table1-20250301-120000-2")
    assert first.is_dir() and second.is_dir()
    assert log_dir_from_args(parser.parse_args(["--log-dir", str(first)]), "table1", tmp_path) == first  # as given


def test_a_log_folder_belongs_to_one_sweep_at_a_time(tmp_path):
    import threading

    from tools.sweep import LogDirInUseError

    record, logs = tmp_path / "record.txt", tmp_path / "logs"
    first = threading.Thread(target=run_jobs, args=([recorder_job(record, "job", seconds=2.0)], LocalLauncher(), logs),
                             kwargs={"stream": io.StringIO()})
    first.start()
    wait_for_file(record)  # the first sweep's job is running
    with pytest.raises(LogDirInUseError, match=f"{logs} holds the logs of a running sweep \\(process {os.getpid()} "):
        run_jobs([recorder_job(record, "job", seconds=0.1), recorder_job(record, "other")], LocalLauncher(workers=2),
                 logs, stream=io.StringIO())
    first.join()
    assert sorted(read_records(record)) == ["job"]  # the second sweep started nothing
    assert [job["name"] for job in json.loads((logs / "sweep.json").read_text())["jobs"]] == ["job"]
    assert (logs / "job.log").read_text().count("stdout of job") == 1


def test_a_job_log_is_written_by_its_job_alone(tmp_path):
    # a job of an earlier sweep that was killed (jobs run in their own sessions) still writes to its log
    logs = tmp_path / "logs"
    logs.mkdir()
    with open(logs / "job.log", "a") as leftover:
        leftover.write("line of the earlier job\n")
        leftover.flush()
        report = run_jobs([recorder_job(tmp_path / "record.txt", "job")], LocalLauncher(), logs, stream=io.StringIO())
        leftover.write("another line of the earlier job\n")
    assert report.ok
    text = (logs / "job.log").read_text()
    assert text.startswith("$ ") and "stdout of job" in text and "earlier job" not in text
