"""KgCoOp model and loss (tiny fp32 CLIP) against a hand computation of the paper's formula, and one Dassl run."""
import pytest
import torch
import torch.nn.functional as F

from tests import _clip_by_hand as by_hand
from tests._prompt_checks import (BASE, NEW, WIDTH, check_checkpoint_round_trip, check_dpc_invariants,
                                  check_only_prompts_learn, freeze_like_trainer, images, make_clip)
from trainers.models.kgcoop import KgCoOpCLIP
from trainers.templates import DATASET_TEMPLATES

PETS = "a photo of a {}, a type of pet."


def build(classnames=BASE, clip_model=None, template=PETS, **options):
    clip_model = clip_model or make_clip()
    return KgCoOpCLIP(classnames, clip_model, template=template, **options), clip_model


def kgcoop_trainer(model, w=8.0, dataset="OxfordPets", template=""):
    """A KgCoOp trainer without data or CLIP file: what compute_loss and the template choice read."""
    pytest.importorskip("dassl")
    from dassl.config import get_cfg_default

    from trainers.config import extend_cfg
    from trainers.kgcoop import KgCoOp

    cfg = get_cfg_default()
    extend_cfg(cfg)
    cfg.DATASET.NAME, cfg.TRAINER.KGCOOP.W, cfg.TRAINER.KGCOOP.TEMPLATE = dataset, w, template
    trainer = KgCoOp.__new__(KgCoOp)  # skips Dassl's data and model building
    trainer.cfg, trainer.model = cfg, model
    return trainer


def test_the_hand_written_templates_are_coops():
    """Upstream's CUSTOM_TEMPLATES (htyao89/KgCoOp trainers/kgcoop.py), one per dataset."""
    assert DATASET_TEMPLATES["EuroSAT"] == "a centered satellite photo of {}."
    assert DATASET_TEMPLATES["Food101"] == "a photo of {}, a type of food."
    assert DATASET_TEMPLATES["UCF101"] == "a photo of a person doing {}."
    assert DATASET_TEMPLATES["DescribableTextures"] == "a photo of a {}, a type of texture."
    assert DATASET_TEMPLATES["ImageNet"] == DATASET_TEMPLATES["StanfordCars"] == "a photo of a {}."
    assert len(DATASET_TEMPLATES) == 16 and DATASET_TEMPLATES["ToyWorld"] == "a photo of a {}."
    pytest.importorskip("dassl")
    from trainers.kgcoop import KgCoOp

    assert KgCoOp.hand_written_template(kgcoop_trainer(None).cfg) == PETS
    assert KgCoOp.hand_written_template(kgcoop_trainer(None, template="itap of a {}.").cfg) == "itap of a {}."
    with pytest.raises(ValueError, match="TRAINER.KGCOOP.TEMPLATE"):
        KgCoOp.hand_written_template(kgcoop_trainer(None, dataset="MyData").cfg)
    with pytest.raises(ValueError, match="TEMPLATE"):
        build(template="a photo of a")


def test_frozen_features_are_clips_on_the_template_and_not_saved():
    model, clip_model = build()
    tokens, _ = by_hand.sentence_embeddings(clip_model, [PETS.format(c.replace("_", " ")) for c in BASE])
    with torch.no_grad():
        assert torch.allclose(model.frozen_text_features, by_hand.unit(clip_model.encode_text(tokens)), atol=1e-6)
    assert "frozen_text_features" not in model.state_dict()
    assert list(model.prompt_learner.state_dict()) == ["ctx"]
    # with the template equal to the initial prompt the term starts at zero
    same, _ = build(template="a photo of a {}.", ctx_init="a photo of a")
    with torch.no_grad():
        assert same.knowledge_guided_distance(same.encode_text()).abs() < 1e-6


def test_loss_matches_the_paper_formula_by_hand():
    """L = CE(exp(t) cos(f, w_c)) + W (1 - mean_c cos(w_c, w_c^clip)), prompts through CLIP's own transformer."""
    model, clip_model = build(ctx_init="a photo of a")
    freeze_like_trainer(model)
    with torch.no_grad():
        model.prompt_learner.ctx.add_(0.2 * torch.randn(model.prompt_learner.ctx.shape,
                                                        generator=torch.Generator().manual_seed(3)))
    image, labels = images(), torch.tensor([2, 0, 1])
    loss, logged = kgcoop_trainer(model, w=8.0).compute_loss(image, labels)
    with torch.no_grad():
        tokens, sentences = by_hand.sentence_embeddings(clip_model, [f"a photo of a {c.replace('_', ' ')}."
                                                                     for c in BASE])
        sentences[:, 1:5] = model.prompt_learner.ctx
        w = by_hand.unit(by_hand.text_features(clip_model, sentences, tokens))
        w_clip = by_hand.unit(clip_model.encode_text(
            by_hand.sentence_embeddings(clip_model, [PETS.format(c.replace("_", " ")) for c in BASE])[0]))
        f = by_hand.unit(clip_model.encode_image(image))
        ce = F.cross_entropy(clip_model.logit_scale.exp() * f @ w.t(), labels)
        kg = 1 - (w * w_clip).sum(dim=-1).mean()
    assert kg > 1e-3  # not vacuous
    assert logged["kg"] == pytest.approx(8.0 * kg.item(), rel=1e-5)
    assert logged["ce"] == pytest.approx(ce.item(), rel=1e-5)
    assert loss.item() == pytest.approx(ce.item() + 8.0 * kg.item(), rel=1e-5)
    # the term DPC stage 2 adds, from given features
    terms = kgcoop_trainer(model, w=8.0).regularization_terms(image, None, model.encode_text())
    assert set(terms) == {"kg"} and terms["kg"].item() == pytest.approx(logged["kg"], rel=1e-6)


def test_only_the_context_learns_and_the_term_reaches_it():
    model, clip_model = build(n_ctx=4, ctx_init="")
    learner = check_only_prompts_learn(model, clip_model)
    assert learner == {"prompt_learner.ctx"} and model.prompt_learner.ctx.shape == (4, WIDTH)
    model.knowledge_guided_distance(model.encode_text()).backward()
    assert model.prompt_learner.ctx.grad.abs().sum() > 0
    assert all(p.grad is None for n, p in model.named_parameters() if n not in learner)


def test_dpc_invariants():
    check_dpc_invariants(build, frozen_buffers=("frozen_text_features",))


def test_checkpoint_round_trip_rebuilds_the_frozen_features():
    check_checkpoint_round_trip(lambda names: build(names))
    new, _ = build(NEW)
    assert new.frozen_text_features.shape == (len(NEW), 32)


def test_base_to_new_with_dassl(tmp_path):
    pytest.importorskip("dassl")
    from tests._backbone_e2e import base_to_new, check_base_to_new_run, make_workspace

    workspace = make_workspace(tmp_path)
    base, new, ckpt, accuracy = base_to_new(workspace, "KgCoOp", "configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml",
                                            tmp_path / "out")
    check_base_to_new_run(base, new, ckpt, accuracy)
    c = base.cfg
    assert (c.DATALOADER.TRAIN_X.BATCH_SIZE, c.OPTIM.LR, c.TRAINER.KGCOOP.W) == (128, 0.002, 8.0)
    assert base.model.template == new.model.template == "a centered satellite photo of {}."  # EuroSAT's
    assert new.model.frozen_text_features.shape[0] == len(new.dm.dataset.classnames)
    assert set(ckpt["state_dict"]) == {"ctx"}
