"""The plug-in methods and how their trainers are named (no torch: deciding whether a run must happen uses it).

A plug-in trainer is ``<prefix><Backbone>`` (``DPC_MaPLe``, ``DePT_CoOp``): it reads the backbone's
``cfg.TRAINER.<BACKBONE>`` node and its own top-level config node (``cfg.DPC``, ``cfg.DEPT``).
"""
from __future__ import annotations

from typing import Optional, Tuple

# trainer-name prefix -> the plug-in's config node
PLUGIN_NODES = {"DPC_": "DPC", "DePT_": "DEPT"}


def split_trainer_name(name: str) -> Tuple[Optional[str], str]:
    """(the plug-in's config node or None, the backbone trainer's name): ``DPC_MaPLe`` -> ("DPC", "MaPLe")."""
    for prefix, node in PLUGIN_NODES.items():
        if name.startswith(prefix):
            return node, name[len(prefix):]
    return None, name


def backbone_class_name(cls: type, mixin: type) -> str:
    """Name of the backbone trainer a plug-in trainer class extends: the class after ``mixin`` in its MRO."""
    mro = cls.__mro__
    return mro[mro.index(mixin) + 1].__name__
