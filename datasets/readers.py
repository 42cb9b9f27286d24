"""Readers for the on-disk formats of the CoOp datasets (no Dassl import).

Each reader returns lists of `Record` with absolute image paths.
"""

import json
import os

from .records import Record

DOWNLOAD_HINT = (
    "see the CoOp DATASETS.md instructions "
    "(https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md)"
)


class DatasetNotFoundError(FileNotFoundError):
    """A dataset folder or file is missing. The message names the path, shows
    the expected layout and says where the download instructions are."""

    def __init__(self, path, what="path", layout="", name=""):
        lines = [f"{what} not found: {path}"]
        if layout:
            title = f"Expected layout of {name}" if name else "Expected layout"
            lines.append(f"{title} (under DATASET.ROOT):")
            lines.extend("    " + line for line in layout.splitlines())
        lines.append(f"To download and arrange the data, {DOWNLOAD_HINT}.")
        self.message = "\n".join(lines)
        super().__init__(self.message)
        self.filename = path

    def __str__(self):  # OSError would print "[Errno None] None: <filename>"
        return self.message


def list_nohidden(path, dirs_only=False, ignore=()):
    """Sorted entries of `path`, skipping names that start with '.' and `ignore`."""
    names = []
    for entry in os.scandir(path):
        if entry.name.startswith(".") or entry.name in ignore:
            continue
        if dirs_only and not entry.is_dir():
            continue
        names.append(entry.name)
    return sorted(names)


def read_split_json(split_path, image_root):
    """Read a CoOp split file {"train"|"val"|"test": [[relpath, label, classname], ...]};
    paths are relative to `image_root`. Returns (train, val, test)."""
    with open(split_path, "r") as f:
        split = json.load(f)

    def convert(entries):
        return [
            Record(os.path.join(image_root, relpath), int(label), classname)
            for relpath, label, classname in entries
        ]

    return convert(split["train"]), convert(split["val"]), convert(split["test"])


def read_lines(path):
    """Stripped non-empty lines of a text file."""
    with open(path, "r") as f:
        return [line.strip() for line in f if line.strip()]


def read_fgvc_split(list_path, image_dir, cname2label):
    """FGVC-Aircraft list file: one '<image id> <variant name>' per line; the
    variant name may contain spaces."""
    items = []
    for line in read_lines(list_path):
        image_id, _, classname = line.partition(" ")
        impath = os.path.join(image_dir, image_id + ".jpg")
        items.append(Record(impath, cname2label[classname], classname))
    return items


def read_classnames(path):
    """ImageNet classnames.txt: '<wnid> <class name>' per line -> ordered
    dict wnid -> class name (file order)."""
    classnames = {}
    for line in read_lines(path):
        folder, _, name = line.partition(" ")
        classnames[folder] = name
    return classnames


def _folder_images(folder, label, classname):
    return [
        Record(os.path.join(folder, name), label, classname)
        for name in list_nohidden(folder)
    ]


def _classname(classnames, folder, source):
    if folder not in classnames:
        raise ValueError(f"class folder {folder!r} has no line in {source}")
    return classnames[folder]


def read_class_folders(image_dir, classnames, folders=None, source="classnames.txt"):
    """Images in `<image_dir>/<folder>/*` (files sorted by name). Labels follow
    `folders` (default: the sorted sub-folders, which skips README files);
    class names come from `classnames` (wnid -> name)."""
    if folders is None:
        folders = list_nohidden(image_dir, dirs_only=True)
    items = []
    for label, folder in enumerate(folders):
        name = _classname(classnames, folder, source)
        items.extend(_folder_images(os.path.join(image_dir, folder), label, name))
    return items


def read_imagenet_split(split_dir, classnames, folders, source="classnames.txt"):
    """ImageNet train/ or val/ folder; labels are the positions in `folders`
    (the sorted train folders), so train and val agree."""
    position = {folder: label for label, folder in enumerate(folders)}
    items = []
    for folder in list_nohidden(split_dir, dirs_only=True):
        if folder not in position:
            raise ValueError(f"{os.path.join(split_dir, folder)} is not a class of the train split")
        name = _classname(classnames, folder, source)
        items.extend(_folder_images(os.path.join(split_dir, folder), position[folder], name))
    return items


def read_imagenetv2(image_dir, classnames):
    """ImageNetV2 uses folders named 0..N-1, the positions in classnames.txt."""
    items = []
    for label, name in enumerate(classnames.values()):
        items.extend(_folder_images(os.path.join(image_dir, str(label)), label, name))
    return items
