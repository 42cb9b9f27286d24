"""The downstream ToyWorld dataset: noisy scenes of the 50 classes, written in a CoOp layout.

    <root>/toyworld/images/<colour>_<shape>/<n>.png   (n = 0001..0090: train, then val, then test)
    <root>/toyworld/split_zhou_ToyWorld.json         {"train"|"val"|"test": [[relpath, label, class name], ...]}
    <root>/toyworld/.toyworld                        generator version, seed and split sizes

(The wide variant, 100 classes: toyworld_wide/ and split_zhou_ToyWorldWide.json; see vocab.Variant.)

The same seed gives the same bytes. A folder whose marker matches is left alone; one from another version,
seed or size is replaced; a folder without a marker is never touched. The world is written to a temporary
folder and renamed into place, so an interrupted run leaves no half-written dataset.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from .render import render_downstream
from .vocab import N_BASE_WORDS, TOYWORLD, VARIANTS

GENERATOR_VERSION = 1  # bump when the rendering or the layout changes
IMAGE_DIR = "images"
MARKER = ".toyworld"
SPLITS = ("train", "val", "test")
SPLIT_COUNTS = {"train": 32, "val": 8, "test": 50}  # images per class
CHUNK = 500  # images rendered at a time (fixed: the random draws depend on it)


def _split_seed(seed, split):
    return seed * 1_000_003 + 17 * (SPLITS.index(split) + 1)


def _distractors(pairs, generator, variant=TOYWORLD):
    """Per scene, a class of the same half with another colour and another shape (words of that half)."""
    half = (pairs[:, 0] >= N_BASE_WORDS).long()  # both variants split their halves by colour
    start = torch.stack([torch.tensor([words[0] for words in variant.colour_halves])[half],
                         torch.tensor([words[0] for words in variant.shape_halves])[half]], dim=1)
    size = torch.tensor([len(variant.colour_halves[0]), len(variant.shape_halves[0])])
    if size[0] == size[1]:  # one draw for both columns (what ToyWorld's files were written with)
        shift = torch.randint(1, int(size[0]), pairs.shape, generator=generator)
    else:
        shift = torch.stack([torch.randint(1, int(n), pairs.shape[:1], generator=generator) for n in size], dim=1)
    return start + (pairs - start + shift) % size


def render_split(split, seed=0, per_class=None, variant=TOYWORLD):
    """(uint8 images [n, 3, 32, 32], labels [n]) of one split, class by class, as written to disk."""
    per_class = SPLIT_COUNTS[split] if per_class is None else per_class
    generator = torch.Generator().manual_seed(_split_seed(seed, split))
    labels = torch.arange(len(variant.classes)).repeat_interleave(per_class)
    pairs = torch.tensor(variant.classes)[labels]
    distractors = _distractors(pairs, generator, variant)
    chunks = [render_downstream(pairs[i:i + CHUNK], distractors[i:i + CHUNK], generator)
              for i in range(0, len(labels), CHUNK)]
    images = (torch.cat(chunks) * 255).round().to(torch.uint8)
    return images, labels


def class_folder(name):
    return name.replace(" ", "_")


def marker_text(seed, counts, variant=TOYWORLD):
    fields = {"generator": "tools.toyworld", "version": GENERATOR_VERSION, "seed": seed, "per_class": counts}
    if variant is not TOYWORLD:
        fields["variant"] = variant.name
    return json.dumps(fields, sort_keys=True) + "\n"


def _read(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return None


def _write_images(folder, seed, counts, progress, variant):
    split_entries = {split: [] for split in SPLITS}
    first = 1  # running image number of each class across the splits
    for split in SPLITS:
        images, labels = render_split(split, seed, counts[split], variant)
        arrays = images.permute(0, 2, 3, 1).numpy()
        for i, label in enumerate(labels.tolist()):
            number = first + i % counts[split]
            name = variant.class_names[label]
            relpath = f"{class_folder(name)}/{number:04d}.png"
            path = os.path.join(folder, IMAGE_DIR, relpath)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            Image.fromarray(np.ascontiguousarray(arrays[i])).save(path, format="PNG")
            split_entries[split].append([relpath, label, name])
            progress.update(1)
        first += counts[split]
    with open(os.path.join(folder, variant.split_file), "w", encoding="utf-8") as f:
        json.dump(split_entries, f, indent=1)


def write_toyworld(root, seed=0, counts=None, quiet=False, variant=TOYWORLD):
    """Write the dataset (``variant``: TOYWORLD or TOYWORLD_WIDE of vocab.py) under ``root`` (DATASET.ROOT) unless
    it is there already; return its folder."""
    variant = VARIANTS[variant] if isinstance(variant, str) else variant
    counts = dict(SPLIT_COUNTS if counts is None else counts)
    root = os.path.abspath(os.path.expanduser(root))
    folder = os.path.join(root, variant.name)
    expected = marker_text(seed, counts, variant)
    if os.path.isdir(folder):
        found = _read(os.path.join(folder, MARKER))
        if found is None:
            raise FileExistsError(f"{folder} exists but was not written by tools.toyworld (no {MARKER} file): "
                                  "move it away, or pass another --root")
        if found == expected and os.path.isfile(os.path.join(folder, variant.split_file)):
            if not quiet:
                print(f"{variant.dassl_name} is up to date in {folder} (seed {seed}, generator v{GENERATOR_VERSION})")
            return folder
    os.makedirs(root, exist_ok=True)
    temporary = tempfile.mkdtemp(prefix=".toyworld-", dir=root)
    os.chmod(temporary, 0o755)  # mkdtemp makes it private
    try:
        total = len(variant.classes) * sum(counts.values())
        with tqdm(total=total, desc=f"{variant.dassl_name} images", unit="img", disable=quiet) as progress:
            _write_images(temporary, seed, counts, progress, variant)
        with open(os.path.join(temporary, MARKER), "w", encoding="utf-8") as f:
            f.write(expected)
        if os.path.isdir(folder):  # an older version or another seed: replaced
            shutil.rmtree(folder)
        os.rename(temporary, folder)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    if not quiet:
        print(f"Wrote {variant.dassl_name} ({len(variant.classes)} classes, {counts} per class, seed {seed}) to {folder}")
    return folder
