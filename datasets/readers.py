"""Readers for the on-disk formats of the CoOp datasets (no Dassl import).

Each reader returns lists of `Record` with absolute image paths. A damaged or
malformed annotation file is an `AnnotationFileError` naming the file (and the
line or entry); `check_image_files` checks the images of a split up front.
"""

import json
import os
from concurrent.futures import ThreadPoolExecutor

from trainers.dpc.errors import ConfigError, UserError
from trainers.dpc.image_files import IMAGE_HINT, ImageFileError, decoder_warning, image_problem

from .records import Record

DOWNLOAD_HINT = (
    "see the CoOp DATASETS.md instructions "
    "(https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md)"
)


class DatasetNotFoundError(UserError, FileNotFoundError):
    """A dataset folder or file is missing. The message names the path, shows
    the expected layout and says where the download instructions are (or the
    spec's own `fix`, e.g. the command that writes a synthetic dataset)."""

    def __init__(self, path, what="path", layout="", name="", fix=""):
        lines = [f"{what} not found: {path}"]
        if layout:
            title = f"Expected layout of {name}" if name else "Expected layout"
            lines.append(f"{title} (under DATASET.ROOT):")
            lines.extend("    " + line for line in layout.splitlines())
        lines.append(fix or f"To download and arrange the data, {DOWNLOAD_HINT}.")
        self.message = "\n".join(lines)
        super().__init__(self.message)
        self.filename = path

    def __str__(self):  # OSError would print "[Errno None] None: <filename>"
        return self.message


class AnnotationFileError(UserError, ValueError):
    """A split, list or class-name file is damaged or not in the expected format."""

    def __init__(self, path, problem):
        super().__init__(
            f"{path}: {problem}. The file is truncated, damaged or not the dataset's original: "
            f"replace it with the original ({DOWNLOAD_HINT})."
        )
        self.path = path


def listed(problems, shown=5):
    """'  path (why)' lines of the first `shown` (path, why) pairs, and how many more there are."""
    lines = [f"  {path} ({why})" for path, why in problems[:shown]]
    if len(problems) > shown:
        lines.append(f"  ... and {len(problems) - shown} more")
    return "\n".join(lines)


def check_image_files(paths, decoded=(), workers=None, shown=5):
    """Check that every image file can be read (`image_problem`: header, end marker);
    raise `ImageFileError` naming the bad files. The files in `decoded` are also decoded
    in full (`decoder_warning`: JPEG data damaged inside, which PIL decodes to noise without
    a word); returns their [(path, decoder's warning)]. Threads (default: one per CPU core,
    at most 8) overlap the file reads; about 0.1 ms per cached file, plus one strict decode
    per file in `decoded` (bench/image_check.py)."""
    paths = list(dict.fromkeys(paths))
    decoded = set(decoded)
    workers = workers or min(8, os.cpu_count() or 1)

    def check(path):
        problem = image_problem(path)
        return problem, (decoder_warning(path) if problem is None and path in decoded else None)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        found = list(zip(paths, pool.map(check, paths)))
    problems = [(path, problem) for path, (problem, _) in found if problem]
    if problems:
        raise ImageFileError(f"{len(problems)} of {len(paths)} image files cannot be read:\n"
                             + listed(problems, shown) + "\n" + IMAGE_HINT)
    return [(path, warning) for path, (_, warning) in found if warning]


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
    try:
        with open(split_path, "r", encoding="utf-8") as f:
            split = json.load(f)
    except json.JSONDecodeError as err:
        raise AnnotationFileError(
            split_path, f"not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})"
        ) from None
    except UnicodeDecodeError:
        raise AnnotationFileError(split_path, "not a text (JSON) file") from None
    keys = ("train", "val", "test")
    if not isinstance(split, dict) or not all(isinstance(split.get(k), list) for k in keys):
        raise AnnotationFileError(split_path, 'expected {"train": [...], "val": [...], "test": [...]}')

    def convert(key):
        records = []
        for i, entry in enumerate(split[key]):
            try:
                relpath, label, classname = entry
                if not isinstance(relpath, str) or not isinstance(classname, str):
                    raise TypeError
                records.append(Record(os.path.join(image_root, relpath), int(label), classname))
            except (TypeError, ValueError):
                raise AnnotationFileError(
                    split_path, f'entry {i} of "{key}" is {entry!r}, not [image path, label, class name]'
                ) from None
        return records

    return tuple(convert(key) for key in keys)


def _numbered_lines(path):
    """(line number, stripped line) for the non-empty lines of a text file."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            lines = f.readlines()
    except UnicodeDecodeError:
        raise AnnotationFileError(path, "not a text file") from None
    return [(n, line.strip()) for n, line in enumerate(lines, 1) if line.strip()]


def read_lines(path):
    """Stripped non-empty lines of a text file."""
    return [line for _, line in _numbered_lines(path)]


def read_fgvc_split(list_path, image_dir, cname2label):
    """FGVC-Aircraft list file: one '<image id> <variant name>' per line; the
    variant name may contain spaces and must be one of `cname2label` (variants.txt)."""
    items = []
    for n, line in _numbered_lines(list_path):
        image_id, _, classname = line.partition(" ")
        if classname not in cname2label:
            raise AnnotationFileError(
                list_path, f"line {n} ({line!r}) is not '<image id> <variant>' with a variant of variants.txt"
            )
        impath = os.path.join(image_dir, image_id + ".jpg")
        items.append(Record(impath, cname2label[classname], classname))
    return items


def read_classnames(path):
    """ImageNet classnames.txt: '<wnid> <class name>' per line -> ordered
    dict wnid -> class name (file order)."""
    classnames = {}
    for n, line in _numbered_lines(path):
        folder, _, name = line.partition(" ")
        if not name.strip():
            raise AnnotationFileError(path, f"line {n} ({line!r}) is not '<wnid> <class name>'")
        classnames[folder] = name
    return classnames


def _folder_images(folder, label, classname):
    return [
        Record(os.path.join(folder, name), label, classname)
        for name in list_nohidden(folder)
    ]


def _classname(classnames, folder, source):
    if folder not in classnames:
        raise AnnotationFileError(source, f"class folder {folder!r} has no line in it")
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
            raise ConfigError(f"{os.path.join(split_dir, folder)} is not a class of the train split")
        name = _classname(classnames, folder, source)
        items.extend(_folder_images(os.path.join(split_dir, folder), position[folder], name))
    return items


def read_imagenetv2(image_dir, classnames):
    """ImageNetV2 uses folders named 0..N-1, the positions in classnames.txt."""
    items = []
    for label, name in enumerate(classnames.values()):
        items.extend(_folder_images(os.path.join(image_dir, str(label)), label, name))
    return items
