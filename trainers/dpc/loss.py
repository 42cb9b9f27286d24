"""Feature Filtering and the symmetric InfoNCE loss of the hard-negative optimizer (DPC Sec. 3.3)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def filter_text_features(text_features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L2-normalise the features of all classes and keep the rows of the pairs' labels.

    Equivalent to multiplying by the one-hot selection matrix Q (L x n_classes). Per-image text
    features [L, n_classes, D] (CoCoOp) give pair i the row of its class conditioned on its own image.
    """
    if text_features.dim() == 3:
        return F.normalize(text_features[torch.arange(labels.shape[0], device=labels.device), labels], dim=-1)
    return F.normalize(text_features, dim=-1)[labels]


def symmetric_infonce(image_features: torch.Tensor, text_features: torch.Tensor, labels: torch.Tensor,
                      logit_scale: torch.Tensor) -> torch.Tensor:
    """Mean of image->text and text->image cross-entropy over the L image-class pairs.

    ``image_features`` [L, D]; ``text_features`` [n_classes, D] (all classes, before filtering) or
    [L, n_classes, D] (conditioned on each pair's image);
    ``labels`` [L] pairs image i with class labels[i]; ``logit_scale`` is CLIP's log temperature.

    Targets are ``arange(L)`` as in the release. When two pairs share a class their filtered text
    rows are the same vector, so this equals (value and gradient) the loss whose target is uniform
    over all pairs of the class: pairs of one class act as positives of each other, never as negatives.
    """
    image_features = F.normalize(image_features, dim=-1)
    text_features = filter_text_features(text_features, labels).to(image_features.dtype)
    logits = logit_scale.exp() * image_features @ text_features.t()
    targets = torch.arange(labels.shape[0], device=logits.device)
    return (F.cross_entropy(logits.float(), targets) + F.cross_entropy(logits.t().float(), targets)) / 2
