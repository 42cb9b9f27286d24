"""What a reviewer would ask of DPC, measured on ToyWorld with the pretrained toy CLIP (CPU, ~20 min on 2 cores).

    python bench/toyworld_study.py [--seeds 1 2 3] [--root output/toyworld_study] [--workers 2] [--markdown FILE]

Every row is CoOp (stage 1) or DPC_CoOp (stage 2) run through scripts/dpc/base2new_train.sh with the ToyWorld
options (configs/datasets/toyworld.opts), 16 shots, over the seeds; a variant is a tagged run (STAGE1_TAG /
DPC_TAG with *_EXTRA options, see scripts/lib.sh). The questions:

1. the backbone's trade-off over its epochs (every stage-1 epoch tested on base and new: tools/epoch_curve.py),
   and CoOp trained for 40 epochs instead of 20;
2. DPC against a control that gets the same extra optimizer steps without DPC: stage 2 with the anchors'
   cross-entropy over all base classes (DPC.OBJECTIVE cross-entropy), same batch, epochs and 1/w_b multiplier;
3. hard against random negatives (DPC.NEGATIVES random);
4. the update variants: the release's (default), DPC.UPDATE frozen and DPC.BASE_PROMPT mixed (paper-literal);
5. w_b (a training-time weight under the release's update: one stage 2 per value) and w_n (evaluation time:
   DPC.SWEEP_W_NEW on the main run).

Prints the tables (mean ± std over seeds) and writes them as Markdown to ``<root>/study.md`` (or --markdown).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tabulate import tabulate  # noqa: E402

from tools.demo import DATASET, SHOTS, run_dirs, zero_shot  # noqa: E402
from tools.epoch_curve import epoch_curve  # noqa: E402
from tools.experiments import Grid  # noqa: E402
from tools.paper_tables import read_weight_sweep  # noqa: E402
from tools.parse_test_res import base_new, collect, summarize  # noqa: E402
from tools.pretrain_clip import ensure_pretrained  # noqa: E402
from tools.sweep import Job, LocalLauncher, run_jobs  # noqa: E402
from tools.toyworld.dataset import write_toyworld  # noqa: E402
from tools.toyworld.options import toyworld_options  # noqa: E402
from trainers.dpc.files import atomic_write_text  # noqa: E402

W_NEW_SWEEP = (0.0, 1e-6, 0.1, 0.3, 0.5, 1.0)
CURVE_EPOCHS = (0, 1, 2, 5, 10, 15, 20)

# (row, trainer, stage-1 tag, DPC tag, options of the tagged step)
STAGE1_ROWS = [("CoOp, 20 epochs (stage 1 of every DPC row)", "CoOp", "", ""),
               ("CoOp, 40 epochs", "CoOp", "ep40", "OPTIM.MAX_EPOCH 40")]
DPC_ROWS = [
    ("+ DPC (hard negatives, K 8, batch 4, w_b 0.2, release update)", "", ""),
    ("+ same-step CE control (no negatives; batch 4, x1/w_b)", "ce", "DPC.OBJECTIVE cross-entropy"),
    ("+ DPC, random negatives", "randneg", "DPC.NEGATIVES random"),
    ("+ DPC, update frozen (P' = P + (M - P)/w_b)", "upd-frozen", "DPC.UPDATE frozen"),
    ("+ DPC, mixed base prompt (w_b P' + (1 - w_b) P)", "base-mixed", "DPC.BASE_PROMPT mixed"),
    ("+ DPC, w_b 0.1", "wb0.1", "DPC.W_BASE 0.1"),
    ("+ DPC, w_b 0.5", "wb0.5", "DPC.W_BASE 0.5"),
    ("+ DPC, w_b 1.0 (no gradient scaling)", "wb1.0", "DPC.W_BASE 1.0"),
    ("+ CE control, w_b 1.0 (no scaling)", "ce-wb1.0", "DPC.OBJECTIVE cross-entropy DPC.W_BASE 1.0"),
]
WN_TAG = "wn-sweep"


def study_grid(seeds, weights: str) -> Grid:
    grid = Grid(toyworld_options(weights))
    for seed in seeds:
        stage1 = grid.stage1(DATASET, seed, "coop")
        for _, _, tag, extra in STAGE1_ROWS[1:]:  # a longer backbone run and its new-class test
            longer = grid.stage1(DATASET, seed, "coop", tag, extra)
            grid.add(f"coop/{DATASET}/seed{seed}/test@{tag}", "scripts/coop/base2new_test.sh", [DATASET, seed],
                     {"TAG": tag}, [longer])
        main = grid.stage2(DATASET, seed, "coop", stage1)
        for _, tag, extra in DPC_ROWS[1:]:
            grid.stage2(DATASET, seed, "coop", stage1, tag, extra)
        sweep = "[" + ",".join(format(w, "g") for w in W_NEW_SWEEP) + "]"
        grid.add(f"coop/{DATASET}/seed{seed}/{WN_TAG}", "scripts/dpc/base2new_train.sh", [DATASET, seed, "coop"],
                 {"STEPS": "test", "DPC_EVAL_TAG": WN_TAG, "DPC_EVAL_EXTRA": f"DPC.SWEEP_W_NEW {sweep}"}, [main])
        curve = ("tools/epoch_curve.py", os.path.join(run_dirs(OUTPUT, "CoOp", "train_base"), f"seed{seed}"))
        grid.jobs.append(Job(f"coop/{DATASET}/seed{seed}/epoch-curve", (sys.executable, *curve), deps=(stage1.name,)))
    return grid


def tagged(path: str, tag: str) -> str:
    return f"{path}@{tag}" if tag else path


def row_results(trainer: str, tag: str, seeds) -> dict:
    wanted = set(seeds)
    base = {s: a for s, a in collect(tagged(run_dirs(OUTPUT, trainer, "train_base"), tag)).items() if s in wanted}
    new = {s: a for s, a in collect(tagged(run_dirs(OUTPUT, trainer, "test_new"), tag)).items() if s in wanted}
    return base_new(base, new)


def cell(summary) -> str:
    if summary is None or summary.mean is None:
        return "-"
    return f"{summary.mean:.2f} ± {summary.std:.2f}" + (f" [n={summary.n}]" if summary.n != NSEEDS else "")


def tables(seeds, weights: str) -> str:
    zero = zero_shot(weights)
    rows = [["Zero-shot CLIP", f"{zero['base']:.2f}", f"{zero['new']:.2f}", f"{zero['H']:.2f}"]]
    for name, trainer, tag, _ in STAGE1_ROWS:
        rows.append([name] + [cell(row_results(trainer, tag, seeds)[m]) for m in ("base", "new", "H")])
    for name, tag, _ in DPC_ROWS:
        rows.append([name] + [cell(row_results("DPC_CoOp", tag, seeds)[m]) for m in ("base", "new", "H")])
    main = tabulate(rows, headers=["ToyWorld, 16 shots, CoOp", "Base", "New", "H"], tablefmt="github")

    curves = {}
    top = run_dirs(OUTPUT, "CoOp", "train_base")
    for seed in seeds:
        if os.path.isfile(os.path.join(top, f"seed{seed}", "done.json")):
            curves[seed] = epoch_curve(os.path.join(top, f"seed{seed}"), verbose=False)
    epochs = [e for e in CURVE_EPOCHS if curves and all(e in c["base"] for c in curves.values())]
    trade = tabulate([[e] + [cell(summarize([c[split][e] for c in curves.values()])) for split in ("base", "new")]
                      for e in epochs], headers=["CoOp epoch", "Base", "New"], tablefmt="github")

    sweeps = {}
    top = tagged(run_dirs(OUTPUT, "DPC_CoOp", "test_new"), WN_TAG)
    for seed in seeds:
        for w, acc in read_weight_sweep(os.path.join(top, f"seed{seed}")).items():
            sweeps.setdefault(w, []).append(acc)
    wn = tabulate([[format(w, "g"), cell(summarize(accs))] for w, accs in sorted(sweeps.items())],
                  headers=["w_n (DPC, new classes)", "New"], tablefmt="github")
    return "\n\n".join([main, trade, wn])


def main(argv=None) -> int:
    global OUTPUT, NSEEDS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--root", default=os.path.join("output", "toyworld_study"))
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--markdown", help="write the tables here (default: <root>/study.md)")
    parser.add_argument("--report-only", action="store_true", help="print the tables of the runs already there")
    args = parser.parse_args(argv)
    root = os.path.abspath(args.root)
    data, OUTPUT, NSEEDS = os.path.join(root, "data"), os.path.join(root, "output"), len(args.seeds)
    started = time.monotonic()
    print(f"[study] ToyWorld dataset: {write_toyworld(data)}")
    weights = ensure_pretrained()
    if not args.report_only:
        os.environ.update(DATA_ROOT=data, OUTPUT_ROOT=OUTPUT, SHOTS=str(SHOTS), OMP_NUM_THREADS="1",
                          PYTHON=sys.executable)
        report = run_jobs(study_grid(args.seeds, weights).jobs, LocalLauncher(workers=args.workers),
                          os.path.join(root, "logs"))
        if not report.ok:
            print(report.summary(), file=sys.stderr)
    text = tables(args.seeds, weights)
    header = (f"ToyWorld study: seeds {' '.join(map(str, args.seeds))}, mean ± std (population) over seeds; "
              f"chance 4% (25-way base and new).")
    path = args.markdown or os.path.join(root, "study.md")
    atomic_write_text(path, header + "\n\n" + text + "\n")
    print(f"\n{header}\n\n{text}\n\nWritten to {path}; took {time.monotonic() - started:.0f} s.")
    return 0


OUTPUT, NSEEDS = "", 0

if __name__ == "__main__":
    sys.exit(main())
