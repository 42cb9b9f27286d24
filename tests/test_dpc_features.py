"""Finding the image and text features in a backbone's own forward (trainers/dpc/features.py), no Dassl."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from tests._prompt_checks import freeze_like_trainer
from trainers.dpc import decoupling
from trainers.dpc.features import FeatureCapture, FeatureDiscoveryError, find_feature_sites
from trainers.models.coop import CoOpCLIP
from trainers.models.maple import MaPLeCLIP
from trainers.models.promptsrc import PromptSRCCLIP

CLASSES = ["dog", "cat", "big truck"]


def images(n=4, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def with_duals(model):
    freeze_like_trainer(model)
    decoupling.attach(model.prompt_learner, decoupling.trainable_names(model.prompt_learner), w_train=0.2)
    decoupling.set_mode(model, "train")
    return model


class PerImageText(nn.Module):
    """A CoCoOp-like model: a meta-net shifts the context per image, so text features are [N, C, D]."""

    def __init__(self, coop):
        super().__init__()
        self.coop = coop
        embed = coop.text_encoder.text_projection.shape[1]
        self.meta = nn.Linear(embed, coop.prompt_learner.ctx.shape[-1])
        self.logit_scale = coop.logit_scale

    def forward(self, image):
        image_features = self.coop.image_encoder(image)
        pl = self.coop.prompt_learner
        bias = self.meta(F.normalize(image_features, dim=-1))
        logits = []
        for i in range(image.shape[0]):
            ctx = (pl.ctx + bias[i]).unsqueeze(0).expand(pl.n_cls, -1, -1)
            prompts = torch.cat([pl.token_prefix, ctx, pl.token_suffix], dim=1)
            text = F.normalize(self.coop.text_encoder(prompts, pl.tokenized_prompts), dim=-1)
            logits.append(self.logit_scale.exp() * F.normalize(image_features[i], dim=-1) @ text.t())
        return torch.stack(logits)


@pytest.mark.parametrize("kind", ["coop", "maple", "promptsrc"])
def test_our_backbones_features_are_found_and_equal_their_encoders(tiny_clip, kind):
    torch.manual_seed(0)
    build = {"coop": lambda: CoOpCLIP(CLASSES, tiny_clip, n_ctx=2),
             "maple": lambda: MaPLeCLIP(CLASSES, tiny_clip, prompt_depth=2),
             "promptsrc": lambda: PromptSRCCLIP(CLASSES, tiny_clip, depth_text=2, depth_vision=2)}[kind]
    model = with_duals(build())
    sites = find_feature_sites(model, images(2), len(CLASSES))
    assert (sites.image, sites.text, sites.conditioned) == ("image_encoder", "text_encoder", False)
    assert sites.frozen_image == (kind == "coop")  # only CoOp leaves the image tower unprompted
    capture = FeatureCapture(model, sites)
    image_features, text_features = capture(images())
    assert torch.equal(image_features, model.encode_image(images()))
    assert torch.equal(text_features, model.encode_text())
    assert image_features.requires_grad == (kind != "coop") and text_features.requires_grad
    assert model.training and model.prompt_learner.training  # each module's own flag is restored


def test_finding_the_features_keeps_no_activations(tiny_clip):
    """Discovery runs the model with gradients over every class but keeps nothing for a backward pass (at ViT-B/16
    size and 1000 classes the text tower's activations alone would take ~25 GB)."""
    model = with_duals(CoOpCLIP(CLASSES, tiny_clip, n_ctx=2))
    seen = []
    model.text_encoder.register_forward_hook(lambda m, a, out: seen.append(out))
    find_feature_sites(model, images(2), len(CLASSES))
    assert seen[0].requires_grad  # the text depends on the trainable context: found with gradients on
    with pytest.raises(RuntimeError, match="keeps no activations"):
        seen[0].sum().backward()
    model(images(2)).sum().backward()  # the model's own forward afterwards keeps what its backward needs


def test_shortcuts_give_the_same_features(tiny_clip):
    """A fixed text output and reused anchor features change nothing but the work done."""
    model = with_duals(CoOpCLIP(CLASSES, tiny_clip, n_ctx=2))
    capture = FeatureCapture(model, find_feature_sites(model, images(2), len(CLASSES)))
    assert capture.can_fix_text() and capture.can_reuse_anchors()
    batch = images(6)
    full_image, full_text = capture(batch)
    calls = []
    model.image_encoder.conv1.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    model.text_encoder.ln_final.register_forward_pre_hook(lambda m, a: calls.append("text"))
    image, text = capture(batch, text=full_text.detach(), anchors=full_image[:2].detach())
    assert torch.equal(image, full_image) and torch.equal(text, full_text)
    assert calls == [4]  # only the 4 non-anchor images are encoded; the text encoder does not run


def test_per_image_text_is_found(tiny_clip):
    torch.manual_seed(0)
    coop = CoOpCLIP(CLASSES, tiny_clip, n_ctx=2)
    model = PerImageText(coop)
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(("coop.prompt_learner.", "meta.")))
    sites = find_feature_sites(model, images(2), len(CLASSES))
    assert (sites.image, sites.text, sites.conditioned, sites.text_calls) == (
        "coop.image_encoder", "coop.text_encoder", True, 2)
    assert sites.frozen_image  # the meta-net reads the image features; the encoder itself is frozen
    image_features, text_features = FeatureCapture(model, sites)(images(3))
    assert text_features.shape == (3, len(CLASSES), image_features.shape[1])
    expected = model.logit_scale.exp() * torch.einsum(
        "nd,ncd->nc", F.normalize(image_features, dim=-1), F.normalize(text_features, dim=-1))
    assert torch.allclose(expected, model(images(3)), atol=1e-5)


def test_a_model_without_findable_features_names_the_method_to_write(tiny_clip):
    class InlineText(nn.Module):
        """Text features are a parameter used directly: no submodule returns them."""

        def __init__(self):
            super().__init__()
            self.visual = tiny_clip.visual
            self.text = nn.Parameter(torch.randn(len(CLASSES), tiny_clip.visual.output_dim))
            self.logit_scale = tiny_clip.logit_scale

        def forward(self, image):
            return self.logit_scale.exp() * F.normalize(self.visual(image), dim=-1) @ F.normalize(self.text, dim=-1).t()

    with pytest.raises(FeatureDiscoveryError, match="dpc_features") as err:
        find_feature_sites(InlineText(), images(2), len(CLASSES))
    assert "def dpc_features(self, images)" in str(err.value) and "InlineText" in str(err.value)


class TokensFromAttribute(nn.Module):
    """CoOp whose text encoder reads the class tokens from an attribute, not from its inputs."""

    def __init__(self, coop):
        super().__init__()
        self.image_encoder, self.prompt_learner = coop.image_encoder, coop.prompt_learner
        self.text, self.logits, self.logit_scale = TextFromAttribute(coop), coop.logits, coop.logit_scale

    def forward(self, image):
        return self.logits(self.image_encoder(image), self.text(self.prompt_learner()))


class TextFromAttribute(nn.Module):
    def __init__(self, coop):
        super().__init__()
        self.encoder, self.tokens = coop.text_encoder, coop.prompt_learner.tokenized_prompts

    def forward(self, prompts):
        return self.encoder(prompts, self.tokens)


def test_text_of_a_subset_of_classes_only_where_the_text_site_takes_every_class_tensor(tiny_clip):
    """``classes`` cuts the text site's class-row inputs: exactly the rows of the full output (shared and per-image
    text), and refused, with the reason, where a class-dependent tensor is read from elsewhere."""
    coop = with_duals(CoOpCLIP(CLASSES, tiny_clip, n_ctx=2))
    capture = FeatureCapture(coop, find_feature_sites(coop, images(2), len(CLASSES)))
    assert capture.check_class_rows(images(2)) is None
    _, full = capture(images(3))
    _, part = capture(images(3), classes=torch.tensor([0, 2]))
    torch.testing.assert_close(part, full[[0, 2]], rtol=1e-6, atol=0)
    per_image = PerImageText(coop)
    capture = FeatureCapture(per_image, find_feature_sites(per_image, images(2), len(CLASSES)))
    assert capture.check_class_rows(images(2)) is None
    _, full = capture(images(3))
    _, part = capture(images(3), classes=torch.tensor([[2], [0], [1]]))  # each image's own class
    torch.testing.assert_close(part[:, 0], full[torch.arange(3), torch.tensor([2, 0, 1])], rtol=1e-6, atol=0)
    hidden = TokensFromAttribute(CoOpCLIP(CLASSES, tiny_clip, n_ctx=2))
    capture = FeatureCapture(hidden, find_feature_sites(hidden, images(2), len(CLASSES)))
    assert capture.sites.text == "text"
    assert "reads a class-dependent tensor that is not among its inputs" in capture.check_class_rows(images(2))
