"""``DePTMixin``: turns a Dassl prompt-learning ``TrainerX`` into its DePT version (one stage: the backbone's prompts
and DePT's CAT head are trained together).

    @TRAINER_REGISTRY.register()
    class DePT_MyLearner(DePTMixin, MyLearner):
        pass

The backbone trainer builds and registers its model as usual; the mixin adds the CAT head (``head.CATHead``) as
one more registered model, ``dept_head``, with its own optimizer at ``OPTIM.LR * DEPT.HEAD_LR_MULT`` and the same
schedule (DePT's code: one optimizer, the head's parameter group at 6.5x the learning rate; SGD and Dassl's
schedulers treat groups independently, so this is the same update). Dassl then saves, resumes, schedules and
steps the head like any model; PromptSRC's weight averaging (GPA) covers it too.

Features: as DPC does (``trainers/dpc/features.py``), the mixin watches one forward of the backbone's model to
find the image and text features behind its logits; when that fails it names the one method to define,
``dept_features(images) -> (image_features [N, D], text_features [C, D] or [N, C, D])``, unnormalised.

Training step (replaces the backbone's ``forward_backward``): ``(1 - DEPT.WEIGHT) * CE(prompt logits) +
DEPT.WEIGHT * CE(head logits)``, plus the backbone trainer's ``regularization_terms`` when it has them, at their
own weights (DePT's KgCoOp recipe adds its term so; PromptSRC's L_SCL the same way). The learning-rate schedule
steps after each epoch's last batch.

Evaluation: classes the head was trained on (base classes; all of them or a subset, by name) are predicted by
the fused scores (``DEPT.FUSION``), any other classes (new classes, other datasets) by the backbone alone.
"""
from __future__ import annotations

import contextlib

import torch
from dassl.metrics import compute_accuracy
from dassl.optim import build_lr_scheduler, build_optimizer

from ..dpc import dassl_compat
from ..dpc.amp_step import autocast, backward_and_update
from ..dpc.checkpoint import check_evaluated_classes, load_state_checked, read_saved_model, save_registered_models
from ..dpc.errors import ConfigError
from ..dpc.features import FeatureCapture, FeatureDiscoveryError, cosine_logits, find_feature_sites, probe_images
from ..plugins import backbone_class_name
from .config import check_dept_config
from .head import CATHead, dept_loss, fuse

dassl_compat.apply()

HEAD = "dept_head"  # the registered model name, and the checkpoint folder
FEATURES_EXAMPLE = """\
    class DePT_MyLearner(DePTMixin, MyLearner):
        def dept_features(self, images):
            m = self.model                       # as MyLearner's forward computes them, unnormalised
            image_features = m.image_encoder(images.type(m.dtype))
            text_features = m.text_encoder(m.prompt_learner(), m.tokenized_prompts)
            return image_features, text_features  # [N, D] and [C, D] (or [N, C, D])"""


class DePTMixin:

    # ---------------------------------------------------------------- configuration
    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        check_dept_config(cfg.DEPT)

    @classmethod
    def dept_backbone_name(cls) -> str:
        """Name of the backbone trainer class this DePT trainer extends (e.g. 'CoOp')."""
        return backbone_class_name(cls, DePTMixin)

    # ---------------------------------------------------------------- model
    def build_model(self):
        super().build_model()
        self.dept_net = getattr(self.model, "module", self.model)  # unwrap DataParallel
        self.dept_capture = None
        dim, dtype = self._dept_probe()
        self.dept_head_classes = list(self.dm.dataset.classnames)  # what the head's rows stand for
        self.dept_fused = True  # False once an evaluation's classes are not the head's
        head = CATHead(dim, len(self.dept_head_classes), dtype).to(self.device)
        head_optim = self.cfg.OPTIM.clone()
        head_optim.defrost()
        head_optim.LR = self.cfg.OPTIM.LR * self.cfg.DEPT.HEAD_LR_MULT
        optim = build_optimizer(head, head_optim)
        self.register_model(HEAD, head, optim, build_lr_scheduler(optim, self.cfg.OPTIM))
        self.dept_head = head
        d = self.cfg.DEPT
        print(f"DePT: CAT head on {dim}-channel features over {len(self.dept_head_classes)} classes "
              f"({sum(p.numel() for p in head.parameters()):,} parameters, lr {head_optim.LR:g} = "
              f"{d.HEAD_LR_MULT:g} x OPTIM.LR); loss {1 - d.WEIGHT:g} x CE(prompt) + {d.WEIGHT:g} x CE(head); "
              f"trained classes predicted by fused {d.FUSION}")

    def _dept_custom_features(self) -> bool:
        return type(self).dept_features is not DePTMixin.dept_features

    def _dept_probe(self):
        """Find the feature sites (unless ``dept_features`` is defined) and return the features' (width, dtype)."""
        probe = probe_images(self.cfg.INPUT.SIZE, self.device)
        if not self._dept_custom_features():
            try:
                sites = find_feature_sites(self.dept_net, probe, self.dm.num_classes)
            except FeatureDiscoveryError as err:
                raise FeatureDiscoveryError(
                    f"DePT could not find where {type(self.dept_net).__name__}.forward computes its image and text "
                    f"features (see the log for what was tried). Define the one method DePT needs, `dept_features`, "
                    f"in your DePT trainer:\n{FEATURES_EXAMPLE}") from err
            self.dept_capture = FeatureCapture(self.dept_net, sites)
            print(f"DePT: features read from {sites.image} (image) and {sites.text} (text, "
                  f"{'per image' if sites.conditioned else 'shared by all images'}) in {type(self.dept_net).__name__}.forward")
        with torch.no_grad():
            image, _ = self.dept_features(probe)
        return image.shape[-1], image.dtype

    def dept_features(self, images):
        """(image features [N, D], text features [C, D] or [N, C, D]) behind the backbone's logits, unnormalised."""
        return self.dept_capture(images)

    # ---------------------------------------------------------------- training
    def before_train(self):
        super().before_train()
        if getattr(self, "regularization_terms", None) is None and not getattr(self, "dpc_terms_declared", False):
            print(f"DePT: {self.dept_backbone_name()}.forward_backward is replaced by DePT's step; loss terms it adds to "
                  "its cross-entropy are not seen (give the trainer `regularization_terms(images, image_features, "
                  "text_features) -> {name: loss}` to keep them)")

    def dept_prompt_logits(self, image_features, text_features):
        """The backbone's classifier: CLIP's logit scale times the cosine similarities (fp32)."""
        return self.dept_net.logit_scale.exp().float() * cosine_logits(image_features, text_features)

    def dept_loss(self, images, labels):
        """DePT's loss of one batch plus the backbone's own terms: (loss, logged values)."""
        image_features, text_features = self.dept_features(images)
        logits = self.dept_prompt_logits(image_features, text_features)
        head_logits, head_labels = self.dept_head.training_logits(image_features, text_features, labels)
        loss, ce, ce_head = dept_loss(logits, labels, head_logits, head_labels, self.cfg.DEPT.WEIGHT)
        logged = {"acc": compute_accuracy(logits, labels)[0].item(), "ce": ce.item(), "ce_head": ce_head.item()}
        terms = getattr(self, "regularization_terms", None)
        for name, term in (terms(images, image_features, text_features) if terms else {}).items():
            loss = loss + term
            logged[name] = term.item()
        return loss, logged

    def forward_backward(self, batch):
        images = batch["img"].to(self.device)
        labels = batch["label"].to(self.device)
        with autocast(self, images.device.type):  # PREC amp
            loss, logged = self.dept_loss(images, labels)
        backward_and_update(self, loss)
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return {"loss": loss.item(), **logged}

    # ---------------------------------------------------------------- evaluation
    def model_inference(self, images):
        if not self.dept_fused:
            return super().model_inference(images)
        image_features, text_features = self.dept_features(images)
        d = self.cfg.DEPT
        return fuse(self.dept_prompt_logits(image_features, text_features), self.dept_head(image_features),
                    d.WEIGHT, d.FUSION)

    # ---------------------------------------------------------------- checkpoints
    def checkpoint_extras(self) -> dict:
        parent = getattr(super(), "checkpoint_extras", None)
        extras = parent() if parent else {"classnames": list(self.dm.dataset.classnames),
                                          "dataset": self.cfg.DATASET.NAME}
        d = self.cfg.DEPT
        extras["dept"] = {"weight": d.WEIGHT, "head_lr_mult": d.HEAD_LR_MULT, "fusion": d.FUSION,
                          "backbone": self.dept_backbone_name(), "head_classes": self.dept_head_classes}
        return extras

    def save_model(self, epoch, directory, is_best=False, val_result=None, model_name=""):
        save_registered_models(self, epoch, directory, is_best, val_result, model_name, self.checkpoint_extras())

    def check_checkpoint_kind(self, path: str, ckpt: dict) -> None:
        """Called by our backbones' ``load_model``: only a DePT run's checkpoints are evaluated here."""
        if "dept" not in ckpt:
            raise ConfigError(f"{path} is not a DePT checkpoint (no 'dept' record): evaluate it with the trainer that "
                             f"wrote it (e.g. --trainer {self.dept_backbone_name()})")

    @contextlib.contextmanager
    def _dept_head_hidden(self):
        """The head is not a registered model during the block (the backbone's ``load_model`` loads its own)."""
        saved = [(registry, registry.pop(HEAD)) for registry in (self._models, self._optims, self._scheds)]
        try:
            yield
        finally:
            for registry, value in saved:
                registry[HEAD] = value

    def load_model(self, directory, epoch=None):
        """Load a DePT run for evaluation: the backbone's ``load_model`` restores its prompts, then the head is
        loaded with its rows in the order of the evaluated classes (all must be among its trained classes; for
        any other classes the backbone predicts alone)."""
        if not directory:
            raise ConfigError("--model-dir is required to evaluate a DePT model")
        path, ckpt = read_saved_model(directory, HEAD, epoch)
        self.check_checkpoint_kind(path, ckpt)
        check_evaluated_classes(path, ckpt, self.dm.dataset, self.cfg.DATASET.SUBSAMPLE_CLASSES)
        with self._dept_head_hidden():
            super().load_model(directory, epoch)
        trained = {name: row for row, name in enumerate(ckpt["dept"]["head_classes"])}
        evaluated = list(self.dm.dataset.classnames)
        unknown = [name for name in evaluated if name not in trained]
        self.dept_fused = not unknown
        if unknown:
            print(f"DePT: {len(unknown)} of the {len(evaluated)} evaluated classes (e.g. {unknown[0]!r}) are not among "
                  f"the {len(trained)} the head was trained on: {self.dept_backbone_name()}'s prompts alone predict "
                  "them (DePT's rule for new classes)")
            return
        state = dict(ckpt["state_dict"])
        rows = [trained[name] for name in evaluated]
        for key in ("classifier.weight", "classifier.bias"):
            if key in state:
                state[key] = state[key][rows]
        load_state_checked(self.dept_head, state, path, hint="Evaluate with the trainer, backbone and CLIP the "
                                                              "DePT model was trained with.")
        print(f"Loaded DePT head from {path} (epoch {ckpt.get('epoch')}): the {len(evaluated)} evaluated classes are "
              f"predicted by the fused {self.cfg.DEPT.FUSION} (weight {self.cfg.DEPT.WEIGHT:g})")
