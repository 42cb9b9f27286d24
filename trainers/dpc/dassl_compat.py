"""Keep the pinned Dassl commit (c61a1b5) working with current PyTorch, resumable, and its file errors useful.

Small patches applied once on import:
- Dassl's warm-up schedulers pass ``verbose`` to ``LRScheduler.__init__``, which PyTorch >= 2.7 no
  longer accepts (TypeError when OPTIM.WARMUP_EPOCH > 0).
- The warm-up scheduler's state dict pickles its successor scheduler whole, optimizer included. After
  a resume the successor steps that stale optimizer copy and the live learning rate stops following
  the schedule. Its state now nests the successor's own state dict, restored into the live successor
  (checkpoints written the old way still load).
- Dassl's checkpoint loader reads through ``safe_load`` (``weights_only=True``; Dassl's pickled scheduler
  objects are allowed by name, so its own older checkpoints still load), so a file carrying a pickled
  payload is refused unread; a damaged one is an error naming the file and how to resume from the epoch
  before. The loader is replaced under every name it is reachable by: ``dassl.utils`` and
  ``dassl.utils.torchtools`` (for later imports) and any module that already did
  ``from dassl.utils import load_checkpoint`` (Dassl's own trainer, upstream trainers imported before
  this patch).
- The data loader's ``read_image`` (``DatasetWrapper.__getitem__``) raises errors naming the image
  file (PIL's "image file is truncated" names none).
"""
import inspect
import os
import sys

import torch
from dassl.data import data_manager
from dassl.optim import lr_scheduler as dassl_lr_scheduler
import dassl.utils
from dassl.utils import torchtools

from . import safe_load
from .errors import UnsafeFileError
from .files import error_summary
from .image_files import open_image

_applied = False


def apply() -> None:
    global _applied
    if _applied:
        return
    _applied = True

    base = dassl_lr_scheduler._BaseWarmupScheduler
    if "verbose" not in inspect.signature(torch.optim.lr_scheduler.LRScheduler.__init__).parameters:
        def __init__(self, optimizer, successor, warmup_epoch, last_epoch=-1, verbose=False):
            self.successor = successor
            self.warmup_epoch = warmup_epoch
            torch.optim.lr_scheduler.LRScheduler.__init__(self, optimizer, last_epoch)

        base.__init__ = __init__

    def state_dict(self):
        state = {key: value for key, value in self.__dict__.items() if key not in ("optimizer", "successor")}
        state["successor"] = self.successor.state_dict()
        return state

    def load_state_dict(self, state):
        state = dict(state)
        successor = state.pop("successor")
        self.__dict__.update(state)
        self.successor.load_state_dict(successor if isinstance(successor, dict) else successor.state_dict())

    base.state_dict = state_dict
    base.load_state_dict = load_state_dict

    def load_checkpoint(fpath):
        if fpath is None:
            raise ValueError("File path is None")
        map_location = None if torch.cuda.is_available() else "cpu"
        try:
            return safe_load.load(fpath, map_location=map_location)
        except (FileNotFoundError, UnsafeFileError):
            raise
        except Exception as err:  # truncated zip, bad pickle, ...
            folder = os.path.dirname(os.path.abspath(fpath))
            raise ValueError(
                f"cannot resume from checkpoint {fpath} ({error_summary(err)}): "
                "the file is truncated or damaged. Delete it and write the previous epoch's file name "
                f"(model.pth.tar-<epoch>) into {os.path.join(folder, 'checkpoint')} to resume from there, "
                "or start again with a fresh --output-dir.") from err

    replace_everywhere(torchtools.load_checkpoint, load_checkpoint)
    dassl.utils.load_checkpoint = torchtools.load_checkpoint = load_checkpoint
    data_manager.read_image = open_image  # what DatasetWrapper reads every image with


def replace_everywhere(original, replacement) -> None:
    """Rebind every module-level name bound to ``original`` (``from x import f`` copies) to ``replacement``."""
    for module in list(sys.modules.values()):
        names = getattr(module, "__dict__", None)
        if not isinstance(names, dict):
            continue
        for name, value in list(names.items()):
            if value is original:
                setattr(module, name, replacement)
