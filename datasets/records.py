"""Plain data records and pickle helpers (no Dassl import).

A `Record` carries the same attributes as Dassl's `Datum` (impath, label,
classname, domain), so code written against one works with the other.

Caches (few-shot splits, ImageNet's preprocessed.pkl) stay in upstream CoOp's
format, a pickle of lists of Dassl `Datum`, so that both codes read each
other's caches. They are read by `SafeUnpickler`, which creates no object but
plain containers, strings, numbers and stored records (their fields only):
a cache carrying a payload is refused and nothing in it runs.
"""

import os
import pickle
import warnings
from dataclasses import dataclass

from trainers.dpc.errors import UnsafeFileError
from trainers.dpc.files import atomic_write


@dataclass(frozen=True)
class Record:
    """One labelled image: absolute path, 0-based label, readable class name."""

    impath: str
    label: int
    classname: str = ""
    domain: int = 0


def as_record(item):
    """Convert a Record, a Dassl Datum (or any object with the same attributes)
    or an (impath, label, classname[, domain]) sequence into a Record."""
    if isinstance(item, Record):
        return item
    if isinstance(item, (tuple, list)):
        return Record(str(item[0]), int(item[1]), *item[2:])
    return Record(
        impath=item.impath,
        label=int(item.label),
        classname=item.classname,
        domain=getattr(item, "domain", 0),
    )


def as_records(items):
    """`as_record` over a list; None stays None."""
    if items is None:
        return None
    return [as_record(item) for item in items]


def save_pickle(obj, path):
    """Pickle `obj` to `path` atomically (readers never see a half-written file)."""
    atomic_write(path, lambda f: pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL))


class StoredRecord:
    """A record as a cache holds it: the fields unpickling set, read as Datum's properties (`impath` from its
    `_impath`) or as Record's fields. No method of it runs on load."""

    def __getattr__(self, name):
        try:
            return self.__dict__["_" + name]
        except KeyError:
            raise AttributeError(name) from None


# the record classes caches hold: Dassl's Datum (ours and upstream CoOp's) and our Record (pure tests)
RECORD_CLASSES = {("dassl.data.datasets.base_dataset", "Datum"), ("datasets.records", "Record")}


class SafeUnpickler(pickle.Unpickler):
    """Unpickles plain containers and stored records only; any other global refuses the file."""

    def __init__(self, file, path):
        super().__init__(file)
        self.path = path

    def find_class(self, module, name):
        if (module, name) in RECORD_CLASSES:
            return StoredRecord
        raise UnsafeFileError(
            f"{self.path} holds pickled Python objects that no dataset cache holds ({module}.{name}): refused, "
            "nothing in it was run (loading it would have run code of the file's choosing). Delete it: the split "
            "is sampled again from the dataset (a fixed seed draws the same split)")


def load_pickle(path):
    """What a cache at `path` holds, read by `SafeUnpickler`."""
    with open(path, "rb") as f:
        return SafeUnpickler(f, path).load()


def load_cache(path):
    """What is pickled at `path`, or None when the file is missing or unreadable (truncated,
    damaged); the caller then rebuilds it. An unreadable file is named in a warning; one carrying
    other objects than a cache holds raises `UnsafeFileError`."""
    if not os.path.exists(path):
        return None
    try:
        return load_pickle(path)
    except UnsafeFileError:
        raise
    except (EOFError, pickle.UnpicklingError, AttributeError, ValueError) as err:
        warnings.warn(f"ignoring unreadable cache {path} ({type(err).__name__}: {err}); rebuilding it")
        return None
