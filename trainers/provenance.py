"""What produced a run besides its options: the CLIP weights' content, the dataset's index files and the code.

``train.py`` adds these to a run's settings fingerprint (``run_dir.fingerprint``), so that a finished run is
reused, and an interrupted one resumed, only when none of them changed:

- ``CLIP weights`` (and PromptKD's ``teacher CLIP weights``): the sha256 of the weight file. Hashing
  ViT-L/14 takes seconds, so digests are cached by path, size, mtime, ctime and inode in
  ``$DPC_CACHE/digests.json`` (default ``~/.cache/dpc``): a reused run costs a ``stat``.
- ``dataset files``: the sha256 of the dataset's split files (``DatasetSpec.index_files``) and of the
  few-shot cache of the run's shots and seed once it exists (``train.py`` records the fingerprint again
  after the dataset is built, when a first run has just written that cache).
- ``code behaviour version``: ``trainers.version.BEHAVIOUR_VERSION``.

No torch and no Dassl here (a finished run is recognised in a fraction of a second); only a named OpenAI
model without ``MODEL.BACKBONE.PATH`` imports clip to find its file.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os

from .dpc.files import atomic_write_text
from .version import BEHAVIOUR_VERSION

CACHE_ENV = "DPC_CACHE"
VERSION_KEY = "code behaviour version"
# keys that record where a run came from rather than options: absent from runs made before they existed
PROVENANCE_KEYS = (VERSION_KEY, "CLIP weights", "teacher CLIP weights", "dataset files")
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cache_dir() -> str:
    return os.path.expanduser(os.environ.get(CACHE_ENV) or os.path.join("~", ".cache", "dpc"))


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_cache(name: str) -> dict:
    """A JSON cache file of ``cache_dir()`` ({} when absent or unreadable)."""
    try:
        with open(os.path.join(cache_dir(), name), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def write_cache(name: str, known: dict) -> None:
    """Replace a JSON cache file atomically; a read-only home only costs recomputing next time."""
    try:
        atomic_write_text(os.path.join(cache_dir(), name), json.dumps(known, indent=0, sort_keys=True) + "\n")
    except OSError:
        pass


def cached_sha256(path: str) -> str:
    """sha256 of ``path``, from the digest cache while the file's path, size, times and inode are unchanged."""
    real = os.path.realpath(path)
    st = os.stat(real)
    key = f"{real}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}"
    known = read_cache("digests.json")
    if key in known:
        return known[key]
    value = sha256_of(real)
    known = {k: v for k, v in known.items() if not k.startswith(real + "|")}  # the file's older versions
    known[key] = value
    write_cache("digests.json", known)
    return value


def clip_weights(name: str, path: str) -> str:
    """``sha256:<hex>`` of the CLIP file a run loads (``name``, ``path`` as in MODEL.BACKBONE), or what is
    missing (the run itself then stops with the loader's error)."""
    if path:
        path = os.path.expanduser(path)
    else:
        from .clip_loader import CLIPWeightsNotFound, resolve_weights  # imports torch: named models only

        try:
            path = str(resolve_weights(name, "", download=False))
        except (CLIPWeightsNotFound, ValueError) as err:
            return f"<not found: {type(err).__name__}>"
    if not os.path.isfile(path):
        return f"<not found: {path}>"
    return "sha256:" + cached_sha256(path)


def _specs():
    """``datasets/specs.py`` loaded on its own: importing the ``datasets`` package imports Dassl (seconds)."""
    spec = importlib.util.spec_from_file_location("_dpc_dataset_specs", os.path.join(_ROOT, "datasets", "specs.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dataset_files(dataset_cfg, seed: int) -> dict:
    """``{file relative to the dataset folder: sha256 or '<missing>'}`` of the dataset's index files and of
    the few-shot cache of (NUM_SHOTS, seed) when it exists; {} for a dataset this project does not know."""
    specs = _specs()
    try:
        spec = specs.get_spec(dataset_cfg.NAME)
    except KeyError:
        return {}
    folder = os.path.join(os.path.expanduser(dataset_cfg.ROOT), spec.folder)
    files = list(spec.index_files)
    shots = dataset_cfg.get("NUM_SHOTS", -1)
    fewshot = specs.fewshot_file(shots, seed)
    if shots >= 1 and not spec.test_only and os.path.isfile(os.path.join(folder, fewshot)):
        files.append(fewshot)
    return {name: (cached_sha256(os.path.join(folder, name)) if os.path.isfile(os.path.join(folder, name))
                   else "<missing>") for name in files}


def provenance(cfg, reads_teacher: bool) -> dict:
    """The provenance keys of a run with ``cfg`` (see the module docstring)."""
    values = {VERSION_KEY: BEHAVIOUR_VERSION}
    backbone = cfg.get("MODEL", {}).get("BACKBONE", {})
    if backbone:
        values["CLIP weights"] = clip_weights(backbone.NAME, backbone.get("PATH", ""))
    if reads_teacher:
        kd = cfg.TRAINER.PROMPTKD
        values["teacher CLIP weights"] = clip_weights(kd.TEACHER_NAME, kd.TEACHER_PATH)
    if cfg.get("DATASET", {}).get("NAME"):
        values["dataset files"] = dataset_files(cfg.DATASET, cfg.SEED)
    return values
