"""``DPCMixin``: turns a Dassl prompt-learning ``TrainerX`` into its DPC (stage-2) version.

    @TRAINER_REGISTRY.register()
    class DPC_MyLearner(DPCMixin, MyLearner):
        pass

The backbone trainer is used as it is: its ``build_model`` builds and registers the model, its own
``load_model`` restores the stage-1 checkpoint (frozen tensors included, whatever it restores), then
the mixin gives every learnable tensor its dual (``decoupling.attach``) and replaces the training step
by the hard-negative optimizer.

Features: the mixin watches one forward of the backbone's model and finds the submodules whose outputs
are the image and text features behind its logits (``features.find_feature_sites``; text may depend on
the image, as in CoCoOp). When that fails it stops before training and names the one method to define,
``dpc_features(images) -> (image_features [N, D], text_features [C, D] or [N, C, D])``. The step encodes the
text of its pairs' classes only wherever that is exact (``text_classes``, DPC.TEXT_CLASSES).

Epoch end: on each epoch's last batch the backbone's own ``forward_backward`` runs once more with its
optimizer steps disabled, so what it does at epoch end (the learning-rate schedule, PromptSRC's GPA
inside ``forward_backward``) keeps working. A ``load_state_dict`` it makes on the model then changes
trained tensors only: the stage-1 prompts P and frozen weights stay as stage 1 left them.

Class attributes (fnmatch patterns relative to each registered model; ``None``: every tensor):
``dpc_prompt_names``, the tensors that get a dual (default: every trainable parameter of the registered
models); ``dpc_w_base_names`` and ``dpc_w_new_names``, the duals w_b and w_n act on (``tensor_rules``; the
others train as plain parameters from stage 1 / give their stage-1 value on new classes). And
``dpc_negative_transform``: "train" or "test", the Dassl transform of the negative images (``DPC.NEG_TRANSFORM
auto``).

Backbone loss terms run in parallel with L_CL (paper Sec. 3.3): a backbone trainer that defines
``regularization_terms(images, image_features, text_features) -> {name: loss}`` (PromptSRC's L_SCL,
KgCoOp's term) gets those terms added to L_CL in stage 2, computed with P' on the anchors
(``DPC.PARALLEL_LOSS`` turns this off). A DPC trainer can instead override ``dpc_extra_loss``. Without
either, a backbone with its own ``forward_backward`` gets a note at the start of stage 2 (``backbone_terms``).
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import re

import torch
import torch.nn.functional as F

from dassl.data.transforms import build_transform

from .errors import ConfigError, MissingFileError
from . import dassl_compat, decoupling, replay, tensor_rules, text_classes
from .amp_step import autocast, backward_and_update
from .backbone_terms import missing_terms_note
from .checkpoint import (check_classes, check_evaluated_classes, discard_incomplete, load_checkpoint,
                         load_state_checked, read_saved_model, restore_training_state, save_registered_models)
from .files import atomic_write_text, checkpoint_path, resume_path
from .config import check_dpc_options
from .features import FeatureCapture, cosine_logits, find_feature_sites, probe_images
from .negatives import negative_bank
from .loss import symmetric_infonce
from .sampler import HardNegativeSampler, index_by_class

dassl_compat.apply()


class DPCMixin:
    dpc_prompt_names = None
    dpc_w_base_names = None  # the release's rule where there is one (DPC_PromptKD); None: every dual
    dpc_w_new_names = None
    dpc_negative_transform = "train"  # as the CoOp release
    # the backbone's terms read the text features of every class (DPC.TEXT_CLASSES auto then encodes all classes)
    dpc_terms_need_all_classes = True

    # ---------------------------------------------------------------- configuration
    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        check_dpc_options(cfg)

    @classmethod
    def dpc_backbone_name(cls) -> str:
        """Name of the backbone trainer class this DPC trainer extends (e.g. 'CoOp')."""
        mro = cls.__mro__
        return mro[mro.index(DPCMixin) + 1].__name__

    # ---------------------------------------------------------------- model
    def build_model(self):
        super().build_model()
        d = self.cfg.DPC
        self.dpc_net = getattr(self.model, "module", self.model)  # unwrap DataParallel
        self.dpc_loading = None
        self.dpc_stage1 = self._dpc_load_stage1() if d.STAGE1_DIR else None
        self.dpc_prompts = {name: names for name, module in self._models.items()
                            if (names := decoupling.trainable_names(module, self.dpc_prompt_names))}
        if not self.dpc_prompts:
            raise ConfigError(f"DPC found no learnable prompt tensor in {type(self).__name__}'s registered models; "
                             "set `dpc_prompt_names` or make sure the backbone leaves its prompts trainable")
        owner = type(self).__name__
        self.dpc_weighted = tensor_rules.select(self.dpc_prompts, self.dpc_w_base_names, d.W_BASE_TENSORS, owner,
                                                "dpc_w_base_names", "W_BASE_TENSORS")
        mixed_new = tensor_rules.select(self.dpc_prompts, self.dpc_w_new_names, d.W_NEW_TENSORS, owner,
                                        "dpc_w_new_names", "W_NEW_TENSORS")
        for name, module in self._models.items():
            if name in self.dpc_prompts:
                decoupling.attach(module, self.dpc_prompts[name], w_train=d.W_BASE, w_new=d.W_NEW,
                                  base_prompt=d.BASE_PROMPT, update=d.UPDATE, weighted=self.dpc_weighted[name],
                                  mixed_new=mixed_new[name])
            norms = decoupling.attach_statistics(module)
            if norms:
                print(f"DPC: batch-norm statistics of {', '.join(norms)} keep a stage-1 copy (used in stage1 and new modes)")
        n_tensors = sum(len(v) for v in self.dpc_prompts.values())
        print(f"DPC: {n_tensors} prompt tensors get a dual (update {d.UPDATE}, w_b={d.W_BASE:g}, "
              f"w_n={d.W_NEW:g}, base prompt {d.BASE_PROMPT})")
        print(tensor_rules.report(self.dpc_prompts, self.dpc_weighted, mixed_new, owner,
                                  (f"DPC.W_BASE_TENSORS {d.W_BASE_TENSORS}", f"DPC.W_NEW_TENSORS {d.W_NEW_TENSORS}")))
        self.dpc_modes = decoupling.Modes(self.dpc_net)  # listed once: the mode changes twice per step
        self.dpc_modes.set("train")
        self.dpc_sampler = self.dpc_bank = self.dpc_capture = self.dpc_stage1_text = None
        if self.dpc_stage1 is not None:
            self._dpc_build_sampler()

    def _dpc_missing_stage1(self, path: str) -> str:
        backbone = self.dpc_backbone_name()
        return (
            f"DPC stage-1 checkpoint not found: {path}\n"
            f"Stage 2 starts from a trained {backbone} prompt. Train it on the base classes first, e.g.\n"
            f"  bash scripts/{backbone.lower()}/base2new_train.sh <dataset> {self.cfg.SEED}\n"
            f"(or run `bash scripts/dpc/base2new_train.sh <dataset> {self.cfg.SEED} {backbone.lower()}`, which trains "
            "stage 1 when it is missing), or point DPC.STAGE1_DIR / DPC.STAGE1_EPOCH at an existing run."
        )

    @contextlib.contextmanager
    def _dpc_backbone_loading(self, kind: str):
        """The backbone's ``load_model`` reads a ``kind`` ('stage1' or 'stage2') checkpoint in the block."""
        self.dpc_loading = kind
        try:
            yield
        finally:
            self.dpc_loading = None

    def check_checkpoint_kind(self, path: str, ckpt: dict) -> None:
        """Called by our backbones' ``load_model``: a stage-1 source must not be a DPC checkpoint, and vice versa."""
        if self.dpc_loading == "stage1" and "dpc" in ckpt:
            raise ConfigError(f"{path} is a DPC stage-2 checkpoint; DPC.STAGE1_DIR must point to the "
                             f"{self.dpc_backbone_name()} (stage-1) run")
        if self.dpc_loading != "stage1" and "dpc" not in ckpt:
            raise ConfigError(f"{path} is not a DPC stage-2 checkpoint (no 'dpc' record); evaluate a stage-1 "
                             f"checkpoint with --trainer {self.dpc_backbone_name()}")

    def _dpc_load_stage1(self) -> dict:
        """Restore stage 1 through the backbone's own ``load_model``, after checking every file."""
        d = self.cfg.DPC
        classnames = list(self.dm.dataset.classnames)
        files, epochs = {}, {}
        for name in self.get_model_names():
            path = checkpoint_path(d.STAGE1_DIR, name, d.STAGE1_EPOCH)
            if not os.path.isfile(path):
                raise MissingFileError(self._dpc_missing_stage1(path))
            ckpt = load_checkpoint(path)
            with self._dpc_backbone_loading("stage1"):
                self.check_checkpoint_kind(path, ckpt)
            check_classes(path, ckpt, classnames, "the classes stage 2 trains on (use the same dataset, "
                          "DATASET.SUBSAMPLE_CLASSES base and seed for both stages; to evaluate a trained DPC "
                          "model, leave DPC.STAGE1_DIR empty)")
            files[name] = os.path.abspath(path)
            match = re.search(r"model\.pth\.tar-(\d+)$", path)
            epochs[name] = int(match.group(1)) if match else None  # None: Dassl's model-best.pth.tar
        if len(set(epochs.values())) != 1:
            raise ConfigError(f"the models of the stage-1 run {d.STAGE1_DIR} were saved at different epochs "
                             f"{epochs}: set DPC.STAGE1_EPOCH")
        epoch = next(iter(epochs.values()))
        with self._dpc_backbone_loading("stage1"):
            super().load_model(d.STAGE1_DIR, epoch)
        print(f"DPC: stage 1 restored by {self.dpc_backbone_name()}.load_model from {d.STAGE1_DIR} "
              f"({'epoch ' + str(epoch) if epoch else 'model-best'})")
        return {"dir": os.path.abspath(d.STAGE1_DIR), "epoch": epoch, "files": files,
                "trainer": self.dpc_backbone_name()}

    def _dpc_build_sampler(self):
        d = self.cfg.DPC
        dataset = self.dm.dataset
        if d.NEG_SOURCE == "few-shot":
            items = dataset.train_x
        else:
            items = getattr(dataset, "full_train", None)
            if items is None:
                raise ConfigError(f"DPC.NEG_SOURCE full-train needs a dataset with a `full_train` list; "
                                 f"{type(dataset).__name__} has none (use few-shot)")
        num_classes = self.dm.num_classes
        by_class = index_by_class([item.label for item in items], num_classes)
        seed = self.cfg.SEED if self.cfg.SEED >= 0 else None
        self.dpc_sampler = HardNegativeSampler(by_class, num_classes, d.TOPK, rng=random.Random(seed),
                                               classnames=dataset.classnames, choice=d.NEGATIVES)
        transform = self.dpc_neg_transform()
        self.dpc_bank = negative_bank([item.impath for item in items],
                                      build_transform(self.cfg, is_train=transform == "train"),
                                      max_bytes=int(d.NEG_STORE_GB * 2 ** 30), prefill=d.NEG_PREFILL)
        print(f"DPC: {d.NEGATIVES} negatives from {len(items)} {d.NEG_SOURCE} images of {num_classes} base classes, "
              f"K={d.TOPK}, through the {transform} transform (DPC.NEG_TRANSFORM {d.NEG_TRANSFORM})")

    def dpc_neg_transform(self) -> str:
        """'train' or 'test': the Dassl transform of the negative images (DPC.NEG_TRANSFORM, or the trainer's)."""
        choice = self.cfg.DPC.NEG_TRANSFORM
        if choice == "auto":
            choice = self.dpc_negative_transform
            if choice not in ("train", "test"):
                raise ConfigError(f"{type(self).__name__}.dpc_negative_transform must be 'train' or 'test', got "
                                 f"{choice!r} (or set DPC.NEG_TRANSFORM train|test)")
        return choice

    # ---------------------------------------------------------------- features
    def dpc_features(self, images):
        """(image features [N, D], text features of all classes [C, D] or per image [N, C, D]) under the
        current prompts, as the backbone's forward computes them. Override it when the mixin cannot find
        them (it says so before training); the default runs the model's forward and reads them there."""
        return self.dpc_capture(images)

    def _dpc_custom_features(self) -> bool:
        return type(self).dpc_features is not DPCMixin.dpc_features

    def _dpc_find_features(self):
        """Locate the feature sites in the backbone's forward (once, before training)."""
        sites = find_feature_sites(self.dpc_net, probe_images(self.cfg.INPUT.SIZE, self.device), self.dm.num_classes)
        self.dpc_capture = FeatureCapture(self.dpc_net, sites)
        text = "per image" if sites.conditioned else "shared by all images"
        image = "frozen (anchors' stage-1 features reused)" if self.dpc_capture.can_reuse_anchors() else "prompted"
        print(f"DPC: features read from {sites.image} (image, {image}) and {sites.text} (text, {text}) "
              f"in {type(self.dpc_net).__name__}.forward")

    def _dpc_stage1_features(self, images):
        """Anchors' image features and the text features under the stage-1 prompts P (no gradients)."""
        with torch.no_grad(), self.dpc_modes.switched("stage1"):
            if self._dpc_custom_features():
                return self.dpc_features(images)
            fixed = self.dpc_capture.can_fix_text()  # text of P does not change: computed once
            image, text = self.dpc_capture(images, text=self.dpc_stage1_text if fixed else None)
            if fixed:
                self.dpc_stage1_text = text
            return image, text

    def _dpc_train_features(self, images, anchor_features, classes=None):
        """Features of anchors + negatives under P' (with gradients); ``classes``: the text of these classes only
        (``text_classes.pair_classes``), else of all classes."""
        if self._dpc_custom_features():
            return self.dpc_features(images) if classes is None else self.dpc_features(images, classes=classes)
        reuse = anchor_features is not None and self.dpc_capture.can_reuse_anchors()
        return self.dpc_capture(images, anchors=anchor_features if reuse else None, classes=classes)

    def dpc_plan_text(self):
        """Decide which classes the step encodes the text of (DPC.TEXT_CLASSES) and say it in one line."""
        self.dpc_text_plan = text_classes.plan(self, DPCMixin)
        print(self.dpc_text_plan.note)

    # ---------------------------------------------------------------- training
    def resume_model_if_exist(self, directory):
        discard_incomplete(directory, self.get_model_names())  # (any backbone, not only ours)
        self._dpc_check_resumable(directory)
        start_epoch = super().resume_model_if_exist(directory)
        if start_epoch > 0:  # RNG states (again for our trainers, harmless) and the sampler's own
            ckpt = restore_training_state(self, directory)
            state = (ckpt or {}).get("dpc_sampler_rng")
            if state is not None:
                self.dpc_sampler.rng.setstate(state)
        return start_epoch

    def _dpc_check_resumable(self, directory):
        """Refuse to resume a run that was trained from another stage 1 or with other DPC options."""
        for name in self.get_model_names():
            path = resume_path(directory, name)
            if path is None:
                return
            meta = load_checkpoint(path).get("dpc")
            if meta is None:
                raise ConfigError(f"cannot resume from {path}: it is not a DPC stage-2 checkpoint; use a fresh --output-dir")
            d = self.cfg.DPC
            current = {"update": d.UPDATE, "w_base": d.W_BASE, "topk": d.TOPK, "neg_source": d.NEG_SOURCE,
                       "parallel_loss": d.PARALLEL_LOSS, "objective": d.OBJECTIVE, "negatives": d.NEGATIVES,
                       "neg_transform": self.dpc_neg_transform(), "weighted_tensors": self.dpc_weighted,
                       "text_classes": d.TEXT_CLASSES, "stage-1 checkpoint": self.dpc_stage1["files"].get(name)}
            saved = dict(meta, **{"stage-1 checkpoint": (meta.get("stage1") or {}).get("files", {}).get(name)})
            saved.setdefault("objective", "hard-negatives")  # written before these options existed
            saved.setdefault("negatives", "hard")
            saved.setdefault("neg_transform", "train")
            saved.setdefault("text_classes", "all")  # before the option: every class encoded
            saved.setdefault("weighted_tensors", meta.get("prompt_tensors"))  # then w_b acted on every dual
            changed = [f"{key} {saved.get(key)!r} -> {value!r}" for key, value in current.items() if saved.get(key) != value]
            if changed:
                raise ConfigError(f"cannot resume {path} with other DPC settings ({'; '.join(changed)}): "
                                 "use the run's original options or a fresh --output-dir")

    def train(self, *args, **kwargs):
        try:
            return super().train(*args, **kwargs)
        finally:  # however training ends: no decode thread outlives it
            close = getattr(self.dpc_bank, "close", None)
            if close is not None:
                close()

    def before_train(self):
        if self.dpc_stage1 is None:
            raise ConfigError("DPC.STAGE1_DIR is empty: stage 2 needs the stage-1 run of "
                             f"{self.dpc_backbone_name()}. " + self._dpc_missing_stage1("<DPC.STAGE1_DIR>"))
        super().before_train()
        note = missing_terms_note(self, DPCMixin)
        if note:
            print(note)
        if not self._dpc_custom_features():
            self._dpc_find_features()
        self.dpc_plan_text()
        if replay.replay_needed(super().forward_backward):
            print(f"DPC: each epoch's last batch also runs {self.dpc_backbone_name()}.forward_backward without its "
                  "optimizer step, for what it does at epoch end (learning-rate schedule, weight averaging)")
        atomic_write_text(os.path.join(self.output_dir, "dpc_stage1.json"),
                          json.dumps(self.dpc_stage1, indent=2) + "\n")

    def dpc_scoring_features(self, images):
        """(anchors' image features, text features of the base classes) that rank the hard negatives: by default
        the stage-1 model's (the frozen prompts P). A trainer may score with another model (DPC_PromptKD: the
        teacher, as the release does)."""
        return self._dpc_stage1_features(images)

    def dpc_batch(self, images, labels):
        """Sample hard negatives for a batch of anchors: (negative images, pair labels, the anchors' stage-1 image
        features, or None when another model scored them)."""
        image_features, text_features = self.dpc_scoring_features(images)
        picked = self.dpc_sampler.sample(cosine_logits(image_features, text_features), labels)
        negatives = self.dpc_bank.load(picked.neg_items, device=images.device).to(images.dtype)
        pair_labels = torch.cat([labels, torch.tensor(picked.neg_labels, dtype=labels.dtype, device=labels.device)])
        stage1 = type(self).dpc_scoring_features is DPCMixin.dpc_scoring_features
        return negatives, pair_labels, image_features if stage1 else None

    def dpc_loss(self, images, labels):
        """L_CL over anchors and hard negatives (or, with DPC.OBJECTIVE cross-entropy, the anchors' CE over all
        base classes), plus the backbone's parallel terms: (loss, logged values)."""
        classes = None
        if self.cfg.DPC.OBJECTIVE == "cross-entropy":
            image_features, text_features = self._dpc_train_features(images, None)
            logits = self.dpc_net.logit_scale.exp() * cosine_logits(image_features, text_features)
            loss = F.cross_entropy(logits, labels)
            logged = {"loss_ce": loss.item()}
        else:
            negatives, pair_labels, anchor_features = self.dpc_batch(images, labels)
            pairs = torch.cat([images, negatives]) if len(negatives) else images
            targets = pair_labels
            if self.dpc_text_plan.pairs:
                per_image = not self._dpc_custom_features() and self.dpc_capture.sites.conditioned
                classes, targets = text_classes.pair_classes(pair_labels, per_image)
            image_features, text_features = self._dpc_train_features(pairs, anchor_features, classes)
            loss = symmetric_infonce(image_features, text_features, targets, self.dpc_net.logit_scale)
            logged = {"loss_cl": loss.item(), "pairs": len(pair_labels)}
        n = len(images)
        anchor_text = text_features[:n] if text_features.dim() == 3 else text_features
        on_pairs = {"classes": classes} if self.dpc_text_plan.terms_on_pairs and classes is not None else {}
        extra = self.dpc_extra_loss(images, labels, image_features[:n], anchor_text, **on_pairs)
        if isinstance(extra, torch.Tensor):
            extra = {"extra": extra}
        for name, term in (extra or {}).items():
            loss = loss + term
            logged[name] = term.item()
        return loss, logged

    def dpc_extra_loss(self, images, labels, image_features, text_features, classes=None):
        """The backbone's own loss terms, added to L_CL in parallel: a tensor, {name: tensor} or None.

        Called in ``train`` mode with the anchors, their features under P' and the text features
        of all base classes under P' ([C, D], or the anchors' own [B, C, D] for per-image text): the
        tensors L_CL uses. With ``DPC.TEXT_CLASSES pairs`` the text features are those of ``classes`` only
        (given then, for terms that take it). By default the backbone trainer's ``regularization_terms``
        when it has them and ``DPC.PARALLEL_LOSS`` is on.
        """
        terms = getattr(self, "regularization_terms", None)
        if terms is None or not self.cfg.DPC.PARALLEL_LOSS:
            return None
        if classes is not None:
            return terms(images, image_features, text_features, classes=classes)
        return terms(images, image_features, text_features)

    def forward_backward(self, batch):
        images = batch["img"].to(self.device)
        labels = batch["label"].to(self.device)
        with autocast(self, images.device.type):  # PREC amp (CUDA; tests simulate it on CPU); scaled backward
            loss, logged = self.dpc_loss(images, labels)
        backward_and_update(self, loss)
        if (self.batch_idx + 1) == self.num_batches:
            self._dpc_end_of_epoch(batch)
        return {"loss": loss.item(), **logged}

    def _dpc_end_of_epoch(self, batch):
        """The backbone's ``forward_backward`` on the last batch, optimizer steps off: its epoch-end work runs.

        The learning-rate schedule steps once: in the replay if the backbone steps it there (through
        ``update_lr`` or its scheduler directly), else here. Batch-norm statistics do not move in the replay.
        A backbone whose ``forward_backward`` declares that it only steps the schedule at epoch end
        (``replay.only_updates_lr``: ours) is not replayed: the same state without a forward and backward pass."""
        if not replay.replay_needed(super().forward_backward):
            self.model_zero_grad()
            self.update_lr()
            return
        scheduler_steps = []
        with contextlib.ExitStack() as stack:
            for optim in replay.unique(self._optims.values()):
                stack.enter_context(replay.disabled(optim, "step"))
            scaler = getattr(self, "scaler", None)
            if scaler is not None:
                stack.enter_context(replay.disabled(scaler, "step", "update"))
            for sched in replay.unique(self._scheds.values()):
                stack.enter_context(replay.counted(sched, "step", scheduler_steps))
            blocked = {}
            for model in replay.unique((self.model, self.dpc_net)):
                stack.enter_context(replay.trained_tensors_only(model, blocked))
                stack.enter_context(replay.norm_statistics_kept(model))
            super().forward_backward(batch)
        self.model_zero_grad()
        if not scheduler_steps:
            self.update_lr()
        if blocked:
            worst = max(blocked.values())
            print(f"DPC: {self.dpc_backbone_name()}.forward_backward loaded a state dict at epoch {self.epoch + 1}; "
                  f"its {len(blocked)} frozen tensors (e.g. {next(iter(blocked))}, changed by up to {worst:.3g}) were "
                  "kept as stage 1 left them, so P and the frozen weights stay exact; trained tensors were loaded")

    # ---------------------------------------------------------------- evaluation
    def dpc_eval_mode(self) -> str:
        mode = self.cfg.DPC.EVAL_MODE
        if mode == "auto":
            mode = "new" if self.cfg.DATASET.get("SUBSAMPLE_CLASSES", "all") == "new" else "base"
        return mode

    def set_model_mode(self, mode="train", names=None):
        super().set_model_mode(mode, names)
        if getattr(self, "dpc_modes", None):
            self.dpc_modes.set("train" if mode == "train" else self.dpc_eval_mode())

    def test(self, split=None):
        d = self.cfg.DPC
        sweeps = [("w_new", v) for v in d.SWEEP_W_NEW] + [("w_base", v) for v in d.SWEEP_W_BASE]
        if not sweeps:
            return super().test(split)
        mode = self.dpc_eval_mode()
        if d.SWEEP_W_NEW and mode != "new":
            print(f"DPC sweep: w_n only changes new-class predictions; eval mode is {mode}")
        if d.SWEEP_W_BASE and (mode != "base" or d.BASE_PROMPT != "mixed"):
            print("DPC sweep: w_b only changes the mixed base prompt (DPC.BASE_PROMPT mixed, eval mode base)")
        rows = []
        for key, value in sweeps:
            decoupling.set_weights(self.dpc_net, **{key: value})
            print(f"DPC sweep: {key}={value:g} (eval mode {mode})")
            rows.append({"mode": mode, key: value, "accuracy": float(super().test(split))})
            decoupling.set_weights(self.dpc_net, w_base=d.W_BASE, w_new=d.W_NEW)
        print("DPC sweep results:\n" + "\n".join(
            f"  {k}={r[k]:g}: {r['accuracy']:.2f}" for r in rows for k in ("w_new", "w_base") if k in r))
        atomic_write_text(os.path.join(self.output_dir, "dpc_weight_sweep.json"), json.dumps(rows, indent=2) + "\n")
        print(f"DPC: evaluating with the configured weights (w_b={d.W_BASE:g}, w_n={d.W_NEW:g})")
        return super().test(split)

    # ---------------------------------------------------------------- checkpoints
    def checkpoint_extras(self) -> dict:
        parent = getattr(super(), "checkpoint_extras", None)
        extras = parent() if parent else {"classnames": list(self.dm.dataset.classnames),
                                          "dataset": self.cfg.DATASET.NAME}
        if self.dpc_sampler is not None:
            extras["dpc_sampler_rng"] = self.dpc_sampler.rng.getstate()
        d = self.cfg.DPC
        extras["dpc"] = {
            "stage1": self.dpc_stage1, "update": d.UPDATE, "parallel_loss": d.PARALLEL_LOSS,
            "w_base": d.W_BASE, "w_new": d.W_NEW, "topk": d.TOPK,
            "neg_source": d.NEG_SOURCE, "base_prompt": d.BASE_PROMPT, "objective": d.OBJECTIVE,
            "negatives": d.NEGATIVES, "neg_transform": self.dpc_neg_transform(), "text_classes": d.TEXT_CLASSES,
            "prompt_tensors": self.dpc_prompts, "weighted_tensors": self.dpc_weighted,
            "classnames": list(self.dm.dataset.classnames), "backbone": self.dpc_backbone_name(),
        }
        return extras

    def save_model(self, epoch, directory, is_best=False, val_result=None, model_name=""):
        save_registered_models(self, epoch, directory, is_best, val_result, model_name, self.checkpoint_extras())

    def load_model(self, directory, epoch=None):
        """Load a DPC stage-2 checkpoint for evaluation: the backbone's own ``load_model`` restores what it
        restores (frozen tensors included), then every dual (M, P, w_b and rule) is loaded and checked."""
        if not directory:
            raise ConfigError("--model-dir is required to evaluate a DPC model")
        saved = {}
        for name in self.get_model_names():
            path, ckpt = read_saved_model(directory, name, epoch)
            self.check_checkpoint_kind(path, ckpt)
            check_evaluated_classes(path, ckpt, self.dm.dataset, self.cfg.DATASET.SUBSAMPLE_CLASSES)
            saved[name] = (path, ckpt)
        with self._dpc_backbone_loading("stage2"):
            super().load_model(directory, epoch)
        for name, module in self._models.items():
            path, ckpt = saved[name]
            load_state_checked(module, ckpt["state_dict"], path, keys=decoupling.state_keys(module),
                               hint="Evaluate with the trainer and config the DPC model was trained with.")
            meta = ckpt["dpc"]
            stage1 = meta.get("stage1") or {}
            print(f"Loaded DPC {name} from {path} (epoch {ckpt.get('epoch')}; stage 1: {stage1.get('dir')}, "
                  f"trained with update {meta.get('update', 'frozen')}, w_b={meta.get('w_base')}, K={meta.get('topk')})")
