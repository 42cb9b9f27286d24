"""DePT's Channel Adjusted Transfer (CAT) head, its loss and its fused prediction (no Dassl).

As DePT's code runs it (github Koorye/DePT, trainers/elp_coop.py and elp_maple.py; docs/dept.md):

- a channel-wise transform ``x * scale + shift`` (one per tower; ``FiLM`` in its code, starting as the identity)
  of the backbone's *unnormalised* image and text features, then one linear classifier over the trained
  (base) classes, with a bias;
- training rows: the text features of each image's class, then the images' features, both labelled with the
  image's class (2B rows for a batch of B);
- loss ``(1 - lambda) * CE(prompt logits) + lambda * CE(head logits)``;
- base-class prediction ``(1 - lambda) * prompt logits + lambda * head logits``; the prompt classifier alone for
  classes the head was not trained on.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


class ChannelTransform(nn.Module):
    """``x * scale + shift`` per channel (the last dimension), the identity at the start."""

    def __init__(self, dim: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))
        self.shift = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.to(x.dtype) + self.shift.to(x.dtype)


class CATHead(nn.Module):
    """The CAT head over ``n_classes`` classes for features of ``dim`` channels.

    The transforms are kept in fp32 and cast to the features' dtype, the classifier is built in ``dtype`` (CLIP's:
    fp16 under PREC fp16), as in DePT's code.
    """

    def __init__(self, dim: int, n_classes: int, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.image_transform = ChannelTransform(dim)
        self.text_transform = ChannelTransform(dim)
        self.classifier = nn.Linear(dim, n_classes).to(dtype)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(features.to(self.classifier.weight.dtype))

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        """Head logits [N, C] of images (what it predicts at test time)."""
        return self.classify(self.image_transform(image_features))

    def training_logits(self, image_features: torch.Tensor, text_features: torch.Tensor,
                        labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(logits [2B, C], targets [2B]) of the head's loss: the text features of each image's class ([C, D], or per
        image [B, C, D] as CoCoOp's), then the images' features, both with the images' labels."""
        if text_features.dim() == 3:
            text = text_features[torch.arange(len(labels), device=labels.device), labels]
        else:
            text = text_features[labels]
        rows = torch.cat([self.text_transform(text), self.image_transform(image_features).to(text.dtype)])
        return self.classify(rows), torch.cat([labels, labels])


def dept_loss(prompt_logits: torch.Tensor, labels: torch.Tensor, head_logits: torch.Tensor,
              head_labels: torch.Tensor, weight: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, prompt CE, head CE): ``(1 - weight) * CE(prompt) + weight * CE(head)``."""
    ce = F.cross_entropy(prompt_logits, labels)
    ce_head = F.cross_entropy(head_logits, head_labels)
    return (1 - weight) * ce + weight * ce_head, ce, ce_head


def fuse(prompt_logits: torch.Tensor, head_logits: torch.Tensor, weight: float, how: str = "logits") -> torch.Tensor:
    """Base-class scores from both classifiers (``how``: see ``config.FUSIONS``)."""
    head_logits = head_logits.to(prompt_logits.dtype)
    if how == "logits":
        return (1 - weight) * prompt_logits + weight * head_logits
    if how == "probabilities":
        return (1 - weight) * prompt_logits.softmax(dim=-1) + weight * head_logits.softmax(dim=-1)
    if how == "head":
        return head_logits
    raise ValueError(f"unknown fusion {how!r}")
