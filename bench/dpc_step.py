"""Benchmark: the DPC stage-2 step against its backbone's step at equal images per step, per backbone.

For CoOp, MaPLe and PromptSRC: builds real Dassl trainers on a synthetic 100-class DTD (50 base classes,
16 shots, JPEG photos of --photo size) with a randomly initialised ViT CLIP, trains nothing, and times
``forward_backward`` on pre-loaded batches (the DataLoader is excluded for both):
- DPC: 4 anchors, K = 8 (up to L = 32 image-class pairs; fewer when classes repeat), hard-negative mining,
  negative images and their augmentation included, as they run in the training process;
- the backbone: a batch of L images (L = DPC's mean number of pairs), and of 32 images.
The DPC step runs twice: with the decoded store (``DecodedBank``, the default) and with the per-draw PIL
path (``ImageBank``, what ran before; ``--no-pil`` skips it). Blocks of steps are interleaved, the order
reversed every other round (backbone-32, backbone-L, DPC, DPC-PIL, DPC-PIL, DPC, backbone-L, ...), so that load
from other processes hits all of them alike. Reported per trainer: ms per step, images per second, the shares of
the step spent in the sampler (stage-1 scoring, choosing, negatives) and in the negative pipeline alone, and
memory: the activations one step keeps for its backward pass (tensors saved by autograd, storages counted once;
the part of a step's peak that grows with the images), on CUDA also the step's peak allocation over what was
allocated before (torch.cuda.max_memory_allocated). Then the DPC step's forward + backward + update against the
backbone's step on the very same image-class pairs, step next to step (``paired_steps``): the ratio by wall clock
and by the process's CPU time (which a loaded machine disturbs less).
Targets: DPC step <= 1.2x the backbone's at equal L, its forward + backward + update <= 1.02x, negative
pipeline <= 10% of the step. ``--profile`` prints where the time of both steps goes instead (``step_profile.py``).
Freed memory stays in the process (``keep_freed_memory``; ``--glibc-malloc``: glibc's defaults), for steadier steps.

    python bench/dpc_step.py --no-pil                         # CPU, width 256, 6 layers, 224 px, 1 thread
    python bench/dpc_step.py --rounds 0                       # only forward + backward + update (~5 min)
    python bench/dpc_step.py --device cuda --size vit-b16     # real-size ViT-B/16 shapes (random weights)
    python bench/dpc_step.py --backbones CoOp --json out.json
    python bench/dpc_step.py --profile                        # phases, towers and operators of both steps
"""
import argparse
import contextlib
import ctypes
import gc
import glob
import io
import json
import os
import statistics
import sys
import tempfile
import time

import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from dassl.data.transforms import build_transform  # noqa: E402
from dassl.utils import set_random_seed  # noqa: E402

import train  # noqa: E402
from tools.synthetic_data import make_dataset  # noqa: E402
from tools.tiny_clip import VIT_B16, save_tiny_clip  # noqa: E402
from trainers.dpc.features import replaced  # noqa: E402
from trainers.dpc.image_bank import ImageBank  # noqa: E402
from trainers.dpc.text_classes import TextPlan  # noqa: E402
from bench.step_profile import drawn_pairs, profile_steps, sampler_output  # noqa: E402

CONFIGS = {  # stage 1 (batch 32), stage 2 (batch 4, K 8), the config node, prompt-depth keys
    "CoOp": ("configs/trainers/CoOp/vit_b16_c4_ep20_batch32_lr35.yaml",
             "configs/trainers/DPC/CoOp/vit_b16_c4_ep20_batch4_lr35_top8.yaml", []),
    "MaPLe": ("configs/trainers/MaPLe/vit_b16_c2_ep20_batch32_2ctx.yaml",
              "configs/trainers/DPC/MaPLe/vit_b16_c2_ep20_batch4_2ctx_top8.yaml", ["TRAINER.MAPLE.PROMPT_DEPTH"]),
    "PromptSRC": ("configs/trainers/PromptSRC/vit_b16_c2_ep20_batch32_4+4ctx.yaml",
                  "configs/trainers/DPC/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx_top8.yaml",
                  ["TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION", "TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT"]),
}
SIZES = {"small": dict(width=256, embed_dim=256, layers=6, patch_size=32), "vit-b16": VIT_B16}


# ---------------------------------------------------------------- measuring
def keep_freed_memory() -> bool:
    """glibc: keep memory a step frees for the next one (no trimming of the heap, tensors up to 32 MiB from the heap,
    not mmap). By default glibc hands much of it back to the kernel, and the next step takes it again page by page:
    0 to ~47k page faults a step, their count varying from step to step (up to ~0.1 s of a 1.2 s step on the CPU),
    for the backbone and DPC alike. Without them both run steadier. False where it does not apply (not glibc)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
    return bool(libc.mallopt(m_trim_threshold, 2 ** 31 - 1)) and bool(libc.mallopt(m_mmap_threshold, 32 << 20))


class Meter:
    """Synchronised wall time, the process's CPU time and peak memory of a block of steps on ``device``. CPU time
    leaves out the time the process waits for a core, so it stays close to an idle machine's figures on a loaded
    one (CPU runs; on CUDA it only counts the host)."""

    def __init__(self, device):
        self.device = torch.device(device)

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def start(self):
        self.sync()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        self.t0, self.c0 = time.perf_counter(), time.process_time()

    def stop(self):
        self.sync()
        seconds, cpu = time.perf_counter() - self.t0, time.process_time() - self.c0
        peak = torch.cuda.max_memory_allocated() - self.base if self.device.type == "cuda" else 0
        return seconds, cpu, peak


def saved_activations(trainer, batch) -> int:
    """Bytes autograd keeps for the backward pass of one ``forward_backward`` (distinct storages)."""
    with SavedBytes() as saved:
        trainer.forward_backward(batch)
    return saved.total


class SavedBytes(torch.autograd.graph.saved_tensors_hooks):
    """Within the block: the bytes autograd keeps for backward passes (``total``; each storage counted once)."""

    def __init__(self):
        self.storages = {}
        super().__init__(self._pack, lambda t: t)

    def __enter__(self):
        super().__enter__()
        return self

    def _pack(self, t):
        self.storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    @property
    def total(self) -> int:
        return sum(self.storages.values())


class Timed:
    """Wraps ``obj.method``: total synchronised seconds (wall and CPU) of its calls."""

    def __init__(self, obj, method, meter):
        self.seconds, self.cpu, self.calls = 0.0, 0.0, []
        call = getattr(obj, method)

        def timed(*args, **kwargs):
            meter.sync()
            t0, c0 = time.perf_counter(), time.process_time()
            out = call(*args, **kwargs)
            meter.sync()
            self.seconds += time.perf_counter() - t0
            self.cpu += time.process_time() - c0
            self.calls.append(out)
            return out

        setattr(obj, method, timed)


# ---------------------------------------------------------------- setup
def write_photos(data_root, classes, photo):
    """A synthetic DTD whose JPEGs are ``photo`` (W, H) in size (cropped from square noisy images)."""
    w, h = photo
    make_dataset(data_root, "dtd", n_classes=classes, train_per_class=16, val_per_class=1, test_per_class=1,
                 image_size=max(w, h))
    for path in glob.glob(os.path.join(data_root, "**", "*.jpg"), recursive=True):
        with Image.open(path) as img:
            img = img.convert("RGB").crop((0, 0, w, h))
        img.save(path, quality=90)


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


def run_steps(trainer, data, meter):
    trainer.set_model_mode("train")
    trainer.num_batches, trainer.batch_idx = 10 ** 9, 0  # never reaches the per-epoch work
    meter.start()
    for batch in data:
        trainer.forward_backward(batch)
    return meter.stop()


def paired_steps(backbone, dpc, data, meter) -> dict:
    """The DPC step's forward + backward + update against the backbone's step on the very same image-class pairs.

    The sampler's outputs are drawn first (stage-1 scoring, real negative images); then, batch after batch, the DPC
    step with those outputs (no sampling: its forward, loss, backward and update) and the backbone's step on the
    same pairs (anchors and negatives, the pairs' labels) are timed next to each other, in alternating order.
    Both steps run the text tower over every base class (DPC.TEXT_CLASSES all), so that the ratio is the cost of
    the same work; the whole-step blocks above use the trainer's own setting (auto: the pairs' classes).
    Per-step ratios DPC / backbone: median and quartiles, by wall clock and by CPU time."""
    times = {"dpc": [], "backbone": []}
    all_classes = TextPlan(False, False, "")  # the text tower over every base class, as the backbone's step
    for k, (batch, out, pairs) in enumerate(drawn_pairs(dpc, data)):
        steps = [("dpc", dpc, batch), ("backbone", backbone, pairs)]
        for key, trainer, step_batch in (steps if k % 2 == 0 else steps[::-1]):
            with sampler_output(dpc, out), replaced(dpc, "dpc_text_plan", all_classes):
                meter.start()
                trainer.forward_backward(step_batch)
                secs, cpu, _ = meter.stop()
            times[key].append((secs, cpu, len(pairs["label"])))
    result = {"steps": len(data), "mean_L": round(statistics.mean(t[2] for t in times["dpc"]), 1)}
    for clock, i in (("wall", 0), ("cpu", 1)):
        ratios = sorted(d[i] / b[i] for d, b in zip(times["dpc"], times["backbone"]))
        quartiles = statistics.quantiles(ratios, n=4)
        result[clock] = {"dpc_ms": round(statistics.median(d[i] for d in times["dpc"]) * 1000, 1),
                         "backbone_ms": round(statistics.median(b[i] for b in times["backbone"]) * 1000, 1),
                         "ratio": round(statistics.median(ratios), 3),
                         "quartiles": [round(quartiles[0], 3), round(quartiles[2], 3)],
                         "ratio_of_sums": round(sum(d[i] for d in times["dpc"]) / sum(b[i] for b in times["backbone"]), 3)}
    return result


# ---------------------------------------------------------------- one backbone
def bench_backbone(work, name, a, opts):
    config1, config2, depth_keys = CONFIGS[name]
    depth = [x for key in depth_keys for x in (key, str(min(9, SIZES[a.size]["layers"])))]
    meter = Meter(a.device)
    steps = a.steps

    backbone = make_trainer(work, name, config1, 32, opts + depth)
    backbone.save_model(0, os.path.join(work, name))
    dpc = make_trainer(work, f"DPC_{name}", config2, 4,
                       opts + depth + ["DPC.STAGE1_DIR", os.path.join(work, name), "DPC.STAGE1_EPOCH", "1"])
    with contextlib.redirect_stdout(io.StringIO()):
        dpc.before_train()
    decoded = dpc.dpc_bank
    t0 = time.perf_counter()
    decoded.wait_prefilled()
    prefill_s = time.perf_counter() - t0
    pil = ImageBank(decoded.impaths, build_transform(dpc.cfg, is_train=True)) if a.pil else None
    if pil is not None:  # its encoded bytes in memory, as in training after the first epoch
        for i in range(len(pil)):
            pil._encoded(i)
    sampler = Timed(dpc, "dpc_batch", meter)
    negs = {}
    for label, bank in (("decoded", decoded), ("pil", pil)):
        if bank is not None:
            negs[label] = Timed(bank, "load", meter)

    dpc_data = batches(dpc, steps * a.rounds + a.warmup + a.pairs)
    big = batches(backbone, steps * a.rounds + a.warmup)
    dpc.dpc_bank = decoded
    run_steps(dpc, dpc_data[:a.warmup], meter)  # warm-up, and the pair count L
    pairs = [len(out[1]) for out in sampler.calls]
    n = round(sum(pairs) / len(pairs))
    equal = [{k: v[:n] for k, v in b.items()} for b in big]
    run_steps(backbone, equal[:a.warmup], meter)
    if a.rounds:
        run_steps(backbone, big[:a.warmup], meter)
    if a.profile:
        phases = profile_steps(backbone, dpc, dpc_data[a.warmup:a.warmup + a.steps])
        dpc.close_writer()
        backbone.close_writer()
        return {"trainer": name, "profile_ms_per_step": phases}

    rows = {key: {"seconds": [], "cpu": [], "peak": [], "sampler": 0.0, "negatives": 0.0, "pairs": []}
            for key in ("backbone_32", "backbone_L", "dpc", "dpc_pil")}
    saved = {"backbone_L": saved_activations(backbone, equal[0]), "backbone_32": saved_activations(backbone, big[0]),
             "dpc": saved_activations(dpc, dpc_data[0])} if a.rounds else {}
    for r in range(a.rounds):  # interleaved blocks of steps, in reverse order every other round
        part = slice(a.warmup + r * steps, a.warmup + (r + 1) * steps)
        for key in (list(rows) if r % 2 == 0 else list(rows)[::-1]):
            if key == "dpc_pil" and pil is None:
                continue
            if key.startswith("backbone"):
                secs, cpu, peak = run_steps(backbone, (equal if key == "backbone_L" else big)[part], meter)
            else:
                bank = decoded if key == "dpc" else pil
                timer = negs["decoded" if key == "dpc" else "pil"]
                dpc.dpc_bank = bank
                s0, n0, c0 = sampler.seconds, timer.seconds, len(sampler.calls)
                secs, cpu, peak = run_steps(dpc, dpc_data[part], meter)
                rows[key]["sampler"] += sampler.seconds - s0
                rows[key]["negatives"] += timer.seconds - n0
                rows[key]["pairs"] += [len(out[1]) for out in sampler.calls[c0:]]
            rows[key]["seconds"].append(secs / steps)
            rows[key]["cpu"].append(cpu / steps)
            rows[key]["peak"].append(peak)
    dpc.dpc_bank = decoded
    paired = paired_steps(backbone, dpc, dpc_data[-a.pairs:], meter) if a.pairs else None
    dpc.close_writer()
    backbone.close_writer()

    result = {"trainer": name, "L": n, "rounds": a.rounds, "steps_per_round": steps, "fbu_paired": paired,
              "prefill_s": round(prefill_s, 2), "store_MiB": round(decoded.stored_bytes / 2 ** 20, 1),
              "store_images": len(decoded._store)}
    for key, row in rows.items():
        if not row["seconds"]:
            continue
        step = statistics.median(row["seconds"])
        images = n if key in ("backbone_L",) else 32 if key == "backbone_32" else statistics.mean(row["pairs"])
        entry = {"step_ms": round(step * 1000, 1), "img_per_s": round(images / step, 1),
                 "step_ms_min": round(min(row["seconds"]) * 1000, 1),
                 "step_ms_rounds": [round(s * 1000, 1) for s in row["seconds"]],
                 "step_cpu_ms": round(statistics.median(row["cpu"]) * 1000, 1),
                 "saved_activations_MiB": round(saved[key] / 2 ** 20, 1) if key in saved else None}
        if meter.device.type == "cuda":
            entry["cuda_peak_MiB"] = round(max(row["peak"]) / 2 ** 20, 1)
        if key.startswith("dpc"):
            total = sum(row["seconds"]) * steps
            entry.update(sampler_share=round(row["sampler"] / total, 3), negatives_share=round(row["negatives"] / total, 3),
                         negatives_ms=round(row["negatives"] / (steps * a.rounds) * 1000, 2),
                         mean_L=round(statistics.mean(row["pairs"]), 1))
        result[key] = entry
    for key in ("dpc", "dpc_pil"):  # medians over blocks, and the fastest blocks (least disturbed by other load)
        if key in result and "backbone_L" in result:
            result[f"ratio_equal_L_{key}"] = round(result[key]["step_ms"] / result["backbone_L"]["step_ms"], 3)
            result[f"ratio_equal_L_{key}_min"] = round(result[key]["step_ms_min"] / result["backbone_L"]["step_ms_min"], 3)
    del backbone, dpc, decoded, pil, dpc_data, big, equal
    gc.collect()
    return result


def print_table(results):
    if all("backbone_L" in r for r in results):
        print_blocks(results)
    print_paired(results)


def print_blocks(results):
    print(f"\n{'trainer':<16}{'images':>7}{'ms/step':>9}{'img/s':>8}{'xbackbone':>10}{'(min)':>7}{'sampler':>9}{'negatives':>11}{'saved MiB':>10}"
          f"{'CUDA peak':>10}")
    for r in results:
        base = r["backbone_L"]["step_ms"]
        for key, label, images in (("backbone_32", r["trainer"], "32"), ("backbone_L", r["trainer"], str(r["L"])),
                                   ("dpc", f"DPC_{r['trainer']}", f"{r['dpc']['mean_L']}"),
                                   ("dpc_pil", f"DPC_{r['trainer']} PIL", None)):
            e = r.get(key)
            if e is None:
                continue
            images = images or f"{e['mean_L']}"
            shares = (f"{e['sampler_share'] * 100:8.1f}%{e['negatives_share'] * 100:10.1f}%" if "sampler_share" in e
                      else f"{'':9}{'':11}")
            ratio_min = e["step_ms_min"] / r["backbone_L"]["step_ms_min"]
            print(f"{label:<16}{images:>7}{e['step_ms']:>9.1f}{e['img_per_s']:>8.1f}{e['step_ms'] / base:>10.2f}"
                  f"{ratio_min:>7.2f}"
                  f"{shares}{e['saved_activations_MiB'] or '':>10}{e.get('cuda_peak_MiB', ''):>10}")
    print("ms/step: median over the blocks; xbackbone: step time over the backbone's at DPC's L images (target DPC "
          "<= 1.2), (min): the same with each trainer's fastest block; sampler: stage-1 "
          "scoring + choice + negatives; negatives: the negative pipeline alone (target <= 10%); saved: activations kept "
          "for backward (MiB)")


def print_paired(results):
    paired = [r for r in results if r.get("fbu_paired")]
    if not paired:
        return
    print(f"\nforward + backward + update: the DPC step without its sampler against the backbone's step on the same "
          f"image-class pairs\n{'':23}{'wall clock':-^44}{'':2}{'CPU time':-^44}\n{'trainer':<16}{'images':>7}"
          + f"{'backbone ms':>12}{'DPC ms':>8}{'ratio':>7}{'quartiles':>12}{'sums':>7}{'':2}" * 2)
    for r in paired:
        p = r["fbu_paired"]
        cells = ""
        for clock in ("wall", "cpu"):
            c = p[clock]
            low, high = c["quartiles"]
            cells += (f"{c['backbone_ms']:>12.1f}{c['dpc_ms']:>8.1f}{c['ratio']:>7.3f}{f'{low:.3f}-{high:.3f}':>12}"
                      f"{c['ratio_of_sums']:>7.3f}{'':2}")
        print(f"{'DPC_' + r['trainer']:<16}{p['mean_L']:>7}{cells}")
    print(f"ratio: median over {paired[0]['fbu_paired']['steps']} pairs of steps (each DPC step next to the backbone's, "
          "in alternating order) of DPC / backbone, with its quartiles; sums: total DPC over total backbone time "
          "(target <= 1.02); CPU time leaves out waiting for a core (a loaded machine)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--size", default="small", choices=list(SIZES), help="CLIP shapes (random weights)")
    parser.add_argument("--prec", default="fp32", choices=["fp32", "fp16", "amp"], help="TRAINER.<X>.PREC (CUDA)")
    parser.add_argument("--classes", type=int, default=100, help="dataset classes (half are base classes)")
    parser.add_argument("--photo", default="500x375", help="JPEG size WxH")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=3, help="steps per block (--profile: steps profiled)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved blocks of whole steps per trainer (0: only the paired steps)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=16,
                        help="pairs of steps timing DPC's forward + backward + update against the backbone's (0: none)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU)")
    parser.add_argument("--no-pil", dest="pil", action="store_false", help="skip the per-draw PIL comparison")
    parser.add_argument("--profile", action="store_true",
                        help="profile --steps steps of each trainer (phases, towers, operators) instead of timing")
    parser.add_argument("--glibc-malloc", action="store_true",
                        help="glibc's default malloc settings (page faults of varying count in every step)")
    parser.add_argument("--json", help="also write the figures to this file")
    a = parser.parse_args()
    kept = not a.glibc_malloc and keep_freed_memory()
    a.pil = a.pil and a.rounds > 0 and not a.profile
    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda, but torch sees no CUDA device; run on a GPU machine or use --device cpu")
    torch.set_num_threads(a.threads)
    photo = tuple(int(x) for x in a.photo.lower().split("x"))
    shape = SIZES[a.size]
    results = []
    with tempfile.TemporaryDirectory() as work:
        print(f"writing a synthetic dataset ({a.classes} classes, {photo[0]}x{photo[1]} JPEGs) and a "
              f"{a.size} CLIP ...")
        write_photos(os.path.join(work, "data"), a.classes, photo)
        clip_file = save_tiny_clip(os.path.join(work, "clip.pt"), image_size=a.image_size, **shape)
        opts = ["MODEL.BACKBONE.NAME", "custom", "MODEL.BACKBONE.PATH", clip_file,
                "INPUT.SIZE", f"({a.image_size},{a.image_size})", "USE_CUDA", str(a.device == "cuda")]
        for name in a.backbones:
            key = {"CoOp": "COOP", "MaPLe": "MAPLE", "PromptSRC": "PROMPTSRC"}[name]
            print(f"{name} ...", flush=True)
            results.append(bench_backbone(work, name, a, opts + [f"TRAINER.{key}.PREC", a.prec]))
    load = os.getloadavg()
    meta = {"device": torch.cuda.get_device_name() if a.device == "cuda" else f"CPU ({os.cpu_count()} cores)",
            "threads": a.threads, "size": a.size, "clip": shape, "image_size": a.image_size, "photo": a.photo,
            "prec": a.prec, "freed_memory_kept": kept, "load_after": [round(x, 2) for x in load]}
    print(f"\n{meta['device']}, {a.threads} thread(s), CLIP {a.size} {shape}, {a.image_size} px, photos {a.photo}, "
          f"{'freed memory kept (mallopt)' if kept else 'default malloc'}, "
          f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if not a.profile:
        print_table(results)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
