"""Run-directory files without torch: atomic writes and where Dassl keeps checkpoints.

Kept apart from ``checkpoint`` so that deciding whether a run must happen at all (``trainers/run_dir.py``)
does not import torch.
"""
from __future__ import annotations

import errno
import os
import tempfile

from .errors import DiskFullError

TEMPORARY_PREFIX = ".tmp-"  # atomic_write's file before its rename: a leftover of a killed process


def atomic_write(path: str, write, mode: str = "wb") -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, fsync it, then rename it into place.

    Readers see the old file or the new one, never a half-written one. The file gets the usual
    permissions (0666 minus the umask), not mkstemp's 0600. A failed write removes its temporary file
    (a killed process leaves it: ``remove_leftovers``); on a full device it raises ``DiskFullError``
    naming ``path``.
    """
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=TEMPORARY_PREFIX)
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
        if out_of_space(err):  # torch's zip writer reports it as "unexpected pos", the OSError in its context
            raise disk_full(path, "the previous file, if any, is unchanged") from err
        raise


def disk_full(path: str, note: str = "") -> DiskFullError:
    """The error for ``path`` not written on a full device (or quota)."""
    return DiskFullError(f"cannot write {path}: no space left on the device{f' ({note})' if note else ''}. Free some "
                         "space and run the same command again: a run resumes from its last complete checkpoint")


def exception_chain(err: BaseException):
    """``err``, then the exceptions it was raised from or while handling."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def out_of_space(err: BaseException) -> bool:
    """Whether ``err`` or an exception in its chain is a full device or quota."""
    return any(isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT) for e in exception_chain(err))


def remove_leftovers(folder: str) -> list:
    """Remove the temporary files ``atomic_write`` left in ``folder`` when its process was killed (call it only
    while no other process writes there); returns their names."""
    try:
        names = [name for name in os.listdir(folder) if name.startswith(TEMPORARY_PREFIX)]
    except (FileNotFoundError, NotADirectoryError):
        return []
    for name in names:
        try:
            os.remove(os.path.join(folder, name))
        except FileNotFoundError:
            pass
    return names


def atomic_write_text(path: str, text: str) -> None:
    atomic_write(path, lambda f: f.write(text), mode="w")


def checkpoint_path(directory: str, name: str, epoch: int | None) -> str:
    """Path of a saved model: a given epoch, else the newest numbered one, else model-best."""
    folder = os.path.join(directory, name)
    if epoch is not None and epoch > 0:
        return os.path.join(folder, f"model.pth.tar-{epoch}")
    epochs = []
    if os.path.isdir(folder):
        for f in os.listdir(folder):
            if f.startswith("model.pth.tar-") and f.rsplit("-", 1)[1].isdigit():
                epochs.append(int(f.rsplit("-", 1)[1]))
    if epochs:
        return os.path.join(folder, f"model.pth.tar-{max(epochs)}")
    return os.path.join(folder, "model-best.pth.tar")


def resume_path(directory: str, name: str) -> str | None:
    """The checkpoint Dassl resumes ``name`` from (its 'checkpoint' pointer file), or None."""
    pointer = os.path.join(directory, name, "checkpoint")
    if not os.path.isfile(pointer):
        return None
    with open(pointer) as f:
        return os.path.join(directory, name, f.readline().strip())


def error_summary(err: BaseException) -> str:
    """``Type: first sentence`` of an exception, for messages that name a damaged file (torch and PIL
    append paragraphs of advice that would bury the file name)."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0].split('. ')[0]}" if lines else type(err).__name__
