"""What a reviewer would ask of DPC, measured on ToyWorld with the pretrained toy CLIP (CPU, ~25 min on 2 cores).

    python bench/toyworld_study.py [--dataset toyworld|toyworld_wide] [--seeds 1 2 3] [--rows TAG ...]
                                   [--root output/toyworld_study] [--workers 2] [--markdown FILE] [--report-only]

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
   DPC.SWEEP_W_NEW on the main run);
6. DePT (docs/dept.md), the feature-level plug-in, on the same CoOp: DePT_CoOp through scripts/dept/base2new_train.sh
   with CoOp's recipe (DEPT_CONFIG: batch 32, 20 epochs, one stage) and with DePT's own (batch 4, 10 epochs).

The comparison of the plug-ins alone: ``--rows ce dept dept-own`` (CoOp, + DPC, + CE control, + DePT).

``--dataset toyworld_wide`` asks the same of the 100-class variant (50 base classes: more neighbours to mine).
Prints the tables (mean ± std over seeds) and writes them as Markdown to ``<root>/study_<dataset>.md``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tabulate import tabulate  # noqa: E402

from tools.demo import SHOTS, config_name, curve_job, results, run_dirs, zero_shot  # noqa: E402
from tools.demo import curves as stage1_curves  # noqa: E402
from tools.experiments import Grid  # noqa: E402
from tools.run_results import read_weight_sweep  # noqa: E402
from tools.parse_test_res import summarize  # noqa: E402
from tools.pretrain_clip import ensure_pretrained  # noqa: E402
from tools.sweep import LocalLauncher, run_jobs  # noqa: E402
from tools.toyworld.dataset import write_toyworld  # noqa: E402
from tools.toyworld.options import toyworld_options  # noqa: E402
from tools.toyworld.vocab import VARIANTS  # noqa: E402
from trainers.dpc.files import atomic_write_text  # noqa: E402

W_NEW_SWEEP = (0.0, 1e-6, 0.1, 0.3, 0.5, 1.0)
CURVE_EPOCHS = (0, 1, 2, 5, 10, 15, 20)
WN_TAG = "wn-sweep"

# tag -> (row, options of the tagged step); "" is the untagged run. Stage 1 (CoOp):
STAGE1_ROWS = {"": "CoOp, 20 epochs (stage 1 of every DPC row)",
               "ep40": ("CoOp, 40 epochs", "OPTIM.MAX_EPOCH 40")}
# Stage 2 (DPC_CoOp, from the 20-epoch CoOp):
DPC_ROWS = {
    "": ("+ DPC (hard negatives, K 8, batch 4, w_b 0.2, release update)", ""),
    "ce": ("+ same-step CE control (no negatives; batch 4, x1/w_b)", "DPC.OBJECTIVE cross-entropy"),
    "randneg": ("+ DPC, random negatives", "DPC.NEGATIVES random"),
    "upd-frozen": ("+ DPC, update frozen (P' = P + (M - P)/w_b)", "DPC.UPDATE frozen"),
    "base-mixed": ("+ DPC, mixed base prompt (w_b P' + (1 - w_b) P)", "DPC.BASE_PROMPT mixed"),
    "wb0.1": ("+ DPC, w_b 0.1", "DPC.W_BASE 0.1"),
    "wb0.5": ("+ DPC, w_b 0.5", "DPC.W_BASE 0.5"),
    "wb1.0": ("+ DPC, w_b 1.0 (no gradient scaling)", "DPC.W_BASE 1.0"),
    "ce-wb1.0": ("+ CE control, w_b 1.0 (no scaling)", "DPC.OBJECTIVE cross-entropy DPC.W_BASE 1.0"),
}
# DePT_CoOp (one stage, from CLIP): tag -> (row, the trainer whose config it runs with; "": DePT's own)
DEPT_ROWS = {
    "dept": ("CoOp + DePT (one stage, CoOp's recipe: batch 32, 20 epochs)", "CoOp"),
    "dept-own": ("CoOp + DePT, DePT's recipe (batch 4, 10 epochs, random init)", ""),
}
ROW_CHOICES = ["ep40"] + [tag for tag in DPC_ROWS if tag] + list(DEPT_ROWS) + [WN_TAG]


def dept_config(recipe: str) -> str:
    """The config stem a DePT row runs with ("": DePT_CoOp's own)."""
    return config_name(recipe) if recipe else ""


def study_grid(dataset: str, seeds, rows, weights: str, output: str) -> Grid:
    grid = Grid(toyworld_options(weights))
    for seed in seeds:
        stage1 = grid.stage1(dataset, seed, "coop")
        main = grid.stage2(dataset, seed, "coop", stage1)  # also tests the 20-epoch CoOp on the new classes
        for tag in rows:
            if tag in STAGE1_ROWS:  # a longer backbone run and its new-class test
                longer = grid.stage1(dataset, seed, "coop", tag, STAGE1_ROWS[tag][1])
                grid.add(f"coop/{dataset}/seed{seed}/test@{tag}", "scripts/coop/base2new_test.sh", [dataset, seed],
                         {"TAG": tag}, [longer])
            elif tag in DPC_ROWS:
                grid.stage2(dataset, seed, "coop", stage1, tag, DPC_ROWS[tag][1])
            elif tag in DEPT_ROWS:
                recipe = DEPT_ROWS[tag][1]
                env = {"DEPT_CONFIG": f"configs/trainers/{recipe}/{dept_config(recipe)}.yaml"} if recipe else {}
                grid.add(f"dept/{dataset}/seed{seed}/{tag}", "scripts/dept/base2new_train.sh", [dataset, seed, "coop"],
                         env)
        if WN_TAG in rows:
            sweep = "[" + ",".join(format(w, "g") for w in W_NEW_SWEEP) + "]"
            grid.add(f"coop/{dataset}/seed{seed}/{WN_TAG}", "scripts/dpc/base2new_train.sh", [dataset, seed, "coop"],
                     {"STEPS": "test", "DPC_EVAL_TAG": WN_TAG, "DPC_EVAL_EXTRA": f"DPC.SWEEP_W_NEW {sweep}"}, [main])
    for seed in seeds:  # last: a free worker takes the next training run first
        grid.jobs.append(curve_job(f"coop/{dataset}/seed{seed}/epoch-curve",
                                   os.path.join(run_dirs(output, "CoOp", "train_base", dataset), f"seed{seed}"),
                                   f"coop/{dataset}/seed{seed}/stage1"))
    return grid


def cell(summary, seeds: int) -> str:
    if summary is None or summary.mean is None:
        return "-"
    return f"{summary.mean:.2f} ± {summary.std:.2f}" + (f" [n={summary.n}]" if summary.n != seeds else "")


def tables(dataset: str, seeds, rows, weights: str, output: str) -> str:
    n = len(seeds)
    zero = zero_shot(weights, dataset)
    lines = [["Zero-shot CLIP", f"{zero['base']:.2f}", f"{zero['new']:.2f}", f"{zero['H']:.2f}"]]
    for tag, row in STAGE1_ROWS.items():
        if tag == "" or tag in rows:
            found = results(output, "CoOp", seeds, dataset, tag)
            lines.append([row if tag == "" else row[0]] + [cell(found[m], n) for m in ("base", "new", "H")])
    for tag, (row, _) in DPC_ROWS.items():
        if tag == "" or tag in rows:
            found = results(output, "DPC_CoOp", seeds, dataset, tag)
            lines.append([row] + [cell(found[m], n) for m in ("base", "new", "H")])
    for tag, (row, recipe) in DEPT_ROWS.items():
        if tag in rows:
            found = results(output, "DePT_CoOp", seeds, dataset, config=dept_config(recipe))
            lines.append([row] + [cell(found[m], n) for m in ("base", "new", "H")])
    parts = [tabulate(lines, headers=[f"{dataset}, 16 shots, CoOp", "Base", "New", "H"], tablefmt="github")]

    curves = stage1_curves(output, "CoOp", seeds, dataset, verbose=False)
    epochs = [e for e in CURVE_EPOCHS if curves and all(e in c["base"] for c in curves.values())]
    parts.append(tabulate([[e] + [cell(summarize([c[split][e] for c in curves.values()]), n)
                                  for split in ("base", "new")] for e in epochs],
                          headers=["CoOp epoch", "Base", "New"], tablefmt="github"))
    if WN_TAG in rows:
        sweeps, top = {}, run_dirs(output, "DPC_CoOp", "test_new", dataset, WN_TAG)
        for seed in seeds:
            for w, acc in read_weight_sweep(os.path.join(top, f"seed{seed}")).items():
                sweeps.setdefault(w, []).append(acc)
        parts.append(tabulate([[format(w, "g"), cell(summarize(accs), n)] for w, accs in sorted(sweeps.items())],
                              headers=["w_n (DPC, new classes)", "New"], tablefmt="github"))
    return "\n\n".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=["toyworld", "toyworld_wide"], default="toyworld")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--rows", nargs="+", choices=ROW_CHOICES, default=ROW_CHOICES,
                        help="rows besides CoOp and DPC (default: all)")
    parser.add_argument("--root", default=os.path.join("output", "toyworld_study"))
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--markdown", help="write the tables here (default: <root>/study_<dataset>.md)")
    parser.add_argument("--report-only", action="store_true", help="print the tables of the runs already there")
    args = parser.parse_args(argv)
    root = os.path.abspath(args.root)
    data, output = os.path.join(root, "data"), os.path.join(root, "output")
    started = time.monotonic()
    print(f"[study] dataset: {write_toyworld(data, variant=args.dataset)}")
    weights = ensure_pretrained()
    if not args.report_only:
        os.environ.update(DATA_ROOT=data, OUTPUT_ROOT=output, SHOTS=str(SHOTS), OMP_NUM_THREADS="1",
                          PYTHON=sys.executable)
        grid = study_grid(args.dataset, args.seeds, args.rows, weights, output)
        report = run_jobs(grid.jobs, LocalLauncher(workers=args.workers), os.path.join(root, "logs"))
        if not report.ok:
            print(report.summary(), file=sys.stderr)
    text = tables(args.dataset, args.seeds, args.rows, weights, output)
    header = (f"{args.dataset} study: seeds {' '.join(map(str, args.seeds))}, mean ± std (population) over seeds; "
              f"chance {100 / len(VARIANTS[args.dataset].base):.0f}% (base and new are {len(VARIANTS[args.dataset].base)}-way).")
    path = args.markdown or os.path.join(root, f"study_{args.dataset}.md")
    atomic_write_text(path, header + "\n\n" + text + "\n")
    print(f"\n{header}\n\n{text}\n\nWritten to {path}; took {time.monotonic() - started:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
