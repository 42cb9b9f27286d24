"""Benchmark: memory of one PromptKD+DPC stage-2 step against PromptKD's own step.

Builds real Dassl trainers on a synthetic dataset with two randomly initialised CLIPs, a "large" teacher
and a "small" student (untrained prompts: memory does not depend on their values); ``--size vit``: the real
shapes, a ViT-B/16 student (text width 512, image width 768, 12 layers, patch 16) and a ViT-L/14 teacher (text
width 768, 12 layers; image width 1024, 24 layers, patch 14), 224 px:
- PromptKD: a batch of 32 images (the DPC release's stage-1 batch), distilled over all classes;
- DPC_PromptKD: 4 anchors with K = 8 (up to 32 image-class pairs), negatives ranked by the teacher, its text copy
  over the pairs' classes (``DPC.TEXT_CLASSES auto``, "dpc") and over every base class ("dpc_all", as before).
Each step runs in a fresh process, which reports
- the activation memory the step keeps for its backward pass (``saved_tensors_hooks``, storages counted once),
- on CUDA, the peak memory allocated over the step (on the CPU the process's peak resident memory says little:
  building the trainers has already set it),
- the parameters held: the teacher once, no copy of its towers for DPC's text side.

    python bench/promptkd_memory.py [--classes 64] [--student-width 256] [--teacher-width 512] [--device cuda]
    python bench/promptkd_memory.py --size vit --classes 100 200     # real shapes, C = 50 and 100 base classes
"""
import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

TEACHER = "configs/trainers/PromptSRC/vit_l14_c2_ep20_batch8_4+4ctx.yaml"
STAGE1 = "configs/trainers/PromptKD/vit_b16_c2_ep20_batch32_4+4ctx.yaml"
STAGE2 = "configs/trainers/DPC/PromptKD/vit_b16_c2_ep20_batch4_4+4ctx_top8.yaml"


def build(work, trainer, config, *opts):
    import train
    from dassl.utils import set_random_seed

    with open(os.path.join(work, "opts.json")) as f:
        common = json.load(f)
    args = train.parse_args(["--root", os.path.join(work, "data"), "--seed", "1", "--trainer", trainer,
                             "--dataset-config-file", os.path.join(ROOT, "configs/datasets/dtd.yaml"),
                             "--config-file", os.path.join(ROOT, config), "--output-dir", os.path.join(work, trainer),
                             *common, *opts])
    cfg = train.setup_cfg(args)
    set_random_seed(1)
    with contextlib.redirect_stdout(io.StringIO()):
        return train.build(cfg)


def prepare(work, a):
    """Dataset, CLIPs, an (untrained) teacher run and PromptKD run to start DPC from."""
    from tools.synthetic_data import make_dataset
    from tools.tiny_clip import VIT_B16, VIT_L14, save_tiny_clip

    make_dataset(os.path.join(work, "data"), "dtd", n_classes=a.classes, train_per_class=16, val_per_class=1,
                 test_per_class=1, image_size=min(a.image_size, 64))
    if a.size == "vit":  # ViT-B/16 student, ViT-L/14 teacher
        small = save_tiny_clip(os.path.join(work, "small.pt"), image_size=a.image_size, **VIT_B16)
        large = save_tiny_clip(os.path.join(work, "large.pt"), image_size=a.image_size, seed=1, **VIT_L14)
        layers = 12
    else:
        size = dict(layers=a.layers, image_size=a.image_size, patch_size=32)
        small = save_tiny_clip(os.path.join(work, "small.pt"), width=a.student_width, embed_dim=a.student_width // 2,
                               **size)
        large = save_tiny_clip(os.path.join(work, "large.pt"), width=a.teacher_width, embed_dim=a.teacher_width // 2,
                               seed=1, **size)
        layers = a.layers
    depth = str(min(9, layers))
    opts = ["DATASET.NUM_SHOTS", "16", "DATASET.SUBSAMPLE_CLASSES", "base", "DATALOADER.NUM_WORKERS", "0",
            "MODEL.BACKBONE.NAME", "custom", "MODEL.BACKBONE.PATH", small, "INPUT.SIZE", f"({a.image_size},{a.image_size})",
            "TRAINER.PROMPTKD.TEACHER_NAME", "custom", "TRAINER.PROMPTKD.TEACHER_PATH", large,
            "TRAINER.PROMPTKD.PROMPT_DEPTH_VISION", depth, "TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT", depth,
            "TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION", depth]
    if a.device == "cpu":
        opts += ["TRAINER.PROMPTKD.PREC", "fp32"]
    with open(os.path.join(work, "opts.json"), "w") as f:
        json.dump(opts, f)
    teacher = build(work, "PromptSRC", TEACHER, "MODEL.BACKBONE.PATH", large)
    teacher.save_model(0, os.path.join(work, "PromptSRC"))
    teacher_opts = ["TRAINER.PROMPTKD.TEACHER_DIR", os.path.join(work, "PromptSRC")]
    with open(os.path.join(work, "opts.json"), "w") as f:
        json.dump(opts + teacher_opts, f)
    build(work, "PromptKD", STAGE1).save_model(0, os.path.join(work, "PromptKD"))


def measure(work, which):
    """One step of ``which`` (promptkd | dpc_all | dpc) in this process: the figures as a dict."""
    from bench.dpc_step import SavedBytes

    if which == "promptkd":
        trainer = build(work, "PromptKD", STAGE1)
    else:
        trainer = build(work, "DPC_PromptKD", STAGE2, "DPC.STAGE1_DIR", os.path.join(work, "PromptKD"),
                        "DPC.STAGE1_EPOCH", "1", "DPC.TEXT_CLASSES", "all" if which == "dpc_all" else "auto")
        with contextlib.redirect_stdout(io.StringIO()):
            trainer.before_train()
    batch = next(iter(trainer.train_loader_x))
    trainer.set_model_mode("train")
    trainer.num_batches, trainer.batch_idx = 10 ** 9, 0
    cuda = torch.cuda.is_available() and trainer.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    with SavedBytes() as saved:
        out = trainer.forward_backward(batch)
    peak = round((torch.cuda.max_memory_allocated() - before) / 2 ** 20, 1) if cuda else None
    modules = [trainer.model] + ([trainer.teacher] if hasattr(trainer, "teacher") else [])
    params = {id(p): p.numel() for m in modules for p in m.parameters()}
    return {"images": out.get("pairs", len(batch["img"])),
            "saved_activations_mb": round(saved.total / 2 ** 20, 1),
            "cuda_step_peak_mb": peak,
            "parameters_m": round(sum(params.values()) / 1e6, 2)}


STEPS = {"promptkd": "PromptKD step (32 images)", "dpc_all": "DPC_PromptKD, text over all classes (before)",
         "dpc": "DPC_PromptKD, text over the pairs' classes"}


def run_classes(a, classes, env) -> dict:
    a.classes = classes
    with tempfile.TemporaryDirectory() as work:
        prepare(work, a)
        result = {}
        for step in a.steps:
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", work, step], env=env,
                                  capture_output=True, text=True)
            if proc.returncode:
                sys.exit(f"error: the {step} step failed:\n{proc.stderr[-3000:]}")
            result[step] = json.loads(proc.stdout.strip().splitlines()[-1])
    if "promptkd" in result:
        base = result["promptkd"]
        for step, r in result.items():
            r["x_saved"] = round(r["saved_activations_mb"] / base["saved_activations_mb"], 3)
            if r["cuda_step_peak_mb"] is not None:
                r["x_cuda_peak"] = round(r["cuda_step_peak_mb"] / base["cuda_step_peak_mb"], 3)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, nargs="+", default=[64], help="dataset classes (half are base classes)")
    parser.add_argument("--size", default="small", choices=("small", "vit"),
                        help="small: the widths and layers below; vit: ViT-B/16 student, ViT-L/14 teacher")
    parser.add_argument("--student-width", type=int, default=256)
    parser.add_argument("--teacher-width", type=int, default=512)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", nargs="+", default=list(STEPS), choices=list(STEPS))
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--child", nargs=2, metavar=("WORK", "STEP"), help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.child:
        print(json.dumps(measure(*a.child)))
        return
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=os.environ.get("CUDA_VISIBLE_DEVICES", "") if a.device == "cuda" else "")
    shapes = ("ViT-B/16 student, ViT-L/14 teacher" if a.size == "vit" else
              f"student width {a.student_width}, teacher width {a.teacher_width}, {a.layers} layers")
    results = {}
    for classes in a.classes:
        print(f"{classes} classes ({classes // 2} base), {shapes} ...", flush=True)
        results[classes // 2] = result = run_classes(a, classes, env)
        for step, r in result.items():
            peak = "" if r["cuda_step_peak_mb"] is None else f"  CUDA peak {r['cuda_step_peak_mb']:8.1f} MB"
            ratio = f" (x{r['x_saved']})" if "x_saved" in r else ""
            print(f"  {STEPS[step]:46s} images {r['images']:>3}  saved activations {r['saved_activations_mb']:8.1f} "
                  f"MB{ratio}{peak}  parameters {r['parameters_m']} M")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"shapes": shapes, "by_base_classes": results}, f, indent=2)


if __name__ == "__main__":
    main()
