"""The dry run before real data: every backbone through the real base-to-new script, on a synthetic EuroSAT.

    python -m tools.dry_run [--backbones coop maple ...] [--epochs N] [--root output/dry_run] [--workers 2]

1. writes a synthetic EuroSAT in CoOp's layout (10 classes, 5 base; 16 train, 4 val, 10 test images each) and a
   tiny random CLIP (4 layers, 32 px) in OpenAI's format, under ``--root``;
2. runs, per backbone, exactly what a real experiment runs,
   ``bash scripts/dpc/base2new_train.sh eurosat 1 <backbone> MODEL.BACKBONE.NAME custom MODEL.BACKBONE.PATH <tiny>``
   (PromptKD: the same file as its teacher's CLIP), with the configs' own settings: a custom CLIP's input size
   and prompt depths follow from the file (``trainers/fit_clip.py``; each run's log says what it fitted);
3. prints the base / new / H table of ``tools/parse_test_res.py``.

The tiny CLIP is random, so the accuracies mean nothing; what the dry run shows is that data layout, configs,
scripts, both stages, checkpoints and both evaluations work end to end. ``--epochs N`` caps every stage at N
epochs (a quick check: ``--epochs 1`` takes about a minute per backbone); finished runs are reused.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tools.demo import BACKBONES  # noqa: E402
from tools.sweep import Job, LocalLauncher, run_jobs  # noqa: E402

DATASET, SEED = "eurosat", 1


def prepare(root: str) -> tuple[str, str]:
    """(data root, tiny CLIP file) under ``root``; both are written once."""
    from tools.synthetic_data import make_dataset
    from tools.tiny_clip import save_tiny_clip

    data, weights = os.path.join(root, "data"), os.path.join(root, "tiny-clip.pt")
    if not os.path.isfile(os.path.join(data, "eurosat", "split_zhou_EuroSAT.json")):
        make_dataset(data, DATASET, n_classes=10, train_per_class=16, val_per_class=4, test_per_class=10)
    if not os.path.isfile(weights):
        save_tiny_clip(weights)
    return data, weights


def command(backbone: str, weights: str, epochs: int | None = None) -> list[str]:
    """The real experiment command for ``backbone`` on the tiny CLIP (and a stage cap, when asked)."""
    argv = ["bash", "scripts/dpc/base2new_train.sh", DATASET, str(SEED), backbone,
            "MODEL.BACKBONE.NAME", "custom", "MODEL.BACKBONE.PATH", weights]
    if backbone == "promptkd":
        argv += ["TRAINER.PROMPTKD.TEACHER_NAME", "custom", "TRAINER.PROMPTKD.TEACHER_PATH", weights]
    if epochs:
        argv += ["OPTIM.MAX_EPOCH", str(epochs)]
    return argv


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.dry_run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", choices=sorted(BACKBONES), default=list(BACKBONES))
    parser.add_argument("--epochs", type=int, help="cap every stage at this many epochs (default: the configs')")
    parser.add_argument("--root", default=os.path.join("output", "dry_run"))
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="runs at a time")
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        parser.error("--epochs must be >= 1")
    root = os.path.abspath(args.root)
    data, weights = prepare(root)
    output = os.path.join(root, "output")
    env = {"DATA_ROOT": data, "OUTPUT_ROOT": output, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    print(f"[dry run] synthetic EuroSAT in {data}, tiny random CLIP {weights}; each backbone runs:")
    jobs = []
    for backbone in args.backbones:
        argv = command(backbone, weights, args.epochs)
        print("  DATA_ROOT=... OUTPUT_ROOT=... " + shlex.join(argv))
        jobs.append(Job(backbone, tuple(argv), env=env))
    report = run_jobs(jobs, LocalLauncher(workers=args.workers), os.path.join(root, "logs"))
    table = [sys.executable, "tools/parse_test_res.py", "--base2new", os.path.join(output, "base2new"),
             "--dataset", DATASET]
    print(f"\n$ {shlex.join(table)}", flush=True)
    subprocess.run(table, cwd=ROOT, check=False)
    print("(a random tiny CLIP: the accuracies mean nothing; that every row is there means the pipeline works)")
    return 0 if report.ok else 1


if __name__ == "__main__":
    from trainers.console import exit_on_user_error, verbose_requested

    sys.exit(exit_on_user_error(main, None, verbose_requested()))
