"""Benchmark: what DPC costs over its backbone at ViT-B/16 shapes (paper Sec. B.6), per backbone.

For CoOp, CoCoOp, KgCoOp, MaPLe, IVLP and PromptSRC: a randomly initialised CLIP with ViT-B/16's shapes (text tower
width 512, 12 layers, context 77; image tower width 768, 12 layers, patch 16, 224 px), a synthetic DTD with 2C
classes (C base classes, default 50), and real Dassl trainers: the backbone (stage 1, its config's batch, at most
32 images) and its DPC version (stage 2: 4 anchors, K = 8, its default options). Per trainer:
- trainable parameters (what the optimizer updates; DPC: the parallel prompt P');
- one training step: time (wall and the process's CPU time, median of --rounds steps after a warm-up step) and
  the activations it keeps for its backward pass (tensors saved by autograd, storages counted once);
- inference per test image: the model's forward in test mode over a batch of --test-batch images (DPC: the base
  classes' prompt P'; the new classes' mixed prompt costs the same), text features included as the trainer
  computes them.
PromptKD is measured by bench/promptkd_memory.py (its ViT-L/14 teacher is too large for a CPU step here).

    python bench/cost_table.py                       # CPU, one thread (~10 min on an idle core)
    python bench/cost_table.py --device cuda --prec fp16 --json cost.json
"""
import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time

import torch
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.cuda_paths import BACKBONES  # noqa: E402
from bench.dpc_step import Meter, batches, keep_freed_memory, make_trainer  # noqa: E402
from bench.stage2_scaling import TextRows, measured_step  # noqa: E402
from tools.synthetic_data import make_dataset  # noqa: E402
from tools.tiny_clip import VIT_B16, save_tiny_clip  # noqa: E402

ORDER = ["CoOp", "CoCoOp", "KgCoOp", "MaPLe", "IVLP", "PromptSRC"]


def trainable(trainer) -> int:
    return sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)


def inference_ms_per_image(trainer, images, meter, rounds) -> float:
    trainer.set_model_mode("eval")
    times = []
    with torch.no_grad():
        trainer.model_inference(images)  # warm-up
        for _ in range(rounds):
            meter.start()
            trainer.model_inference(images)
            times.append(meter.stop()[1 if meter.device.type == "cpu" else 0])
    trainer.set_model_mode("train")
    return statistics.median(times) / len(images) * 1000


def bench_backbone(work, name, a, opts, meter):
    config1, config2, key, _ = BACKBONES[name]
    common = opts + [f"TRAINER.{key}.PREC", a.prec]
    if name == "PromptSRC":  # GPA's Gaussian over the epochs; irrelevant to one step, kept inside the config's epochs
        common += ["TRAINER.PROMPTSRC.GPA_MEAN", "1", "TRAINER.PROMPTSRC.GPA_STD", "1"]
    with open(os.path.join(ROOT, config1)) as f:
        batch = min(yaml.safe_load(f)["DATALOADER"]["TRAIN_X"]["BATCH_SIZE"], 32)
    backbone = make_trainer(work, name, config1, batch, common)
    backbone.save_model(0, os.path.join(work, name))
    dpc = make_trainer(work, f"DPC_{name}", config2, 4,
                       common + ["DPC.STAGE1_DIR", os.path.join(work, name), "DPC.STAGE1_EPOCH", "1"])
    with contextlib.redirect_stdout(io.StringIO()):
        dpc.before_train()
    dpc.dpc_bank.wait_prefilled()
    test = next(iter(backbone.test_loader))["img"][:a.test_batch].to(backbone.device)
    row = {}
    for label, trainer in (("backbone", backbone), ("dpc", dpc)):
        trainer.set_model_mode("train")
        trainer.num_batches, trainer.batch_idx = 10 ** 9, 0
        rows = TextRows(trainer.model)
        data = batches(trainer, a.rounds + 1)
        _, _, saved, _, out = measured_step(trainer, data[0], meter, count_saved=True)
        walls, cpus = [], []
        for b in data[1:]:
            seconds, cpu, _, _, _ = measured_step(trainer, b, meter)
            walls.append(seconds)
            cpus.append(cpu)
        images = out.get("pairs", len(data[0]["img"]))  # DPC's step: its image-class pairs
        row[label] = {"trainer": type(trainer).__name__, "trainable": trainable(trainer), "images": images,
                      "step_s": round(statistics.median(walls), 3), "step_cpu_s": round(statistics.median(cpus), 3),
                      "saved_MiB": round(saved / 2 ** 20, 1), "text_rows": rows.rows // (a.rounds + 1),
                      "infer_ms_per_image": round(inference_ms_per_image(trainer, test, meter, a.rounds), 2)}
        trainer.close_writer()
    return row


def print_table(table, meta):
    print(f"\n{meta['device']}, {meta['threads']} thread(s), ViT-B/16 shapes (random weights), {meta['classes']} base "
          f"classes, precision {meta['prec']}; time: {'CPU' if meta['device'].startswith('CPU') else 'wall'} s")
    head = (f"{'trainer':<15} {'trainable':>10} {'images':>6} {'step s':>7} {'x':>5} {'saved MiB':>9} {'x':>5} "
            f"{'text rows':>9} {'infer ms/img':>12} {'x':>5}")
    print(head)
    cpu = meta["device"].startswith("CPU")
    for name, row in table.items():
        b = row["backbone"]
        for v in (b, row["dpc"]):
            t = v["step_cpu_s"] if cpu else v["step_s"]
            tb = b["step_cpu_s"] if cpu else b["step_s"]
            print(f"{v['trainer']:<15} {v['trainable']:>10,} {v['images']:>6} {t:>7.2f} {t / tb:>5.2f} "
                  f"{v['saved_MiB']:>9.0f} {v['saved_MiB'] / b['saved_MiB']:>5.2f} {v['text_rows']:>9} "
                  f"{v['infer_ms_per_image']:>12.1f} {v['infer_ms_per_image'] / b['infer_ms_per_image']:>5.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", default=ORDER, choices=ORDER)
    parser.add_argument("--classes", type=int, default=50, help="base classes C")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--prec", default="fp32", choices=["fp32", "fp16", "amp"], help="TRAINER.<X>.PREC (CUDA)")
    parser.add_argument("--rounds", type=int, default=1, help="timed steps per trainer (after one warm-up step)")
    parser.add_argument("--test-batch", type=int, default=16, help="images per inference batch")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU)")
    parser.add_argument("--json", help="write the figures to this file")
    a = parser.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda, but torch sees no CUDA device; run on a GPU machine or use --device cpu")
    keep_freed_memory()
    torch.set_num_threads(a.threads)
    meter = Meter(a.device)
    table = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        make_dataset(os.path.join(work, "data"), "dtd", n_classes=2 * a.classes, train_per_class=4, val_per_class=1,
                     test_per_class=1, image_size=64)
        clip_file = save_tiny_clip(os.path.join(work, "clip.pt"), image_size=224, **VIT_B16)
        opts = ["MODEL.BACKBONE.NAME", "custom", "MODEL.BACKBONE.PATH", clip_file, "INPUT.SIZE", "(224,224)",
                "USE_CUDA", str(a.device == "cuda"), "DATASET.NUM_SHOTS", "4", "DATALOADER.TEST.BATCH_SIZE",
                str(a.test_batch)]
        for i, name in enumerate(a.backbones):
            elapsed = time.perf_counter() - start
            eta = f", ETA {elapsed / i * (len(a.backbones) - i) / 60:.0f} min" if i else ""
            print(f"[{i + 1}/{len(a.backbones)}] {name} ({elapsed / 60:.1f} min{eta}) ...", flush=True)
            table[name] = bench_backbone(work, name, a, opts, meter)
    load = os.getloadavg()
    meta = {"device": torch.cuda.get_device_name() if a.device == "cuda" else f"CPU ({os.cpu_count()} cores)",
            "threads": a.threads, "classes": a.classes, "prec": a.prec, "rounds": a.rounds,
            "load_after": [round(x, 2) for x in load]}
    print_table(table, meta)
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"meta": meta, "results": table}, f, indent=2)


if __name__ == "__main__":
    main()
