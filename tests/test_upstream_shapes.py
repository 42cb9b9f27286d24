"""The upstream-shaped trainers (tests/upstream_shapes.py) work as backbones with real Dassl, built through
train.py's command line: they train, save with Dassl's save_model and reload with their own load_model."""
import importlib.util
import os

import pytest
import torch

pytest.importorskip("dassl")

from tests import upstream_shapes  # noqa: E402
from tests.conftest import ROOT  # noqa: E402
from tests.upstream_shapes import eval_logits  # noqa: E402
from tools.synthetic_data import make_dataset  # noqa: E402
from tools.tiny_clip import save_tiny_clip  # noqa: E402
from trainers.clip_loader import read_state_dict  # noqa: E402

SHAPES = ["UpCoOp", "UpCoCoOp", "UpMaPLe", "UpPromptSRC", "UpKgCoOp"]
EPOCHS = {"UpPromptSRC": 2}  # GPA rewrites the frozen weights only with two epochs or more; others: 1
CONFIG = "configs/trainers/CoOp/vit_b16_c4_ep20_batch32_lr35.yaml"  # OPTIM, INPUT; no TRAINER.<X> is read
CLIP_PREFIX = {"image_encoder.": "visual.", "text_encoder.": ""}  # model key -> CLIP key


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    make_dataset(str(root / "data"), "eurosat", n_classes=6, train_per_class=4)
    clip_file = save_tiny_clip(str(root / "tiny.pt"))
    return {"root": root, "clip": clip_file, "cache": {}}


def build(workspace, trainer, out, epochs=1):
    """A trainer built from train.py's command line: EuroSAT base classes (3), 4 shots, batch 4, tiny CLIP."""
    import train

    args = train.parse_args([
        "--root", str(workspace["root"] / "data"), "--seed", "1", "--trainer", trainer,
        "--dataset-config-file", os.path.join(ROOT, "configs/datasets/eurosat.yaml"),
        "--config-file", os.path.join(ROOT, CONFIG), "--output-dir", str(out),
        "DATASET.NUM_SHOTS", "4", "DATASET.SUBSAMPLE_CLASSES", "base",
        "MODEL.BACKBONE.NAME", "custom", "MODEL.BACKBONE.PATH", workspace["clip"], "INPUT.SIZE", "(32,32)",
        "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "DATALOADER.TEST.BATCH_SIZE", "8",
        "OPTIM.MAX_EPOCH", str(epochs), "TEST.NO_TEST", "True", "TRAIN.PRINT_FREQ", "100"])
    return train.build(train.setup_cfg(args))


def trained(workspace, name):
    """``(trainer, output dir, test images)`` after training ``name``, once per module."""
    if name not in workspace["cache"]:
        out = workspace["root"] / name
        torch.manual_seed(0)
        trainer = build(workspace, name, out, EPOCHS.get(name, 1))
        trainer.train()
        images = next(iter(trainer.test_loader))["img"]
        workspace["cache"][name] = trainer, out, images
    return workspace["cache"][name]


def saved_state(trainer, out):
    [name] = trainer.get_model_names()
    path = out / name / f"model.pth.tar-{trainer.max_epoch}"
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


@pytest.mark.parametrize("name", SHAPES)
def test_trains_saves_and_reloads_through_its_own_load_model(workspace, name):
    trainer, out, images = trained(workspace, name)
    expected = eval_logits(trainer, images)
    assert expected.shape == (len(images), 3)
    state = saved_state(trainer, out)
    assert set(trainer.PROMPT_BUFFERS) <= set(state)  # persistent class-dependent buffers are saved ...
    fresh = build(workspace, name, workspace["root"] / f"{name}_eval", EPOCHS.get(name, 1))
    assert not torch.equal(eval_logits(fresh, images), expected)
    fresh.load_model(str(out), epoch=trainer.max_epoch)  # ... and dropped on loading (upstream's load_model)
    if name == "UpPromptSRC":  # GPA rewrote the trained model's token buffers too (by rounding); the
        torch.testing.assert_close(eval_logits(fresh, images), expected)  # reloaded model has fresh ones
    else:
        assert torch.equal(eval_logits(fresh, images), expected)


def test_registered_models_and_what_their_checkpoints_hold(workspace):
    expected = {"UpCoOp": ("prompt_learner", {"ctx", "token_prefix", "token_suffix"}),
                "UpCoCoOp": ("prompt_learner", {"ctx", "token_prefix", "token_suffix", "meta_net.linear1.weight",
                                                "meta_net.linear1.bias", "meta_net.linear2.weight",
                                                "meta_net.linear2.bias"}),
                "UpKgCoOp": ("prompt_learner", {"ctx", "bias_vectors", "token_prefix", "token_suffix"})}
    for name, (registered, keys) in expected.items():
        trainer, out, _ = trained(workspace, name)
        assert trainer.get_model_names() == [registered] and set(saved_state(trainer, out)) == keys
    pristine = read_state_dict(workspace["clip"])
    for name, registered in (("UpMaPLe", "MultiModalPromptLearner"), ("UpPromptSRC", "VLPromptLearner")):
        trainer, out, _ = trained(workspace, name)
        assert trainer.get_model_names() == [registered]
        state = saved_state(trainer, out)
        frozen = [key for key, p in trainer.model.named_parameters() if not p.requires_grad]
        assert "text_encoder.transformer.resblocks.0.attn.in_proj_weight" in frozen
        assert set(frozen) <= set(state)  # the whole model: frozen CLIP weights too
    learnable = [key for key, p in trained(workspace, "UpPromptSRC")[0].model.named_parameters() if p.requires_grad]
    assert sorted(learnable) == ["image_encoder.VPT", "image_encoder.transformer.resblocks.1.VPT_shallow",
                                 "prompt_learner.ctx", "text_encoder.transformer.resblocks.1.VPT_shallow"]
    trainer, out, _ = trained(workspace, "UpMaPLe")
    state = saved_state(trainer, out)
    assert torch.equal(state["text_encoder.ln_final.weight"], pristine["ln_final.weight"].float())
    assert torch.equal(state["image_encoder.conv1.weight"], pristine["visual.conv1.weight"].float())


def test_promptsrc_gpa_rewrites_the_frozen_weights_it_saves(workspace):
    trainer, out, _ = trained(workspace, "UpPromptSRC")
    assert trainer.step_counter == 3 and sum(trainer.gauss) == pytest.approx(1.0) and trainer.gauss[0] < 0.5
    state = saved_state(trainer, out)
    pristine = read_state_dict(workspace["clip"])
    changed = []
    for key, value in state.items():
        clip_key = next((CLIP_PREFIX[p] + key[len(p):] for p in CLIP_PREFIX if key.startswith(p)), None)
        if clip_key in pristine and "VPT" not in key:
            original = pristine[clip_key].float()
            torch.testing.assert_close(value, original, rtol=1e-5, atol=1e-6)  # a weighted mean of equal tensors
            changed.append(not torch.equal(value, original))
    assert len(changed) > 50 and any(changed)  # ... in float32: not bit-exact
    zs = {k: v for k, v in state.items() if k.startswith("prompt_learner.ZS_image_encoder.")}
    assert zs and any(not torch.equal(v, pristine["visual." + k.split(".", 2)[2]].float()) for k, v in zs.items())
    model_state = trainer.model.state_dict()  # the model in memory is the GPA one that was saved
    assert all(torch.equal(model_state[key], value) for key, value in state.items())


def test_training_mode_outputs(workspace):
    """What forward returns while the prompt learner trains: CoCoOp and MaPLe the CE loss, PromptSRC the
    7-tuple of its losses' inputs, KgCoOp (always) (logits, score)."""
    for name in ("UpCoCoOp", "UpMaPLe", "UpPromptSRC", "UpKgCoOp"):
        trainer, _, images = trained(workspace, name)
        labels = torch.tensor([0, 1, 2, 0])
        trainer.set_model_mode("train")
        with torch.no_grad():
            out = trainer.model(images[:4], labels) if name != "UpKgCoOp" else trainer.model(images[:4])
        if name in ("UpCoCoOp", "UpMaPLe"):
            assert out.dim() == 0 and out > 0
        elif name == "UpPromptSRC":
            assert len(out) == 7 and out[0].dim() == 0 and out[-1].shape == out[-2].shape == (4, 3)
        else:
            logits, score = out
            assert logits.shape == (4, 3) and score.dim() == 0 and 0 <= score <= 2
        trainer.set_model_mode("eval")
        assert eval_logits(trainer, images[:4]).shape == (4, 3)


def test_importing_twice_registers_once():
    from dassl.engine import TRAINER_REGISTRY

    spec = importlib.util.spec_from_file_location("upstream_shapes_again", upstream_shapes.__file__)
    again = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(again)  # a second copy of the module (as a reload or a path import would make)
    for name in SHAPES:
        assert getattr(again, name) is TRAINER_REGISTRY.get(name) is getattr(upstream_shapes, name)
