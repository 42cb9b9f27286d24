"""Pretrain the toy world's CLIP from scratch and save it in OpenAI's format; the project ships the result.

    python -m tools.pretrain_clip                                                  # the shipped weights' path
    python -m tools.pretrain_clip OUT.pt [--steps 1500] [--batch 256] [--seed 0]   # train into OUT.pt

    from tools.pretrain_clip import ensure_pretrained
    path = ensure_pretrained()  # then MODEL.BACKBONE.NAME custom MODEL.BACKBONE.PATH <path>

The demo, the tests and the study use ``assets/toyworld-clip-v1.pt`` (made by this module with the default
recipe, checked against its sha256 at every load), so they start from the same weights on every machine:
float sums differ between CPU kinds (AVX2 and AVX-512 kernels), so a pretraining elsewhere gives other
weights, whatever the seed. ``$DPC_TOYWORLD_CLIP`` names another file instead (pretrained there when absent).

The model is a real ``clip.model.CLIP`` with the real BPE tokenizer (about 7M parameters, 6.3M of them the
token embedding): embed 64; ViT 3 layers, width 128, patch 8 at 32 px; text 2 layers, width 128, 2 heads,
context length 16. It learns with the symmetric CLIP loss on clean scenes of the 70 seen colour-shape
pairs (tools/toyworld), drawn on the fly with their captions (a quarter of the scenes show the shape in a
colour the world has no word for, captioned by the shape alone), AdamW lr 1.5e-3 with warm-up and cosine decay.
The result is an fp16 state dict, as OpenAI's weights, loaded by ``trainers.clip_loader``; its zero-shot
accuracies (tools/toyworld/zero_shot.py) and the run's settings go to ``<OUT>.json``.

Deterministic: the model is initialised from ``--seed`` and every scene and caption is drawn from one
generator seeded by it, on one torch thread (``--threads``); the same seed and thread count on the same kind
of CPU gives the same weights. Files are written to a temporary name and renamed, so an interrupted run leaves nothing behind.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import clip
import torch
import torch.nn.functional as F
from clip.model import CLIP
from tqdm import tqdm

from trainers.dpc.files import atomic_write_text
from tools.toyworld.captions import caption_table, shape_caption_table, size_words, where_phrases
from tools.toyworld.dataset import GENERATOR_VERSION
from tools.toyworld.render import render_pretraining
from tools.toyworld.vocab import (ALL_PAIRS, CAPTION_TEMPLATES, N_WORDS, SEEN_PAIRS, SHAPE_CAPTION_TEMPLATES,
                                  UNNAMED_COLOURS, UNNAMED_SHARE, UNSEEN_PAIRS, pair_name)
from tools.toyworld.zero_shot import PER_PAIR, PROMPT, downstream_accuracy, normalize, pair_accuracy

VERSION = 1  # of the model, the world and the recipe: bump to ship new weights
CACHE_ENV = "DPC_TOYWORLD_CLIP"
ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "assets" / f"toyworld-clip-v{VERSION}.pt"
SHIPPED_SHA256 = "3432170f5b714e21372889c71c7f606d5c049dc4b9e76aa4c2cecbd6da3ea58b"
ARCHITECTURE = dict(embed_dim=64, image_resolution=32, vision_layers=3, vision_width=128, vision_patch_size=8,
                    context_length=16, vocab_size=49408, transformer_width=128, transformer_heads=2,
                    transformer_layers=2)


@dataclass(frozen=True)
class Recipe:
    steps: int = 1500
    batch: int = 256
    lr: float = 1.5e-3
    warmup: int = 100  # steps of linear warm-up, then cosine decay to 0
    weight_decay: float = 0.1  # on weight matrices only
    seed: int = 0
    # torch threads while training: float sums depend on how work is split, so the weights depend on it; one
    # thread gives the same weights on any machine of the same CPU kind, whatever its core count
    threads: int = 1


def chosen_path() -> Path:
    """``$DPC_TOYWORLD_CLIP`` when set, else the shipped weights."""
    return Path(os.environ[CACHE_ENV]).expanduser() if os.environ.get(CACHE_ENV) else SHIPPED


def build_toy_clip(seed: int = 0) -> CLIP:
    """A freshly initialised toy CLIP (fp32)."""
    torch.manual_seed(seed)
    return CLIP(**ARCHITECTURE)


def make_optimizer(model, recipe: Recipe):
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=recipe.lr, betas=(0.9, 0.98), eps=1e-6)

    def factor(step):
        if step < recipe.warmup:
            return (step + 1) / recipe.warmup
        progress = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def clip_loss(image_features, text_features, logit_scale):
    """CLIP's symmetric cross-entropy over the batch's image-caption pairs."""
    logits = logit_scale.exp() * F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).t()
    targets = torch.arange(len(logits))
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2


class SceneSampler:
    """Batches of clean scenes with one caption each, from one seeded generator: seen pairs captioned by
    colour and shape, and (UNNAMED_SHARE of them) shapes in an unnamed colour captioned by the shape alone."""

    def __init__(self, seed: int, context_length: int):
        self.generator = torch.Generator().manual_seed(seed)
        self.pair_table = caption_table(context_length)
        self.shape_table = shape_caption_table(context_length)
        self.pairs = torch.tensor(ALL_PAIRS)
        self.seen = torch.tensor([ALL_PAIRS.index(p) for p in SEEN_PAIRS])

    def __call__(self, batch: int):
        """(normalised images [batch, 3, 32, 32], caption token ids [batch, context length])."""
        _, images, tokens = self.sample(batch)
        return normalize(images), tokens

    def sample(self, batch: int):
        """(colour-shape pairs [batch, 2] (colour >= 10: unnamed), images in [0, 1], caption token ids)."""
        g = self.generator
        index = self.seen[torch.randint(len(self.seen), (batch,), generator=g)]
        pairs = self.pairs[index].clone()
        unnamed = torch.rand(batch, generator=g) < UNNAMED_SHARE
        other_colour = N_WORDS + torch.randint(len(UNNAMED_COLOURS), (batch,), generator=g)
        pairs[:, 0] = torch.where(unnamed, other_colour, pairs[:, 0])
        images, centres, radius = render_pretraining(pairs, g)
        template = torch.randint(len(CAPTION_TEMPLATES), (batch,), generator=g)
        shape_template = torch.randint(len(SHAPE_CAPTION_TEMPLATES), (batch,), generator=g)
        size, where = size_words(radius), where_phrases(centres)
        named = self.pair_table[index, template, size, where]
        shape_only = self.shape_table[pairs[:, 1], shape_template, size, where]
        return pairs, images, torch.where(unnamed[:, None], shape_only, named)


def train(recipe: Recipe = Recipe(), progress: bool = True) -> CLIP:
    """The toy CLIP after ``recipe.steps`` steps of the CLIP loss (fp32, eval mode)."""
    model = build_toy_clip(recipe.seed).train()
    sampler = SceneSampler(recipe.seed, ARCHITECTURE["context_length"])
    optimizer, schedule = make_optimizer(model, recipe)
    bar = tqdm(range(recipe.steps), desc="Pretraining toy CLIP", unit="step", disable=not progress)
    for step in bar:
        images, tokens = sampler(recipe.batch)
        loss = clip_loss(model.encode_image(images), model.encode_text(tokens), model.logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))  # as CLIP
        if step % 10 == 0 or step == recipe.steps - 1:
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{schedule.get_last_lr()[0]:.2e}")
    return model.eval()


@contextlib.contextmanager
def _written_atomically(path: Path):
    """Yield a temporary file name beside ``path``, renamed to ``path`` only when the block succeeds (unlike
    trainers.dpc.files.atomic_write, the block gets a name: the weights are evaluated from it before the rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        yield temporary
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


def save_openai_format(model: CLIP, path) -> None:
    """fp16 state dict, as OpenAI's released weights (and tools/tiny_clip.py)."""
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    torch.save(state, path)


def report_path(weights) -> Path:
    return Path(str(weights) + ".json")


def evaluate(weights, world_seed: int = 0, per_pair: int = PER_PAIR, test_per_class=None) -> dict:
    """Zero-shot accuracies of the saved weights, loaded as the trainers load them (fewer scenes: faster)."""
    from trainers.clip_loader import load_clip

    model = load_clip("custom", str(weights), prec="fp32")
    return {"pairs_100way": pair_accuracy(model, per_pair),
            "downstream_test": downstream_accuracy(model, world_seed, test_per_class)}


def pretrain(out, recipe: Recipe = Recipe(), progress: bool = True, per_pair: int = PER_PAIR,
             test_per_class=None) -> dict:
    """Train, save ``out`` (OpenAI format) and ``<out>.json`` (accuracies and settings); return that report.

    ``per_pair`` and ``test_per_class`` size the zero-shot tests (defaults: 20 scenes per pair, the whole
    downstream test split)."""
    out = Path(out).expanduser()
    before = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    try:
        start = time.time()
        model = train(recipe, progress)
        seconds = round(time.time() - start, 1)
    finally:
        torch.set_num_threads(before)
    report = {
        "version": VERSION, "world_generator_version": GENERATOR_VERSION, **asdict(recipe),
        "train_seconds": seconds, "architecture": ARCHITECTURE,
        "parameters": sum(p.numel() for p in model.parameters()),
        "unseen_pairs": [pair_name(p) for p in UNSEEN_PAIRS], "prompt": PROMPT,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "clip": getattr(clip, "__version__", "openai/CLIP")},
        "cpu": {"processor": platform.processor() or platform.machine(),
                "torch_kernels": torch.backends.cpu.get_cpu_capability()},  # AVX2 and AVX512 kernels sum differently
    }
    with _written_atomically(out) as weights:  # the weights appear last, once their report is written
        save_openai_format(model, weights)
        report["accuracy"] = evaluate(weights, per_pair=per_pair, test_per_class=test_per_class)
        atomic_write_text(str(report_path(out)), json.dumps(report, indent=1) + "\n")
    return report


def check_shipped(path: Path = SHIPPED, expected: str = SHIPPED_SHA256) -> None:
    """The shipped weights must be the file this project was released with (sha256), else an error with the fix."""
    from trainers.dpc.errors import UserError
    from trainers.provenance import cached_sha256

    restore = (f"restore it with `git checkout -- {SHIPPED.relative_to(ROOT)}`, or pretrain your own "
               f"(`python -m tools.pretrain_clip OUT.pt`, ~9 min) and set {CACHE_ENV}=OUT.pt")
    if not path.is_file():
        raise UserError(f"the shipped toy CLIP {path} is missing: {restore}")
    found = cached_sha256(str(path))
    if found != expected:
        raise UserError(f"the shipped toy CLIP {path} is damaged or was replaced (sha256 {found[:12]}..., expected "
                        f"{expected[:12]}...): {restore}")


def ensure_pretrained(path=None, progress: bool = True) -> str:
    """Path of the toy CLIP: ``path`` or ``$DPC_TOYWORLD_CLIP`` (pretrained there if absent), else the shipped
    weights (checked against their sha256)."""
    path = Path(path).expanduser() if path else chosen_path()
    if path == SHIPPED:
        check_shipped()
    elif not path.is_file():
        print(f"No pretrained toy CLIP at {path}: pretraining it once (about 9 minutes on one CPU thread)")
        print(summary(pretrain(path, progress=progress)))
    return str(path)


def summary(report: dict) -> str:
    pairs, down = report["accuracy"]["pairs_100way"], report["accuracy"]["downstream_test"]
    return (f"Toy CLIP ({report['steps']} steps, batch {report['batch']}, seed {report['seed']}, "
            f"{report['train_seconds']:.0f} s): zero-shot 100-way seen pairs {pairs['seen']:.1f}%, unseen pairs "
            f"{pairs['unseen']:.1f}%; ToyWorld test base {down['base']:.1f}%, new {down['new']:.1f}% (25-way), "
            f"all {down['all_50way']:.1f}% (50-way)")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tools.pretrain_clip", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", help=f"weights to write (without: print the shipped weights' path, or "
                                               f"${CACHE_ENV}'s, pretrained there when absent)")
    defaults = Recipe()
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch", type=int, default=defaults.batch)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--threads", type=int, default=defaults.threads,
                        help="torch threads while training (default 1: the same weights whatever the core count)")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    recipe = Recipe(steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed, threads=args.threads)
    if args.out is None:
        if recipe != defaults:
            parser.error("--steps/--batch/--lr/--seed/--threads need OUT (the shipped weights are the default recipe's)")
        with contextlib.redirect_stdout(sys.stderr):  # stdout is the path alone: MODEL.BACKBONE.PATH "$(...)"
            path = ensure_pretrained()
        print(path)
        return
    if args.steps < 1 or args.batch < 2:
        parser.error("--steps must be >= 1 and --batch >= 2")
    report = pretrain(args.out, recipe)
    print(summary(report))
    print(f"Wrote {args.out} and {report_path(args.out)}")


if __name__ == "__main__":
    from trainers.console import exit_on_user_error, verbose_requested

    sys.exit(exit_on_user_error(main, None, verbose_requested()))
