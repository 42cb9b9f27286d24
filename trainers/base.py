"""``PromptTrainer``: the Dassl ``TrainerX`` shared by our backbones (CoOp, CoCoOp, KgCoOp, MaPLe, IVLP, PromptSRC).

A backbone trainer sets ``cfg_key`` (its ``cfg.TRAINER.<KEY>`` node) and implements
``build_prompt_model``; the model it returns has a ``prompt_learner`` submodule holding every
learnable tensor. Checkpoints follow Dassl's layout (``<out>/prompt_learner/model.pth.tar-<epoch>``),
are written atomically and record the class names and trainer that produced them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from dassl.engine import TrainerX
from dassl.metrics import compute_accuracy
from dassl.optim import build_lr_scheduler, build_optimizer

from .clip_loader import effective_precision, load_clip
from .encoders import checkpoint_text
from .models.vl_prompts import check_image_size
from .options import check_dataset_options, check_trainer_options
from .dpc import dassl_compat, replay
from .dpc.errors import ConfigError
from .dpc.checkpoint import (check_evaluated_classes, discard_incomplete, load_state_checked, read_saved_model,
                             restore_training_state, save_registered_models)

dassl_compat.apply()


class PromptTrainer(TrainerX):
    cfg_key = ""
    dpc_terms_declared = True  # forward_backward's loss is compute_loss's: CE plus regularization_terms, if any

    @property
    def trainer_cfg(self):
        return self.cfg.TRAINER[self.cfg_key]

    def check_cfg(self, cfg):
        check_dataset_options(cfg)
        check_trainer_options(self.cfg_key, cfg)

    def build_prompt_model(self, classnames, clip_model):
        raise NotImplementedError

    def build_model(self):
        cfg = self.cfg
        self.prec = effective_precision(self.trainer_cfg.PREC, self.device)
        clip_model = load_clip(cfg.MODEL.BACKBONE.NAME, cfg.MODEL.BACKBONE.PATH, prec=self.prec, device=self.device)
        check_image_size(cfg.INPUT.SIZE, clip_model, cfg.MODEL.BACKBONE.PATH or cfg.MODEL.BACKBONE.NAME)
        print(f"Building {type(self).__name__} for {self.dm.num_classes} classes")
        self.model = self.build_prompt_model(self.dm.dataset.classnames, clip_model)
        for name, param in self.model.named_parameters():
            param.requires_grad_(name.startswith("prompt_learner."))
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        print(f"Learnable prompt parameters: {trainable:,}")
        self.model.to(self.device)
        self.checkpoint_text(self.model)
        self.optim = build_optimizer(self.model.prompt_learner, cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        self.register_model("prompt_learner", self.model.prompt_learner, self.optim, self.sched)
        # amp: fp32 weights, autocast forward, loss scaling (torch.amp's scaler; torch.cuda.amp's is deprecated)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.prec == "amp" else None

    def checkpoint_text(self, model):
        """MODEL.CHECKPOINT_TEXT: activation checkpointing of ``model``'s text towers."""
        if self.cfg.MODEL.CHECKPOINT_TEXT and checkpoint_text(model, True):
            print(f"Text tower of {type(model).__name__}: activation checkpointing (MODEL.CHECKPOINT_TEXT)")

    def parse_batch_train(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device)

    def compute_loss(self, images, labels):
        """Loss and extra logged values of one batch: cross-entropy, plus the backbone's own terms when its
        trainer defines ``regularization_terms(images, image_features, text_features) -> {name: loss}``
        (PromptSRC, KgCoOp; DPC stage 2 adds the same terms to L_CL)."""
        terms_of = getattr(self, "regularization_terms", None)
        if terms_of is None:
            logits = self.model(images)
            return F.cross_entropy(logits, labels), {"acc": compute_accuracy(logits, labels)[0].item()}
        image_features, text_features = self.model.encode_image(images), self.model.encode_text()
        logits = self.model.logits(image_features, text_features)
        ce = F.cross_entropy(logits, labels)
        terms = terms_of(images, image_features, text_features)
        logged = {"acc": compute_accuracy(logits, labels)[0].item(), "ce": ce.item()}
        logged.update({name: value.item() for name, value in terms.items()})
        return ce + sum(terms.values()), logged

    @replay.only_updates_lr  # DPC stage 2 need not replay it at epoch end
    def forward_backward(self, batch):
        images, labels = self.parse_batch_train(batch)
        if self.scaler is not None:
            with torch.autocast(images.device.type):  # fp16 on CUDA (and where bench/cuda_paths.py simulates it on CPU)
                loss, logged = self.compute_loss(images, labels)
            self.optim.zero_grad()
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optim)
            self.scaler.update()
        else:
            loss, logged = self.compute_loss(images, labels)
            self.model_backward_and_update(loss)
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return {"loss": loss.item(), **logged}

    def checkpoint_extras(self) -> dict:
        return {"classnames": list(self.dm.dataset.classnames), "trainer": type(self).__name__,
                "dataset": self.cfg.DATASET.NAME}

    def resume_model_if_exist(self, directory):
        discard_incomplete(directory, self.get_model_names())
        start_epoch = super().resume_model_if_exist(directory)
        if start_epoch > 0:
            restore_training_state(self, directory)
        return start_epoch

    def save_model(self, epoch, directory, is_best=False, val_result=None, model_name=""):
        save_registered_models(self, epoch, directory, is_best, val_result, model_name, self.checkpoint_extras())

    def check_checkpoint_kind(self, path: str, ckpt: dict) -> None:
        """Refuse a checkpoint this trainer cannot evaluate (DPC and DePT trainers override it)."""
        if "dpc" in ckpt:
            raise ConfigError(f"{path} is a DPC stage-2 checkpoint: evaluate it with --trainer DPC_{type(self).__name__}")
        if "dept" in ckpt:
            raise ConfigError(f"{path} belongs to a DePT run: evaluate it with --trainer DePT_{type(self).__name__}")

    def check_checkpoint_settings(self, path: str, ckpt: dict) -> None:
        """Refuse a checkpoint trained with settings this run does not have (PromptKD: another teacher)."""

    def saved_keys(self, name: str, module):
        """State-dict keys of registered model ``name`` that its checkpoints hold (None: all of them)."""
        return None

    def load_model(self, directory, epoch=None):
        if not directory:
            raise ConfigError("no model directory given: --eval-only needs --model-dir (a training output dir)")
        for name, module in self._models.items():
            path, ckpt = read_saved_model(directory, name, epoch)
            self.check_checkpoint_kind(path, ckpt)
            self.check_checkpoint_settings(path, ckpt)
            check_evaluated_classes(path, ckpt, self.dm.dataset, self.cfg.DATASET.SUBSAMPLE_CLASSES)
            load_state_checked(module, ckpt["state_dict"], path, keys=self.saved_keys(name, module),
                               hint="Use the same trainer options (N_CTX, CTX_INIT, CSC, prompt depth, backbone); "
                                    "class-specific contexts (CSC) cannot move to other classes.")
            print(f"Loaded {path} into {name} (epoch {ckpt.get('epoch')})")
