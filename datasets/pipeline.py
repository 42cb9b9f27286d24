"""From a dataset folder to the train/val/test lists a trainer sees (no Dassl import).

    split files -> few-shot subset (cached) -> base/new class subset
"""

import os
from dataclasses import dataclass
from typing import Optional

from . import readers
from .fewshot import fewshot_cache_path, load_or_create_fewshot
from .readers import DatasetNotFoundError
from .records import as_records, load_cache, save_pickle
from .subsample import check_subsample, relabel, select_labels


@dataclass
class Splits:
    dataset_dir: str
    train: list  # few-shot train split (the whole split if NUM_SHOTS < 1)
    val: Optional[list]  # None when the dataset has no val split
    test: list
    full_train: list  # whole train split, after class subsampling
    base_classnames: list  # names of the base classes (label order), whatever the subsample
    all_train: list  # whole train split of every class, labels as in the dataset (PromptKD's transductive set)
    all_classnames: list  # names of every class, in label order (base classes first)


def _require(path, what, spec, isdir=True):
    ok = os.path.isdir(path) if isdir else os.path.isfile(path)
    if not ok:
        raise DatasetNotFoundError(path, what, spec.layout, spec.name, spec.fix)
    return path


def _load_split_json(spec, dataset_dir, image_dir, store):
    split_path = _require(os.path.join(dataset_dir, spec.split_file), "split file", spec, False)
    return readers.read_split_json(split_path, image_dir)


def _load_fgvc(spec, dataset_dir, image_dir, store):
    def path(name):
        return _require(os.path.join(dataset_dir, name), "annotation file", spec, False)

    variants = readers.read_lines(path("variants.txt"))
    cname2label = {name: label for label, name in enumerate(variants)}
    return tuple(
        readers.read_fgvc_split(path(f"images_variant_{split}.txt"), image_dir, cname2label)
        for split in ("train", "val", "test")
    )


def _classnames(spec, dataset_dir):
    path = _require(os.path.join(dataset_dir, "classnames.txt"), "class-name file", spec, False)
    return readers.read_classnames(path), path


def _load_imagenet(spec, dataset_dir, image_dir, store):
    # read the folders once and keep them in preprocessed.pkl, as upstream does
    cache = os.path.join(dataset_dir, "preprocessed.pkl")
    data = load_cache(cache)
    if data is not None:
        return as_records(data["train"]), None, as_records(data["test"])
    classnames, source = _classnames(spec, dataset_dir)
    train_dir = _require(os.path.join(image_dir, "train"), "image folder", spec)
    val_dir = _require(os.path.join(image_dir, "val"), "image folder", spec)
    folders = readers.list_nohidden(train_dir, dirs_only=True)
    train = readers.read_imagenet_split(train_dir, classnames, folders, source)
    test = readers.read_imagenet_split(val_dir, classnames, folders, source)  # val = test, as usual
    store = (lambda r: r) if store is None else store
    save_pickle({"train": [store(r) for r in train], "test": [store(r) for r in test]}, cache)
    return train, None, test


def _load_imagenetv2(spec, dataset_dir, image_dir, store):
    data = readers.read_imagenetv2(image_dir, _classnames(spec, dataset_dir)[0])
    return data, None, data


def _load_class_folders(spec, dataset_dir, image_dir, store):
    classnames, source = _classnames(spec, dataset_dir)
    data = readers.read_class_folders(image_dir, classnames, source=source)
    return data, None, data


_LOADERS = {
    "split_json": _load_split_json,
    "fgvc": _load_fgvc,
    "imagenet": _load_imagenet,
    "imagenetv2": _load_imagenetv2,
    "class_folders": _load_class_folders,
}


def load_raw_splits(spec, dataset_dir, store=None):
    """(train, val, test) lists of Record as the dataset's files define them."""
    image_dir = os.path.join(dataset_dir, spec.image_dir) if spec.image_dir else dataset_dir
    _require(image_dir, "image folder", spec)
    for name in spec.required:
        _require(os.path.join(dataset_dir, name), "image folder", spec)
    try:
        return _LOADERS[spec.kind](spec, dataset_dir, image_dir, store)
    except DatasetNotFoundError:
        raise
    except FileNotFoundError as err:  # e.g. a class folder listed in classnames.txt
        raise DatasetNotFoundError(err.filename, "file or folder", spec.layout, spec.name, spec.fix) from err


def _dataset_dir(spec, root):
    root = os.path.abspath(os.path.expanduser(root))
    _require(root, "dataset root (DATASET.ROOT / --root)", spec)
    return _require(os.path.join(root, spec.folder), "dataset folder", spec)


def count_classes(spec, root, subsample="all"):
    """How many classes a run on `subsample` (all|base|new) of the dataset under `root` trains on (reads the
    split files only: no few-shot sampling, no image)."""
    train = load_raw_splits(spec, _dataset_dir(spec, root))[0]
    labels = select_labels(train, check_subsample(subsample))
    return len(labels) if labels is not None else len({item.label for item in train})


def build_splits(spec, root, num_shots=-1, seed=-1, subsample="all", store=None, log=print):
    """Load a dataset `spec` under `root` (DATASET.ROOT) and apply the CoOp protocol.

    num_shots >= 1: train keeps num_shots per class and val min(num_shots, 4),
    cached in <dataset_dir>/split_fewshot/shot_{num_shots}-seed_{seed}.pkl
    (evaluation-only datasets are never subsampled). `subsample` in all|base|new
    then keeps the base or new half of the classes, relabelled from 0.
    `store` converts records before they are pickled (see fewshot.py).
    """
    check_subsample(subsample)
    dataset_dir = _dataset_dir(spec, root)
    train, val, test = load_raw_splits(spec, dataset_dir, store)
    full_train = all_train = train
    if num_shots >= 1 and not spec.test_only:
        cache = fewshot_cache_path(dataset_dir, num_shots, seed)
        train, val = load_or_create_fewshot(cache, train, val, num_shots, seed, store, log)

    labels = select_labels(full_train, subsample)
    names = {item.label: item.classname for item in full_train}
    base_classnames = [names[label] for label in select_labels(full_train, "base")]
    all_classnames = [names[label] for label in sorted(names)]
    new_train = relabel(train, labels)
    full_train = new_train if full_train is train else relabel(full_train, labels)
    new_test = new_train if test is train else relabel(test, labels)
    val = relabel(val, labels)
    if spec.val_is_test:
        val = new_test
    return Splits(dataset_dir, new_train, val, new_test, full_train, base_classnames, all_train, all_classnames)
