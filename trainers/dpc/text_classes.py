"""Which classes the stage-2 step runs the text tower for (``DPC.TEXT_CLASSES``).

L_CL over L image-class pairs reads the text rows of the pairs' classes only, and L2 normalisation is per row,
so encoding just those classes (at most L, whatever the number of base classes C) gives the same loss and
gradients as encoding all C and keeping their rows; only the last float bits differ (other batch sizes).

- shared text ([C, D]): the sorted unique labels of the step's pairs; the pairs' labels become positions in them;
- per-image text (CoCoOp, [N, C, D]): each pair's own class under its own image's prompt, one row per pair.

Terms that read the text of every class (PromptSRC's L_SCL text and logit terms, KgCoOp's term) keep all
classes under ``auto``; ``pairs`` computes them on the step's classes too, an estimate of the all-class term
(the mean over the step's classes instead of all classes; PromptSRC's logit term a KL over those classes).
"""
from __future__ import annotations

import inspect
from typing import NamedTuple, Optional, Tuple

import torch

from .features import probe_images


class TextPlan(NamedTuple):
    pairs: bool  # encode the step's classes only
    terms_on_pairs: bool  # the backbone's terms get ``classes=`` (computed on those classes: an estimate)
    note: str  # the one line said at the start of stage 2


def pair_classes(labels: torch.Tensor, per_image: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """(classes to encode, the pairs' labels as positions among them): shared text: the sorted unique labels [R];
    per-image text: each pair's own class [L, 1], position 0."""
    if per_image:
        return labels.unsqueeze(1), torch.zeros_like(labels)
    classes, positions = torch.unique(labels, sorted=True, return_inverse=True)
    return classes, positions


def takes_classes(method) -> bool:
    """Whether ``method`` accepts a ``classes`` keyword (the rows of the classes its text features hold)."""
    return method is not None and "classes" in inspect.signature(method).parameters


def cut_refused(trainer) -> Optional[str]:
    """Why ``trainer``'s stage-2 features cannot be computed for a subset of classes, or None."""
    if trainer._dpc_custom_features():
        return None if takes_classes(trainer.dpc_features) else \
            f"{type(trainer).__name__}.dpc_features takes no `classes` keyword"
    return trainer.dpc_capture.check_class_rows(probe_images(trainer.cfg.INPUT.SIZE, trainer.device))


def plan(trainer, mixin: type) -> TextPlan:
    """The plan for ``trainer`` (a DPC trainer after its feature sites are found; ``mixin``: ``DPCMixin``)."""
    d = trainer.cfg.DPC
    choice = d.TEXT_CLASSES
    key = f"DPC.TEXT_CLASSES {choice}"
    if d.OBJECTIVE == "cross-entropy":
        return TextPlan(False, False, f"DPC: text of every base class each step (the cross-entropy objective scores "
                                      f"them all; {key} applies to the hard-negative objective)")
    if choice == "all":
        return TextPlan(False, False, f"DPC: text of every base class each step ({key})")
    why_not = cut_refused(trainer)
    if why_not:
        return TextPlan(False, False, f"DPC: text of every base class each step ({key}): {why_not}")
    custom_terms = type(trainer).dpc_extra_loss is not mixin.dpc_extra_loss
    terms = d.PARALLEL_LOSS and (custom_terms or getattr(trainer, "regularization_terms", None) is not None)
    if terms and trainer.dpc_terms_need_all_classes:
        reader = trainer.dpc_extra_loss if custom_terms else trainer.regularization_terms
        if choice == "auto":
            return TextPlan(False, False, f"DPC: text of every base class each step ({key}): the backbone's terms "
                                          "read every class's text (DPC.TEXT_CLASSES pairs computes them on the "
                                          "step's classes, an estimate)")
        if not takes_classes(reader):
            return TextPlan(False, False, f"DPC: text of every base class each step ({key}): the backbone's terms "
                                          f"({reader.__name__}) take no `classes` keyword to compute them on the "
                                          "step's classes")
        return TextPlan(True, True, f"DPC: text of the step's classes only ({key}); the backbone's terms are "
                                    "computed on those classes too: an estimate of their all-class value")
    return TextPlan(True, False, f"DPC: text of the step's classes only, at most one row per pair ({key}: exact "
                                 "for L_CL)")
