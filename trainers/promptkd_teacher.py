"""PromptKD's teacher: a PromptSRC-prompted CLIP (ViT-L/14 in the paper) restored from a checkpoint, frozen.

``TRAINER.PROMPTKD.TEACHER_DIR`` holds either
- a PromptSRC (or IVLP) run of this repository on the base classes: ``<dir>/prompt_learner/model.pth.tar-<N>``
  (the newest one, or ``TEACHER_EPOCH``), or
- a teacher published by the PromptKD authors, in their layout and key names:
  ``<dir>/VLPromptLearner/model-best.pth.tar`` (or ``model.pth.tar-<N>``), with
  ``prompt_learner.ctx``, ``text_encoder.transformer.resblocks.<i>.VPT_shallow``, ``image_encoder.VPT`` and
  ``image_encoder.transformer.resblocks.<i>.VPT_shallow``.

The prompt shapes (tokens and depths) are read from the file and checked against the teacher CLIP; the
classes are checked from the class names our runs record, or from the class-name token embeddings the
authors' files keep (``prompt_learner.token_suffix``).
"""
from __future__ import annotations

import os
import re
from typing import Dict, Sequence

import torch

from .dpc.checkpoint import load_checkpoint
from .dpc.errors import UserError
from .dpc.files import checkpoint_path
from .models.ivlp import IVLPCLIP
from .models.vl_prompts import text_layers, vision_layers

OURS, UPSTREAM = "prompt_learner", "VLPromptLearner"
_DEEP = re.compile(r"^(text_encoder|image_encoder)\.transformer\.resblocks\.(\d+)\.VPT_shallow$")


class TeacherError(UserError, ValueError):
    pass


def find_teacher_checkpoint(directory: str, epoch: int = -1) -> tuple[str, str]:
    """(path, layout) of the teacher checkpoint in ``directory``; layout is OURS or UPSTREAM."""
    if not directory:
        raise TeacherError("TRAINER.PROMPTKD.TEACHER_DIR is empty: PromptKD needs a trained teacher. Train one with "
                           "`bash scripts/dpc/base2new_train.sh DATASET SEED promptkd` (it trains a PromptSRC teacher "
                           "when none is given), or set TEACHER_DIR to a PromptSRC run or to a published teacher folder "
                           "holding VLPromptLearner/model-best.pth.tar")
    for layout in (UPSTREAM, OURS):
        if os.path.isdir(os.path.join(directory, layout)):
            path = checkpoint_path(directory, layout, epoch)
            if os.path.isfile(path):
                return path, layout
    raise TeacherError(f"no teacher checkpoint in TRAINER.PROMPTKD.TEACHER_DIR {directory}: expected "
                       f"{os.path.join(directory, OURS, 'model.pth.tar-<N>')} (a PromptSRC run of this repository) or "
                       f"{os.path.join(directory, UPSTREAM, 'model-best.pth.tar')} (a teacher published by the "
                       "PromptKD authors)" + (f" at epoch {epoch} (TEACHER_EPOCH)" if epoch > 0 else ""))


def teacher_prompts(path: str, ckpt: dict, layout: str) -> Dict[str, torch.Tensor]:
    """The teacher's prompts under our IVLP names: ctx, deep_text.<i>, vision_ctx, deep_vision.<i>."""
    state = ckpt.get("state_dict", ckpt)
    if layout == OURS:
        if "dpc" in ckpt:
            raise TeacherError(f"{path} is a DPC stage-2 checkpoint; the teacher is a PromptSRC (stage-1) run")
        trainer = ckpt.get("trainer")
        if trainer not in (None, "PromptSRC", "IVLP"):
            raise TeacherError(f"{path} was written by {trainer}; PromptKD's teacher is a PromptSRC run")
        prompts = {k: v for k, v in state.items() if k == "ctx" or k == "vision_ctx" or k.startswith("deep_")}
    else:
        prompts = {}
        for key, value in state.items():
            match = _DEEP.match(key)
            if match:
                tower = "deep_text" if match.group(1) == "text_encoder" else "deep_vision"
                prompts[f"{tower}.{int(match.group(2)) - 1}"] = value
        if "prompt_learner.ctx" in state:
            prompts["ctx"] = state["prompt_learner.ctx"]
        if "image_encoder.VPT" in state:
            prompts["vision_ctx"] = state["image_encoder.VPT"]
    for tower in ("deep_text", "deep_vision"):
        indices = sorted(int(k.split(".")[1]) for k in prompts if k.startswith(tower + "."))
        if indices != list(range(len(indices))):
            raise TeacherError(f"{path}: its {tower} prompts are not those of consecutive blocks from block 1 on")
    if "ctx" not in prompts or "vision_ctx" not in prompts:
        expected = "ctx and vision_ctx" if layout == OURS else "prompt_learner.ctx and image_encoder.VPT"
        raise TeacherError(f"{path} lacks the teacher's shallow prompts ({expected}): not a PromptSRC teacher")
    return {k: v.float() for k, v in prompts.items()}


def build_teacher(clip_model, classnames: Sequence[str], prompts: Dict[str, torch.Tensor], ctx_init: str,
                  path: str, clip_source: str) -> IVLPCLIP:
    """The frozen teacher for ``classnames``, its prompt shapes taken from ``prompts`` (checked first)."""
    n_text, text_width = prompts["ctx"].shape
    n_vision, vision_width = prompts["vision_ctx"].shape
    depth_text = 1 + sum(k.startswith("deep_text.") for k in prompts)
    depth_vision = 1 + sum(k.startswith("deep_vision.") for k in prompts)
    own = (clip_model.ln_final.weight.shape[0], clip_model.visual.conv1.out_channels,
           text_layers(clip_model), vision_layers(clip_model))
    if (text_width, vision_width) != own[:2] or depth_text > own[2] or depth_vision > own[3]:
        raise TeacherError(f"{path} holds prompts for a CLIP with text width {text_width} and vision width "
                           f"{vision_width} (depths {depth_text}/{depth_vision}), but the teacher CLIP {clip_source} has "
                           f"widths {own[0]}/{own[1]} and {own[2]}/{own[3]} layers: set TRAINER.PROMPTKD.TEACHER_NAME / "
                           "TEACHER_PATH to the CLIP the teacher was trained on (ViT-L/14 for the published teachers)")
    teacher = IVLPCLIP(classnames, clip_model, n_ctx_text=n_text, n_ctx_vision=n_vision, ctx_init=ctx_init,
                       depth_text=depth_text, depth_vision=depth_vision, cfg_key="PROMPTKD", method="PromptKD teacher")
    pl = teacher.prompt_learner
    with torch.no_grad():
        for key, value in prompts.items():
            pl.get_parameter(key).copy_(value)
    teacher.requires_grad_(False)
    return teacher.eval()


def check_teacher_classes(path: str, ckpt: dict, layout: str, teacher: IVLPCLIP, base_classnames: Sequence[str],
                          all_classnames: Sequence[str], dataset: str) -> None:
    """The teacher must have been trained on the base classes of this dataset (a teacher that saw all classes
    is accepted with a warning: its new-class results are not zero-shot)."""
    base, every = list(base_classnames), list(all_classnames)
    leak = (f"Warning: the teacher {path} was trained on all {len(every)} classes, new ones included: "
            "new-class accuracies of PromptKD and DPC are then not those of unseen classes")
    if layout == OURS:
        recorded = ckpt.get("classnames")
        if recorded is None or list(recorded) == base:
            if recorded is None:
                print(f"Warning: {path} does not record its classes; they could not be checked")
            return
        if list(recorded) == every:
            print(leak)
            return
        raise TeacherError(f"the teacher {path} was trained on {len(recorded)} other classes ({', '.join(recorded[:4])}"
                           f"{', ...' if len(recorded) > 4 else ''}; dataset {ckpt.get('dataset')}) than the "
                           f"{len(base)} base classes of {dataset}: point TRAINER.PROMPTKD.TEACHER_DIR at a teacher of "
                           "this dataset, trained with DATASET.SUBSAMPLE_CLASSES base")
    state = ckpt.get("state_dict", ckpt)
    parts = [state[k] for k in ("prompt_learner.token_suffix", "prompt_learner.token_suffix2") if k in state]
    if not parts:
        print(f"Warning: {path} keeps no class-name tokens (prompt_learner.token_suffix); its classes and dataset "
              "could not be checked")
        return
    saved = torch.cat(parts).float()
    ours = teacher.prompt_learner.token_suffix.float().cpu()
    if saved.shape[1:] != ours.shape[1:]:
        raise TeacherError(f"{path}: its class-name tokens have shape {tuple(saved.shape[1:])}, not "
                           f"{tuple(ours.shape[1:])}: a teacher with another number of text context tokens or CLIP")
    for names, what in ((base, "base"), (every, "all")):
        if saved.shape[0] == len(names) and torch.allclose(saved, ours[:len(names)], atol=1e-3, rtol=1e-3):
            if what == "all":
                print(leak)
            return
    raise TeacherError(f"the teacher {path} was trained on {saved.shape[0]} classes whose names are not the "
                       f"{len(base)} base classes of {dataset} (its class-name token embeddings differ): point "
                       "TRAINER.PROMPTKD.TEACHER_DIR at the teacher of this dataset")


def load_teacher(directory: str, epoch: int, clip_model, clip_source: str, ctx_init: str, base_classnames,
                 all_classnames, dataset: str, transfer: bool = False) -> tuple[IVLPCLIP, str]:
    """(frozen teacher for all classes, checkpoint path), every check done. ``transfer`` (a student of all the
    classes, DATASET.SUBSAMPLE_CLASSES all): the teacher may come from another dataset, as in PromptKD's
    cross-dataset protocol (an ImageNet teacher distilled into a student of each target)."""
    path, layout = find_teacher_checkpoint(directory, epoch)
    ckpt = load_checkpoint(path)
    prompts = teacher_prompts(path, ckpt, layout)
    teacher = build_teacher(clip_model, all_classnames, prompts, ctx_init, path, clip_source)
    try:
        check_teacher_classes(path, ckpt, layout, teacher, base_classnames, all_classnames, dataset)
    except TeacherError:
        if not transfer:
            raise
        print(f"PromptKD: the teacher {path} was trained on other classes than {dataset}'s: cross-dataset transfer "
              f"(DATASET.SUBSAMPLE_CLASSES all)")
    print(f"PromptKD teacher: {path} ({'published layout' if layout == UPSTREAM else 'PromptSRC run'}, epoch "
          f"{ckpt.get('epoch')})")
    return teacher, path
