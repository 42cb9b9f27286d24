"""Base-to-new with real Dassl, in this process: a backbone trained on the base classes of a tiny synthetic
EuroSAT with a tiny CLIP, then evaluated on the new classes (shared by the CoCoOp, KgCoOp and IVLP tests)."""
from __future__ import annotations

import os

import torch

from tests.conftest import ROOT
from tools.synthetic_data import make_dataset
from tools.tiny_clip import save_tiny_clip

SHOTS = 2
N_CLASSES = 6  # 3 base, 3 new


def make_workspace(root) -> dict:
    make_dataset(str(root / "data"), "eurosat", n_classes=N_CLASSES, train_per_class=SHOTS, val_per_class=1,
                 test_per_class=2)
    clip_file = save_tiny_clip(str(root / "tiny.pt"))
    return {"data": str(root / "data"),
            "opts": ["MODEL.BACKBONE.NAME", "custom", "MODEL.BACKBONE.PATH", clip_file, "INPUT.SIZE", "(32,32)",
                     "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TEST.BATCH_SIZE", "16", "OPTIM.MAX_EPOCH", "1",
                     "DATASET.NUM_SHOTS", str(SHOTS), "TRAIN.PRINT_FREQ", "1"]}


def build_trainer(workspace, trainer, config, out, *opts):
    """The Dassl trainer train.py would build for this command line (tiny settings, then ``opts``)."""
    import train

    args = train.parse_args([
        "--root", workspace["data"], "--seed", "1", "--trainer", trainer,
        "--dataset-config-file", os.path.join(ROOT, "configs/datasets/eurosat.yaml"),
        "--config-file", os.path.join(ROOT, config), "--output-dir", str(out), *workspace["opts"], *opts])
    return train.build(train.setup_cfg(args))


def base_to_new(workspace, trainer, config, out, *opts):
    """Train one epoch on the base classes (Dassl's ``train()``, ending with the base-class test), then load
    the checkpoint into a trainer built for the new classes and test it. Returns (base trainer, new
    trainer, saved checkpoint, new-class accuracy); ``base.initial_prompts`` holds the prompts before training."""
    from trainers.dpc.checkpoint import load_checkpoint

    base = build_trainer(workspace, trainer, config, out, "DATASET.SUBSAMPLE_CLASSES", "base", *opts)
    base.initial_prompts = {k: v.clone() for k, v in base.model.prompt_learner.state_dict().items()}
    base.train()
    ckpt = load_checkpoint(os.path.join(str(out), "prompt_learner", "model.pth.tar-1"))
    new = build_trainer(workspace, trainer, config, out / "test_new", "DATASET.SUBSAMPLE_CLASSES", "new", *opts)
    new.load_model(str(out), epoch=1)
    accuracy = new.test()
    new.close_writer()
    return base, new, ckpt, accuracy


def check_base_to_new_run(base, new, ckpt, accuracy):
    """What every backbone's run must show: prompts trained and saved alone, moved to the new classes."""
    learnable = {n[len("prompt_learner."):] for n, p in base.model.named_parameters() if p.requires_grad}
    assert set(ckpt["state_dict"]) == learnable  # prompts only: no CLIP weights, no class-dependent buffers
    assert any(not torch.equal(ckpt["state_dict"][k], v) for k, v in base.initial_prompts.items())  # trained
    assert ckpt["classnames"] == list(base.dm.dataset.classnames) and len(ckpt["classnames"]) == N_CLASSES // 2
    assert set(new.dm.dataset.classnames).isdisjoint(ckpt["classnames"])
    for name, value in new.model.prompt_learner.state_dict().items():
        assert torch.equal(value, ckpt["state_dict"][name].to(value.dtype)), name
    assert 0.0 <= accuracy <= 100.0
