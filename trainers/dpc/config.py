"""The ``DPC.*`` config keys (yacs) and their checks, without torch. Call ``add_dpc_config(cfg)`` from your
``extend_cfg``; ``check_dpc_options(cfg)`` runs when a DPC trainer is built, and for every stage before a script's
first step (``train.py --check-only``)."""
from typing import Sequence

from yacs.config import CfgNode as CN

from . import tensor_rules
from .errors import ConfigError

BASE_PROMPTS = ("parallel", "mixed")
UPDATES = ("release", "frozen")
NEG_SOURCES = ("few-shot", "full-train")
EVAL_MODES = ("auto", "base", "new", "stage1")
OBJECTIVES = ("hard-negatives", "cross-entropy")
NEGATIVE_CHOICES = ("hard", "random")
NEG_TRANSFORMS = ("auto", "train", "test")
TEXT_CLASSES = ("auto", "all", "pairs")


def add_dpc_config(cfg) -> None:
    cfg.DPC = CN()
    cfg.DPC.STAGE1_DIR = ""  # output dir of the backbone's stage-1 run (holds <model name>/model.pth.tar-<epoch>)
    cfg.DPC.STAGE1_EPOCH = -1  # epoch of the stage-1 checkpoint; <= 0 means the newest one in STAGE1_DIR
    # True: accept a stage-1 run trained with another DATASET.NUM_SHOTS or SEED (its classes must still match)
    cfg.DPC.ALLOW_STAGE1_MISMATCH = False
    cfg.DPC.TOPK = 8  # K: top-K stage-1 predictions per anchor, of which at most K-1 become negatives
    cfg.DPC.W_BASE = 0.2  # w_b in (0, 1]: the decoupling weight (1.0 for MaPLe)
    cfg.DPC.W_NEW = 1e-6  # w_n in [0, 1]: weight of the parallel prompt at new-class inference
    # hard: the stage-1 model's top-K classes (the paper) | random: K-1 base classes drawn uniformly (a control)
    cfg.DPC.NEGATIVES = "hard"
    cfg.DPC.NEG_SOURCE = "few-shot"  # where negative images come from: few-shot | full-train
    cfg.DPC.NEG_STORE_GB = 6.0  # cap of the decoded negative images kept in memory (uint8; least recently used out)
    cfg.DPC.NEG_PREFILL = True  # decode the negative pool in a background thread before it is drawn from
    # negative images through Dassl's train (random crop, flip) or test (resize, centre crop) transform;
    # auto: the trainer's `dpc_negative_transform` (the releases: PromptKD test, CoOp train; every other trainer train)
    cfg.DPC.NEG_TRANSFORM = "auto"
    cfg.DPC.UPDATE = "release"  # release: P' trained directly, gradient x 1/w_b (the published numbers) | frozen: P' = P + (M-P)/w_b
    # the duals w_b acts on (gradient x 1/w_b) | mixed with w_n for new classes: auto (the trainer's declared
    # `dpc_w_base_names` / `dpc_w_new_names`, the release's rule; every dual when it declares none) | all
    cfg.DPC.W_BASE_TENSORS = "auto"
    cfg.DPC.W_NEW_TENSORS = "auto"
    cfg.DPC.BASE_PROMPT = "parallel"  # base-class prompt: parallel (P', the release) | mixed (w_b P' + (1-w_b) P, paper-literal)
    # hard-negatives: the Dynamic Hard Negative Optimizer (L_CL over anchors + mined negatives) | cross-entropy: the
    # anchors' CE over all base classes under P', no negatives (the paper's Table 3 rows without DHNO)
    cfg.DPC.OBJECTIVE = "hard-negatives"
    cfg.DPC.PARALLEL_LOSS = True  # add the backbone's own loss terms (e.g. PromptSRC's L_SCL) to L_CL in stage 2
    # classes whose text the stage-2 step encodes: auto (the pairs' classes where L_CL and the backbone's terms need
    # no others, else all) | all | pairs (the pairs' classes everywhere: all-class terms become estimates)
    cfg.DPC.TEXT_CLASSES = "auto"
    cfg.DPC.EVAL_MODE = "auto"  # auto: new when DATASET.SUBSAMPLE_CLASSES is new, else base
    cfg.DPC.SWEEP_W_NEW = []  # evaluate once per value (e.g. [0.0, 1e-6, 0.1]) without retraining
    cfg.DPC.SWEEP_W_BASE = []  # same for w_b of the mixed base prompt


def check_weights(w_base: float, w_new: float) -> None:
    """Reject collaboration weights outside the ranges the reparameterisation allows."""
    if not 0.0 < w_base <= 1.0:
        raise ConfigError(f"DPC.W_BASE must be in (0, 1], got {w_base} "
                         "(it divides the dual prompt: 0.2 is the paper's value, 1.0 for MaPLe)")
    if not 0.0 <= w_new <= 1.0:
        raise ConfigError(f"DPC.W_NEW must be in [0, 1], got {w_new} (the paper uses 1e-6; 0 keeps the stage-1 prompt)")


def check_choice(key: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"DPC.{key} must be one of {tuple(choices)}, got {value!r}")


def check_topk(topk: int, num_classes: int) -> None:
    """K must leave the sampler something to rank: 1 <= K <= the number of base classes."""
    if not 1 <= topk <= num_classes:
        raise ConfigError(f"DPC.TOPK={topk} must be between 1 and the number of base classes ({num_classes})")


def check_dpc_options(cfg) -> None:
    """Every ``DPC.*`` value a run can be refused for before it reads data (K against the classes: ``check_topk``)."""
    d = cfg.DPC
    check_weights(d.W_BASE, d.W_NEW)
    for w in d.SWEEP_W_NEW:
        check_weights(d.W_BASE, w)
    for w in d.SWEEP_W_BASE:
        check_weights(w, d.W_NEW)
    if d.TOPK < 1:
        raise ConfigError(f"DPC.TOPK must be >= 1, got {d.TOPK}")
    for key, choices in (("NEG_SOURCE", NEG_SOURCES), ("BASE_PROMPT", BASE_PROMPTS), ("UPDATE", UPDATES),
                         ("EVAL_MODE", EVAL_MODES), ("OBJECTIVE", OBJECTIVES), ("NEGATIVES", NEGATIVE_CHOICES),
                         ("NEG_TRANSFORM", NEG_TRANSFORMS), ("W_BASE_TENSORS", tensor_rules.CHOICES),
                         ("W_NEW_TENSORS", tensor_rules.CHOICES), ("TEXT_CLASSES", TEXT_CLASSES)):
        check_choice(key, d[key], choices)
