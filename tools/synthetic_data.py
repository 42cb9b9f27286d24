"""Small synthetic datasets in the real CoOp on-disk layouts (for the tests and benchmarks).

    from tools.synthetic_data import make_dataset
    dataset_dir = make_dataset(root, "eurosat", n_classes=6)   # -> "<root>/eurosat"
    # then: cfg.DATASET.ROOT = root; cfg.DATASET.NAME = "EuroSAT"

    python -m tools.synthetic_data --root DIR --dataset eurosat --classes 6   # prints the path

`name` is a dataset config stem (see DATASETS: eurosat, oxford_pets, dtd,
caltech101, fgvc_aircraft, imagenet, ...) or a Dassl registry name (EuroSAT).
Each class gets `train_per_class`, `val_per_class` and `test_per_class` images,
written with the dataset's real folder names and split files (split_zhou_*.json,
FGVC list files, ImageNet classnames.txt). ImageNet has no val split: its
images/val/ folder holds `test_per_class` images per class; the evaluation-only
variants (imagenetv2, imagenet_sketch, imagenet_a, imagenet_r) get
`test_per_class` images per class.

Class names are real ones of the dataset for the first classes (EuroSAT:
AnnualCrop, Forest, ...; its split file stores the readable names, e.g.
"Annual Crop Land", as the CoOp split does), then class_k, class_l, ...

Images are `image_size` x `image_size` RGB JPEGs: hue and stripe orientation
depend on the class, phase and noise on the image, so a classifier can learn
them; everything is determined by `seed`.

A folder made by this tool carries a `.synthetic` marker and is replaced when
made again; any other existing folder is left alone (FileExistsError).
"""

import argparse
import colorsys
import json
import os
import re
import shutil
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

MARKER = ".synthetic"
SPLITS = ("train", "val", "test")

# real class names of each dataset (first few, in the dataset's own order)
EUROSAT = [
    ("AnnualCrop", "Annual Crop Land"), ("Forest", "Forest"),
    ("HerbaceousVegetation", "Herbaceous Vegetation Land"), ("Highway", "Highway or Road"),
    ("Industrial", "Industrial Buildings"), ("Pasture", "Pasture Land"),
    ("PermanentCrop", "Permanent Crop Land"), ("Residential", "Residential Buildings"),
    ("River", "River"), ("SeaLake", "Sea or Lake"),
]
CALTECH101 = [
    ("Faces", "face"), ("Leopards", "leopard"), ("Motorbikes", "motorbike"),
    ("accordion", "accordion"), ("airplanes", "airplane"), ("anchor", "anchor"),
    ("ant", "ant"), ("barrel", "barrel"), ("bass", "bass"), ("beaver", "beaver"),
]
PETS = ["Abyssinian", "american_bulldog", "american_pit_bull_terrier", "basset_hound",
        "beagle", "Bengal", "Birman", "Bombay", "boxer", "British_Shorthair"]
CARS = ["2012 Acura TL Sedan", "2007 BMW X5 SUV", "2012 Tesla Model S Sedan",
        "1993 Volvo 240 Sedan", "2012 Ford F-150 Regular Cab", "2012 Honda Odyssey Minivan",
        "2012 Jeep Wrangler SUV", "2012 Nissan Leaf Hatchback", "2009 Dodge Sprinter Cargo Van",
        "2012 Fiat 500 Convertible"]
FLOWERS = ["pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea",
           "english marigold", "tiger lily", "moon orchid", "bird of paradise", "monkshood",
           "globe thistle"]
FOOD = ["apple_pie", "baby_back_ribs", "baklava", "beef_carpaccio", "beef_tartare",
        "beet_salad", "beignets", "bibimbap", "bread_pudding", "breakfast_burrito"]
SUN = ["a/abbey", "a/airplane_cabin", "a/airport_terminal", "a/alley", "a/amphitheater",
       "a/amusement_arcade", "a/amusement_park", "a/anechoic_chamber",
       "a/apartment_building/outdoor", "a/apse/indoor"]
DTD = ["banded", "blotchy", "braided", "bubbly", "bumpy", "chequered", "cobwebbed",
       "cracked", "crosshatched", "crystalline"]
UCF = ["ApplyEyeMakeup", "ApplyLipstick", "Archery", "BabyCrawling", "BalanceBeam",
       "BandMarching", "BaseballPitch", "Basketball", "BasketballDunk", "BenchPress"]
AIRCRAFT = ["707-320", "727-200", "737-200", "737-300", "A300B4", "A310", "ATR-42",
            "BAE 146-200", "Cessna 172", "DC-3"]
IMAGENET = [("n01440764", "tench"), ("n01443537", "goldfish"),
            ("n01484850", "great white shark"), ("n01491361", "tiger shark"),
            ("n01494475", "hammerhead shark"), ("n01496331", "electric ray"),
            ("n01498041", "stingray"), ("n01514668", "rooster"), ("n01514859", "hen"),
            ("n01518878", "ostrich")]


def _word(i):
    """class_a, class_b, ..., class_z, class_ba, ... (unique per i)."""
    letters = ""
    while True:
        letters = chr(ord("a") + i % 26) + letters
        i //= 26
        if i == 0:
            return "class_" + letters


def _take(table, n, fallback):
    """First n entries of `table`, continued with fallback(word) entries."""
    return list(table[:n]) + [fallback(_word(i)) for i in range(len(table), n)]


def _ucf_readable(action):
    return "_".join(re.findall("[A-Z][^A-Z]*", action))


def _sun_readable(path):
    return " ".join(path.split("/")[1:][::-1])


def make_image(label, n_classes, rng, size=32):
    """One RGB image for class `label`: class hue and stripe direction, random
    phase and noise drawn from `rng` (a numpy Generator)."""
    n = max(n_classes, 1)
    base = np.array(colorsys.hsv_to_rgb(label / n, 0.75, 0.9)) * 255.0
    y, x = np.mgrid[0:size, 0:size] / size
    theta = np.pi * label / n
    freq = 2 + label % 3
    wave = np.sin(2 * np.pi * freq * (x * np.cos(theta) + y * np.sin(theta))
                  + rng.uniform(0, 2 * np.pi))
    img = base * (0.65 + 0.35 * wave[..., None]) + rng.normal(0.0, 10.0, (size, size, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


class _Writer:
    """Writes deterministic images: the pixels depend on (seed, dataset, label, k)."""

    def __init__(self, key, n_classes, size, seed):
        self.key = zlib.crc32(key.encode())
        self.n_classes, self.size, self.seed = n_classes, size, seed

    def __call__(self, path, label, k):
        rng = np.random.default_rng([self.seed, self.key, label, k])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        make_image(label, self.n_classes, rng, self.size).save(path, quality=90)


@dataclass(frozen=True)
class _JsonLayout:
    folder: str
    image_dir: str  # root of the relative paths in the split file
    split_file: str
    names: Callable  # n -> [(raw name, readable class name)]
    path: Callable  # (raw, readable, k, counter, split) -> path relative to image_dir


_JSON = {
    "caltech101": _JsonLayout(
        "caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json",
        lambda n: _take(CALTECH101, n, lambda w: (w, w)),
        lambda raw, name, k, c, s: f"{raw}/image_{k:04d}.jpg"),
    "oxford_pets": _JsonLayout(
        "oxford_pets", "images", "split_zhou_OxfordPets.json",
        lambda n: [(b, b.lower()) for b in _take(PETS, n, lambda w: w)],
        lambda raw, name, k, c, s: f"{raw}_{k}.jpg"),
    "stanford_cars": _JsonLayout(
        "stanford_cars", "", "split_zhou_StanfordCars.json",
        lambda n: [(c, c) for c in _take(CARS, n, lambda w: w)],
        lambda raw, name, k, c, s: f"{'cars_test' if s == 'test' else 'cars_train'}/{c:05d}.jpg"),
    "oxford_flowers": _JsonLayout(
        "oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json",
        lambda n: [(f, f) for f in _take(FLOWERS, n, lambda w: w)],
        lambda raw, name, k, c, s: f"image_{c:05d}.jpg"),
    "food101": _JsonLayout(
        "food-101", "images", "split_zhou_Food101.json",
        lambda n: [(f, f) for f in _take(FOOD, n, lambda w: w)],
        lambda raw, name, k, c, s: f"{raw}/{100000 + c}.jpg"),
    "sun397": _JsonLayout(
        "sun397", "SUN397", "split_zhou_SUN397.json",
        lambda n: [(p, _sun_readable(p)) for p in _take(SUN, n, lambda w: f"{w[6]}/{w}")],
        lambda raw, name, k, c, s: f"{raw}/sun_{c:08x}.jpg"),
    "dtd": _JsonLayout(
        "dtd", "images", "split_zhou_DescribableTextures.json",
        lambda n: [(t, t) for t in _take(DTD, n, lambda w: w)],
        lambda raw, name, k, c, s: f"{raw}/{raw}_{k:04d}.jpg"),
    "eurosat": _JsonLayout(
        "eurosat", "2750", "split_zhou_EuroSAT.json",
        lambda n: _take(EUROSAT, n, lambda w: (w, w)),
        lambda raw, name, k, c, s: f"{raw}/{raw}_{k}.jpg"),
    "ucf101": _JsonLayout(
        "ucf101", "UCF-101-midframes", "split_zhou_UCF101.json",
        lambda n: [(a, _ucf_readable(a))
                   for a in _take(UCF, n, lambda w: w.title().replace("_", ""))],
        lambda raw, name, k, c, s: f"{name}/v_{raw}_g{k:02d}_c01.jpg"),
}

# evaluation-only ImageNet variants: folder, image folder, image path in a class folder
_VARIANTS = {
    "imagenetv2": ("imagenetv2", "imagenetv2-matched-frequency-format-val", "{k:040x}.jpeg"),
    "imagenet_sketch": ("imagenet-sketch", "images", "sketch_{k}.JPEG"),
    "imagenet_a": ("imagenet-adversarial", "imagenet-a", "{k:06d}.jpg"),
    "imagenet_r": ("imagenet-rendition", "imagenet-r", "art_{k}.jpg"),
}

DATASETS = ("imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers",
            "food101", "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101",
            "imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")
_ALIASES = {"describabletextures": "dtd", "imagenetsketch": "imagenet_sketch",
            "imageneta": "imagenet_a", "imagenetr": "imagenet_r", "fgvcaircraft": "fgvc_aircraft"}


def canonical_name(name):
    """Config stem for a config stem or registry name ('EuroSAT' -> 'eurosat')."""
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    for stem in DATASETS:
        if key == stem.replace("_", ""):
            return stem
    if key in _ALIASES:
        return _ALIASES[key]
    raise ValueError(f"unknown dataset {name!r}; choose from {list(DATASETS)}")


def _imagenet_classes(n):
    """(wnid, class name) sorted by wnid, so folder order = classnames.txt order."""
    extra = [(f"n{99000000 + i:08d}", _word(i)) for i in range(len(IMAGENET), n)]
    return list(IMAGENET[:n]) + extra


def _write_classnames(path, classes):
    with open(path, "w") as f:
        f.writelines(f"{wnid} {name}\n" for wnid, name in classes)


def _make_json(layout, dataset_dir, n, counts, write):
    image_root = os.path.join(dataset_dir, layout.image_dir)
    split = {s: [] for s in SPLITS}
    counter = 0
    for label, (raw, name) in enumerate(layout.names(n)):
        k = 0
        for s in SPLITS:
            for _ in range(counts[s]):
                k, counter = k + 1, counter + 1
                rel = layout.path(raw, name, k, counter, s)
                write(os.path.join(image_root, rel), label, k)
                split[s].append([rel, label, name])
    with open(os.path.join(dataset_dir, layout.split_file), "w") as f:
        json.dump(split, f, indent=1)


def _make_fgvc(dataset_dir, n, counts, write):
    variants = _take(AIRCRAFT, n, lambda w: w)
    lines = {s: [] for s in SPLITS}
    counter = 0
    for label, variant in enumerate(variants):
        k = 0
        for s in SPLITS:
            for _ in range(counts[s]):
                k, counter = k + 1, counter + 1
                image_id = f"{1000000 + counter:07d}"
                write(os.path.join(dataset_dir, "images", image_id + ".jpg"), label, k)
                lines[s].append(f"{image_id} {variant}\n")
    with open(os.path.join(dataset_dir, "variants.txt"), "w") as f:
        f.writelines(v + "\n" for v in variants)
    for s in SPLITS:
        with open(os.path.join(dataset_dir, f"images_variant_{s}.txt"), "w") as f:
            f.writelines(lines[s])


def _make_imagenet(dataset_dir, n, counts, write):
    classes = _imagenet_classes(n)
    counter = 0
    for label, (wnid, _) in enumerate(classes):
        for k in range(1, counts["train"] + 1):
            write(os.path.join(dataset_dir, "images", "train", wnid, f"{wnid}_{k}.JPEG"), label, k)
        for k in range(counts["train"] + 1, counts["train"] + counts["test"] + 1):
            counter += 1
            name = f"ILSVRC2012_val_{counter:08d}.JPEG"
            write(os.path.join(dataset_dir, "images", "val", wnid, name), label, k)
    _write_classnames(os.path.join(dataset_dir, "classnames.txt"), classes)


def _make_variant(stem, dataset_dir, n, counts, write):
    _, image_dir, pattern = _VARIANTS[stem]
    image_root = os.path.join(dataset_dir, image_dir)
    subset = stem in ("imagenet_a", "imagenet_r")  # real ones hold 200 of the 1,000 classes
    classes = _imagenet_classes(n + 2 if subset else n)
    for label, (wnid, _) in enumerate(classes[:n]):
        folder = str(label) if stem == "imagenetv2" else wnid
        for k in range(1, counts["test"] + 1):
            write(os.path.join(image_root, folder, pattern.format(k=k)), label, k)
    if subset:
        with open(os.path.join(image_root, "README.txt"), "w") as f:
            f.write("synthetic stand-in\n")
    _write_classnames(os.path.join(dataset_dir, "classnames.txt"), classes)


def dataset_folder(name):
    """Folder name under the data root, e.g. 'caltech101' -> 'caltech-101'."""
    stem = canonical_name(name)
    if stem in _JSON:
        return _JSON[stem].folder
    if stem in _VARIANTS:
        return _VARIANTS[stem][0]
    return stem  # imagenet, fgvc_aircraft


def make_dataset(root, name, n_classes=6, train_per_class=4, val_per_class=1,
                 test_per_class=2, image_size=32, seed=0):
    """Write a synthetic `name` dataset under `root`; return its folder
    (absolute path, e.g. <root>/eurosat). See the module docstring."""
    stem = canonical_name(name)
    if n_classes < 1:
        raise ValueError("n_classes must be >= 1")
    dataset_dir = os.path.join(os.path.abspath(root), dataset_folder(stem))
    if os.path.exists(dataset_dir):
        if not os.path.exists(os.path.join(dataset_dir, MARKER)):
            raise FileExistsError(f"{dataset_dir} exists and was not made by this tool")
        shutil.rmtree(dataset_dir)
    os.makedirs(dataset_dir)
    with open(os.path.join(dataset_dir, MARKER), "w") as f:
        f.write(f"{stem} classes={n_classes} seed={seed}\n")

    counts = {"train": train_per_class, "val": val_per_class, "test": test_per_class}
    write = _Writer(stem, n_classes, image_size, seed)
    if stem in _JSON:
        _make_json(_JSON[stem], dataset_dir, n_classes, counts, write)
    elif stem == "fgvc_aircraft":
        _make_fgvc(dataset_dir, n_classes, counts, write)
    elif stem == "imagenet":
        _make_imagenet(dataset_dir, n_classes, counts, write)
    else:
        _make_variant(stem, dataset_dir, n_classes, counts, write)
    return dataset_dir


def main(argv=None):
    parser = argparse.ArgumentParser(description="Write a small synthetic CoOp-format dataset.")
    parser.add_argument("--root", required=True, help="data root (DATASET.ROOT)")
    parser.add_argument("--dataset", required=True, help=f"one of {', '.join(DATASETS)}")
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--train", type=int, default=4, help="train images per class")
    parser.add_argument("--val", type=int, default=1, help="val images per class")
    parser.add_argument("--test", type=int, default=2, help="test images per class")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(make_dataset(args.root, args.dataset, args.classes, args.train, args.val,
                       args.test, args.size, args.seed))


if __name__ == "__main__":
    main()
