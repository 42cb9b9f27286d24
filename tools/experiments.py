"""The paper's experiments as grids of script steps, run by tools/sweep.py.

    python tools/experiments.py table1 table3 --datasets eurosat dtd --seeds 1 2 3 --workers 2 [-- yacs options]
    python tools/experiments.py table2 --gpus 0,1,2,3 --per-gpu 2
    python tools/experiments.py all --cluster slurm --partition gpu --gpus-per-job 1 --time-min 240
    python tools/experiments.py fig5 --datasets eurosat --seeds 1   # Figs. 5 and 1: + DPC and + DePT

Every step is one call of a script in scripts/dpc/ with STEPS / *_TAG / *_EXTRA (scripts/lib.sh), so a step
of one table that another table also needs (e.g. the CoOp stage 1 of Tables 1, 3 and 4) is one job. Stage 2
waits for its stage 1, PromptKD's stage 1 for its teacher. Finished runs are recognised by the scripts in a
fraction of a second (train.py's fingerprints), so a sweep re-run only does what is missing; two sweeps over
the same OUTPUT_ROOT wait for each other's run directories (DPC_WAIT_FOR_LOCK). When the grid is done the
tables are printed (tools/paper_tables.py).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Dict, List, Sequence, Tuple

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.paper_facts import CROSS_DATASET_TARGETS, CROSS_DOMAIN_TARGETS, PAPER_DATASETS  # noqa: E402
from tools.sweep import Job, merge_duplicates, run_jobs  # noqa: E402
from tools.sweep_args import add_launcher_args, launcher_from_args, log_dir_from_args  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASETS = PAPER_DATASETS  # the paper's 11, in its order
TARGETS = CROSS_DATASET_TARGETS + CROSS_DOMAIN_TARGETS  # Table 2's 14
PAPER_BACKBONES = ("coop", "maple", "promptsrc", "promptkd")
FEWSHOT_SHOTS = (1, 2, 4, 8, 16)
B2N = "scripts/dpc/base2new_train.sh"
DEPT_B2N = "scripts/dept/base2new_train.sh"
DEPT_BACKBONES = ("coop", "cocoop", "kgcoop", "maple", "promptsrc")  # those with a DePT_ trainer

# Table 3 (CoOp): which DPC components each row keeps, and the options that turn the others off.
# TS two-step tuning (always: stage 2 starts from stage 1); DHNO the hard-negative optimizer (off: the
# anchors' CE over all base classes, at the backbone's batch 32 = DPC's L); WE weighting (off: w_b = 1, no
# gradient scaling); DE decoupling (off: w_n = 1, new classes use the trained prompt too).
TABLE3_ROWS: Dict[str, Tuple[str, str]] = {
    "t3-ts": ("TS", "DPC.OBJECTIVE cross-entropy DATALOADER.TRAIN_X.BATCH_SIZE 32 DPC.W_BASE 1.0 DPC.W_NEW 1.0"),
    "t3-dhno": ("TS DHNO", "DPC.W_BASE 1.0 DPC.W_NEW 1.0"),
    "t3-dhno-we": ("TS DHNO WE", "DPC.W_NEW 1.0"),
    "t3-we-de": ("TS WE DE", "DPC.OBJECTIVE cross-entropy DATALOADER.TRAIN_X.BATCH_SIZE 32"),
}
# Table 4: batch / K at a constant L = batch x K = 32 (the untagged run is batch 4, K 8)
TABLE4_ROWS = {"b8k4": "DATALOADER.TRAIN_X.BATCH_SIZE 8 DPC.TOPK 4",
               "b16k2": "DATALOADER.TRAIN_X.BATCH_SIZE 16 DPC.TOPK 2"}
# Table 5: epochs of stage 1 and stage 2 (the untagged runs are 20 + 20)
TABLE5_EPOCHS = (10, 5)
# Fig. 6: w_b is a training-time weight under the release's update (one stage 2 per value; 0.2 is the
# untagged run); w_n an evaluation-time one (one evaluation sweeps all values)
FIG6_W_BASE = (0.1, 0.4, 0.6, 0.8, 1.0)
FIG6_W_NEW = (0.0, 1e-6, 1e-4, 1e-3, 0.01, 0.1, 0.5, 1.0)


class Grid:
    """Jobs of one sweep; ``opts`` are yacs options appended to every script call."""

    def __init__(self, opts: Sequence[str] = ()):
        self.opts = tuple(opts)
        self.jobs: List[Job] = []

    def add(self, name: str, script: str, args: Sequence[str], env: Dict[str, str] = None,
            deps: Sequence[Job] = ()) -> Job:
        job = Job(name=name, argv=("bash", script, *map(str, args), *self.opts),
                  env=tuple(sorted((env or {}).items())), deps=tuple(d.name for d in deps if d is not None))
        self.jobs.append(job)
        return job

    # ---- base-to-new chains
    def teacher(self, dataset: str, backbone: str):
        if backbone != "promptkd":
            return None
        return self.add(f"promptkd/{dataset}/teacher", B2N, [dataset, 1, backbone], {"STEPS": "teacher"})

    def stage1(self, dataset: str, seed: int, backbone: str, tag: str = "", extra: str = "") -> Job:
        env = {"STEPS": "stage1", **_tagged("STAGE1", tag, extra)}
        return self.add(f"{backbone}/{dataset}/seed{seed}/stage1{_at(tag)}", B2N, [dataset, seed, backbone], env,
                        [self.teacher(dataset, backbone)])

    def stage2(self, dataset: str, seed: int, backbone: str, after: Job, tag: str = "", extra: str = "",
               stage1_tag: str = "", stage1_extra: str = "") -> Job:
        env = {"STEPS": "stage2 test", **_tagged("STAGE1", stage1_tag, stage1_extra), **_tagged("DPC", tag, extra)}
        return self.add(f"{backbone}/{dataset}/seed{seed}/dpc{_at(tag)}", B2N, [dataset, seed, backbone], env, [after])

    def base2new(self, dataset: str, seed: int, backbone: str) -> Job:
        return self.stage2(dataset, seed, backbone, self.stage1(dataset, seed, backbone))

    def dept(self, dataset: str, seed: int, backbone: str) -> Job:
        """DePT_<Backbone> trained on the base classes and tested on both (one stage, DePT's recipe)."""
        return self.add(f"{backbone}/{dataset}/seed{seed}/dept", DEPT_B2N, [dataset, seed, backbone])


def _at(tag: str) -> str:
    return f"@{tag}" if tag else ""


def _tagged(prefix: str, tag: str, extra: str) -> Dict[str, str]:
    env = {}
    if tag:
        env[f"{prefix}_TAG"] = tag
    if extra:
        env[f"{prefix}_EXTRA"] = extra
    return env


def _number(value: float) -> str:
    """A weight as yacs reads it back as a float (1.0, not 1: yacs refuses an int for a float key)."""
    text = format(value, "g")
    return text if any(c in text for c in ".en") else text + ".0"


# ---------------------------------------------------------------- the tables
def table1(grid: Grid, datasets, seeds, backbones):
    for backbone in backbones:
        for dataset in datasets:
            for seed in seeds:
                grid.base2new(dataset, seed, backbone)


def table2(grid: Grid, datasets, seeds, backbones):
    script = "scripts/dpc/xd_train.sh"
    for backbone in backbones:
        teacher = None
        if backbone == "promptkd":  # its ImageNet teacher, once for every seed
            teacher = grid.add("promptkd/xd/teacher", script, [1, backbone], {"STEPS": "teacher"})
        for seed in seeds:
            name = f"{backbone}/xd/seed{seed}"
            stage1 = grid.add(f"{name}/stage1", script, [seed, backbone], {"STEPS": "stage1"}, [teacher])
            stage2 = grid.add(f"{name}/dpc", script, [seed, backbone], {"STEPS": "stage2"}, [stage1])
            for target in TARGETS:
                grid.add(f"{name}/test/{target}", script, [seed, backbone], {"STEPS": "test", "TARGETS": target},
                         [stage2])


def table3(grid: Grid, datasets, seeds, backbones):
    for dataset in datasets:
        for seed in seeds:
            stage1 = grid.stage1(dataset, seed, "coop")
            grid.stage2(dataset, seed, "coop", stage1)  # row (5): full DPC
            for tag, (_, extra) in TABLE3_ROWS.items():
                grid.stage2(dataset, seed, "coop", stage1, tag, extra)


def table4(grid: Grid, datasets, seeds, backbones):
    for dataset in datasets:
        for seed in seeds:
            stage1 = grid.stage1(dataset, seed, "coop")
            grid.stage2(dataset, seed, "coop", stage1)  # batch 4, K 8
            for tag, extra in TABLE4_ROWS.items():
                grid.stage2(dataset, seed, "coop", stage1, tag, extra)


def table5(grid: Grid, datasets, seeds, backbones):
    for dataset in datasets:
        for seed in seeds:
            grid.base2new(dataset, seed, "coop")  # 20 + 20
            for epochs in TABLE5_EPOCHS:
                tag, extra = f"ep{epochs}", f"OPTIM.MAX_EPOCH {epochs}"
                stage1 = grid.stage1(dataset, seed, "coop", tag, extra)
                grid.stage2(dataset, seed, "coop", stage1, tag, extra, stage1_tag=tag, stage1_extra=extra)


def fig6(grid: Grid, datasets, seeds, backbones):
    sweep = "DPC.SWEEP_W_NEW [" + ",".join(_number(w) for w in FIG6_W_NEW) + "]"
    for dataset in datasets:
        for seed in seeds:
            stage1 = grid.stage1(dataset, seed, "coop")
            dpc = grid.stage2(dataset, seed, "coop", stage1)  # w_b 0.2
            grid.add(f"coop/{dataset}/seed{seed}/dpc@wn-sweep", B2N, [dataset, seed, "coop"],
                     {"STEPS": "test", "DPC_EVAL_TAG": "wn-sweep", "DPC_EVAL_EXTRA": sweep}, [dpc])
            for w in FIG6_W_BASE:
                grid.stage2(dataset, seed, "coop", stage1, f"wb{w:g}", f"DPC.W_BASE {_number(w)}")


def fig5(grid: Grid, datasets, seeds, backbones):
    """Fig. 5 (and Fig. 1's DePT bars): backbone, + DPC (Table 1's jobs, shared) and + DePT, on the backbones asked
    for that have a DePT version (the default four: Fig. 5's CoOp, MaPLe and PromptSRC)."""
    for backbone in backbones:
        if backbone not in DEPT_BACKBONES:
            continue
        for dataset in datasets:
            for seed in seeds:
                grid.base2new(dataset, seed, backbone)
                grid.dept(dataset, seed, backbone)


def fewshot(grid: Grid, datasets, seeds, backbones):
    script = "scripts/dpc/fewshot_train.sh"
    for backbone in backbones:
        if backbone == "promptkd":
            print("fewshot: PromptKD distils on every image of every class (no few-shot protocol); skipped")
            continue
        for dataset in datasets:
            for seed in seeds:
                for shots in FEWSHOT_SHOTS:
                    name = f"{backbone}/{dataset}/seed{seed}/fewshot{shots}"
                    env = {"SHOTS": str(shots)}
                    stage1 = grid.add(f"{name}/stage1", script, [dataset, seed, backbone], {**env, "STEPS": "stage1"})
                    grid.add(f"{name}/dpc", script, [dataset, seed, backbone], {**env, "STEPS": "stage2"}, [stage1])


TABLES: Dict[str, Callable] = {"table1": table1, "table2": table2, "table3": table3, "table4": table4,
                               "table5": table5, "fig6": fig6, "fewshot": fewshot, "fig5": fig5}


def build_jobs(tables: Sequence[str], datasets, seeds, backbones, opts: Sequence[str] = ()) -> List[Job]:
    grid = Grid(opts)
    for name in tables:
        TABLES[name](grid, datasets, seeds, backbones)
    return merge_duplicates(grid.jobs)


# ---------------------------------------------------------------- command line
def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Run the paper's tables as one sweep (see the module docstring).",
        epilog="Environment: DATA_ROOT, OUTPUT_ROOT (default output), SHOTS, PYTHON as for the scripts.")
    parser.add_argument("tables", nargs="+", choices=[*TABLES, "all"], metavar="TABLE",
                        help=f"one or more of {', '.join(TABLES)}, or all")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), metavar="NAME",
                        help="base-to-new / few-shot datasets (default: the 11 of the paper)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--backbones", nargs="+", default=list(PAPER_BACKBONES),
                        choices=["coop", "cocoop", "kgcoop", "maple", "ivlp", "promptsrc", "promptkd"],
                        help="for table1, table2, fewshot and fig5 (fig5: those with a DePT version; Tables 3-5 and "
                             "Fig. 6 are CoOp's, as in the paper)")
    parser.add_argument("--dry-run", action="store_true", help="list the jobs and their dependencies, run nothing")
    parser.add_argument("--no-tables", action="store_true", help="do not print the tables at the end")
    parser.add_argument("--paper", action="store_true", help="print the published numbers beside ours")
    parser.add_argument("--figures", metavar="DIR",
                        help="also draw the tables' PNGs into DIR (fig5's default: OUTPUT_ROOT/figures)")
    add_launcher_args(parser)
    parser.usage = "%(prog)s TABLE [TABLE ...] [options] [-- yacs options for every run]"
    argv = list(sys.argv[1:] if argv is None else argv)
    opts = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    args.opts = opts
    if "all" in args.tables:
        args.tables = list(TABLES)
    return args, parser


def main(argv=None) -> int:
    args, parser = parse_args(argv)
    launcher = launcher_from_args(args, parser)
    jobs = build_jobs(args.tables, args.datasets, args.seeds, args.backbones, args.opts)
    if args.dry_run:
        for job in jobs:
            env = " ".join(f"{k}={v!r}" for k, v in job.env)
            print(f"{job.name}: {env} {' '.join(job.argv)}" + (f"  (after {', '.join(job.deps)})" if job.deps else ""))
        print(f"{len(jobs)} jobs")
        return 0
    for name in ("DATA_ROOT", "OUTPUT_ROOT"):  # the jobs run in the repository: paths relative to here
        if os.environ.get(name):
            os.environ[name] = os.path.abspath(os.environ[name])
    output = os.environ.get("OUTPUT_ROOT") or os.path.join(REPO, "output")
    report = run_jobs(jobs, launcher, log_dir_from_args(args, "-".join(args.tables), os.path.join(output, "sweeps")))
    if not args.no_tables:
        from tools import paper_tables
        figures = args.figures or (os.path.join(output, "figures") if "fig5" in args.tables else None)
        paper_tables.main([output, "--tables", *args.tables, "--shots", os.environ.get("SHOTS", "16"),
                           "--datasets", *args.datasets, "--seeds", *map(str, args.seeds)]
                          + ["--paper"] * args.paper + (["--figures", figures] if figures else []))
    return 0 if report.ok else 1


if __name__ == "__main__":
    from trainers.console import exit_on_user_error, verbose_requested

    sys.exit(exit_on_user_error(main, None, verbose_requested()))
