"""Dynamic hard-negative sampler (DPC Sec. 3.3).

For each anchor image of a mini-batch, the frozen stage-1 model's top-K base classes other than the
true class become its hard negatives; each negative class is paired with one random training image
of that class. Every anchor is kept (two anchors of one class are positives of each other in the
loss). A negative class is never a class already in the mini-batch (any anchor's true class or an
earlier negative), so negatives are unambiguous. When fewer than ``min_negatives`` negatives
survive, random classes not yet in the batch fill the gap.

``choice="random"`` is the control without mining: each anchor's candidates are K-1 base classes
other than its own drawn uniformly (the scores are ignored); everything else is the same.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Sequence

import torch

from .config import check_topk
from .errors import ConfigError


@dataclass
class NegativeBatch:
    """The sampler's choice for one mini-batch of ``num_anchors`` anchors.

    ``neg_labels[j]`` is paired with the training item ``neg_items[j]``. The contrastive batch is the
    anchors first, then the negatives: ``labels = anchor labels + neg_labels``, ``L = num_anchors + len(neg_labels)``.
    """

    num_anchors: int = 0
    neg_labels: List[int] = field(default_factory=list)
    neg_items: List[int] = field(default_factory=list)

    @property
    def size(self) -> int:
        return self.num_anchors + len(self.neg_labels)


def index_by_class(labels: Sequence[int], num_classes: int) -> Dict[int, List[int]]:
    """Map class -> positions of its items; every class must have at least one item."""
    by_class: Dict[int, List[int]] = {c: [] for c in range(num_classes)}
    for i, label in enumerate(labels):
        if not 0 <= label < num_classes:
            raise ValueError(f"item {i} has label {label}, outside the {num_classes} base classes")
        by_class[label].append(i)
    return by_class


class HardNegativeSampler:
    def __init__(self, items_by_class: Mapping[int, Sequence[int]], num_classes: int, topk: int = 8,
                 min_negatives: int = 2, rng: random.Random | None = None, classnames: Sequence[str] | None = None,
                 choice: str = "hard"):
        if choice not in ("hard", "random"):
            raise ConfigError(f"DPC.NEGATIVES must be hard or random, got {choice!r}")
        check_topk(topk, num_classes)
        empty = [c for c in range(num_classes) if not items_by_class.get(c)]
        if empty:
            shown = [f"{c} ({classnames[c]})" if classnames else str(c) for c in empty[:10]]
            raise ConfigError(
                f"{len(empty)} base classes have no training image to draw negatives from: {', '.join(shown)}. "
                "Use DPC.NEG_SOURCE full-train, or check the dataset's train split.")
        self.items_by_class = {c: list(items_by_class[c]) for c in range(num_classes)}
        self.num_classes = num_classes
        self.topk = topk
        self.max_negatives = topk - 1
        self.min_negatives = min(min_negatives, self.max_negatives)
        self.rng = rng or random.Random()
        self.choice = choice

    def sample(self, scores: torch.Tensor, labels: torch.Tensor) -> NegativeBatch:
        """``scores`` [b, num_classes] from the stage-1 model (higher = more similar); ``labels`` [b]."""
        if scores.dim() != 2 or scores.shape[1] != self.num_classes:
            raise ValueError(f"scores must be [batch, {self.num_classes}], got {tuple(scores.shape)}")
        labels = [int(y) for y in labels.tolist()]
        if self.choice == "hard":
            ranked = scores.detach().float().topk(self.topk, dim=1).indices.tolist()
        else:
            others = [[c for c in range(self.num_classes) if c != label] for label in labels]
            ranked = [self.rng.sample(pool, min(self.max_negatives, len(pool))) for pool in others]

        out = NegativeBatch(num_anchors=len(labels))
        in_batch = set(labels)
        for row, label in enumerate(labels):
            candidates = [c for c in ranked[row] if c != label][: self.max_negatives]
            negatives = [c for c in candidates if c not in in_batch]
            in_batch.update(negatives)
            if len(negatives) < self.min_negatives:
                pool = [c for c in range(self.num_classes) if c not in in_batch]
                extra = self.rng.sample(pool, min(self.min_negatives - len(negatives), len(pool)))
                negatives += extra
                in_batch.update(extra)
            for c in negatives:
                out.neg_labels.append(c)
                out.neg_items.append(self.rng.choice(self.items_by_class[c]))
        return out
