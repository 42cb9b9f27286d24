"""Run-directory files without torch: atomic writes and where Dassl keeps checkpoints.

Kept apart from ``checkpoint`` so that deciding whether a run must happen at all (``trainers/run_dir.py``)
does not import torch.
"""
from __future__ import annotations

import os
import tempfile


def atomic_write(path: str, write, mode: str = "wb") -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, fsync it, then rename it into place.

    Readers see the old file or the new one, never a half-written one. The file gets the usual
    permissions (0666 minus the umask), not mkstemp's 0600.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


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
