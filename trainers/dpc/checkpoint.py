"""Atomic checkpoints in Dassl's layout: <dir>/<model name>/model.pth.tar-<epoch> plus a 'checkpoint' file."""
from __future__ import annotations

import os
import random
import shutil

import numpy as np
import torch

from . import safe_load
from .errors import ConfigError, MissingFileError, UnsafeFileError
from .files import atomic_write, atomic_write_text, error_summary, remove_leftovers, resume_path


def atomic_save(obj, path: str) -> None:
    """torch.save, atomically."""
    atomic_write(path, lambda f: torch.save(obj, f))


def save_registered_models(trainer, epoch: int, directory: str, is_best: bool = False, val_result=None,
                           model_name: str = "", extra: dict | None = None) -> None:
    """What Dassl's ``TrainerBase.save_model`` writes, saved atomically, with ``extra`` metadata and the
    state an exact resume needs (``training_state``)."""
    extra = dict(extra or {}, resume=training_state(trainer))
    for name in trainer.get_model_names():
        optim, sched = trainer._optims[name], trainer._scheds[name]
        state = {
            "state_dict": trainer._models[name].state_dict(),
            "epoch": epoch + 1,
            "optimizer": optim.state_dict() if optim is not None else None,
            "scheduler": sched.state_dict() if sched is not None else None,
            "val_result": val_result,
            **extra,
        }
        folder = os.path.join(directory, name)
        file = model_name or f"model.pth.tar-{epoch + 1}"
        atomic_save(state, os.path.join(folder, file))
        if not model_name:  # the resume pointer follows the numbered checkpoints only
            atomic_write_text(os.path.join(folder, "checkpoint"), file + "\n")
        if is_best:
            atomic_save(state, os.path.join(folder, "model-best.pth.tar"))


def load_checkpoint(path: str) -> dict:
    """A checkpoint written by ``save_registered_models`` (or Dassl), read without running code (``safe_load``); a
    damaged file is an error naming it."""
    def damaged(problem: str) -> ValueError:
        return ValueError(
            f"cannot read checkpoint {path} ({problem}): the file is truncated or damaged (a copy or run cut "
            "short, a full disk?). Re-run the training that writes it (with a fresh --output-dir), or point to "
            "another checkpoint (--model-dir / --load-epoch; DPC.STAGE1_DIR / DPC.STAGE1_EPOCH).")

    try:
        ckpt = safe_load.load(path)
    except (FileNotFoundError, UnsafeFileError):
        raise
    except Exception as err:  # truncated zip ("failed finding central directory"), bad pickle, ...
        raise damaged(error_summary(err)) from err
    if not isinstance(ckpt, dict):
        raise damaged(f"it holds a {type(ckpt).__name__}, not a checkpoint dict")
    return ckpt


def read_saved_model(directory: str, name: str, epoch: int | None):
    """(path, checkpoint) of a model saved for evaluation: epoch ``epoch``, else Dassl's model-best."""
    path = os.path.join(directory, name, f"model.pth.tar-{epoch}" if epoch else "model-best.pth.tar")
    if not os.path.isfile(path):
        raise MissingFileError(f"No model at {path}: check --model-dir (a training output dir) and "
                                "--load-epoch (its last epoch, e.g. OPTIM.MAX_EPOCH)")
    return path, load_checkpoint(path)


def load_state_checked(module, state: dict, path: str, keys=None, hint: str = "") -> None:
    """Load ``keys`` of ``module`` (default: its whole state dict) from ``state``, after checking them.

    Other entries of ``state`` are ignored (e.g. class-dependent token buffers an upstream trainer
    saved, which must not overwrite the ones built for the current classes). A missing key or a
    shape mismatch is an error naming the file and ``hint``.
    """
    own = module.state_dict()
    keys = list(own) if keys is None else list(keys)
    missing = [key for key in keys if key not in state]
    if missing:
        raise ConfigError(f"{path} lacks {', '.join(map(repr, missing[:5]))}"
                         f"{' ...' if len(missing) > 5 else ''}. {hint}".rstrip())
    for key in keys:
        if torch.is_tensor(own[key]) and own[key].shape != state[key].shape:
            raise ConfigError(f"{path}: tensor {key!r} has shape {tuple(state[key].shape)} in the checkpoint but "
                             f"{tuple(own[key].shape)} in this model. {hint}".rstrip())
    module.load_state_dict({key: state[key] for key in keys}, strict=False)


# ---------------------------------------------------------------- exact resume
def training_state(trainer) -> dict:
    """What resuming needs besides weights, optimiser and scheduler to continue bit for bit: the RNG
    states (Python, NumPy, torch CPU and CUDA; they also fix the next epoch's data order and
    augmentations), the AMP grad scaler and Dassl's best validation result. Plain types and tensors only."""
    scaler = getattr(trainer, "scaler", None)
    return {"rng": rng_states(), "scaler": scaler.state_dict() if scaler is not None else None,
            "best_result": getattr(trainer, "best_result", None)}


def rng_states() -> dict:
    """The global RNG states (Python, NumPy, torch CPU and CUDA) as tensors and plain types."""
    kind, key, *rest = np.random.get_state()
    rng = {"python": random.getstate(), "numpy": (kind, torch.from_numpy(key.astype(np.int64)), *rest),
           "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def set_rng_states(rng: dict) -> None:
    """Restore what ``rng_states`` returned (older checkpoints hold the NumPy key as an ndarray)."""
    random.setstate(rng["python"])
    kind, key, *rest = rng["numpy"]
    np.random.set_state((kind, np.asarray(key, dtype=np.int64).astype(np.uint32), *rest))
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def discard_incomplete(directory: str, names) -> None:
    """Before Dassl resumes from ``directory``: without a complete checkpoint of every model (a run killed, or out
    of disk space, during its first save leaves a model folder without Dassl's 'checkpoint' pointer) training
    starts from scratch, so the model folders are removed; temporary files of killed saves go in any case."""
    folders = [os.path.join(directory, name) for name in names]
    for folder in folders:
        remove_leftovers(folder)
    if all(resume_path(directory, name) for name in names) or not any(map(os.path.isdir, folders)):
        return
    for folder in filter(os.path.isdir, folders):
        shutil.rmtree(folder)
    print(f"No complete checkpoint in {directory} (a run cut short during its first save): training from scratch")


def restore_training_state(trainer, directory: str) -> dict | None:
    """Restore ``training_state`` from the checkpoint Dassl resumes from; returns that checkpoint."""
    path = resume_path(directory, trainer.get_model_names()[0])
    if path is None:
        return None
    ckpt = load_checkpoint(path)
    state = ckpt.get("resume")
    if state is None:
        print(f"Warning: {path} holds no RNG state (written by an older version): the resumed run continues "
              "but will not be bit-identical to an uninterrupted one")
        return ckpt
    set_rng_states(state["rng"])
    scaler = getattr(trainer, "scaler", None)
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    if state.get("best_result") is not None:
        trainer.best_result = state["best_result"]
    return ckpt


# ---------------------------------------------------------------- classes of a checkpoint
def _preview(names) -> str:
    names = list(names)
    return ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")


def expected_training_classes(dataset, subsample: str):
    """(classes a checkpoint evaluated on this data must have been trained on, their description).

    Base-to-new: a model evaluated on the new classes was trained on the same dataset's base classes
    (``dataset.base_classnames``), one evaluated on the base classes on those classes. ``all`` (cross-
    dataset and domain transfer) puts no condition: (None, "").
    """
    if subsample == "base":
        return list(dataset.classnames), "the base classes evaluated here"
    if subsample == "new":
        base = getattr(dataset, "base_classnames", None)
        return (list(base) if base is not None else None), "the base classes of the dataset evaluated here"
    return None, ""


def check_evaluated_classes(path: str, ckpt: dict, dataset, subsample: str) -> None:
    """``check_classes`` for a checkpoint evaluated on ``dataset`` (``DATASET.SUBSAMPLE_CLASSES`` ``subsample``)."""
    expected, what = expected_training_classes(dataset, subsample)
    if expected is not None:
        check_classes(path, ckpt, expected, what)


def check_classes(path: str, ckpt: dict, expected, what: str) -> None:
    """Refuse a checkpoint trained on other classes than ``expected``.

    A checkpoint that does not record its class names (e.g. one written by upstream CoOp code) is
    checked by its class count when its class-dependent buffers reveal it, with a warning that says
    what could not be checked.
    """
    expected = list(expected)
    recorded = ckpt.get("classnames")
    if recorded is not None:
        if list(recorded) != expected:
            raise ConfigError(f"{path} was trained on other classes ({len(recorded)}: {_preview(recorded)}) than "
                             f"{what} ({len(expected)}: {_preview(expected)}): check --model-dir / DPC.STAGE1_DIR, "
                             "the dataset config, DATASET.SUBSAMPLE_CLASSES and the seed.")
        return
    prefix = ckpt.get("state_dict", ckpt).get("token_prefix")
    count = prefix.shape[0] if torch.is_tensor(prefix) else None
    if count is not None and count != len(expected):
        raise ConfigError(f"{path} was trained on other classes ({count} of them, by its token buffers) than "
                         f"{what} ({len(expected)}).")
    known = f"its class count ({count}) and " if count is not None else ""
    print(f"Warning: {path} does not record the classes it was trained on; only {known}its prompt shapes "
          f"could be checked against {what}.")
