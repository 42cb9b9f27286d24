"""Benchmark: how the stage-2 step scales with the number of base classes C, at ViT-B/16 shapes.

For each C: a synthetic DTD with 2C classes (C base classes), a randomly initialised CLIP with ViT-B/16's shapes
(text tower width 512, 12 layers, context 77; image tower width 768, 12 layers, patch 16 at --image-size px, 224 =
real size), and real Dassl trainers:
- the backbone's own step (a batch of 32 images; the text tower over all C classes, as CoOp trains),
- DPC "before": stage 2 with ``DPC.TEXT_CLASSES all`` (the text tower over every base class, as the release),
- DPC "after": the default ``DPC.TEXT_CLASSES auto`` (the text tower over the classes in the step's pairs).
Per step: time (wall and the process's CPU time; steps of the three interleaved, the order reversed every other
round), the activations it keeps for its backward pass (tensors saved by autograd, storages counted once), the
text rows encoded with gradients, and on CUDA the step's peak allocation.

The backbone's and DPC-before's text work grows linearly with C (~0.2 s and ~25 MB of saved activations per class
on one CPU thread). Where a direct step would be too slow or too large for the machine (C > --direct-max), their
figures are the straight line through the measured C values (marked "fit" in the table and dashed in the PNG);
DPC-after is measured at every C.

    python bench/stage2_scaling.py                                    # CPU, C = 50 100 200 500 1000 (~15 min)
    python bench/stage2_scaling.py --classes 50 500 --direct-max 500  # measure every step directly
    python bench/stage2_scaling.py --device cuda --direct-max 1000    # on a GPU: every C measured
"""
import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.dpc_step import CONFIGS, Meter, SavedBytes, batches, keep_freed_memory, make_trainer  # noqa: E402
from tools.synthetic_data import make_dataset  # noqa: E402
from tools.tiny_clip import VIT_B16, save_tiny_clip  # noqa: E402
from trainers.encoders import TextEncoder  # noqa: E402

VARIANTS = ("backbone", "dpc_before", "dpc_after")
LABELS = {"backbone": "backbone (32 images)", "dpc_before": "DPC, all classes (before)",
          "dpc_after": "DPC, pairs' classes (after)"}


class TextRows:
    """Counts the text rows the model encodes with gradients (every TextEncoder of ``model``)."""

    def __init__(self, model):
        self.rows = 0
        for module in model.modules():
            if isinstance(module, TextEncoder):
                module.register_forward_hook(self.count)

    def count(self, module, args, output):
        if output.requires_grad:
            self.rows += args[0].shape[0]


def measured_step(trainer, batch, meter, count_saved=False):
    """One ``forward_backward``: (wall s, CPU s, saved bytes or None, CUDA peak bytes, the step's output)."""
    saved = SavedBytes() if count_saved else contextlib.nullcontext()
    meter.start()
    with saved:
        out = trainer.forward_backward(batch)
    seconds, cpu, peak = meter.stop()
    return seconds, cpu, (saved.total if count_saved else None), peak, out


def build_trainers(work, name, classes, a, opts):
    """The backbone (batch 32, saved as stage 1) and DPC before / after on a dataset of 2C classes."""
    config1, config2, depth_keys = CONFIGS[name]
    make_dataset(os.path.join(work, "data"), "dtd", n_classes=2 * classes, train_per_class=a.shots, val_per_class=1,
                 test_per_class=1, image_size=64)
    common = opts + ["DATASET.NUM_SHOTS", str(a.shots)] + [x for key in depth_keys for x in (key, "9")]
    trainers = {"backbone": make_trainer(work, name, config1, 32, common)}
    trainers["backbone"].save_model(0, os.path.join(work, name))
    stage1 = ["DPC.STAGE1_DIR", os.path.join(work, name), "DPC.STAGE1_EPOCH", "1"]
    for key, choice in (("dpc_before", "all"), ("dpc_after", "auto")):
        trainer = make_trainer(work, f"DPC_{name}", config2, 4, common + stage1 + ["DPC.TEXT_CLASSES", choice])
        with contextlib.redirect_stdout(io.StringIO()):
            trainer.before_train()
        trainer.dpc_bank.wait_prefilled()
        trainers[key] = trainer
    for trainer in trainers.values():
        trainer.set_model_mode("train")
        trainer.num_batches, trainer.batch_idx = 10 ** 9, 0  # never reaches the per-epoch work
    return trainers


def bench_classes(work, name, classes, a, opts, meter):
    direct = [k for k in VARIANTS if k == "dpc_after" or classes <= a.direct_max]
    trainers = build_trainers(work, name, classes, a, opts)
    rows = {k: TextRows(trainers[k].model) for k in direct}
    data = {k: batches(trainers[k], a.rounds + 1) for k in direct}
    out = {}
    for k in direct:  # first step: saved activations, text rows (also the warm-up)
        rows[k].rows = 0
        _, _, saved, _, _ = measured_step(trainers[k], data[k][0], meter, count_saved=True)
        out[k] = {"saved_MiB": saved / 2 ** 20, "text_rows": rows[k].rows, "wall": [], "cpu": [], "peak": []}
    for r in range(a.rounds):
        for k in (direct if r % 2 == 0 else direct[::-1]):
            seconds, cpu, _, peak, _ = measured_step(trainers[k], data[k][r + 1], meter)
            out[k]["wall"].append(seconds)
            out[k]["cpu"].append(cpu)
            out[k]["peak"].append(peak)
    for trainer in trainers.values():
        trainer.close_writer()
    result = {}
    for k, v in out.items():
        result[k] = {"step_s": round(statistics.median(v["wall"]), 3), "step_cpu_s": round(statistics.median(v["cpu"]), 3),
                     "saved_MiB": round(v["saved_MiB"], 1), "text_rows": v["text_rows"], "measured": True}
        if meter.device.type == "cuda":
            result[k]["cuda_peak_MiB"] = round(max(v["peak"]) / 2 ** 20, 1)
    return result


def fill_by_fit(table):
    """Figures of C values not measured directly: the least-squares line through the measured C values."""
    for key in ("backbone", "dpc_before"):
        known = [(c, r[key]) for c, r in table.items() if key in r]
        if len(known) < 2:
            continue
        for field in ("step_s", "step_cpu_s", "saved_MiB", "text_rows"):
            xs, ys = [c for c, _ in known], [r[field] for _, r in known]
            slope, intercept = statistics.linear_regression(xs, ys)
            for c, r in table.items():
                if key not in r or not r[key]["measured"]:
                    r.setdefault(key, {"measured": False})[field] = round(intercept + slope * c, 3)


def print_table(name, table, cuda):
    head = f"{'C':>5}  {'variant':<30} {'step s':>8} {'CPU s':>8} {'x backbone':>10} {'saved MiB':>10} {'x backbone':>10} {'text rows':>9}"
    print(f"\n{name}: one stage-2 step against C base classes" + ("" if cuda else " (CPU time: one thread)"))
    print(head + ("  CUDA peak MiB" if cuda else ""))
    for c, r in table.items():
        base = r.get("backbone")
        for k in VARIANTS:
            if k not in r:
                continue
            v = r[k]
            mark = "" if v["measured"] else " (fit)"
            t_ratio = f"{v['step_cpu_s'] / base['step_cpu_s']:.2f}" if base else "-"
            m_ratio = f"{v['saved_MiB'] / base['saved_MiB']:.2f}" if base else "-"
            line = (f"{c:>5}  {(LABELS[k] + mark):<30} {v['step_s']:>8.2f} {v['step_cpu_s']:>8.2f} {t_ratio:>10} "
                    f"{v['saved_MiB']:>10.0f} {m_ratio:>10} {v['text_rows']:>9.0f}")
            if cuda:
                line += f"  {v.get('cuda_peak_MiB', float('nan')):>13.0f}"
            print(line)


def plot(name, table, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    cs = list(table)
    for k, color in zip(VARIANTS, ("tab:gray", "tab:red", "tab:blue")):
        for ax, field, unit in ((axes[0], "step_cpu_s", "s"), (axes[1], "saved_MiB", "MiB")):
            points = [(c, table[c][k][field], table[c][k]["measured"]) for c in cs if k in table[c]]
            ax.plot([p[0] for p in points], [p[1] for p in points], color=color, linestyle="--", linewidth=1)
            measured = [p for p in points if p[2]]
            ax.plot([p[0] for p in measured], [p[1] for p in measured], "o-", color=color, label=LABELS[k])
    axes[0].set_ylabel("step time (CPU s, one thread)")
    axes[1].set_ylabel("saved activations (MiB)")
    for ax in axes:
        ax.set_xlabel("base classes C")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(cs, [str(c) for c in cs])
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{name}: stage-2 step vs base classes, ViT-B/16 shapes (dashed: straight-line fit)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="CoOp", choices=list(CONFIGS))
    parser.add_argument("--classes", type=int, nargs="+", default=[50, 100, 200, 500, 1000], help="base classes C")
    parser.add_argument("--direct-max", type=int, default=200,
                        help="largest C at which the backbone and DPC-before run directly (beyond: the fit)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--prec", default="fp32", choices=["fp32", "fp16", "amp"], help="TRAINER.<X>.PREC (CUDA)")
    parser.add_argument("--image-size", type=int, default=224, help="image tower input (224: ViT-B/16's own)")
    parser.add_argument("--shots", type=int, default=4, help="training images per class")
    parser.add_argument("--rounds", type=int, default=2, help="timed steps per variant (after one warm-up step)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU)")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--png", help="draw time and memory against C to this file")
    a = parser.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda, but torch sees no CUDA device; run on a GPU machine or use --device cpu")
    kept = keep_freed_memory()
    torch.set_num_threads(a.threads)
    meter = Meter(a.device)
    key = {"CoOp": "COOP", "MaPLe": "MAPLE", "PromptSRC": "PROMPTSRC"}[a.backbone]
    table = {}
    with tempfile.TemporaryDirectory() as work:
        clip_file = save_tiny_clip(os.path.join(work, "clip.pt"), image_size=a.image_size, **VIT_B16)
        opts = ["MODEL.BACKBONE.NAME", "custom", "MODEL.BACKBONE.PATH", clip_file, "INPUT.SIZE",
                f"({a.image_size},{a.image_size})", "USE_CUDA", str(a.device == "cuda"), f"TRAINER.{key}.PREC", a.prec]
        for i, c in enumerate(sorted(a.classes)):
            print(f"[{i + 1}/{len(a.classes)}] C = {c} ...", flush=True)
            run = os.path.join(work, f"C{c}")
            os.makedirs(run)
            table[c] = bench_classes(run, a.backbone, c, a, opts, meter)
            if a.json:  # what is measured so far survives a later C that does not fit
                with open(a.json, "w") as f:
                    json.dump({"partial": True, "results": {str(k): r for k, r in table.items()}}, f, indent=2)
    fill_by_fit(table)
    load = os.getloadavg()
    meta = {"device": torch.cuda.get_device_name() if a.device == "cuda" else f"CPU ({os.cpu_count()} cores)",
            "threads": a.threads, "backbone": a.backbone, "image_size": a.image_size, "prec": a.prec,
            "text": "width 512, 12 layers, context 77", "image": f"width 768, 12 layers, patch 16, {a.image_size} px",
            "direct_max": a.direct_max, "rounds": a.rounds, "freed_memory_kept": kept,
            "load_after": [round(x, 2) for x in load]}
    print(f"\n{meta['device']}, {a.threads} thread(s); text {meta['text']}; image {meta['image']}; "
          f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print_table(a.backbone, table, a.device == "cuda")
    if a.png:
        plot(a.backbone, table, a.png)
        print(f"wrote {a.png}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"meta": meta, "results": {str(c): r for c, r in table.items()}}, f, indent=2)


if __name__ == "__main__":
    main()
