"""Check the fp16 and amp code paths of every backbone and its DPC version; prints a pass/fail table.

For each backbone (CoOp, MaPLe, PromptSRC, PromptKD, CoCoOp, KgCoOp, IVLP; PromptKD distils from the PromptSRC
run of the same precision), precision (fp16, amp) and stage (the backbone = stage 1, then
its DPC version = stage 2 from that run), on real Dassl trainers with a randomly initialised CLIP on a
synthetic EuroSAT:
- train: two epochs; every loss finite; prompts in the precision's dtype (fp16: float16, amp: float32 with
  a GradScaler whose state is saved in the checkpoint);
- eval: ``test()`` gives a finite accuracy;
- roundtrip: the saved checkpoint loads into a fresh trainer of the same precision and into an fp32 one
  (e.g. a GPU-trained model evaluated on a CPU): same prompt tensors, same logits (fp32: within fp16 rounding);
- resume: a run stopped after epoch 1 and resumed equals the uninterrupted run (bit for bit on CPU; on CUDA
  within --resume-tol, cuDNN and atomics being nondeterministic), the grad scaler's state included.

    python bench/cuda_paths.py                          # needs CUDA; tiny CLIP (width 64, 4 layers, 32 px)
    python bench/cuda_paths.py --size vit-b16           # real-size ViT-B/16 shapes (random weights), 224 px
    python bench/cuda_paths.py --simulate-on-cpu        # the same checks on the CPU (fp16 kernels and a float16
                                                        # autocast with torch.amp's CPU scaler); no GPU needed
Exit status 0 when every check passes, 1 otherwise, 2 when CUDA is missing.
"""
import argparse
import contextlib
import io
import json
import math
import os
import sys
import tempfile

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tools.tiny_clip import VIT_B16  # noqa: E402

BACKBONES = {  # stage-1 config, stage-2 config, options that keep a tiny run small
    "CoOp": ("configs/trainers/CoOp/vit_b16_c4_ep20_batch32_lr35.yaml",
             "configs/trainers/DPC/CoOp/vit_b16_c4_ep20_batch4_lr35_top8.yaml", "COOP", []),
    "MaPLe": ("configs/trainers/MaPLe/vit_b16_c2_ep20_batch32_2ctx.yaml",
              "configs/trainers/DPC/MaPLe/vit_b16_c2_ep20_batch4_2ctx_top8.yaml", "MAPLE",
              ["TRAINER.MAPLE.PROMPT_DEPTH", "3"]),
    "PromptSRC": ("configs/trainers/PromptSRC/vit_b16_c2_ep20_batch32_4+4ctx.yaml",
                  "configs/trainers/DPC/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx_top8.yaml", "PROMPTSRC",
                  ["TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION", "3", "TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT", "3",
                   "TRAINER.PROMPTSRC.GPA_MEAN", "1", "TRAINER.PROMPTSRC.GPA_STD", "1"]),
    "PromptKD": ("configs/trainers/PromptKD/vit_b16_c2_ep20_batch32_4+4ctx.yaml",
                 "configs/trainers/DPC/PromptKD/vit_b16_c2_ep20_batch4_4+4ctx_top8.yaml", "PROMPTKD",
                 ["TRAINER.PROMPTKD.PROMPT_DEPTH_VISION", "3"]),  # + its teacher: see teacher_options
    "CoCoOp": ("configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml",
               "configs/trainers/DPC/CoCoOp/vit_b16_c4_ep10_batch4_ctxv1_top8.yaml", "COCOOP", []),
    "KgCoOp": ("configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml",
               "configs/trainers/DPC/KgCoOp/vit_b16_ep100_batch4_ctxv1_top8.yaml", "KGCOOP", []),
    "IVLP": ("configs/trainers/IVLP/vit_b16_c2_ep5_batch4_2+2ctx.yaml",
             "configs/trainers/DPC/IVLP/vit_b16_c2_ep5_batch4_2+2ctx_top8.yaml", "IVLP",
             ["TRAINER.IVLP.PROMPT_DEPTH_VISION", "3", "TRAINER.IVLP.PROMPT_DEPTH_TEXT", "3"]),
}
SIZES = {"tiny": dict(layers=4, width=64, embed_dim=64, image_size=32, patch_size=8),
         "vit-b16": dict(VIT_B16, image_size=224)}
EPOCHS = 2


class Stopped(Exception):
    """Raised after epoch 1's checkpoint to simulate an interrupted run."""


@contextlib.contextmanager
def silenced(quiet=True):
    """stdout and stderr (Dassl's logs and progress bars) dropped in the block when ``quiet``."""
    if not quiet:
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


@contextlib.contextmanager
def precision_on_cpu():
    """Let fp16 and amp run on the CPU (they fall back to fp32 off CUDA): fp16 weights run with the CPU's fp16
    kernels, amp autocasts to float16 as on CUDA (the CPU's default is bfloat16, which cannot meet fp16 weights
    such as PromptKD's frozen teacher) with torch.amp's CPU grad scaler."""
    import trainers.base
    import trainers.clip_loader

    def keep(prec, device):
        if prec not in ("fp16", "fp32", "amp"):
            raise ValueError(f"PREC must be fp16, fp32 or amp, got {prec!r}")
        return prec

    saved = trainers.base.effective_precision, trainers.clip_loader.effective_precision
    autocast_dtype = torch.get_autocast_dtype("cpu")
    trainers.base.effective_precision = trainers.clip_loader.effective_precision = keep
    torch.set_autocast_dtype("cpu", torch.float16)
    try:
        yield
    finally:
        trainers.base.effective_precision, trainers.clip_loader.effective_precision = saved
        torch.set_autocast_dtype("cpu", autocast_dtype)


def make_workspace(work, size="tiny", n_classes=6, shots=2):
    from tools.synthetic_data import make_dataset
    from tools.tiny_clip import save_tiny_clip

    shape = SIZES[size]
    make_dataset(os.path.join(work, "data"), "eurosat", n_classes=n_classes, train_per_class=shots,
                 val_per_class=1, test_per_class=2, image_size=max(shape["image_size"], 32))
    clip_file = save_tiny_clip(os.path.join(work, f"clip-{size}.pt"), **shape)
    px = shape["image_size"]
    return {"work": work, "data": os.path.join(work, "data"), "clip": clip_file,
            "opts": ["MODEL.BACKBONE.NAME", "custom", "MODEL.BACKBONE.PATH", clip_file, "INPUT.SIZE", f"({px},{px})",
                     "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TEST.BATCH_SIZE", "16", "DATASET.NUM_SHOTS",
                     str(shots), "DATASET.SUBSAMPLE_CLASSES", "base", "OPTIM.MAX_EPOCH", str(EPOCHS),
                     "TRAIN.CHECKPOINT_FREQ", "1", "TRAIN.PRINT_FREQ", "100", "DPC.TOPK", "2"]}


def build(ws, trainer, config, out, *opts, quiet=True):
    import train
    from dassl.utils import set_random_seed

    args = train.parse_args([
        "--root", ws["data"], "--seed", "1", "--trainer", trainer,
        "--dataset-config-file", os.path.join(ROOT, "configs/datasets/eurosat.yaml"),
        "--config-file", os.path.join(ROOT, config), "--output-dir", out, *ws["opts"], *opts])
    cfg = train.setup_cfg(args)
    set_random_seed(cfg.SEED)
    with silenced(quiet):
        return train.build(cfg)


def prompts(trainer) -> dict:
    return {f"{name}.{key}": value.detach().cpu().clone()
            for name, module in trainer._models.items() for key, value in module.state_dict().items()
            if torch.is_tensor(value) and value.is_floating_point()}


def max_diff(a: dict, b: dict) -> float:
    return max(((a[k].double() - b[k].double()).abs().max().item() for k in a), default=0.0)


def train_run(ws, trainer, config, out, opts, stop_after=None, quiet=True):
    """Build and train ``EPOCHS`` epochs (stopping after ``stop_after``): (trainer, losses)."""
    t = build(ws, trainer, config, out, *opts, quiet=quiet)
    if getattr(t, "scaler", None) is not None:  # the scale grows every step, so a resume that lost it shows
        t.scaler = torch.amp.GradScaler(t.device.type, growth_interval=1)
    losses, step, after_epoch = [], t.forward_backward, t.after_epoch

    def forward_backward(batch):
        out_ = step(batch)
        losses.append(out_["loss"])
        return out_

    def stopping_after_epoch():
        after_epoch()
        if stop_after is not None and t.epoch + 1 == stop_after:
            raise Stopped

    t.forward_backward, t.after_epoch = forward_backward, stopping_after_epoch
    try:
        with silenced(quiet):
            t.train()
    except Stopped:
        pass
    finally:
        t.close_writer()
    return t, losses


def teacher_options(ws, prec, quiet=True) -> list:
    """PromptKD's teacher: the PromptSRC run of this precision on the same CLIP (trained here if not yet)."""
    config, _, _, tiny = BACKBONES["PromptSRC"]
    out = os.path.join(ws["work"], f"PromptSRC-{prec}-whole")
    if not os.path.isfile(os.path.join(out, "prompt_learner", f"model.pth.tar-{EPOCHS}")):
        train_run(ws, "PromptSRC", config, out, ["TRAINER.PROMPTSRC.PREC", prec, *tiny], quiet=quiet)
    return ["TRAINER.PROMPTKD.TEACHER_NAME", "custom", "TRAINER.PROMPTKD.TEACHER_PATH", ws["clip"],
            "TRAINER.PROMPTKD.TEACHER_DIR", out, "TRAINER.PROMPTKD.TEACHER_EPOCH", str(EPOCHS)]


def check_stage(ws, name, prec, stage, resume_tol, quiet=True, stage1_dir=None):
    """The four checks for one backbone (stage 1) or its DPC version (stage 2): ({check: (ok, detail)}, out dir)."""
    from trainers.dpc.checkpoint import load_checkpoint

    config1, config2, key, tiny = BACKBONES[name]
    if name == "PromptKD":
        tiny = tiny + teacher_options(ws, prec, quiet)
    trainer, config = (name, config1) if stage == 1 else (f"DPC_{name}", config2)
    opts = [f"TRAINER.{key}.PREC", prec, *tiny] + (["DPC.STAGE1_DIR", stage1_dir] if stage == 2 else [])
    base = os.path.join(ws["work"], f"{trainer}-{prec}")
    results = {}

    def record(check, fn):
        try:
            results[check] = fn()
        except Exception as err:  # a failing path is a row of the table, not the end of the run
            results[check] = (False, f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}")

    whole, losses = train_run(ws, trainer, config, base + "-whole", opts, quiet=quiet)
    ckpt_path = os.path.join(base + "-whole", "prompt_learner", f"model.pth.tar-{EPOCHS}")

    def train_check():
        want = torch.float16 if prec == "fp16" else torch.float32
        counts = {}  # elements of frozen weights by dtype (PromptSRC also holds an fp32 zero-shot copy)
        for p in whole.model.parameters():
            if not p.requires_grad:
                counts[p.dtype] = counts.get(p.dtype, 0) + p.numel()
        frozen = {max(counts, key=counts.get)}
        trained = [p.dtype for p in whole.model.parameters() if p.requires_grad]
        ckpt = load_checkpoint(ckpt_path)
        scaler = ckpt["resume"]["scaler"]
        # CLIP's weight matrices in the precision's dtype; under fp16 the backbones keep some prompts in fp32 as
        # upstream does (MaPLe's deep prompts and couplings, IVLP/PromptSRC's vision and deep prompts)
        ok = bool(losses) and all(math.isfinite(x) for x in losses) and frozen == {want}
        # (PromptKD's student holds only vision prompts and its projector, fp32 under fp16 as upstream's VPT)
        ok = ok and (set(trained) == {torch.float32} if prec != "fp16" else
                     (torch.float16 in trained or name == "PromptKD") and set(trained) <= {torch.float16, torch.float32})
        ok = ok and ((scaler is not None and scaler.get("scale", 0) > 0) if prec == "amp" else scaler is None)
        kinds = ", ".join(f"{trained.count(d)} {str(d)[6:]}" for d in sorted(set(trained), key=str))
        return ok, f"{len(losses)} steps, loss {losses[-1]:.3f}, CLIP {'/'.join(str(d)[6:] for d in frozen)}, " \
                   f"trained tensors {kinds}" + (f", scaler scale {scaler['scale']:g}" if scaler else "")

    def eval_check():
        with silenced():
            acc = float(whole.test())
        return math.isfinite(acc), f"accuracy {acc:.1f}"

    def roundtrip_check():
        images = next(iter(whole.test_loader))["img"].to(whole.device)
        whole.set_model_mode("eval")
        with torch.no_grad():
            ref = whole.model_inference(images).float()
        details, ok = [], True
        for eval_prec in (prec, "fp32"):
            e = build(ws, trainer, config, base + f"-eval-{eval_prec}", f"TRAINER.{key}.PREC", eval_prec, *tiny)
            with silenced():
                e.load_model(base + "-whole", epoch=EPOCHS)
            e.set_model_mode("eval")
            with torch.no_grad():
                got = e.model_inference(images).float()
            same = max_diff(prompts(whole), {k: v.to(prompts(whole)[k].dtype) for k, v in prompts(e).items()})
            logit_diff = (got - ref).abs().max().item()
            tol = 0.0 if eval_prec == prec else 0.05 * max(1.0, ref.abs().max().item())
            ok = ok and same == 0.0 and logit_diff <= tol
            details.append(f"{eval_prec}: prompts {same:.1g}, logits {logit_diff:.2g}")
        return ok, "; ".join(details)

    def resume_check():
        train_run(ws, trainer, config, base + "-stopped", opts, stop_after=1, quiet=quiet)
        resumed, _ = train_run(ws, trainer, config, base + "-stopped", opts, quiet=quiet)
        if resumed.start_epoch != 1:
            return False, f"did not resume (start epoch {resumed.start_epoch})"
        diff = max_diff(prompts(whole), prompts(resumed))
        a = load_checkpoint(ckpt_path)["resume"]["scaler"]
        b = load_checkpoint(os.path.join(base + "-stopped", "prompt_learner", f"model.pth.tar-{EPOCHS}"))["resume"]["scaler"]
        ok = diff <= resume_tol and a == b
        return ok, f"max diff {diff:.2g}" + (f", scaler {b['scale']:g}" if b else "")

    for check, fn in (("train", train_check), ("eval", eval_check), ("roundtrip", roundtrip_check),
                      ("resume", resume_check)):
        record(check, fn)
    return results, base + "-whole"


def check_all(ws, names, precs, resume_tol, quiet=True, report=print):
    """Every check of every backbone, precision and stage: a list of rows."""
    rows = []
    for name in names:
        for prec in precs:
            try:
                res1, out1 = check_stage(ws, name, prec, 1, resume_tol, quiet)
                res2, _ = check_stage(ws, name, prec, 2, resume_tol, quiet, stage1_dir=out1)
            except Exception as err:  # the build or the training itself failed
                res1 = res2 = {"train": (False, f"{type(err).__name__}: {str(err).splitlines()[0][:160]}")}
            for trainer, res in ((name, res1), (f"DPC_{name}", res2)):
                for check, (ok, detail) in res.items():
                    rows.append({"trainer": trainer, "prec": prec, "check": check, "ok": bool(ok), "detail": detail})
                    if report:
                        report(f"{trainer:<14} {prec:<5} {check:<10} {'PASS' if ok else 'FAIL'}  {detail}")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
    parser.add_argument("--precisions", nargs="+", default=["fp16", "amp"], choices=["fp16", "amp", "fp32"])
    parser.add_argument("--size", default="tiny", choices=list(SIZES), help="CLIP shapes (random weights)")
    parser.add_argument("--simulate-on-cpu", action="store_true",
                        help="run on the CPU with fp16 kernels / a float16 autocast instead of CUDA")
    parser.add_argument("--resume-tol", type=float, default=None,
                        help="largest prompt difference allowed after a resume (default: 0 on CPU, 1e-3 on CUDA)")
    parser.add_argument("--verbose", action="store_true", help="show the trainers' output")
    parser.add_argument("--json", help="also write the rows to this file")
    a = parser.parse_args(argv)
    if not a.simulate_on_cpu and not torch.cuda.is_available():
        print("error: bench/cuda_paths.py checks the CUDA fp16/amp paths, but torch sees no CUDA device "
              f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}). Run it on a GPU machine, or "
              "pass --simulate-on-cpu for the CPU simulation of the same checks.", file=sys.stderr)
        return 2
    tol = a.resume_tol if a.resume_tol is not None else (0.0 if a.simulate_on_cpu else 1e-3)
    with tempfile.TemporaryDirectory() as work:
        ws = make_workspace(work, a.size)
        if a.simulate_on_cpu:
            ws["opts"] += ["USE_CUDA", "False"]
        print(f"{'trainer':<14} {'prec':<5} {'check':<10} result")
        with precision_on_cpu() if a.simulate_on_cpu else contextlib.nullcontext():
            rows = check_all(ws, a.backbones, a.precisions, tol, quiet=not a.verbose)
    failed = [r for r in rows if not r["ok"]]
    print(f"{len(rows) - len(failed)}/{len(rows)} checks passed on "
          f"{'the CPU (simulated)' if a.simulate_on_cpu else torch.cuda.get_device_name()}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
