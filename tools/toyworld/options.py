"""The yacs options every ToyWorld run adds to the real scripts (read from configs/datasets/toyworld.opts)."""
from __future__ import annotations

import os

from tools.pretrain_clip import ensure_pretrained

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OPTIONS_FILE = os.path.join(ROOT, "configs", "datasets", "toyworld.opts")


def read_options(path: str = OPTIONS_FILE) -> list[str]:
    """KEY VALUE pairs of an options file (one pair per line; '#' starts a comment), flattened."""
    options = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 2:
                raise ValueError(f"{path}:{number}: expected 'KEY VALUE' (a value without spaces), got {line!r}")
            options += parts
    return options


def toyworld_options(weights: str | None = None) -> list[str]:
    """The options of configs/datasets/toyworld.opts plus the toy CLIP (the shipped one unless $DPC_TOYWORLD_CLIP)."""
    return read_options() + ["MODEL.BACKBONE.PATH", weights or ensure_pretrained()]
