"""Benchmark: one DPC stage-2 step against the backbone's own step at the same images per step.

Builds real Dassl trainers (CoOp and DPC_CoOp) on a synthetic dataset with a small CLIP on the CPU,
then times ``forward_backward`` on pre-loaded batches (the DataLoader is excluded for both):
- the backbone: a batch of 32 images,
- DPC: 4 anchors with K = 8, i.e. up to L = 32 image-class pairs (hard-negative mining, negative
  image decoding and the transform included, as they run in the training process).
Reports both times, their ratio, and the sampler's share of the DPC step (scoring the anchors with
the stage-1 model, picking negatives, decoding their images). Targets: ratio <= 1.2, share <= 10%.

    python bench/dpc_step.py [--classes 100] [--steps 20] [--width 256] [--layers 6] [--json out.json]
"""
import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from dassl.utils import set_random_seed  # noqa: E402

import train  # noqa: E402
from tools.synthetic_data import make_dataset  # noqa: E402
from tools.tiny_clip import save_tiny_clip  # noqa: E402


def make_trainer(work, trainer, config, batch, opts):
    args = train.parse_args([
        "--root", os.path.join(work, "data"), "--seed", "1", "--trainer", trainer,
        "--dataset-config-file", os.path.join(ROOT, "configs/datasets/dtd.yaml"),
        "--config-file", os.path.join(ROOT, config), "--output-dir", os.path.join(work, trainer),
        "DATASET.NUM_SHOTS", "16", "DATASET.SUBSAMPLE_CLASSES", "base", "DATALOADER.NUM_WORKERS", "0",
        "DATALOADER.TRAIN_X.BATCH_SIZE", str(batch), *opts])
    cfg = train.setup_cfg(args)
    set_random_seed(1)
    with contextlib.redirect_stdout(io.StringIO()):
        return train.build(cfg)


def batches(trainer, n):
    out, it = [], iter(trainer.train_loader_x)
    while len(out) < n:
        try:
            out.append(next(it))
        except StopIteration:
            it = iter(trainer.train_loader_x)
    return out


def time_steps(trainer, data, warmup=3):
    trainer.set_model_mode("train")
    trainer.num_batches, trainer.batch_idx = 10 ** 9, 0  # never reaches the per-epoch LR update
    for batch in data[:warmup]:
        trainer.forward_backward(batch)
    start = time.perf_counter()
    for batch in data[warmup:]:
        trainer.forward_backward(batch)
    return (time.perf_counter() - start) / (len(data) - warmup)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=100, help="dataset classes (half are base classes)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the figures to this file")
    a = parser.parse_args()
    torch.set_num_threads(a.threads)

    with tempfile.TemporaryDirectory() as work:
        print(f"writing a synthetic dataset ({a.classes} classes, {a.image_size}px) and a small CLIP ...")
        make_dataset(os.path.join(work, "data"), "dtd", n_classes=a.classes, train_per_class=16,
                     val_per_class=1, test_per_class=1, image_size=a.image_size)
        clip_file = save_tiny_clip(os.path.join(work, "clip.pt"), layers=a.layers, width=a.width,
                                   embed_dim=a.width, image_size=a.image_size, patch_size=32)
        opts = ["MODEL.BACKBONE.NAME", "custom", "MODEL.BACKBONE.PATH", clip_file,
                "INPUT.SIZE", f"({a.image_size},{a.image_size})"]

        coop = make_trainer(work, "CoOp", "configs/trainers/CoOp/vit_b16_c4_ep20_batch32_lr35.yaml", 32, opts)
        coop_batches = batches(coop, a.steps + 3)
        coop_time = time_steps(coop, coop_batches)
        coop.save_model(0, os.path.join(work, "CoOp"))

        dpc = make_trainer(work, "DPC_CoOp", "configs/trainers/DPC/CoOp/vit_b16_c4_ep20_batch4_lr35_top8.yaml", 4,
                           opts + ["DPC.STAGE1_DIR", os.path.join(work, "CoOp"), "DPC.STAGE1_EPOCH", "1"])
        with contextlib.redirect_stdout(io.StringIO()):
            dpc.before_train()
        sampler_time, pairs = [0.0], []
        mine = dpc.dpc_batch

        def timed_batch(images, labels):
            start = time.perf_counter()
            out = mine(images, labels)
            sampler_time[0] += time.perf_counter() - start
            pairs.append(len(out[1]))  # (negatives, pair labels, anchor features)
            return out

        dpc.dpc_batch = timed_batch
        data = batches(dpc, a.steps + 3)
        dpc_time = time_steps(dpc, data)
        measured = pairs[3:]
        share = sampler_time[0] / len(pairs) / dpc_time
        dpc.close_writer()
        # the backbone at DPC's actual number of pairs (hard negatives of a batch overlap, so L < 32)
        n = round(sum(measured) / len(measured))
        coop_equal_time = time_steps(coop, [{k: v[:n] for k, v in b.items()} for b in coop_batches])

    result = {
        "classes_base": a.classes // 2, "clip": f"ViT width {a.width}, {a.layers} layers, {a.image_size}px/32",
        "threads": a.threads, "backbone_step_s": round(coop_time, 4), "dpc_step_s": round(dpc_time, 4),
        "ratio": round(dpc_time / coop_time, 3), "sampler_share": round(share, 3),
        "backbone_step_equal_L_s": round(coop_equal_time, 4), "ratio_equal_L": round(dpc_time / coop_equal_time, 3),
        "mean_pairs_L": round(sum(measured) / len(measured), 1),
    }
    print(f"CoOp step (32 images):            {coop_time * 1000:8.1f} ms")
    print(f"DPC_CoOp step (4 anchors, K=8):    {dpc_time * 1000:8.1f} ms  (L = {result['mean_pairs_L']} pairs on average)")
    print(f"CoOp step ({n} images = DPC's L):    {coop_equal_time * 1000:8.1f} ms")
    print(f"ratio DPC / backbone (32 images):  {result['ratio']:8.3f}   (target <= 1.2)")
    print(f"ratio DPC / backbone (equal L):    {result['ratio_equal_L']:8.3f}")
    print(f"sampler share of the DPC step:     {share * 100:8.1f} %  (target <= 10%)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
