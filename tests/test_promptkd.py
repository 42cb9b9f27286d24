"""PromptKD: student, projector, distillation loss and teacher loading on a "small" and a "large" tiny CLIP
(fp32, no Dassl); DPC's dual prompts and batch-norm statistics on the student."""
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from tests._prompt_checks import BASE, NEW, IMAGE, VISION_WIDTH, freeze_like_trainer, images, make_clip
from tests.upstream_shapes import CustomCLIP, PromptLearner, add_ivlp_prompts, prompted_vit
from tools.tiny_clip import build_tiny_clip
from trainers.dpc import decoupling
from trainers.dpc.checkpoint import atomic_save
from trainers.models.ivlp import IVLPCLIP
from trainers.models.promptkd import FeatureProjector, PromptKDCLIP, TextPromptCopy, distillation_loss
from trainers.promptkd_teacher import TeacherError, load_teacher

ALL = BASE + NEW
DEPTH = 3
LARGE_WIDTH, LARGE_EMBED = 128, 48  # the "large" teacher: another width and embedding size than the student


def large_clip():
    return build_tiny_clip(layers=4, width=LARGE_WIDTH, embed_dim=LARGE_EMBED, image_size=IMAGE, patch_size=16,
                           vision_width=LARGE_WIDTH, seed=1)


def student(text_features=None, **options):
    text_features = F.normalize(torch.randn(len(BASE), LARGE_EMBED), dim=-1) if text_features is None else text_features
    clip_model = make_clip()
    return PromptKDCLIP(clip_model, text_features, n_ctx_vision=4, depth_vision=DEPTH, **options), clip_model


# ---------------------------------------------------------------- student
def test_student_learns_vision_prompts_and_projector_only():
    model, clip_model = student()
    pl = model.prompt_learner
    assert pl.vision_ctx.shape == (4, VISION_WIDTH) and [p.shape for p in pl.deep_vision] == [(4, VISION_WIDTH)] * 2
    shapes = {k: tuple(v.shape) for k, v in pl.projector.state_dict().items() if v.dim()}
    assert shapes == {"layers.0.weight": (48, 32, 1, 1), "layers.0.bias": (48,), "layers.1.weight": (48,),
                      "layers.1.bias": (48,), "layers.1.running_mean": (48,), "layers.1.running_var": (48,),
                      "layers.3.weight": (48, 48, 1, 1), "layers.3.bias": (48,)}
    freeze_like_trainer(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"prompt_learner.{n}" for n, _ in pl.named_parameters()}
    frozen = {id(p) for n, p in model.named_parameters() if not n.startswith("prompt_learner.")}
    assert frozen <= {id(p) for p in clip_model.visual.parameters()} | {id(clip_model.logit_scale)}
    assert "text_features" not in model.state_dict()  # the teacher's features are not saved with the student


def test_student_features_are_upstream_ivlp_vision_then_the_projector():
    """The image path written as upstream's: VPT appended after the patches, VPT_shallow over them in later
    blocks, then Feature_Trans_Module_two_layer (1x1 convs on [N, C, 1, 1]) with upstream's key names."""
    model, clip_model = student()
    model.eval()
    pl = model.prompt_learner
    x = images(3)
    with torch.no_grad():
        nn.init.normal_(pl.projector.layers[1].running_mean)  # statistics as after training
        visual = prompted_vit(clip_model.visual, x, pl.vision_ctx, pl.deep_vision_prompts())
        upstream = nn.Sequential(nn.Conv2d(32, 48, 1), nn.BatchNorm2d(48), nn.ReLU(inplace=True), nn.Conv2d(48, 48, 1))
        upstream.load_state_dict({k.replace("layers.", ""): v for k, v in pl.projector.state_dict().items()})
        upstream.eval()
        expected = upstream(visual.unsqueeze(-1).unsqueeze(-1)).squeeze(-1).squeeze(-1)
        assert torch.allclose(model.encode_image(x), expected, atol=1e-6)
        logits = model(x)
        by_hand = clip_model.logit_scale.exp() * F.normalize(expected, dim=-1) @ model.text_features.t()
        assert torch.allclose(logits, by_hand, atol=1e-5) and logits.shape == (3, len(BASE))


def test_projector_takes_and_returns_feature_vectors():
    projector = FeatureProjector(32, 48)
    assert projector(torch.randn(5, 32)).shape == (5, 48)


# ---------------------------------------------------------------- distillation loss
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_distillation_loss_by_hand(temperature):
    g = torch.Generator().manual_seed(3)
    student_logits, teacher_logits = torch.randn(4, 6, generator=g) * 5, torch.randn(4, 6, generator=g) * 5
    p = torch.softmax(teacher_logits / temperature, dim=1)
    log_q = torch.log_softmax(student_logits / temperature, dim=1)
    by_hand = (p * (p.log() - log_q)).sum() * temperature ** 2 / 24
    assert torch.allclose(distillation_loss(student_logits, teacher_logits, temperature), by_hand, atol=1e-6)
    assert distillation_loss(teacher_logits, teacher_logits, temperature).abs() < 1e-6


# ---------------------------------------------------------------- teacher
def upstream_teacher(classnames):
    """The PromptKD authors' teacher layout (upstream PromptSRC's CustomCLIP): VPT / VPT_shallow inside CLIP's
    own modules, prompt_learner.ctx and the class-name token buffers, every CLIP weight in the state dict."""
    clip_model = add_ivlp_prompts(large_clip(), 4, DEPTH)
    learner = PromptLearner(classnames, clip_model, 4)
    return CustomCLIP(learner, clip_model).eval()  # the swapped blocks write their own deep prompts


def save_upstream(model, directory, name="model-best.pth.tar"):
    path = os.path.join(directory, "VLPromptLearner", name)
    atomic_save({"state_dict": model.state_dict(), "epoch": 20, "optimizer": None}, path)
    return path


def test_published_teacher_layout_loads_and_matches_its_own_forward(tmp_path):
    torch.manual_seed(0)
    reference = upstream_teacher(BASE)
    path = save_upstream(reference, str(tmp_path))
    teacher, found = load_teacher(str(tmp_path), -1, large_clip(), "large.pt", "a photo of a", BASE, ALL, "EuroSAT")
    assert found == path
    pl = teacher.prompt_learner
    assert (pl.ctx.shape, len(pl.deep_text), len(pl.deep_vision)) == ((4, LARGE_WIDTH), DEPTH - 1, DEPTH - 1)
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    x = images(3)
    with torch.no_grad():
        assert torch.allclose(teacher(x)[:, :len(BASE)], reference(x), atol=1e-4)
        all_classes = upstream_teacher(ALL)
        all_classes.load_state_dict({k: v for k, v in reference.state_dict().items() if "token_" not in k},
                                    strict=False)
        assert torch.allclose(teacher(x), all_classes(x), atol=1e-4)  # new classes under the same prompts


def test_teacher_files_that_do_not_fit_are_refused(tmp_path):
    torch.manual_seed(0)
    save_upstream(upstream_teacher(["dog", "car", "boat"]), str(tmp_path / "other"))
    with pytest.raises(TeacherError, match="not the 3 base classes of EuroSAT"):
        load_teacher(str(tmp_path / "other"), -1, large_clip(), "large.pt", "a photo of a", BASE, ALL, "EuroSAT")
    save_upstream(upstream_teacher(BASE), str(tmp_path / "base"))
    with pytest.raises(TeacherError, match="TEACHER_NAME / TEACHER_PATH"):
        load_teacher(str(tmp_path / "base"), -1, make_clip(), "small.pt", "a photo of a", BASE, ALL, "EuroSAT")
    with pytest.raises(TeacherError, match="VLPromptLearner/model-best.pth.tar"):
        load_teacher(str(tmp_path / "nowhere"), -1, large_clip(), "large.pt", "a photo of a", BASE, ALL, "EuroSAT")
    with pytest.raises(TeacherError, match="TEACHER_DIR is empty"):
        load_teacher("", -1, large_clip(), "large.pt", "a photo of a", BASE, ALL, "EuroSAT")
    ours = tmp_path / "run" / "prompt_learner"
    state = {"ctx": torch.zeros(4, LARGE_WIDTH), "vision_ctx": torch.zeros(4, LARGE_WIDTH)}
    atomic_save({"state_dict": state, "classnames": ["dog", "car", "boat"], "trainer": "PromptSRC",
                 "dataset": "OxfordPets"}, str(ours / "model.pth.tar-2"))
    with pytest.raises(TeacherError, match="dataset OxfordPets"):
        load_teacher(str(tmp_path / "run"), -1, large_clip(), "large.pt", "a photo of a", BASE, ALL, "EuroSAT")
    atomic_save({"state_dict": state, "classnames": BASE, "trainer": "PromptSRC", "dpc": {}},
                str(ours / "model.pth.tar-3"))
    with pytest.raises(TeacherError, match="DPC stage-2 checkpoint"):
        load_teacher(str(tmp_path / "run"), -1, large_clip(), "large.pt", "a photo of a", BASE, ALL, "EuroSAT")


# ---------------------------------------------------------------- DPC on the student
def test_dual_prompts_and_statistics_keep_the_stage1_student_exact():
    """Every student tensor (prompts, projector, batch-norm affine) gets a dual, the running statistics a
    stage-1 copy: after stage-2 steps in train mode, stage1 and new (w_n = 0) modes give the stage-1
    student bit for bit, base mode the trained one."""
    torch.manual_seed(0)
    model, _ = student()
    freeze_like_trainer(model)
    pl = model.prompt_learner
    with torch.no_grad():
        nn.init.normal_(pl.projector.layers[1].running_mean)
    model.eval()
    x = images(4)
    with torch.no_grad():
        stage1 = model(x)
    names = decoupling.trainable_names(pl)
    assert set(names) == {"vision_ctx", "deep_vision.0", "deep_vision.1", "projector.layers.0.weight",
                          "projector.layers.0.bias", "projector.layers.1.weight", "projector.layers.1.bias",
                          "projector.layers.3.weight", "projector.layers.3.bias"}
    decoupling.attach(pl, names, w_train=0.2, w_new=0.0)
    assert decoupling.attach_statistics(pl) == ["projector.layers.1"]
    optim = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    decoupling.set_mode(model, "train")
    for _ in range(2):
        optim.zero_grad()
        model(images(8, seed=5)).logsumexp(1).mean().backward()
        optim.step()
    assert not torch.equal(pl.projector.layers[1].running_mean, pl.projector.layers[1].dpc_stage1_statistics.running_mean)
    model.eval()
    for mode in ("stage1", "new"):
        decoupling.set_mode(model, mode)
        with torch.no_grad():
            assert torch.equal(model(x), stage1), mode
    decoupling.set_mode(model, "base")
    with torch.no_grad():
        assert not torch.allclose(model(x), stage1)
    trained_mean = pl.projector.layers[1].running_mean.clone()
    decoupling.set_mode(model, "stage1")
    model.train()
    with torch.no_grad():
        model(images(8, seed=6))  # a stage-1 forward in train mode changes no statistics
    assert torch.equal(pl.projector.layers[1].running_mean, trained_mean)
    keys = decoupling.state_keys(pl)
    assert {"projector.layers.1.running_mean", "projector.layers.1.dpc_stage1_statistics.running_var"} <= set(keys)


def test_text_prompt_copy_reads_the_teacher_text_tower():
    torch.manual_seed(0)
    teacher = IVLPCLIP(ALL, large_clip(), n_ctx_text=4, n_ctx_vision=4, depth_text=DEPTH, depth_vision=DEPTH)
    copy = TextPromptCopy(teacher.prompt_learner)
    assert torch.equal(copy.ctx, teacher.prompt_learner.ctx) and len(copy.deep_text) == DEPTH - 1
    assert all(p.data_ptr() != q.data_ptr() for p, q in zip(copy.parameters(), teacher.prompt_learner.parameters()))
    with torch.no_grad():
        rows = [3, 1]
        assert torch.allclose(copy.features(teacher, rows), teacher.encode_text()[rows], atol=1e-5)
    assert sum(p.numel() for p in copy.parameters()) == 4 * LARGE_WIDTH * DEPTH  # no tower copied
