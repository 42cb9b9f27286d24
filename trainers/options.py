"""Option values checked without torch, in one place: a trainer's ``check_cfg`` runs them when it is built, and
``train.py --check-only`` runs them (with ``check_run``) for every stage of a script before its first step.

Trainer ``X`` and its DPC version ``DPC_X`` read ``TRAINER.<X upper-cased>`` (the CoOp family's convention, also
``run_dir.unread_sections``'); a trainer outside it gets the dataset checks only.
"""
from __future__ import annotations

import math
from typing import List

from datasets import count_classes, get_spec
from datasets.subsample import check_subsample

from .dpc.config import check_dpc_options, check_topk
from .dpc.errors import ConfigError
from .templates import DATASET_TEMPLATES

PRECISIONS = ("fp16", "fp32", "amp")
IMAGE_WARNINGS = ("error", "warn")
PROMPTKD_TRAIN_IMAGES = ("all-classes", "train-x")
PROMPTKD_SCORERS = ("teacher", "student")


def check_dataset_options(cfg) -> None:
    d = cfg.DATASET
    if d.NUM_SHOTS < 0:
        raise ConfigError(f"DATASET.NUM_SHOTS must be >= 0, got {d.NUM_SHOTS} (N: N training images per class; "
                          "0: every training image, which the scripts name shots_all: SHOTS=all)")
    check_subsample(d.get("SUBSAMPLE_CLASSES", "all"))
    if d.get("IMAGE_WARNINGS", "error") not in IMAGE_WARNINGS:
        raise ConfigError(f"DATASET.IMAGE_WARNINGS must be one of {IMAGE_WARNINGS}, got {d.IMAGE_WARNINGS!r}")


def gaussian_epoch_weights(max_epoch: int, mean: float, std: float) -> List[float]:
    """PromptSRC's GPA weights of epochs 1..max_epoch (index e - 1 for epoch e), normalised to sum to 1."""
    if max_epoch < 1:
        raise ConfigError(f"GPA needs at least one epoch, got OPTIM.MAX_EPOCH={max_epoch}")
    if std <= 0:
        raise ConfigError(f"GPA_STD must be > 0, got {std}")
    density = [math.exp(-0.5 * ((epoch - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))
               for epoch in range(1, max_epoch + 1)]
    total = sum(density)
    if total == 0.0:
        raise ConfigError(f"GPA_MEAN={mean} (GPA_STD={std}) gives zero weight to every epoch 1..{max_epoch}")
    return [d / total for d in density]


def kgcoop_template(cfg) -> str:
    """TRAINER.KGCOOP.TEMPLATE, or (empty) the dataset's CoOp template, as upstream."""
    if cfg.TRAINER.KGCOOP.TEMPLATE:
        return cfg.TRAINER.KGCOOP.TEMPLATE
    name = cfg.DATASET.NAME
    if name not in DATASET_TEMPLATES:
        raise ConfigError(f"KgCoOp has no hand-written prompt for dataset {name!r} (known: "
                         f"{', '.join(sorted(DATASET_TEMPLATES))}): set TRAINER.KGCOOP.TEMPLATE, "
                         "e.g. \"a photo of a {}.\"")
    return DATASET_TEMPLATES[name]


def _check_kgcoop(cfg) -> None:
    if cfg.TRAINER.KGCOOP.W < 0:
        raise ConfigError(f"TRAINER.KGCOOP.W must be >= 0, got {cfg.TRAINER.KGCOOP.W}")
    kgcoop_template(cfg)


def _check_promptsrc(cfg) -> None:
    c = cfg.TRAINER.PROMPTSRC
    gaussian_epoch_weights(cfg.OPTIM.MAX_EPOCH, c.GPA_MEAN, c.GPA_STD)


def _check_promptkd(cfg) -> None:
    c = cfg.TRAINER.PROMPTKD
    if c.TRAIN_IMAGES not in PROMPTKD_TRAIN_IMAGES:
        raise ConfigError(f"TRAINER.PROMPTKD.TRAIN_IMAGES must be one of {PROMPTKD_TRAIN_IMAGES}, got {c.TRAIN_IMAGES!r}")
    if c.DPC_SCORER not in PROMPTKD_SCORERS:
        raise ConfigError(f"TRAINER.PROMPTKD.DPC_SCORER must be one of {PROMPTKD_SCORERS}, got {c.DPC_SCORER!r}")
    if c.TEMPERATURE <= 0 or c.KD_WEIGHT < 0:
        raise ConfigError(f"TRAINER.PROMPTKD.TEMPERATURE must be > 0 and KD_WEIGHT >= 0, got {c.TEMPERATURE} "
                         f"and {c.KD_WEIGHT}")


_BACKBONE_CHECKS = {"KGCOOP": _check_kgcoop, "PROMPTSRC": _check_promptsrc, "PROMPTKD": _check_promptkd}


def check_trainer_options(cfg_key: str, cfg) -> None:
    """The options of the trainer that reads ``TRAINER.<cfg_key>``."""
    prec = cfg.TRAINER[cfg_key].PREC
    if prec not in PRECISIONS:
        raise ConfigError(f"TRAINER.{cfg_key}.PREC must be fp16, fp32 or amp, got {prec!r}")
    check = _BACKBONE_CHECKS.get(cfg_key)
    if check is not None:
        check(cfg)


def check_options(cfg) -> None:
    """Every option of a run's resolved config that can be checked before it reads data."""
    check_dataset_options(cfg)
    name = cfg.TRAINER.NAME
    key = name.removeprefix("DPC_").upper()
    if key in cfg.TRAINER and "PREC" in cfg.TRAINER[key]:
        check_trainer_options(key, cfg)
    if name.startswith("DPC_"):
        check_dpc_options(cfg)


def check_run(cfg, eval_only: bool = False) -> None:
    """``check_options``, and what depends on the dataset's classes: K of a DPC training run against its base
    classes (the split files are read, no image)."""
    check_options(cfg)
    if not cfg.TRAINER.NAME.startswith("DPC_") or eval_only:
        return
    try:
        spec = get_spec(cfg.DATASET.NAME)
    except KeyError:  # a dataset of the user's own: the sampler checks K when the run starts
        return
    check_topk(cfg.DPC.TOPK, count_classes(spec, cfg.DATASET.ROOT, cfg.DATASET.get("SUBSAMPLE_CLASSES", "all")))
