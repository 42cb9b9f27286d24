"""Accuracy of a finished training run at each of its saved epochs, on the base and the new classes.

    python tools/epoch_curve.py RUN_DIR [RUN_DIR ...] [--splits base new] [--root DATA_ROOT]

A run of ``scripts/dpc/*_train.sh`` keeps one checkpoint per epoch (``TRAIN.CHECKPOINT_FREQ 1``). This tool
rebuilds the run's trainer from its ``run_info.json`` for each split's classes (Dassl's
``DATASET.SUBSAMPLE_CLASSES``), loads every checkpoint in turn and tests it, in one process. Epoch 0 is
the trainer as built before training (for CoOp with ``CTX_INIT "a photo of a"``: zero-shot CLIP). That is
the backbone's base-new trade-off over training. The curve is stored in ``RUN_DIR/epoch_curve.json``, and
it is reused while the run's ``done.json`` is unchanged.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from trainers.dpc.files import atomic_write_text  # noqa: E402

CURVE_FILE = "epoch_curve.json"
SPLITS = ("base", "new")


def saved_epochs(run_dir: str) -> list[int]:
    """Epochs with a numbered checkpoint in every model folder of ``run_dir``."""
    found = None
    for name in sorted(os.listdir(run_dir)):
        folder = os.path.join(run_dir, name)
        if os.path.isfile(os.path.join(folder, "checkpoint")):
            epochs = {int(m.group(1)) for f in os.listdir(folder) if (m := re.fullmatch(r"model\.pth\.tar-(\d+)", f))}
            found = epochs if found is None else found & epochs
    if not found:
        raise FileNotFoundError(f"no saved epochs in {run_dir}: expected <model>/model.pth.tar-<epoch> files "
                                "from a finished training run (scripts/dpc/*_train.sh keeps one per epoch)")
    return sorted(found)


def run_config(run_dir: str, subsample: str | None, output_dir: str, root: str = ""):
    """The run's config (from its run_info.json), for testing on ``subsample`` classes (None: the run's own)
    into ``output_dir``."""
    from dassl.config import get_cfg_default
    from yacs.config import CfgNode

    from trainers.config import extend_cfg

    info_path = os.path.join(run_dir, "run_info.json")
    if not os.path.isfile(info_path):
        raise FileNotFoundError(f"{info_path} is missing: {run_dir} is not a run directory written by train.py")
    with open(info_path) as f:
        saved = json.load(f)["config"]
    cfg = get_cfg_default()
    extend_cfg(cfg)
    cfg.merge_from_other_cfg(CfgNode(saved))
    if subsample is not None:
        cfg.DATASET.SUBSAMPLE_CLASSES = subsample
    if root:
        cfg.DATASET.ROOT = root
    cfg.OUTPUT_DIR = output_dir
    cfg.freeze()
    return cfg


def build_as_trained(cfg):
    """The trainer train.py builds for ``cfg``, seeded as train.py seeds it: its prompts are the run's initial ones."""
    import train
    from dassl.utils import set_random_seed

    if cfg.SEED >= 0:
        set_random_seed(cfg.SEED)
    return train.build(cfg)


CACHE_BYTES = 2 << 30  # test images kept in memory between epochs (beyond: read again every epoch)


class TestSet:
    """Dassl's ``trainer.test()`` for one trainer over many epochs, reading the test images once.

    The test transform is deterministic, so the parsed batches of the first evaluation serve every later one
    (when they fit in CACHE_BYTES). When the model's image features do not depend on its trainable tensors (CoOp,
    KgCoOp: prompts on the text side only), they are computed once too, and each epoch only encodes the text;
    the first batch checks that this gives the model's own logits exactly, else every batch runs the model.
    Trainers that override ``test`` (DPC's modes and sweeps) always run their own."""

    def __init__(self, trainer):
        from dassl.engine.trainer import SimpleTrainer

        self.trainer = trainer
        self.own_test = type(trainer).test is not SimpleTrainer.test
        self.batches = None  # [(images or image features, labels)]
        self.features = False

    def accuracy(self) -> float:
        import torch

        trainer = self.trainer
        if self.own_test:
            return float(trainer.test())
        if self.batches is None:
            self.batches = self._read()
            if self.batches is None:  # too large to keep
                self.own_test = True
                return float(trainer.test())
        trainer.set_model_mode("eval")
        trainer.evaluator.reset()
        model = trainer.model
        with torch.no_grad():
            text = model.encode_text() if self.features else None
            for inputs, labels in self.batches:
                output = model.logits(inputs, text) if self.features else trainer.model_inference(inputs)
                trainer.evaluator.process(output, labels)
        return float(list(trainer.evaluator.evaluate().values())[0])

    def _read(self):
        import torch

        batches, size = [], 0
        for batch in self.trainer.test_loader:
            inputs, labels = self.trainer.parse_batch_test(batch)
            size += inputs.numel() * inputs.element_size()
            if size > CACHE_BYTES:
                return None
            batches.append((inputs, labels))
        model = self.trainer.model
        if all(hasattr(model, name) for name in ("encode_image", "encode_text", "logits")) and batches:
            self.trainer.set_model_mode("eval")
            with torch.enable_grad():
                first = model.encode_image(batches[0][0])
            if not first.requires_grad:  # no trainable tensor on the image side
                with torch.no_grad():
                    same = torch.equal(model.logits(first, model.encode_text()),
                                       self.trainer.model_inference(batches[0][0]))
                if same:
                    with torch.no_grad():
                        batches = [(model.encode_image(inputs), labels) for inputs, labels in batches]
                    self.features = True
        return batches


def split_curve(run_dir: str, subsample: str, epochs: list[int], root: str = "", progress=None) -> dict:
    """{epoch: accuracy (%)} on the ``subsample`` classes' test split; epoch 0 is the untrained trainer."""
    quiet, curve = io.StringIO(), {}
    with tempfile.TemporaryDirectory(prefix="epoch_curve-") as scratch:  # tests only: nothing is kept there
        cfg = run_config(run_dir, subsample, scratch, root)
        with contextlib.redirect_stdout(quiet):
            trainer = build_as_trained(cfg)
        test_set = TestSet(trainer)
        for epoch in [0] + epochs:
            with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):  # Dassl's test progress bar too
                if epoch:
                    trainer.load_model(run_dir, epoch=epoch)
                curve[epoch] = round(test_set.accuracy(), 2)
            if progress:
                progress(subsample, epoch)
    return curve


def _stamp(run_dir: str) -> str:
    path = os.path.join(run_dir, "done.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{run_dir} has no done.json: the training run is not finished (run or resume it first)")
    with open(path) as f:
        return json.load(f).get("finished", "")


def epoch_curve(run_dir: str, splits=SPLITS, root: str = "", verbose: bool = True) -> dict:
    """{split: {epoch: accuracy}} for a finished run, cached in ``RUN_DIR/epoch_curve.json``."""
    stamp = _stamp(run_dir)
    path = os.path.join(run_dir, CURVE_FILE)
    cached = {}
    if os.path.isfile(path):
        with open(path) as f:
            stored = json.load(f)
        if stored.get("run_finished") == stamp:
            cached = {split: {int(e): a for e, a in curve.items()} for split, curve in stored["curves"].items()}
    missing = [split for split in splits if split not in cached]
    if missing:
        epochs = saved_epochs(run_dir)
        total, done, started = len(missing) * (len(epochs) + 1), [0], time.monotonic()

        def progress(split, epoch):
            done[0] += 1
            if verbose:
                left = (time.monotonic() - started) / done[0] * (total - done[0])
                print(f"\r  epoch curve {done[0]}/{total} ({split}, epoch {epoch}), ETA {left:4.0f}s",
                      end="\n" if done[0] == total else "", file=sys.stderr, flush=True)

        for split in missing:
            cached[split] = split_curve(run_dir, split, epochs, root, progress)
        atomic_write_text(path, json.dumps({"run_finished": stamp, "curves": cached}, indent=2) + "\n")
    return {split: cached[split] for split in splits}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="finished training run directories")
    parser.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS))
    parser.add_argument("--root", default="", help="dataset root, when it moved since the run (DATASET.ROOT)")
    args = parser.parse_args(argv)
    for run in args.runs:
        curves = epoch_curve(run, args.splits, args.root)
        print(run)
        for split, curve in curves.items():
            print(f"  {split:>4}: " + "  ".join(f"{epoch}:{acc:.1f}" for epoch, acc in curve.items()))


if __name__ == "__main__":
    from trainers.console import exit_on_user_error, verbose_requested

    sys.exit(exit_on_user_error(main, None, verbose_requested()))
