"""DPC (Dual-Prompt Collaboration, CVPR 2025) as a plug-in for Dassl prompt-learning trainers.

Pure parts (no Dassl): ``decoupling`` (Weighting-Decoupling), ``sampler`` (dynamic hard negatives),
``loss`` (Feature Filtering + symmetric InfoNCE), ``image_bank`` and ``negatives`` (negative images),
``checkpoint`` and ``safe_load`` (checkpoints written atomically, read without running code), ``config``.
``DPCMixin`` (in ``mixin``, needs Dassl) turns a backbone trainer into its DPC version.
"""
from .config import add_dpc_config

__all__ = ["add_dpc_config", "DPCMixin"]


def __getattr__(name):
    if name == "DPCMixin":  # imported lazily so the pure parts work without Dassl
        from .mixin import DPCMixin
        return DPCMixin
    raise AttributeError(name)
