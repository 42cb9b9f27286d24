"""Options that follow from the machine and from a custom CLIP file, set before a run's settings are recorded.

- ``DATALOADER.NUM_WORKERS`` (Dassl's train and test loaders) is capped at the CPUs this process may use: the
  configs ask for 8, which on a 2-core machine only makes PyTorch warn.
- ``MODEL.BACKBONE.NAME custom`` (a CLIP of any shape, e.g. a tiny test model): the configs' ``INPUT.SIZE``
  and prompt depths are written for ViT-B/16, so with ``MODEL.BACKBONE.FIT_CUSTOM True`` (the default)
  ``INPUT.SIZE`` becomes the file's image size and each prompt depth of the trainer at most the layers the
  file has. OpenAI's named models are never changed: a mismatch there stays an error.

``fit(cfg)`` changes the (unfrozen) config and returns one ``note:`` line per change; ``train.py`` prints
them in the run's log. The file's shapes are cached by its digest, so a reused run does not import torch.
"""
from __future__ import annotations

import os

from .plugins import split_trainer_name
from .provenance import cached_sha256, read_cache, write_cache

# trainer config node -> its prompt-depth keys, each limited by the vision layers, the text layers or both
DEPTH_LIMITS = {
    "MAPLE": {"PROMPT_DEPTH": ("vision", "text")},
    "IVLP": {"PROMPT_DEPTH_VISION": ("vision",), "PROMPT_DEPTH_TEXT": ("text",)},
    "PROMPTSRC": {"PROMPT_DEPTH_VISION": ("vision",), "PROMPT_DEPTH_TEXT": ("text",)},
    "PROMPTKD": {"PROMPT_DEPTH_VISION": ("vision",)},
}


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def clip_shape(path: str) -> dict:
    """``{"image_size", "vision_layers", "text_layers", "kind"}`` of a CLIP weight file, cached by content."""
    digest = cached_sha256(path)
    known = read_cache("clip-shapes.json")
    if digest not in known:
        from .clip_loader import architecture_of, read_state_dict  # torch: only for a file not seen before

        arch = architecture_of(read_state_dict(path), path)
        layers = arch.vision_layers if arch.kind == "ViT" else 0  # ResNets take no vision prompts
        known[digest] = {"image_size": arch.image_size, "vision_layers": layers, "text_layers": arch.text_layers,
                         "kind": arch.kind}
        write_cache("clip-shapes.json", known)
    return known[digest]


def _own_node(cfg) -> str:
    """The TRAINER node the run's trainer reads (DPC_MaPLe, DePT_MaPLe -> MAPLE)."""
    return split_trainer_name(cfg.TRAINER.NAME)[1].upper()


def fit(cfg) -> list[str]:
    notes = []
    cpus = usable_cpus()
    workers = cfg.DATALOADER.NUM_WORKERS
    if workers > cpus:  # Dassl's train and test loaders both read it
        cfg.DATALOADER.NUM_WORKERS = cpus
        notes.append(f"note: DATALOADER.NUM_WORKERS {workers} -> {cpus} (the CPUs this process may use)")
    backbone = cfg.MODEL.BACKBONE
    if backbone.NAME != "custom" or not backbone.FIT_CUSTOM or not os.path.isfile(
            os.path.expanduser(backbone.PATH or "")):
        return notes  # a missing file: the loader's error names it
    shape = clip_shape(os.path.expanduser(backbone.PATH))
    size = shape["image_size"]
    changed = []
    if tuple(cfg.INPUT.SIZE) != (size, size):
        changed.append(f"INPUT.SIZE {tuple(cfg.INPUT.SIZE)} -> ({size}, {size})")
        cfg.INPUT.SIZE = (size, size)
    node = _own_node(cfg)
    for key, limited_by in DEPTH_LIMITS.get(node, {}).items():
        most = min(shape[f"{side}_layers"] for side in limited_by)
        depth = cfg.TRAINER[node][key]
        if depth > most:
            changed.append(f"TRAINER.{node}.{key} {depth} -> {most}")
            cfg.TRAINER[node][key] = most
    if changed:
        notes.append(f"note: fitted to the custom CLIP {backbone.PATH} ({shape['kind']}, {size} px, "
                     f"{shape['vision_layers']} vision and {shape['text_layers']} text layers): {'; '.join(changed)} "
                     "(MODEL.BACKBONE.FIT_CUSTOM False keeps the options as given)")
    return notes
