"""Plain data records and pickle helpers (no Dassl import).

A `Record` carries the same attributes as Dassl's `Datum` (impath, label,
classname, domain), so code written against one works with the other.
"""

import os
import pickle
import warnings
from dataclasses import dataclass

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


def load_pickle(path):
    with open(path, "rb") as f:
        return pickle.load(f)


def load_cache(path):
    """What is pickled at `path`, or None when the file is missing or unreadable (truncated,
    damaged); the caller then rebuilds it. An unreadable file is named in a warning."""
    if not os.path.exists(path):
        return None
    try:
        return load_pickle(path)
    except (EOFError, pickle.UnpicklingError, AttributeError, ValueError) as err:
        warnings.warn(f"ignoring unreadable cache {path} ({type(err).__name__}: {err}); rebuilding it")
        return None
