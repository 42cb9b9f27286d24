"""What stage 2 may start from: a finished stage-1 run, trained on the same few-shot data (shots and seed).

Both stages train on one few-shot sample of the base classes, which ``DATASET.NUM_SHOTS`` and ``SEED`` pick. A
stage-1 run made by ``train.py`` records them in its ``fingerprint.json`` and marks its end with ``done.json``;
the classes themselves are checked against the checkpoint when stage 2 loads it (``DPCMixin``). A directory
without ``fingerprint.json`` (e.g. a run of upstream code) is used with a warning that says what went unchecked.
"""
from __future__ import annotations

import json
import os

from .dpc.errors import ConfigError
from .run_dir import DONE_FILE, FINGERPRINT_FILE


def _shots(value) -> int:
    return max(int(value), 0)  # Dassl's -1 and 0 both mean every image


def check_stage1_run(cfg) -> list:
    """Refuse an unfinished stage-1 run and, unless ``DPC.ALLOW_STAGE1_MISMATCH``, one trained with other shots or
    another seed; returns the warnings to print (what could not be checked, a mismatch that was allowed)."""
    directory = cfg.DPC.STAGE1_DIR
    recorded_path = os.path.join(directory, FINGERPRINT_FILE)
    if not os.path.isfile(recorded_path):
        return [f"Warning: the stage-1 run {directory} has no {FINGERPRINT_FILE} (not made by train.py): whether it "
                "finished, and with which DATASET.NUM_SHOTS and SEED, could not be checked"]
    if not os.path.isfile(os.path.join(directory, DONE_FILE)):
        raise ConfigError(f"the stage-1 run {directory} has not finished (no {DONE_FILE}): let it finish (run its "
                          "stage 1 again, e.g. the same command with STEPS=stage1; it resumes), or point "
                          "DPC.STAGE1_DIR at a finished run")
    with open(recorded_path) as f:
        recorded = json.load(f)
    mismatched = []
    for key, value, same in (("DATASET.NUM_SHOTS", cfg.DATASET.NUM_SHOTS, lambda a, b: _shots(a) == _shots(b)),
                             ("SEED", cfg.SEED, lambda a, b: a == b)):
        if key in recorded and not same(recorded[key], value):
            mismatched.append(f"{key} {recorded[key]} in stage 1, {value} here")
    if not mismatched:
        return []
    what = f"the stage-1 run {directory} was trained on another few-shot sample ({'; '.join(mismatched)})"
    if not cfg.DPC.ALLOW_STAGE1_MISMATCH:
        raise ConfigError(f"{what}, but both stages train on the same one: give stage 2 the shots and seed of stage 1 "
                          "(or train stage 1 with these), or set DPC.ALLOW_STAGE1_MISMATCH True if the mismatch is wanted")
    return [f"Warning: {what} (DPC.ALLOW_STAGE1_MISMATCH True)"]
