"""Base / new class split of the base-to-new protocol (no Dassl import).

Labels are sorted; the first ceil(n / 2) are the base classes, the rest the
new classes; the kept classes are relabelled from 0 in label order.
"""

import math

from .records import Record
from trainers.dpc.errors import ConfigError

SUBSAMPLE_CHOICES = ("all", "base", "new")


def check_subsample(subsample):
    if subsample not in SUBSAMPLE_CHOICES:
        raise ConfigError(
            f"DATASET.SUBSAMPLE_CLASSES must be one of {list(SUBSAMPLE_CHOICES)}, got {subsample!r}"
        )
    return subsample


def select_labels(items, subsample):
    """Sorted labels kept by `subsample` (computed from `items`); None for 'all'."""
    check_subsample(subsample)
    if subsample == "all":
        return None
    labels = sorted({item.label for item in items})
    m = math.ceil(len(labels) / 2)
    return labels[:m] if subsample == "base" else labels[m:]


def relabel(items, labels):
    """Keep items whose label is in `labels`, relabelled to their position there.
    `labels` None keeps everything; `items` None stays None."""
    if items is None or labels is None:
        return items
    new_label = {old: new for new, old in enumerate(labels)}
    return [
        Record(item.impath, new_label[item.label], item.classname, getattr(item, "domain", 0))
        for item in items
        if item.label in new_label
    ]


def subsample_classes(*splits, subsample="all"):
    """Apply one base/new split (decided on the first split) to every split."""
    labels = select_labels(splits[0], subsample)
    return tuple(relabel(split, labels) for split in splits)
