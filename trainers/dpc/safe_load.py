"""Read torch files without running code from them: every checkpoint and CLIP state dict we read goes through
``load``.

``torch.load(weights_only=True)`` rebuilds tensors and plain containers (dict, list, tuple, str, numbers) and
refuses every other pickled global, so a file carrying a payload (a pickled call that would run on load) is
refused before any of it runs. What this project writes holds nothing else. Files of older versions and of
upstream Dassl / CoOp-family code also hold a few harmless objects, allowed by name and rebuilt from their
attributes, never by calling anything the file names:
- torch's and Dassl's optimizer and learning-rate scheduler objects (Dassl's warm-up schedulers pickled their
  successor scheduler, optimizer included; an optimizer keeps its state in a ``defaultdict(dict)``);
- NumPy arrays and scalars (the NumPy RNG state of older checkpoints).
"""
from __future__ import annotations

import collections
import pickle
import sys

import numpy as np
import torch

from .errors import UnsafeFileError

# Dassl's modules defining optimizers and schedulers (allowed when Dassl is loaded: its checkpoints then are)
_DASSL_OPTIM_MODULES = ("dassl.optim.lr_scheduler", "dassl.optim.radam")


def _numpy_globals() -> list:
    """NumPy arrays and scalars, under the names NumPy 1 and 2 pickle them with (NumPy 2 moved ``numpy.core``)."""
    multiarray = (getattr(np, "_core", None) or np.core).multiarray
    rebuilders = [(getattr(multiarray, name), f"numpy.{core}.multiarray.{name}")
                  for name in ("_reconstruct", "scalar") for core in ("core", "_core")]
    dtypes = [type(np.dtype(kind)) for kind in (np.uint32, np.int64, np.float32, np.float64)]
    return [np.ndarray, np.dtype, *dtypes, *rebuilders]


def _optimizer_classes() -> list:
    schedulers = torch.optim.lr_scheduler
    modules = [torch.optim, schedulers] + [sys.modules[name] for name in _DASSL_OPTIM_MODULES if name in sys.modules]
    bases = (torch.optim.Optimizer, schedulers.LRScheduler)
    return [obj for module in modules for obj in vars(module).values()
            if isinstance(obj, type) and issubclass(obj, bases)]


def allowed_globals() -> list:
    """What ``load`` allows besides torch's defaults (see the module docstring)."""
    return _numpy_globals() + _optimizer_classes() + [collections.defaultdict, dict]


def _name(entry) -> str:
    return entry[1] if isinstance(entry, tuple) else f"{entry.__module__}.{entry.__qualname__}"


def refused_globals(path) -> list:
    """The pickled globals of ``path`` that ``load`` refuses ([] when none, or when the file cannot be scanned)."""
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # damaged or not a zip archive: the loader's own error says so
        return []
    allowed = {_name(entry) for entry in allowed_globals()}
    return [name for name in found if name not in allowed]


def load(path, map_location="cpu"):
    """``torch.load(path, weights_only=True)`` with the allowances above. A file holding any other pickled object
    raises ``UnsafeFileError`` naming it; nothing of it has run. Other failures (a damaged file) propagate."""
    try:
        with torch.serialization.safe_globals(allowed_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        refused = refused_globals(path)
        if not refused:
            raise
    shown = ", ".join(refused[:3]) + (", ..." if len(refused) > 3 else "")
    raise UnsafeFileError(
        f"{path} holds pickled Python objects that no checkpoint or weight file holds ({shown}): refused, nothing in "
        "it was run (loading it would have run code of the file's choosing). Use the file as its source published "
        "it, or retrain: checkpoints written by this project or by Dassl / CoOp-family code load as they are")
