"""The command-line flags that choose where a sweep's jobs run (local CPU workers, local GPUs, submitit) and
where its logs go; tools/sweep.py runs the sweep.

    parser = argparse.ArgumentParser()
    add_launcher_args(parser)
    args = parser.parse_args()
    report = run_jobs(jobs, launcher_from_args(args, parser), log_dir_from_args(args, "table1"))
"""

import argparse
import itertools
import time
from pathlib import Path
from typing import List, Optional, Union

from tools.sweep import CLUSTERS, REPO, LocalLauncher, SubmititLauncher


def parse_gpu_list(text: str) -> List[int]:
    """"0,1,3" -> [0, 1, 3]; argparse turns the ValueError into "argument --gpus: ..."."""
    items = [item.strip() for item in text.split(",")]
    if not all(item.isdigit() for item in items):
        raise argparse.ArgumentTypeError(f"expected GPU ids like 0,1 (non-negative integers), got {text!r}")
    gpus = [int(item) for item in items]
    if len(set(gpus)) != len(gpus):
        raise argparse.ArgumentTypeError(f"GPU id listed twice in {text!r} (use --per-gpu for several jobs per GPU)")
    return gpus


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


# flag -> (attribute of args, SubmititLauncher parameter)
CLUSTER_FLAGS = {
    "--partition": ("partition", "partition"),
    "--gpus-per-job": ("gpus_per_job", "gpus_per_node"),
    "--cpus-per-job": ("cpus_per_job", "cpus_per_task"),
    "--mem-gb": ("mem_gb", "mem_gb"),
    "--time-min": ("time_min", "timeout_min"),
    "--account": ("account", "account"),
    "--qos": ("qos", "qos"),
    "--max-parallel": ("max_parallel", "max_parallel"),
}
LOCAL_FLAGS = {"--workers": "workers", "--gpus": "gpus", "--per-gpu": "per_gpu"}


def add_launcher_args(parser: argparse.ArgumentParser, default_log_dir: Optional[str] = None) -> None:
    """Adds the flags that choose where jobs run (read them back with launcher_from_args)."""
    group = parser.add_argument_group(
        "launcher", "where the jobs run: local CPU workers (default: 1), local GPUs, or submitit (Slurm)")
    group.add_argument("--workers", type=_positive_int, metavar="N", help="local jobs at once (CPU)")
    group.add_argument("--gpus", type=parse_gpu_list, metavar="0,1",
                       help="local GPU ids; each job sees one of them as CUDA_VISIBLE_DEVICES")
    group.add_argument("--per-gpu", type=_positive_int, metavar="K", help="jobs at once per GPU (default 1)")
    cluster = group.add_mutually_exclusive_group()
    cluster.add_argument("--slurm", dest="cluster", action="store_const", const="slurm",
                         help="submit every job to Slurm through submitit (= --cluster slurm)")
    cluster.add_argument("--cluster", choices=CLUSTERS,
                         help="submitit executor: slurm, local (subprocesses) or debug (in this process)")
    group.add_argument("--partition", help="Slurm partition")
    group.add_argument("--gpus-per-job", type=_non_negative_int, metavar="N", help="GPUs per submitit job")
    group.add_argument("--cpus-per-job", type=_positive_int, metavar="N", help="CPUs per submitit job")
    group.add_argument("--mem-gb", type=float, metavar="GB", help="memory per submitit job")
    group.add_argument("--time-min", type=_positive_int, metavar="MIN", help="time limit per submitit job")
    group.add_argument("--account", help="Slurm account")
    group.add_argument("--qos", help="Slurm QOS")
    group.add_argument("--max-parallel", type=_positive_int, metavar="N",
                       help="submitit jobs in flight at once (default: no limit on Slurm, 1 for local)")
    group.add_argument("--log-dir", default=default_log_dir, metavar="DIR",
                       help="job logs and sweep.json (default: see log_dir_from_args)")


def launcher_from_args(args: argparse.Namespace, parser: Optional[argparse.ArgumentParser] = None):
    """The launcher the flags of add_launcher_args describe. Contradictory flags raise
    ValueError, or exit through parser.error when the parser is given."""
    try:
        return _launcher_from_args(args)
    except ValueError as error:
        if parser is None:
            raise
        parser.error(str(error))


def _launcher_from_args(args: argparse.Namespace):
    local_given = [flag for flag, attribute in LOCAL_FLAGS.items() if getattr(args, attribute) is not None]
    cluster_given = [flag for flag, (attribute, _) in CLUSTER_FLAGS.items() if getattr(args, attribute) is not None]
    if args.cluster:
        if local_given:
            raise ValueError(f"{', '.join(local_given)} only apply to local runs, not with --cluster {args.cluster}")
        params = {param: getattr(args, attribute) for attribute, param in CLUSTER_FLAGS.values()}
        return SubmititLauncher(cluster=args.cluster, **params)
    if cluster_given:
        raise ValueError(f"{', '.join(cluster_given)} need --slurm or --cluster")
    if args.gpus is not None:
        if args.workers is not None:
            raise ValueError("--workers and --gpus exclude each other: with --gpus there are "
                             "len(gpus) x --per-gpu slots")
        return LocalLauncher(gpus=args.gpus, per_gpu=args.per_gpu or 1)
    if args.per_gpu is not None:
        raise ValueError("--per-gpu needs --gpus")
    return LocalLauncher(workers=args.workers)


def log_dir_from_args(args: argparse.Namespace, sweep_name: str = "sweep",
                      parent: Union[str, Path] = REPO / "output" / "sweeps") -> Path:
    """--log-dir, else a new folder <parent>/<sweep_name>-<YYYYmmdd-HHMMSS>, with -2, -3, ... after it when
    another sweep started in the same second (created here, so that two sweeps never share one)."""
    if args.log_dir:
        return Path(args.log_dir)
    stamped = f"{sweep_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    for n in itertools.count(1):
        folder = Path(parent) / (stamped if n == 1 else f"{stamped}-{n}")
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            continue
