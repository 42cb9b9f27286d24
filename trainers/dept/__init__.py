"""DePT (Decoupled Prompt Tuning, Zhang et al., CVPR 2024) as a plug-in for Dassl prompt-learning trainers.

Pure parts (no Dassl): ``head`` (the Channel Adjusted Transfer head, DePT's loss and fused prediction),
``config``. ``DePTMixin`` (in ``mixin``, needs Dassl) turns a backbone trainer into its DePT version.
"""
from .config import add_dept_config

__all__ = ["add_dept_config", "DePTMixin"]


def __getattr__(name):
    if name == "DePTMixin":  # imported lazily so the pure parts work without Dassl
        from .mixin import DePTMixin
        return DePTMixin
    raise AttributeError(name)
