"""The ``DEPT.*`` config keys (yacs). Call ``add_dept_config(cfg)`` from your ``extend_cfg``.

Defaults are DePT's code (github Koorye/DePT, train.py ``extend_cfg``); docs/dept.md says where each comes from.
"""
from yacs.config import CfgNode as CN

from ..dpc.errors import ConfigError

# base-class prediction: logits (DePT's code: (1 - WEIGHT) * prompt logits + WEIGHT * head logits) | probabilities
# (the DePT paper's Eq.: the same mix of the two softmax outputs) | head (the CAT head alone, its code's
# TEST_TIME_FUSION False)
FUSIONS = ("logits", "probabilities", "head")


def add_dept_config(cfg) -> None:
    cfg.DEPT = CN()
    cfg.DEPT.WEIGHT = 0.7  # lambda: the head's share of the loss and of the fused base-class prediction
    cfg.DEPT.HEAD_LR_MULT = 6.5  # the head's learning rate is OPTIM.LR times this (the prompts keep OPTIM.LR)
    cfg.DEPT.FUSION = "logits"


def check_dept_config(d) -> None:
    if not 0.0 <= d.WEIGHT <= 1.0:
        raise ConfigError(f"DEPT.WEIGHT must be in [0, 1], got {d.WEIGHT}")
    if d.HEAD_LR_MULT <= 0:
        raise ConfigError(f"DEPT.HEAD_LR_MULT must be > 0, got {d.HEAD_LR_MULT}")
    if d.FUSION not in FUSIONS:
        raise ConfigError(f"DEPT.FUSION must be one of {', '.join(FUSIONS)}, got {d.FUSION!r}")
