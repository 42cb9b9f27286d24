"""Few-shot sampling and its on-disk cache (no Dassl import).

`sample_fewshot` draws exactly what Dassl's `DatasetBase.generate_fewshot_dataset`
draws for the same random state: classes in order of first appearance, one
`rng.sample(items, num_shots)` per class, all items if a class has fewer.
`random.Random(seed)` produces the same draws as the global `random` module
after `random.seed(seed)` (what Dassl's `set_random_seed` does before the
dataset is built), so subsets match upstream CoOp for the same seed.
"""

import os
import random
import warnings

from .records import as_records, load_cache, save_pickle
from .specs import fewshot_file


def group_by_label(items):
    """dict label -> items, labels in order of first appearance."""
    groups = {}
    for item in items:
        groups.setdefault(item.label, []).append(item)
    return groups


def sample_fewshot(items, num_shots, rng=None):
    """Keep `num_shots` random items per label (all of them if fewer).
    `rng` is a `random.Random` (default: the global `random` module);
    num_shots < 1 returns `items` unchanged."""
    if num_shots < 1:
        return items
    rng = random if rng is None else rng
    out = []
    for group in group_by_label(items).values():
        out.extend(rng.sample(group, num_shots) if len(group) >= num_shots else group)
    return out


def short_classes(items, num_shots):
    """[(class name, count)] of the labels with fewer than `num_shots` items, in label order."""
    groups = group_by_label(items)
    return [(group[0].classname or str(label), len(group))
            for label, group in sorted(groups.items()) if len(group) < num_shots]


def shortage_warning(items, num_shots, split="train", shown=10):
    """One warning line when some classes of `split` have fewer than `num_shots`
    items (they keep all they have), else None."""
    short = short_classes(items, num_shots)
    if not short:
        return None
    listed = ", ".join(f"{name} ({count})" for name, count in short[:shown])
    more = f", ... ({len(short) - shown} more)" if len(short) > shown else ""
    return (f"WARNING: DATASET.NUM_SHOTS is {num_shots} but {len(short)} of "
            f"{len(group_by_label(items))} classes have fewer {split} images and keep all they have: "
            f"{listed}{more}")


def make_rng(seed):
    """A private generator for seed >= 0; the global `random` module otherwise."""
    if seed is None or seed < 0:
        return random
    return random.Random(seed)


def fewshot_cache_path(dataset_dir, num_shots, seed):
    return os.path.join(dataset_dir, fewshot_file(num_shots, seed))


def _sample(train, val, num_shots, rng):
    # train first, then val with the same generator, as upstream CoOp does
    train = sample_fewshot(train, num_shots, rng)
    if val is not None:
        val = sample_fewshot(val, min(num_shots, 4), rng)
    return train, val


def load_or_create_fewshot(cache_path, train, val, num_shots, seed=-1, store=None, log=print):
    """Few-shot train (`num_shots` per class) and val (min(num_shots, 4) per
    class; None stays None), read from `cache_path` if it exists, otherwise
    sampled and written there atomically as {"train": [...], "val": [...]}.

    `store` maps each Record to the object that is pickled (the Dassl layer
    passes a Datum constructor so upstream CoOp can read our cache); caches of
    upstream CoOp (lists of Datum) load too. Returns lists of Record.
    Classes with fewer than `num_shots` train images are named in one warning line.
    """
    warning = shortage_warning(train, num_shots)
    if warning:
        log(warning)
    data = load_cache(cache_path)
    if data is not None:
        log(f"Loading few-shot split from {cache_path}")
        cached_val = as_records(data.get("val")) if val is not None else None
        return as_records(data["train"]), cached_val

    train, val = _sample(train, val, num_shots, make_rng(seed))
    store = (lambda r: r) if store is None else store
    data = {"train": [store(r) for r in train]}
    if val is not None:
        data["val"] = [store(r) for r in val]
    try:
        save_pickle(data, cache_path)
        log(f"Saved few-shot split to {cache_path}")
    except OSError as err:  # e.g. a read-only data folder: go on without a cache
        warnings.warn(f"could not write few-shot cache {cache_path}: {err}")
    return train, val
