"""The upstream-shaped trainers (tests/upstream_shapes.py) with real Dassl, built through train.py's command
line: they work as backbones (train, save with Dassl's save_model, reload with their own load_model), and
DPC works with each of them through the one-line registration ``class DPC_X(DPCMixin, X): pass``."""
import contextlib
import importlib.util
import io
import os

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("dassl")

from dassl.utils import set_random_seed  # noqa: E402

from tests import upstream_shapes  # noqa: E402
from tests.conftest import ROOT  # noqa: E402
from tests.upstream_shapes import eval_logits  # noqa: E402
from tools.synthetic_data import make_dataset  # noqa: E402
from tools.tiny_clip import save_tiny_clip  # noqa: E402
from trainers.clip_loader import read_state_dict  # noqa: E402
from trainers.dpc import DPCMixin, decoupling  # noqa: E402
from trainers.dpc.features import cosine_logits  # noqa: E402

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


def build(workspace, trainer, out, epochs=1, *opts):
    """A trainer built from train.py's command line: EuroSAT base classes (3), 4 shots, batch 4, tiny CLIP;
    ``opts``: more yacs options."""
    import train

    args = train.parse_args([
        "--root", str(workspace["root"] / "data"), "--seed", "1", "--trainer", trainer,
        "--dataset-config-file", os.path.join(ROOT, "configs/datasets/eurosat.yaml"),
        "--config-file", os.path.join(ROOT, CONFIG), "--output-dir", str(out),
        "DATASET.NUM_SHOTS", "4", "DATASET.SUBSAMPLE_CLASSES", "base",
        "MODEL.BACKBONE.NAME", "custom", "MODEL.BACKBONE.PATH", workspace["clip"], "INPUT.SIZE", "(32,32)",
        "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "DATALOADER.TEST.BATCH_SIZE", "8",
        "OPTIM.MAX_EPOCH", str(epochs), "TEST.NO_TEST", "True", "TRAIN.PRINT_FREQ", "100", *opts])
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


# ------------------------------------------------------------------------------------ DPC on each shape


@upstream_shapes.register
class DPC_UpCoOp(DPCMixin, upstream_shapes.UpCoOp): pass  # noqa: E701


@upstream_shapes.register
class DPC_UpCoCoOp(DPCMixin, upstream_shapes.UpCoCoOp): pass  # noqa: E701


@upstream_shapes.register
class DPC_UpMaPLe(DPCMixin, upstream_shapes.UpMaPLe): pass  # noqa: E701


@upstream_shapes.register
class DPC_UpPromptSRC(DPCMixin, upstream_shapes.UpPromptSRC): pass  # noqa: E701


@upstream_shapes.register
class DPC_UpKgCoOp(DPCMixin, upstream_shapes.UpKgCoOp): pass  # noqa: E701


DPC_OPTS = ["DPC.TOPK", "2", "DPC.W_NEW", "0.0"]


def logits_of(trainer, images):
    with torch.no_grad():
        return eval_logits(trainer, images)


def dpc_trained(workspace, name):
    """``(DPC trainer, its output dir, what it printed)`` after stage 2 on the shape's stage 1, once per module."""
    key = f"DPC_{name}"
    if key not in workspace["cache"]:
        stage1, stage1_out, _ = trained(workspace, name)
        out = workspace["root"] / key
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            set_random_seed(1)  # as train.py does before building
            dpc = build(workspace, key, out, EPOCHS.get(name, 1), "DPC.STAGE1_DIR", str(stage1_out), *DPC_OPTS)
            before = {k: v.detach().clone() for k, v in dpc.model.state_dict().items()}
            dpc.train()
        workspace["cache"][key] = dpc, out, printed.getvalue(), before
    return workspace["cache"][key]


@pytest.mark.parametrize("name", SHAPES)
def test_dpc_works_on_the_shape_with_the_one_line_registration(workspace, name):
    stage1, stage1_out, images = trained(workspace, name)
    epochs = EPOCHS.get(name, 1)
    # the backbone's own evaluation of its stage 1, on base and on new classes
    backbone = build(workspace, name, workspace["root"] / f"{name}_base_eval", epochs)
    backbone.load_model(str(stage1_out), epoch=epochs)
    new_backbone = build(workspace, name, workspace["root"] / f"{name}_new_eval", epochs,
                         "DATASET.SUBSAMPLE_CLASSES", "new")
    new_backbone.load_model(str(stage1_out), epoch=epochs)
    new_images = next(iter(new_backbone.test_loader))["img"]

    dpc, out, printed, before = dpc_trained(workspace, name)
    assert "DPC: features read from " in printed
    # stage 2 starts from the backbone's stage 1 exactly
    start = build(workspace, f"DPC_{name}", workspace["root"] / f"DPC_{name}_start", epochs,
                  "DPC.STAGE1_DIR", str(stage1_out), *DPC_OPTS)
    for mode in ("stage1", "base"):  # before any step P' = P
        assert torch.equal(logits_of_mode(start, images, mode), logits_of(backbone, images)), mode
    # training moved the base prompt
    assert not torch.equal(logits_of_mode(dpc, images, "base"), logits_of(backbone, images))
    # evaluating the saved DPC model on new classes with w_n = 0 is the backbone's stage 1 exactly
    evaluator = build(workspace, f"DPC_{name}", workspace["root"] / f"DPC_{name}_new_eval", epochs,
                      "DATASET.SUBSAMPLE_CLASSES", "new", *DPC_OPTS)
    evaluator.load_model(str(out), epoch=epochs)
    assert torch.equal(logits_of(evaluator, new_images), logits_of(new_backbone, new_images))


def logits_of_mode(trainer, images, mode):
    """Evaluation logits with every dual prompt in ``mode``."""
    trainer.set_model_mode("eval")
    decoupling.set_mode(trainer.dpc_net, mode)
    with torch.no_grad():
        return trainer.model_inference(images.to(trainer.device))


def test_features_are_found_in_each_shapes_forward(workspace):
    sites = {name: dpc_trained(workspace, name)[0].dpc_capture.sites for name in SHAPES}
    assert {name: (s.image, s.text, s.conditioned) for name, s in sites.items()} == {
        "UpCoOp": ("image_encoder", "text_encoder", False),
        "UpCoCoOp": ("image_encoder", "text_encoder", True),  # per-image text
        "UpMaPLe": ("image_encoder", "text_encoder", False),  # encoders that need deep prompts
        "UpPromptSRC": ("image_encoder", "text_encoder", False),  # not the frozen ZS_image_encoder
        "UpKgCoOp": ("image_encoder", "text_encoder", False),  # forward returns (logits, score)
    }
    assert [name for name, s in sites.items() if s.frozen_image] == ["UpCoOp", "UpCoCoOp", "UpKgCoOp"]
    # each shape's text encoder takes every class-dependent tensor as an input: the step's classes only (auto)
    assert all(dpc_trained(workspace, name)[0].dpc_text_plan.pairs for name in SHAPES)
    assert all(dpc_trained(workspace, name)[2].count("DPC: text of the step's classes only") == 1 for name in SHAPES)


def test_gpa_inside_forward_backward_keeps_working_in_stage_2(workspace):
    dpc, out, printed, before = dpc_trained(workspace, "UpPromptSRC")
    assert dpc.step_counter == dpc.max_epoch + 1  # the backbone's epoch-end code ran once per epoch
    state = dpc.model.state_dict()
    trained_keys = [k for k, p in dpc.model.named_parameters() if p.requires_grad]
    assert trained_keys and all(torch.equal(state[k], dpc.previous_model_gpa[k]) for k in trained_keys)
    # P, the frozen weights and the class buffers stay exactly as stage 1 left them
    frozen = [k for k in state if k not in trained_keys and torch.is_tensor(state[k])]
    assert all(torch.equal(state[k], before[k]) for k in frozen)
    assert any(k.endswith(".stage1") for k in frozen)
    assert "frozen tensors" in printed and "were kept as stage 1 left them" in printed


def test_the_learning_rate_schedule_steps_once_per_epoch(workspace):
    """KgCoOp steps its scheduler directly, the others through update_lr: either way once per epoch."""
    def schedule(trainer):
        sched = trainer.sched
        return sched.last_epoch, sched.successor.last_epoch, trainer.optim.param_groups[0]["lr"]

    for name in ("UpKgCoOp", "UpCoOp", "UpPromptSRC"):
        stage1, dpc = trained(workspace, name)[0], dpc_trained(workspace, name)[0]
        assert dpc.max_epoch == stage1.max_epoch and schedule(dpc) == schedule(stage1), name


@upstream_shapes.register
class DPC_UpCoOpOwnFeatures(DPCMixin, upstream_shapes.UpCoOp):
    def dpc_features(self, images):  # README's example of the one method a user may have to write
        m = self.model
        image_features = m.image_encoder(images.type(m.dtype))
        text_features = m.text_encoder(m.prompt_learner(), m.tokenized_prompts)
        return image_features, text_features


def test_a_dpc_features_method_replaces_the_search_and_trains_the_same(workspace):
    _, stage1_out, images = trained(workspace, "UpCoOp")
    found = dpc_trained(workspace, "UpCoOp")[0]
    set_random_seed(1)
    own = build(workspace, "DPC_UpCoOpOwnFeatures", workspace["root"] / "DPC_UpCoOpOwnFeatures", 1,
                "DPC.STAGE1_DIR", str(stage1_out), *DPC_OPTS)
    own.train()
    assert own.dpc_capture is None  # nothing was searched
    assert not own.dpc_text_plan.pairs  # its dpc_features takes no `classes`: the text of all classes
    assert torch.equal(logits_of_mode(own, images, "base"), logits_of_mode(found, images, "base"))


def test_hard_negatives_are_scored_with_each_anchors_own_text(workspace):
    """CoCoOp: the stage-1 scorer ranks classes by the anchor's similarity to the text conditioned on it."""
    stage1, _, images = trained(workspace, "UpCoCoOp")
    dpc = dpc_trained(workspace, "UpCoCoOp")[0]
    image_features, text_features = dpc._dpc_stage1_features(images.to(dpc.device))
    assert text_features.shape[:2] == (len(images), 3)
    scores = dpc.dpc_net.logit_scale.exp() * cosine_logits(image_features, text_features)
    torch.testing.assert_close(scores, logits_of(stage1, images))


# ------------------------------------------------------------------ backbone loss terms in a fork
@pytest.mark.parametrize("name", SHAPES)
def test_a_fork_whose_loss_dpc_cannot_see_gets_a_note_once(workspace, name):
    """The upstream shapes compute their loss inside forward_backward and offer no regularization_terms:
    stage 2 says once that it trains on L_CL alone and shows the method to add."""
    printed = dpc_trained(workspace, name)[2]
    assert printed.count(f"DPC: {name} trains with its own forward_backward and has no `regularization_terms`") == 1
    assert f"class DPC_{name}(DPCMixin, {name}):" in printed and "def regularization_terms(self, images" in printed


@upstream_shapes.register
class DPC_UpKgCoOpTerms(DPCMixin, upstream_shapes.UpKgCoOp):
    def regularization_terms(self, images, image_features, text_features):  # README's, in the shape's terms
        text = F.normalize(text_features, dim=-1)
        score = 1.0 - F.cosine_similarity(text, F.normalize(self.model.ori_embedding, dim=-1), dim=1, eps=1e-7).mean()
        return {"kg": self.W * score}


@upstream_shapes.register
class DPC_UpPromptSRCTerms(DPCMixin, upstream_shapes.UpPromptSRC):
    def regularization_terms(self, images, image_features, text_features):  # README's, in the shape's terms
        m = self.model
        text, image = F.normalize(text_features, dim=-1), F.normalize(image_features, dim=-1)
        fixed = F.normalize(m.prompt_learner.fixed_embeddings, dim=-1)
        with torch.no_grad():
            zs_image = F.normalize(m.prompt_learner.ZS_image_encoder(images.type(m.dtype)), dim=-1)
        scale = m.logit_scale.exp()
        logits, zs_logits = scale * image @ text.t(), scale * zs_image @ fixed.type(zs_image.dtype).t()
        return {"scl_text": F.l1_loss(text, fixed, reduction="mean") * self.TEXT_LOSS_WEIGHT,
                "scl_image": F.l1_loss(image, zs_image, reduction="mean") * self.IMAGE_LOSS_WEIGHT,
                "scl_logits": F.kl_div(F.log_softmax(logits, dim=1), F.log_softmax(zs_logits, dim=1),
                                       reduction="sum", log_target=True) / logits.numel()}


def backbone_terms(stage1, name, images, labels):
    """What the shape's own forward_backward adds to its cross-entropy, at the stage-1 prompts."""
    trainer = stage1
    with torch.no_grad():
        if name == "UpKgCoOp":
            trainer.set_model_mode("eval")
            return {"kg": trainer.W * trainer.model(images)[1]}
        trainer.set_model_mode("train")
        _, text, zs_text, zs_image, image, zs_logits, logits = trainer.model(images, labels)
        trainer.set_model_mode("eval")
        return {"scl_text": F.l1_loss(text, zs_text) * trainer.TEXT_LOSS_WEIGHT,
                "scl_image": F.l1_loss(image, zs_image) * trainer.IMAGE_LOSS_WEIGHT,
                "scl_logits": F.kl_div(F.log_softmax(logits, dim=1), F.log_softmax(zs_logits, dim=1), reduction="sum",
                                       log_target=True) / logits.numel()}


@pytest.mark.parametrize("name", ["UpKgCoOp", "UpPromptSRC"])
def test_readmes_regularization_terms_give_the_forks_own_terms_in_parallel(workspace, name):
    assert "stage 2 trains on L_CL alone" in dpc_trained(workspace, name)[2]  # without them: the note
    stage1, stage1_out, _ = trained(workspace, name)
    set_random_seed(1)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        dpc = build(workspace, f"DPC_{name}Terms", workspace["root"] / f"DPC_{name}Terms", EPOCHS.get(name, 1),
                    "DPC.STAGE1_DIR", str(stage1_out), *DPC_OPTS)
        dpc.before_train()
    assert "has no `regularization_terms`" not in printed.getvalue()
    batch = next(iter(dpc.train_loader_x))
    dpc.set_model_mode("train")
    dpc.batch_idx, dpc.num_batches = 0, 2
    logged = dpc.forward_backward(batch)  # terms at P' = P, before the step
    expected = backbone_terms(stage1, name, batch["img"], batch["label"])
    assert set(expected) <= set(logged)
    for key, value in expected.items():
        assert logged[key] == pytest.approx(value.item(), rel=1e-4, abs=1e-6), key
    assert logged["loss"] == pytest.approx(logged["loss_cl"] + sum(logged[k] for k in expected), rel=1e-5)
