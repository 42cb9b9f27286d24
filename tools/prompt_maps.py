"""Fig. 7 of the DPC paper (Sec. 4.4) for any DPC run: the initial prompt, the tuned prompt P and the parallel
prompt P' as feature maps, and whether P' keeps P's feature channels ("feature channel invariance").

    python tools/prompt_maps.py RUN_DIR [RUN_DIR ...] [--epoch N] [--out PNG] [--words 3] [--root DATA_ROOT]

RUN_DIR is a DPC stage-2 training run (``.../train_base/<dataset>/shots_<k>/DPC_<Backbone>/<config>/seed<N>``).
For every prompt tensor DPC gave a dual (deep prompts included):

1. P is the frozen stage-1 prompt stored in the stage-2 checkpoint and P' the parallel prompt, mapped from the
   trained tensor by the run's own update rule (``trainers/dpc/decoupling.DualPrompt``); last epoch unless --epoch;
2. the initial prompt is rebuilt, not stored: the stage-1 trainer is built again from its ``run_info.json`` with
   its seed, as train.py builds it (random N(0, 0.02), or the CTX_INIT phrase's token embeddings; a tensor stage 1
   does not build, DPC_PromptKD's copy of the teacher's text prompt, has none);
3. Fig. 7: (a) initial, (b) P, (c) P' as token x channel heat maps, down-sampled by block means to at most 64
   channel columns and 32 token rows, each map on its own symmetric colour scale (the norms are printed under the
   maps); written to RUN_DIR/prompt_maps.png (prompt_maps-epoch<N>.png with --epoch);
4. the statistics of ``tools/prompt_stats.py``: P' against P, beside the initial prompt against P and random
   baselines (a random prompt of norm |P'|, P plus a random change of norm |P' - P|);
5. CoOp's nearest-words reading of the text contexts (``ctx``) of all three: the nearest token embeddings of the
   run's CLIP weights, decoded by CLIP's tokenizer.

With several runs it ends with each statistic's mean +- std over the runs.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402

from tools.prompt_stats import STATS, as_rows, baselines, compare, downsample, nearest_words, summarise  # noqa: E402
from trainers.dpc.checkpoint import load_checkpoint  # noqa: E402
from trainers.dpc.decoupling import DualPrompt  # noqa: E402
from trainers.dpc.errors import ConfigError, MissingFileError  # noqa: E402
from trainers.dpc.files import atomic_write, checkpoint_path  # noqa: E402

FIGURE = "prompt_maps.png"
DUAL_KEY = re.compile(r"^(.*?)parametrizations\.([^.]+)\.original$")
MAX_ROWS, MAX_COLUMNS = 32, 64


@dataclass
class PromptTensor:
    """One prompt tensor of a DPC run: its initial value, P, P' and their statistics."""
    name: str  # "<registered model>.<tensor>", e.g. prompt_learner.ctx
    initial: torch.Tensor | None  # None: not built by the stage-1 run (DPC_PromptKD's copy of the teacher's prompt)
    stage1: torch.Tensor
    parallel: torch.Tensor
    stats: Dict[str, Dict] = field(default_factory=dict)  # comparison -> statistic -> value or (mean, std)
    words: Dict[str, list] = field(default_factory=dict)  # initial / P / P' -> per token [(text, distance)]


@dataclass
class RunMaps:
    run_dir: str
    epoch: int | None
    meta: dict  # the checkpoint's "dpc" record
    seed: int  # the stage-1 run's
    ctx_init: str
    tensors: List[PromptTensor]


# ---------------------------------------------------------------- reading a DPC run
def model_names(run_dir: str) -> List[str]:
    """The registered models saved in ``run_dir`` (folders holding a checkpoint)."""
    if not os.path.isdir(run_dir):
        raise MissingFileError(f"{run_dir} is not a directory: pass a DPC stage-2 training run "
                               "(.../train_base/<dataset>/shots_<k>/DPC_<Backbone>/<config>/seed<N>)")
    names = [name for name in sorted(os.listdir(run_dir))
             if os.path.isfile(checkpoint_path(run_dir, name, None))]
    if not names:
        raise MissingFileError(f"no checkpoint in {run_dir}: pass a finished DPC stage-2 training run "
                               "(.../train_base/<dataset>/shots_<k>/DPC_<Backbone>/<config>/seed<N>)")
    return names


def dual_prompts(state: dict) -> Dict[str, tuple]:
    """{tensor name: (P, P')} of every dual in a stage-2 state dict, P' mapped by the dual's own rule."""
    found = {}
    for key, value in state.items():
        match = DUAL_KEY.match(key)
        if not match:
            continue
        prefix, attr = match.groups()
        stored = f"{prefix}parametrizations.{attr}.0."
        dual = DualPrompt(state[stored + "stage1"], w_train=1.0)
        dual.set_extra_state(state[stored + "_extra_state"])  # w_b of training and the update rule
        dual.mode = "train"
        with torch.no_grad():
            found[prefix + attr] = (dual.stage1.float().clone(), dual(value).float().clone())
    return found


def read_stage2(run_dir: str, epoch: int | None):
    """({model: {tensor: (P, P')}}, the checkpoint's "dpc" record, its epoch) of a DPC run."""
    duals, meta, saved_epoch = {}, None, None
    for name in model_names(run_dir):
        path = checkpoint_path(run_dir, name, epoch)
        if not os.path.isfile(path):
            raise MissingFileError(f"no checkpoint {path}: check --epoch (the saved epochs are in {run_dir}/{name})")
        ckpt = load_checkpoint(path)
        if "dpc" not in ckpt:
            raise ConfigError(f"{path} is not a DPC stage-2 checkpoint (no 'dpc' record): pass the DPC_<Backbone> "
                              "run, whose stage-1 run it names itself")
        duals[name] = dual_prompts(ckpt["state_dict"])
        meta, saved_epoch = ckpt["dpc"], ckpt.get("epoch")
    return duals, meta, saved_epoch


def initial_prompts(stage1_dir: str, wanted: Dict[str, List[str]], root: str = ""):
    """(stage-1 config, {model: {tensor: value before training}}): the stage-1 trainer built again from its
    run_info.json and seed, as train.py built it (nothing is written in the run). Tensors the stage-1 model
    does not have are left out."""
    from tools.epoch_curve import build_as_trained, run_config

    with tempfile.TemporaryDirectory(prefix="prompt_maps-") as scratch:
        cfg = run_config(stage1_dir, None, scratch, root)
        with contextlib.redirect_stdout(io.StringIO()):
            trainer = build_as_trained(cfg)
    found = {}
    for model, names in wanted.items():
        state = trainer._models[model].state_dict() if model in trainer.get_model_names() else {}
        found[model] = {n: state[n].detach().float().clone() for n in names if n in state}
    return cfg, found


def token_embedding(cfg) -> torch.Tensor:
    """The token embedding [vocabulary, width] of the run's CLIP weights."""
    from trainers.clip_loader import read_state_dict, resolve_weights

    file = resolve_weights(cfg.MODEL.BACKBONE.NAME, cfg.MODEL.BACKBONE.PATH, download=False)
    return read_state_dict(file)["token_embedding.weight"].float()


def context_init(cfg) -> str:
    """The CTX_INIT phrase of the run's trainer ('' when its text context starts random)."""
    key = cfg.TRAINER.NAME.upper().removeprefix("DPC_")
    node = cfg.TRAINER.get(key)
    return (node.get("CTX_INIT", "") if node is not None else "") or ""


def analyse(run_dir: str, epoch: int | None = None, stage1: str = "", root: str = "", words: int = 3,
            draws: int = 100) -> RunMaps:
    """Every prompt tensor of the DPC run ``run_dir`` with its initial value, P, P', statistics and nearest words."""
    from clip.simple_tokenizer import SimpleTokenizer

    duals, meta, saved_epoch = read_stage2(run_dir, epoch)
    stage1 = stage1 or (meta.get("stage1") or {}).get("dir", "")
    if not stage1 or not os.path.isdir(stage1):
        raise MissingFileError(f"the stage-1 run of {run_dir} ({stage1 or 'not recorded'}) is not there: pass it with "
                               "--stage1 (the CoOp-family run DPC.STAGE1_DIR named)")
    cfg, initial = initial_prompts(stage1, {m: list(t) for m, t in duals.items()}, root)
    embedding, tokenizer = token_embedding(cfg), SimpleTokenizer()
    tensors = []
    for model, found in duals.items():
        for name, (p, p_dual) in found.items():
            start = initial[model].get(name)
            if start is not None and start.shape != p.shape:
                raise ConfigError(f"{stage1} builds {model}.{name} with shape {list(start.shape)}, the DPC run has "
                                  f"{list(p.shape)}: pass the stage-1 run this DPC run was trained from (--stage1)")
            t = PromptTensor(f"{model}.{name}", start, p, p_dual)
            t.stats = {"P' (DPC)": compare(p, p_dual),
                       **({"initial prompt": compare(p, start)} if start is not None else {}),
                       **baselines(p, p_dual, draws)}
            if name.rsplit(".", 1)[-1] == "ctx" and p.shape[-1] == embedding.shape[1]:  # the input text context
                t.words = {label: nearest_words(x, embedding, tokenizer, words)
                           for label, x in (("initial", start), ("P", p), ("P'", p_dual)) if x is not None}
            tensors.append(t)
    return RunMaps(run_dir, saved_epoch, meta, cfg.SEED, context_init(cfg), tensors)


# ---------------------------------------------------------------- figure
def draw(maps: RunMaps, path: str) -> str:
    """Fig. 7's three panels for every prompt tensor (a row each), as a PNG at ``path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = len(maps.tensors)
    single_model = len({t.name.split(".", 1)[0] for t in maps.tensors}) == 1  # then row labels drop its name
    fig, axes = plt.subplots(rows, 3, figsize=(12, 1.0 + 1.5 * rows), squeeze=False, layout="constrained")
    init = f"; ctx '{maps.ctx_init}'" if maps.ctx_init else ""
    titles = (f"(a) initial prompt (seed {maps.seed}{init})", f"(b) tuned prompt P ({maps.meta.get('backbone')})",
              f"(c) parallel prompt P' (DPC, epoch {maps.epoch})")
    for row, t in enumerate(maps.tensors):
        prompts = (t.initial, t.stage1, t.parallel)
        panels = [downsample(x, MAX_ROWS, MAX_COLUMNS) if x is not None else None for x in prompts]
        for col, (ax, image, x) in enumerate(zip(axes[row], panels, prompts)):
            if row == 0:
                ax.set_title(titles[col], fontsize=10)
            if x is None:
                ax.text(0.5, 0.5, "not built by the stage-1 run", ha="center", va="center", fontsize=8)
                ax.set_xticks([])
                ax.set_yticks([])
                continue
            limit = float(image.abs().max()) or 1.0  # each map on its own symmetric scale: the pattern, not the norm
            shown = ax.imshow(image.numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto",
                              interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            fig.colorbar(shown, ax=ax, shrink=0.9, pad=0.01)
            ax.set_xlabel(f"norm {float(x.norm()):.3g}", fontsize=8)
        tokens, channels = as_rows(t.stage1).shape
        name = t.name.split(".", 1)[1] if single_model else t.name
        axes[row][0].set_ylabel(f"{name}\n{tokens} x {channels} -> {tuple(panels[1].shape)}", fontsize=8)
        dpc = t.stats["P' (DPC)"]
        axes[row][2].set_xlabel(f"norm {float(t.parallel.norm()):.3g}; vs P: channel r {dpc['channel_r']:.3f}, "
                                f"token cos {dpc['token_cos']:.3f}", fontsize=8)
    fig.suptitle(f"{maps.run_dir}\nrows: tokens, columns: channels (block means)", fontsize=9)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))
    return path


# ---------------------------------------------------------------- printing
def cell(value) -> str:
    if isinstance(value, tuple):
        mean, std = value
        return "-" if math.isnan(mean) else f"{mean:.3f}+-{std:.3f}"
    return "-" if math.isnan(value) else f"{value:.3f}"


def stats_table(stats: Dict[str, Dict]) -> str:
    header = f"    {'against P':<22}" + "".join(f"{key:>16}" for key in STATS)
    lines = [header] + [f"    {name:<22}" + "".join(f"{cell(values[key]):>16}" for key in STATS)
                        for name, values in stats.items()]
    return "\n".join(lines)


def report(maps: RunMaps) -> str:
    meta = maps.meta
    out = [f"{maps.run_dir}: DPC on {meta.get('backbone')}, epoch {maps.epoch}, update {meta.get('update')}, "
           f"w_b {meta.get('w_base')}, text context from " + (repr(maps.ctx_init) if maps.ctx_init else "random")]
    for t in maps.tensors:
        change = float((t.parallel - t.stage1).norm() / t.stage1.norm())
        start = (f"|P - initial| / |P| {float((t.stage1 - t.initial).norm() / t.stage1.norm()):.4g}"
                 if t.initial is not None else "no initial value (not built by the stage-1 run)")
        out.append(f"  {t.name} {list(t.stage1.shape)}: |P| {float(t.stage1.norm()):.4g}, |P' - P| / |P| {change:.4g}, "
                   + start)
        out.append(stats_table(t.stats))
        if t.words:
            out.append(f"    nearest words (token embeddings of the run's CLIP, Euclidean distance):")
            for label, per_token in t.words.items():
                for i, nearest in enumerate(per_token):
                    out.append(f"      {label:<8} {i + 1:>3}: " + ", ".join(f"{w} ({d:.3f})" for w, d in nearest))
    return "\n".join(out)


def summary(runs: List[RunMaps]) -> str:
    """Each tensor's statistics as mean +- std over the runs (a baseline: over the runs' means)."""
    out = [f"mean +- std over {len(runs)} runs:"]
    for i, t in enumerate(runs[0].tensors):
        same = [r.tensors[i] for r in runs if len(r.tensors) > i and r.tensors[i].name == t.name]
        rows = {name: summarise([{k: (v[0] if isinstance(v, tuple) else v) for k, v in s.stats[name].items()}
                                 for s in same]) for name in t.stats}
        out += [f"  {t.name} ({len(same)} runs)", stats_table(rows)]
    return "\n".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="DPC stage-2 training run directories")
    parser.add_argument("--epoch", type=int, default=None, help="checkpoint epoch (default: the last saved)")
    parser.add_argument("--out", default="", help=f"PNG path (one run only; default RUN_DIR/{FIGURE}, "
                        "prompt_maps-epoch<N>.png with --epoch)")
    parser.add_argument("--stage1", default="", help="the stage-1 run, when it moved since DPC was trained (one run)")
    parser.add_argument("--root", default="", help="dataset root, when it moved since the run (DATASET.ROOT)")
    parser.add_argument("--words", type=int, default=3, help="nearest words per context vector")
    parser.add_argument("--draws", type=int, default=100, help="random tensors per baseline")
    args = parser.parse_args(argv)
    if len(args.runs) > 1 and (args.out or args.stage1):
        raise ConfigError("--out and --stage1 name one run's files: pass one RUN_DIR with them")
    runs = []
    for run in args.runs:
        maps = analyse(run, args.epoch, args.stage1, args.root, args.words, args.draws)
        name = FIGURE if args.epoch is None else FIGURE.replace(".png", f"-epoch{args.epoch}.png")
        path = draw(maps, args.out or os.path.join(run, name))
        print(report(maps) + f"\n  figure: {path}\n")
        runs.append(maps)
    if len(runs) > 1:
        print(summary(runs))


if __name__ == "__main__":
    from trainers.console import exit_on_user_error, verbose_requested

    sys.exit(exit_on_user_error(main, None, verbose_requested()))
