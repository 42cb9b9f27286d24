"""The built-in demo: DPC on ToyWorld with a CLIP pretrained from scratch, on the CPU (scripts/dpc/demo.sh).

    python -m tools.demo [--backbone coop] [--seeds 1 2 3] [--root output/demo] [--workers 2]

1. writes the ToyWorld dataset (seconds, once) and checks the shipped toy CLIP (assets/toyworld-clip-v1.pt);
2. runs ``scripts/dpc/base2new_train.sh toyworld SEED BACKBONE`` per seed (stage 1, DPC stage 2, base and new
   tests; finished runs are reused), ``--workers`` at a time, one thread each;
3. evaluates every stage-1 epoch on the base and new classes (tools/epoch_curve.py, a job per seed);
4. prints zero-shot CLIP, the backbone and backbone+DPC (base / new / H, mean +- std over the seeds) with the
   chance level, and writes ``<root>/demo_<backbone>.png`` and ``<root>/demo_<backbone>.md``.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tools.epoch_curve import epoch_curve  # noqa: E402
from tools.parse_test_res import base_new, harmonic_mean  # noqa: E402
from tools.pretrain_clip import ensure_pretrained, report_path  # noqa: E402
from tools.run_results import collect  # noqa: E402
from tools.sweep import Job, LocalLauncher, run_jobs  # noqa: E402
from tools.toyworld.dataset import write_toyworld  # noqa: E402
from tools.toyworld.options import toyworld_options  # noqa: E402
from tools.toyworld.vocab import N_BASE_WORDS  # noqa: E402
from trainers.dpc.files import atomic_write_text  # noqa: E402

BACKBONES = {"coop": "CoOp", "cocoop": "CoCoOp", "kgcoop": "KgCoOp", "maple": "MaPLe", "ivlp": "IVLP",
             "promptsrc": "PromptSRC", "promptkd": "PromptKD"}
DATASET = "toyworld"
SHOTS = 16
CLASSES_PER_SIDE = N_BASE_WORDS * N_BASE_WORDS  # 25 base and 25 new classes


@functools.lru_cache(maxsize=None)
def config_name(trainer: str) -> str:
    """The default config stem scripts/lib.sh uses for ``trainer`` (lib.sh is the one place that names them)."""
    out = subprocess.run(["bash", "-c", f'source scripts/lib.sh && default_config "{trainer}"'], cwd=ROOT,
                         capture_output=True, text=True, check=True, env=dict(os.environ, DATA_ROOT=ROOT))
    return os.path.basename(out.stdout.strip())[: -len(".yaml")]


def run_dirs(output: str, trainer: str, side: str, dataset: str = DATASET, tag: str = "",
             config: str = "") -> str:
    """<output>/base2new/<side>/<dataset>/shots_16/<trainer>/<config, default: lib.sh's>[@<tag>] (holding seed<N>/)."""
    cfg = (config or config_name(trainer)) + (f"@{tag}" if tag else "")
    return os.path.join(output, "base2new", side, dataset, f"shots_{SHOTS}", trainer, cfg)


def curve_job(name: str, run_dir: str, after: str, env=()) -> Job:
    """The job that computes (and caches) the epoch curve of the training run ``run_dir`` once job ``after`` is done."""
    return Job(name, (sys.executable, "tools/epoch_curve.py", run_dir), env=env, deps=(after,))


def demo_jobs(backbone: str, seeds, data: str, output: str, weights: str, threads: int = 1) -> list[Job]:
    options = toyworld_options(weights)
    if backbone == "promptkd":  # the teacher is the same toy CLIP (there is no larger one)
        options += ["TRAINER.PROMPTKD.TEACHER_NAME", "custom", "TRAINER.PROMPTKD.TEACHER_PATH", weights]
    env = {"DATA_ROOT": data, "OUTPUT_ROOT": output, "SHOTS": str(SHOTS), "OMP_NUM_THREADS": str(threads),
           "PYTHON": sys.executable}
    stage1 = run_dirs(output, BACKBONES[backbone], "train_base")
    runs, curves, first = [], [], None
    for seed in seeds:
        # PromptKD's teacher is trained once (by the first seed's job); the others wait for it
        deps = (first,) if backbone == "promptkd" and first else ()
        run = Job(f"{backbone}/seed{seed}", ("bash", "scripts/dpc/base2new_train.sh", DATASET, str(seed), backbone,
                                             *options), env=env, deps=deps)
        runs.append(run)
        curves.append(curve_job(f"{backbone}/seed{seed}/epoch-curve", os.path.join(stage1, f"seed{seed}"), run.name,
                                env))
        first = first or run.name
    return runs + curves  # in this order a free worker takes the next run before any curve


def zero_shot(weights: str, dataset: str = DATASET) -> dict:
    """Zero-shot accuracies of the toy CLIP on the test split of ``dataset`` (toyworld: its pretraining report)."""
    if dataset == DATASET:
        with open(report_path(weights), encoding="utf-8") as f:
            down = json.load(f)["accuracy"]["downstream_test"]
    else:
        from tools.toyworld.vocab import VARIANTS
        from tools.toyworld.zero_shot import downstream_accuracy
        from trainers.clip_loader import load_clip

        down = downstream_accuracy(load_clip("custom", weights, prec="fp32"), variant=VARIANTS[dataset])
    return {"base": down["base"], "new": down["new"], "H": harmonic_mean(down["base"], down["new"])}


def results(output: str, trainer: str, seeds, dataset: str = DATASET, tag: str = "", config: str = "") -> dict:
    """{"base"/"new"/"H": Summary} of one trainer (a tagged variant, another config stem) over ``seeds``."""
    wanted = set(seeds)
    base = {s: a for s, a in collect(run_dirs(output, trainer, "train_base", dataset, tag, config)).items()
            if s in wanted}
    new = {s: a for s, a in collect(run_dirs(output, trainer, "test_new", dataset, tag, config)).items()
           if s in wanted}
    return base_new(base, new)


def curves(output: str, trainer: str, seeds, dataset: str = DATASET, verbose: bool = True) -> dict:
    """{seed: {"base": {epoch: acc}, "new": {...}}} of the finished stage-1 runs among ``seeds``."""
    top = run_dirs(output, trainer, "train_base", dataset)
    return {seed: epoch_curve(os.path.join(top, f"seed{seed}"), verbose=verbose) for seed in seeds
            if os.path.isfile(os.path.join(top, f"seed{seed}", "done.json"))}


def table(rows: dict) -> str:
    from tabulate import tabulate

    def cell(summary):
        if isinstance(summary, float):
            return f"{summary:.2f}"
        if summary.mean is None:
            return "-"
        return f"{summary.mean:.2f} ± {summary.std:.2f}" if summary.n > 1 else f"{summary.mean:.2f}"

    lines = [[name] + [cell(values[m]) for m in ("base", "new", "H")] for name, values in rows.items()]
    return tabulate(lines, headers=["ToyWorld (16 shots)", "Base", "New", "H"], tablefmt="github")


def write_figure(path: str, rows: dict, stage1_curves: dict, trainer: str, zero: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    chance = 100.0 / CLASSES_PER_SIDE
    fig, (bars, lines) = plt.subplots(1, 2, figsize=(12, 4.6))
    metrics = ("base", "new", "H")
    width = 0.8 / len(rows)
    for i, (name, values) in enumerate(rows.items()):
        means = [values[m] if isinstance(values[m], float) else values[m].mean for m in metrics]
        stds = [0.0 if isinstance(values[m], float) else (values[m].std or 0.0) for m in metrics]
        spots = np.arange(len(metrics)) + (i - (len(rows) - 1) / 2) * width
        drawn = bars.bar(spots, means, width, yerr=stds, capsize=3, label=name)
        bars.bar_label(drawn, fmt="%.1f", fontsize=8, padding=2)
    bars.axhline(chance, color="gray", linestyle=":", label=f"chance ({chance:.0f}%)")
    bars.set_xticks(range(len(metrics)), ["Base", "New", "H"])
    bars.set_ylabel("accuracy (%)")
    bars.set_ylim(0, 100)
    bars.set_title(f"Base-to-new on ToyWorld, mean ± std over {len(stage1_curves)} seeds")
    bars.legend(loc="upper right", fontsize=8)

    for split, colour in (("base", "tab:blue"), ("new", "tab:red")):
        epochs = sorted(next(iter(stage1_curves.values()))[split])
        values = np.array([[c[split][e] for e in epochs] for c in stage1_curves.values()])
        mean, std = values.mean(axis=0), values.std(axis=0)
        lines.plot(epochs, mean, color=colour, label=f"{trainer} {split}")
        lines.fill_between(epochs, mean - std, mean + std, color=colour, alpha=0.2)
        lines.axhline(zero[split], color=colour, linestyle="--", linewidth=0.8, label=f"zero-shot {split}")
        dpc = rows["+ DPC"][split]
        if dpc.mean is not None:
            lines.errorbar([epochs[-1] + 1], [dpc.mean], yerr=[dpc.std or 0.0], fmt="*", markersize=11,
                           color=colour, label=f"{trainer} + DPC {split}")
    lines.annotate("DPC\n(stage 2)", xy=(epochs[-1] + 1, lines.get_ylim()[0]), ha="center", va="bottom", fontsize=8)
    lines.set_xlabel(f"{trainer} (stage 1) epoch")
    lines.set_ylabel("test accuracy (%)")
    lines.set_title(f"The base-new trade-off over {trainer}'s training")
    lines.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", choices=sorted(BACKBONES), default="coop")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--root", default=os.path.join("output", "demo"),
                        help="data, runs, figure and table go here (default: output/demo)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="runs at a time")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per run (float sums, and so the last digits, depend on it)")
    args = parser.parse_args(argv)
    if min(args.seeds) < 1:
        parser.error("seeds are positive integers")
    root = os.path.abspath(args.root)
    data, output = os.path.join(root, "data"), os.path.join(root, "output")
    trainer = BACKBONES[args.backbone]
    started = time.monotonic()

    print(f"[demo] ToyWorld dataset: {write_toyworld(data)}")
    weights = ensure_pretrained()
    print(f"[demo] pretrained toy CLIP: {weights}")
    report = run_jobs(demo_jobs(args.backbone, args.seeds, data, output, weights, args.threads),
                      LocalLauncher(workers=args.workers), os.path.join(root, "logs"))
    if not report.ok:
        print(report.summary(), file=sys.stderr)
        return 1
    stage1_curves = curves(output, trainer, args.seeds)
    zero = zero_shot(weights)
    rows = {"Zero-shot CLIP": zero, trainer: results(output, trainer, args.seeds),
            "+ DPC": results(output, f"DPC_{trainer}", args.seeds)}
    text = table(rows)
    chance = (f"Chance: {100 / CLASSES_PER_SIDE:.0f}% (base and new are each {CLASSES_PER_SIDE}-way). "
              f"Seeds {' '.join(map(str, args.seeds))}; zero-shot is the pretrained toy CLIP with "
              "\"a photo of a {class}.\".")
    figure = write_figure(os.path.join(root, f"demo_{args.backbone}.png"), rows, stage1_curves, trainer, zero)
    atomic_write_text(os.path.join(root, f"demo_{args.backbone}.md"), text + "\n\n" + chance + "\n")
    print(f"\n{text}\n{chance}\nFigure: {figure}\nTook {time.monotonic() - started:.0f} s.")
    return 0


if __name__ == "__main__":
    from trainers.console import exit_on_user_error, verbose_requested

    sys.exit(exit_on_user_error(main, None, verbose_requested()))
