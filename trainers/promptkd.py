"""Dassl trainer for PromptKD (Li et al., CVPR 2024): a prompted student distilled from a PromptSRC teacher.

As published (github zhengli97/PromptKD, base-to-new setting):
- the student learns from the teacher's logits on every training image of every class, labels unused
  (transductive; ``TRAINER.PROMPTKD.TRAIN_IMAGES all-classes``; ``train-x`` distils on the loaded
  training split only, e.g. the 16 shots of the base classes);
- its logits are taken against the teacher's text features of all classes, computed once;
- it is evaluated with the teacher's text features of the evaluated classes (base or new).

The teacher (``trainers/promptkd_teacher.py``) is held once, frozen, outside the registered model, so
checkpoints hold the student's prompts and projector only.
"""
from __future__ import annotations

import hashlib
import os

import torch
import torch.nn.functional as F
from dassl.data.data_manager import build_data_loader
from dassl.data.transforms import build_transform
from dassl.engine import TRAINER_REGISTRY

from .dpc.errors import ConfigError
from .base import PromptTrainer
from .clip_loader import effective_precision, load_clip
from .models.promptkd import PromptKDCLIP, distillation_loss
from .models.vl_prompts import check_image_size
from .promptkd_teacher import load_teacher

TEXT_CHUNK = 256  # classes per teacher text forward


@TRAINER_REGISTRY.register()
class PromptKD(PromptTrainer):
    """Unsupervised prompt distillation: ViT-B/16 student with vision prompts and a projector."""

    cfg_key = "PROMPTKD"

    # ---------------------------------------------------------------- data
    def build_data_loader(self):
        super().build_data_loader()
        if self.cfg.TRAINER.PROMPTKD.TRAIN_IMAGES != "all-classes":
            return
        dataset = self.dm.dataset
        items = getattr(dataset, "all_train", None)
        if items is None:
            raise ConfigError(f"TRAINER.PROMPTKD.TRAIN_IMAGES all-classes needs a dataset with an `all_train` list; "
                             f"{type(dataset).__name__} has none (use train-x)")
        x = self.cfg.DATALOADER.TRAIN_X
        self.train_loader_x = build_data_loader(
            self.cfg, sampler_type=x.SAMPLER, data_source=items, batch_size=x.BATCH_SIZE, n_domain=x.N_DOMAIN,
            n_ins=x.N_INS, tfm=build_transform(self.cfg, is_train=True), is_train=True)
        print(f"PromptKD: distilling on all {len(items):,} training images of all {len(dataset.all_classnames)} "
              "classes, labels unused (transductive, as published)")

    # ---------------------------------------------------------------- model
    def teacher_classnames(self):
        """Every class of the dataset when it knows them (the teacher scores base and new), else the loaded ones."""
        dataset = self.dm.dataset
        return list(getattr(dataset, "all_classnames", None) or dataset.classnames)

    def build_teacher(self):
        c, cfg = self.trainer_cfg, self.cfg
        prec = "fp32" if self.prec == "fp32" else "fp16"
        clip_model = load_clip(c.TEACHER_NAME, c.TEACHER_PATH, prec=prec, device=self.device)
        source = c.TEACHER_PATH or c.TEACHER_NAME
        check_image_size(cfg.INPUT.SIZE, clip_model, source)
        dataset = self.dm.dataset
        base = list(getattr(dataset, "base_classnames", None) or dataset.classnames)
        teacher, path = load_teacher(c.TEACHER_DIR, c.TEACHER_EPOCH, clip_model, source, c.CTX_INIT, base,
                                     self.teacher_classnames(), cfg.DATASET.NAME,
                                     transfer=cfg.DATASET.SUBSAMPLE_CLASSES == "all")
        self.teacher_record = teacher_record(teacher, path)
        return teacher.to(self.device)

    @torch.no_grad()
    def teacher_text_features(self) -> torch.Tensor:
        """The teacher's normalised text features of all its classes [C, D], in fp32 (computed once)."""
        t = self.teacher
        pl = t.prompt_learner
        prompts, tokens = pl.text_prompts(), pl.tokenized_prompts
        chunks = [t.text_encoder(prompts[i:i + TEXT_CHUNK], tokens[i:i + TEXT_CHUNK], pl.deep_text_prompts())
                  for i in range(0, len(tokens), TEXT_CHUNK)]
        return F.normalize(torch.cat(chunks).float(), dim=-1)

    def build_model(self):
        self.prec = effective_precision(self.trainer_cfg.PREC, self.device)  # the teacher is built first
        self.teacher = self.build_teacher()
        self.teacher_text = self.teacher_text_features()
        names = self.teacher_classnames()
        self.class_rows = [names.index(name) for name in self.dm.dataset.classnames]
        super().build_model()
        self.checkpoint_text(self.teacher)  # its text tower runs with gradients in DPC stage 2 (the text copy)

    def build_prompt_model(self, classnames, clip_model):
        c = self.trainer_cfg
        return PromptKDCLIP(clip_model, self.teacher_text[self.class_rows], n_ctx_vision=c.N_CTX_VISION,
                            depth_vision=c.PROMPT_DEPTH_VISION)

    # ---------------------------------------------------------------- training
    @torch.no_grad()
    def teacher_image_features(self, images) -> torch.Tensor:
        """The teacher's normalised image features [N, D] (fp32, no gradients)."""
        return F.normalize(self.teacher.encode_image(images).float(), dim=-1)

    def distill(self, images, image_features, text_features, teacher_image_features=None):
        """(KD_WEIGHT * L_kd, student logits, teacher logits) of the student's ``image_features`` of ``images``
        on the classes of ``text_features`` (the teacher's); the teacher's image features are computed unless given."""
        c = self.trainer_cfg
        teacher_image = self.teacher_image_features(images) if teacher_image_features is None else teacher_image_features
        teacher = self.teacher.logit_scale.exp().float() * teacher_image @ text_features.t()
        student = self.model.logits(image_features, text_features)
        return c.KD_WEIGHT * distillation_loss(student, teacher, c.TEMPERATURE), student, teacher

    def compute_loss(self, images, labels):
        """Distillation over all the teacher's classes (all-classes) or the loaded ones (train-x); labels unused."""
        transductive = self.trainer_cfg.TRAIN_IMAGES == "all-classes"
        text = self.teacher_text if transductive else self.model.text_features
        loss, student, teacher = self.distill(images, self.model.encode_image(images), text)
        agree = (student.argmax(1) == teacher.argmax(1)).float().mean().item() * 100
        return loss, {"agree_with_teacher": agree}

    # ---------------------------------------------------------------- checkpoints
    def checkpoint_extras(self) -> dict:
        extras = super().checkpoint_extras()
        extras["teacher"] = self.teacher_record
        return extras

    def check_checkpoint_settings(self, path, ckpt):
        super().check_checkpoint_settings(path, ckpt)
        saved, current = ckpt.get("teacher"), self.teacher_record
        if saved is None:
            print(f"Warning: {path} does not record its teacher; it is evaluated with {current['file']}")
        elif not same_teacher(saved, current):
            raise ConfigError(f"{path} was distilled from the teacher {saved.get('file')}, but this run's teacher is "
                             f"{current['file']} (other prompts): set TRAINER.PROMPTKD.TEACHER_DIR (and TEACHER_EPOCH) "
                             "to the teacher of that run")


def _prompt_digest(teacher, dtype) -> str:
    digest = hashlib.sha256()
    for key, value in sorted(teacher.prompt_learner.named_parameters()):
        digest.update(key.encode() + value.detach().to(dtype).cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def teacher_record(teacher, path: str) -> dict:
    """The teacher's file and digests of its prompts: a student is only evaluated with its own teacher.

    ``prompts_fp16_sha256`` digests the prompts rounded to fp16, so it is the same whether the teacher was loaded
    in fp16 (PREC fp16/amp on a GPU) or fp32 (PREC fp32, or any PREC on a CPU); ``prompts_sha256`` (fp32) is what
    records written before it hold."""
    return {"file": os.path.abspath(path), "prompts_sha256": _prompt_digest(teacher, torch.float32),
            "prompts_fp16_sha256": _prompt_digest(teacher, torch.float16)}


def same_teacher(saved: dict, current: dict) -> bool:
    """Whether a student's recorded teacher is ``current`` (by the fp16 digest when the record has one)."""
    key = "prompts_fp16_sha256" if "prompts_fp16_sha256" in saved else "prompts_sha256"
    return saved.get(key) == current[key]
