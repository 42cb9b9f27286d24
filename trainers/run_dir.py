"""A run directory belongs to one process at a time and records what determines its result.

- ``exclusive(directory)``: an ``flock`` on ``<dir>/.lock``. The kernel releases it when the process
  ends in any way (a crash or SIGKILL leaves nothing stuck); a second process fails at once and is
  told who holds the directory. Once held, the temporary files a killed holder left are removed.
- ``fingerprint(cfg, ...)``: the resolved config after every override, minus where outputs and logs
  go, plus the content hash of the checkpoints the run starts from (DPC's stage 1, an evaluated
  model) and what else produced it (``provenance``: the CLIP weights' content, the dataset's split and
  few-shot files, the code behaviour version). Written to ``<dir>/fingerprint.json`` when a run starts.
- ``previous_run(directory, fingerprint, defaults)``: what the directory already holds. A finished run is
  reused only with an identical fingerprint, an interrupted one is resumed only with an identical
  fingerprint; anything else is refused with the keys that differ (``force``: started over instead). A
  config key added to the code after the run was recorded counts as unchanged at its default value
  (``defaults``: ``flat_settings`` of the default config), since a new key's default keeps the behaviour
  the run had. A run recorded before code behaviour versions existed is "version unknown": reused when
  finished with the same options (the caller prints a notice), never resumed.
"""
from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import socket
import sys
import time

from .dpc.errors import UserError
from .dpc.files import atomic_write_text, checkpoint_path, remove_leftovers
from .plugins import PLUGIN_NODES, split_trainer_name
from .provenance import PROVENANCE_KEYS, VERSION_KEY, provenance, sha256_of
from .version import BEHAVIOUR_VERSION

FINGERPRINT_FILE = "fingerprint.json"
DONE_FILE = "done.json"
# keys that change where results go or how much is printed, not the results themselves
NOT_RESULTS = ("OUTPUT_DIR", "RESUME", "TRAIN.PRINT_FREQ", "VERBOSE")


class RunDirError(UserError, RuntimeError):
    """The run directory cannot be used as asked (held by another process, or other settings)."""


# set by tools/sweep.py: a run directory held by another process (another sweep) is waited for, not refused
WAIT_ENV = "DPC_WAIT_FOR_LOCK"


def waits_for_lock() -> bool:
    return os.environ.get(WAIT_ENV, "") not in ("", "0")


@contextlib.contextmanager
def exclusive(directory: str):
    """Hold ``directory`` for this process; if another has it, fail at once naming the holder (or wait for it,
    with DPC_WAIT_FOR_LOCK=1)."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, ".lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        with open(path) as f:
            holder = f.read().strip() or "another process"
        if waits_for_lock():
            print(f"{directory} is in use by {holder}; waiting for it ({WAIT_ENV}=1)", flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        else:
            os.close(fd)
            raise RunDirError(f"{directory} is in use by {holder}. One run per directory: wait for it to "
                              "finish, or give this run another --output-dir (OUTPUT_ROOT for the scripts).") from None
    try:
        for folder in [directory] + glob.glob(os.path.join(directory, "*", "")):  # ours now: no one else writes here
            remove_leftovers(folder)
        os.ftruncate(fd, 0)
        with contextlib.suppress(OSError):  # who holds it, for the message above (a full disk: left out)
            os.write(fd, (f"process {os.getpid()} on {socket.gethostname()} since "
                          f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(sys.argv)}\n").encode())
        yield
    finally:
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _flatten(node, prefix: str = "") -> dict:
    out = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        elif name not in NOT_RESULTS:
            out[name] = list(value) if isinstance(value, tuple) else value
    return out


def unread_sections(cfg) -> list:
    """Config prefixes a trainer never reads: other backbones' ``TRAINER.<KEY>`` nodes, and the plug-ins' nodes
    (``DPC``, ``DEPT``) but its own (the scripts pass the same options to both DPC stages).

    Follows the CoOp family's convention that trainer ``X`` (and ``DPC_X``, ``DePT_X``) reads
    ``TRAINER.<X upper-cased>``; a trainer outside it keeps every key, so nothing that might matter is left out.
    """
    plugin, backbone = split_trainer_name(cfg.TRAINER.NAME)
    own = backbone.upper()
    if own not in cfg.TRAINER:
        return []
    ignored = [f"TRAINER.{key}." for key in cfg.TRAINER if key not in (own, "NAME")]
    ignored += [f"{node}." for node in PLUGIN_NODES.values() if node != plugin]
    return ignored


def _saved_models(directory: str, epoch) -> dict:
    """``{model name: sha256}`` of the checkpoints a run would load from ``directory`` at ``epoch``."""
    found = {}
    for folder in sorted(glob.glob(os.path.join(directory, "*", ""))):
        name = os.path.basename(os.path.dirname(folder))
        path = checkpoint_path(directory, name, epoch)
        if os.path.isfile(path):
            found[name] = sha256_of(path)
    return found


def flat_settings(cfg) -> dict:
    """The config as a flat ``{dotted key: value}`` dict, without the keys in ``NOT_RESULTS``."""
    return _flatten(json.loads(json.dumps(cfg, default=str)))


def fingerprint(cfg, eval_only: bool = False, model_dir: str = "", load_epoch=None) -> dict:
    """Everything that determines a run's result, as a flat ``{key: value}`` dict."""
    ignored = tuple(unread_sections(cfg))
    values = {key: value for key, value in flat_settings(cfg).items() if not key.startswith(ignored)}
    values["eval_only"] = bool(eval_only)
    stage1 = cfg.get("DPC", {}).get("STAGE1_DIR", "") if "DPC." not in ignored else ""
    if stage1:
        values["DPC.STAGE1_DIR"] = os.path.abspath(stage1)
        values["stage-1 checkpoints"] = _saved_models(stage1, cfg.DPC.STAGE1_EPOCH)
    teacher = cfg.TRAINER.get("PROMPTKD", {}).get("TEACHER_DIR", "") if "TRAINER.PROMPTKD." not in ignored else ""
    if teacher:  # PromptKD's student depends on its teacher's file, wherever it is
        values["TRAINER.PROMPTKD.TEACHER_DIR"] = os.path.abspath(teacher)
        values["teacher checkpoints"] = _saved_models(teacher, cfg.TRAINER.PROMPTKD.get("TEACHER_EPOCH", -1))
    if eval_only:
        values["model_dir"] = os.path.abspath(model_dir) if model_dir else ""
        values["load_epoch"] = load_epoch
        values["evaluated checkpoints"] = _saved_models(model_dir, load_epoch) if model_dir else {}
    values.update(provenance(cfg, reads_teacher=split_trainer_name(cfg.TRAINER.NAME)[1] == "PromptKD"))
    return values


def differences(old: dict, new: dict, defaults: dict | None = None) -> list:
    """What changed from ``old`` to ``new``; a key ``old`` lacks is unchanged at its value in ``defaults``."""
    defaults = defaults or {}
    keys = sorted(set(old) | set(new))
    return [f"{key}: {old.get(key, '<absent>')!r} -> {new.get(key, '<absent>')!r}" for key in keys
            if old.get(key, "<absent>") != new.get(key, "<absent>")
            and not (key not in old and key in defaults and new.get(key) == defaults[key])]


def _has_checkpoint(directory: str) -> bool:
    return bool(glob.glob(os.path.join(directory, "*", "checkpoint")))


# what previous_run finds: nothing to reuse, a run to reuse or resume, a run of unknown code version to reuse
# (with a notice), or (force) a run to start over
NEW, FINISHED, INTERRUPTED, UNVERSIONED, REPLACE = "new", "finished", "interrupted", "unversioned", "replace"


def previous_run(directory: str, current: dict, defaults: dict | None = None, force: bool = False) -> str:
    """NEW, FINISHED or INTERRUPTED (same settings), UNVERSIONED (finished before versions were recorded, same
    options) or, with ``force``, REPLACE for a run that would be refused; raises RunDirError otherwise."""
    check_output_dir(directory)
    recorded_path = os.path.join(directory, FINGERPRINT_FILE)
    finished = os.path.isfile(os.path.join(directory, DONE_FILE))
    started = _has_checkpoint(directory)
    if not (finished or started):
        return NEW  # nothing to reuse (a run that failed before its first checkpoint starts over)
    what = "a finished run" if finished else "an interrupted run"
    how = ("FORCE=1 (train.py --force) to start it over, OUTPUT_ROOT (--output-dir) for a new place, or delete "
           "the directory")
    if not os.path.isfile(recorded_path):
        if force:
            return REPLACE
        raise RunDirError(f"{directory} holds {what} without {FINGERPRINT_FILE} (made by an older version), so "
                          f"its settings cannot be compared: {how}.")
    with open(recorded_path) as f:
        recorded = json.load(f)
    unversioned = VERSION_KEY not in recorded
    if unversioned:  # made before provenance was recorded: compare the options only
        current = {k: v for k, v in current.items() if k not in PROVENANCE_KEYS}
    changed = differences(recorded, current, defaults)
    if unversioned and not finished:
        changed.append(f"{VERSION_KEY}: unknown (made before versions were recorded) -> {BEHAVIOUR_VERSION}; an "
                       "interrupted run is only resumed by the code that started it")
    if changed:
        if force:
            return REPLACE
        shown = "\n  ".join(changed[:20]) + ("\n  ..." if len(changed) > 20 else "")
        raise RunDirError(f"{directory} holds {what} with other settings:\n  {shown}\nUse {how}.")
    if unversioned:
        return REPLACE if force else UNVERSIONED
    return FINISHED if finished else INTERRUPTED


def check_output_dir(directory: str) -> None:
    """Refuse an output directory that is, or lies under, an existing file."""
    path = os.path.abspath(directory)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        where = "is" if path == os.path.abspath(directory) else f"lies under {path}, which is"
        raise RunDirError(f"the output directory {directory} {where} a file, not a directory: give another "
                          "--output-dir (OUTPUT_ROOT for the scripts) or move the file away")


def unversioned_notice(directory: str) -> str:
    return (f"notice: reusing the finished run in {directory}, made before code behaviour versions were recorded "
            f"(version unknown, now {BEHAVIOUR_VERSION}); FORCE=1 redoes it")


def start_over(directory: str) -> None:
    """Remove what makes ``directory`` a run (markers, fingerprint, checkpoints), keeping its logs (FORCE)."""
    import shutil

    for name in (DONE_FILE, FINGERPRINT_FILE):
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(directory, name))
    for pointer in glob.glob(os.path.join(directory, "*", "checkpoint")):
        shutil.rmtree(os.path.dirname(pointer))
    for folder in glob.glob(os.path.join(directory, "*", "")):
        if glob.glob(os.path.join(folder, "model*.pth.tar*")):
            shutil.rmtree(folder)


def record(directory: str, current: dict) -> None:
    atomic_write_text(os.path.join(directory, FINGERPRINT_FILE), json.dumps(current, indent=2, sort_keys=True) + "\n")


def forget_finished(directory: str) -> None:
    """Drop the finish marker before an evaluation is redone (FORCE)."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(directory, DONE_FILE))
