"""The downstream ToyWorld dataset: noisy scenes of the 50 classes, written in a CoOp layout.

    <root>/toyworld/images/<colour>_<shape>/<n>.png   (n = 0001..0090: train, then val, then test)
    <root>/toyworld/split_zhou_ToyWorld.json         {"train"|"val"|"test": [[relpath, label, class name], ...]}
    <root>/toyworld/.toyworld                        generator version, seed and split sizes

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
from .vocab import CLASS_NAMES, CLASSES, N_BASE_WORDS

GENERATOR_VERSION = 1  # bump when the rendering or the layout changes
FOLDER = "toyworld"  # must match datasets/specs.py (checked by the tests)
IMAGE_DIR = "images"
SPLIT_FILE = "split_zhou_ToyWorld.json"
MARKER = ".toyworld"
SPLITS = ("train", "val", "test")
SPLIT_COUNTS = {"train": 32, "val": 8, "test": 50}  # images per class
CHUNK = 500  # images rendered at a time (fixed: the random draws depend on it)


def _split_seed(seed, split):
    return seed * 1_000_003 + 17 * (SPLITS.index(split) + 1)


def _distractors(pairs, generator):
    """Per scene, a class of the same half with another colour and another shape."""
    start = (pairs >= N_BASE_WORDS).long() * N_BASE_WORDS  # first word of the half (same for colour and shape)
    shift = torch.randint(1, N_BASE_WORDS, pairs.shape, generator=generator)
    return start + (pairs - start + shift) % N_BASE_WORDS


def render_split(split, seed=0, per_class=None):
    """(uint8 images [n, 3, 32, 32], labels [n]) of one split, class by class, as written to disk."""
    per_class = SPLIT_COUNTS[split] if per_class is None else per_class
    generator = torch.Generator().manual_seed(_split_seed(seed, split))
    labels = torch.arange(len(CLASSES)).repeat_interleave(per_class)
    pairs = torch.tensor(CLASSES)[labels]
    distractors = _distractors(pairs, generator)
    chunks = [render_downstream(pairs[i:i + CHUNK], distractors[i:i + CHUNK], generator)
              for i in range(0, len(labels), CHUNK)]
    images = (torch.cat(chunks) * 255).round().to(torch.uint8)
    return images, labels


def class_folder(label):
    return CLASS_NAMES[label].replace(" ", "_")


def marker_text(seed, counts):
    return json.dumps({"generator": "tools.toyworld", "version": GENERATOR_VERSION, "seed": seed,
                       "per_class": counts}, sort_keys=True) + "\n"


def _read(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return None


def _write_images(folder, seed, counts, progress):
    split_entries = {split: [] for split in SPLITS}
    first = 1  # running image number of each class across the splits
    for split in SPLITS:
        images, labels = render_split(split, seed, counts[split])
        arrays = images.permute(0, 2, 3, 1).numpy()
        for i, label in enumerate(labels.tolist()):
            number = first + i % counts[split]
            relpath = f"{class_folder(label)}/{number:04d}.png"
            path = os.path.join(folder, IMAGE_DIR, relpath)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            Image.fromarray(np.ascontiguousarray(arrays[i])).save(path, format="PNG")
            split_entries[split].append([relpath, label, CLASS_NAMES[label]])
            progress.update(1)
        first += counts[split]
    with open(os.path.join(folder, SPLIT_FILE), "w", encoding="utf-8") as f:
        json.dump(split_entries, f, indent=1)


def write_toyworld(root, seed=0, counts=None, quiet=False):
    """Write the dataset under ``root`` (DATASET.ROOT) unless it is there already; return its folder."""
    counts = dict(SPLIT_COUNTS if counts is None else counts)
    root = os.path.abspath(os.path.expanduser(root))
    folder = os.path.join(root, FOLDER)
    expected = marker_text(seed, counts)
    if os.path.isdir(folder):
        found = _read(os.path.join(folder, MARKER))
        if found is None:
            raise FileExistsError(f"{folder} exists but was not written by tools.toyworld (no {MARKER} file): "
                                  "move it away, or pass another --root")
        if found == expected and os.path.isfile(os.path.join(folder, SPLIT_FILE)):
            if not quiet:
                print(f"ToyWorld is up to date in {folder} (seed {seed}, generator v{GENERATOR_VERSION})")
            return folder
    os.makedirs(root, exist_ok=True)
    temporary = tempfile.mkdtemp(prefix=".toyworld-", dir=root)
    os.chmod(temporary, 0o755)  # mkdtemp makes it private
    try:
        total = len(CLASSES) * sum(counts.values())
        with tqdm(total=total, desc="ToyWorld images", unit="img", disable=quiet) as progress:
            _write_images(temporary, seed, counts, progress)
        with open(os.path.join(temporary, MARKER), "w", encoding="utf-8") as f:
            f.write(expected)
        if os.path.isdir(folder):  # an older version or another seed: replaced
            shutil.rmtree(folder)
        os.rename(temporary, folder)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    if not quiet:
        print(f"Wrote ToyWorld ({len(CLASSES)} classes, {counts} per class, seed {seed}) to {folder}")
    return folder
