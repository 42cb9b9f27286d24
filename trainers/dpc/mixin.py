"""``DPCMixin``: turns a Dassl prompt-learning ``TrainerX`` into its DPC (stage-2) version.

    @TRAINER_REGISTRY.register()
    class DPC_MyLearner(DPCMixin, MyLearner):
        pass

The backbone trainer is used as it is: its ``build_model`` builds and registers the prompt learner,
then the mixin loads the stage-1 checkpoint into it, gives every learnable prompt tensor its dual
(``decoupling.attach``), and replaces the training step by the hard-negative optimizer.

What the mixin needs from the backbone's model (``self.model``): ``encode_image(images)`` and
``encode_text()`` (features of all classes) and ``logit_scale``; CoOp-style models with
``image_encoder``, ``text_encoder``, ``prompt_learner`` and ``tokenized_prompts`` work as they are.
Class attributes a DPC trainer may set:
- ``dpc_prompt_names``: fnmatch patterns of the prompt tensors (relative to each registered model);
  default: every trainable parameter of the registered models.
- ``dpc_frozen_image_encoder``: True when image features do not depend on prompts (CoOp); the
  anchors' stage-1 features are then reused instead of encoding the anchors twice.

Backbone loss terms run in parallel with L_CL (paper Sec. 3.3): a backbone trainer that defines
``regularization_terms(images, image_features, text_features) -> {name: loss}`` (PromptSRC's L_SCL)
gets those terms added to L_CL in stage 2, computed with P' on the anchors (``DPC.PARALLEL_LOSS``
turns this off). A DPC trainer can instead override ``dpc_extra_loss``.
"""
from __future__ import annotations

import json
import os
import random

import torch
import torch.nn.functional as F

from dassl.data.transforms import build_transform

from . import dassl_compat, decoupling
from .checkpoint import (check_classes, check_evaluated_classes, load_checkpoint, load_state_checked,
                         read_saved_model, restore_training_state, save_registered_models)
from .files import atomic_write_text, checkpoint_path, resume_path
from .config import EVAL_MODES, NEG_SOURCES
from .image_bank import ImageBank
from .loss import symmetric_infonce
from .sampler import HardNegativeSampler, index_by_class

dassl_compat.apply()


class DPCMixin:
    dpc_prompt_names = None
    dpc_frozen_image_encoder = False

    # ---------------------------------------------------------------- configuration
    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        d = cfg.DPC
        decoupling.check_weights(d.W_BASE, d.W_NEW)
        for w in d.SWEEP_W_NEW:
            decoupling.check_weights(d.W_BASE, w)
        for w in d.SWEEP_W_BASE:
            decoupling.check_weights(w, d.W_NEW)
        if d.TOPK < 1:
            raise ValueError(f"DPC.TOPK must be >= 1, got {d.TOPK}")
        decoupling.check_choice("NEG_SOURCE", d.NEG_SOURCE, NEG_SOURCES)
        decoupling.check_choice("BASE_PROMPT", d.BASE_PROMPT, decoupling.BASE_PROMPTS)
        decoupling.check_choice("UPDATE", d.UPDATE, decoupling.UPDATES)
        decoupling.check_choice("EVAL_MODE", d.EVAL_MODE, EVAL_MODES)

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
        self.dpc_stage1 = self._dpc_load_stage1() if d.STAGE1_DIR else None
        self.dpc_prompts = {}
        for name, module in self._models.items():
            names = decoupling.trainable_names(module, self.dpc_prompt_names)
            if names:
                decoupling.attach(module, names, w_train=d.W_BASE, w_new=d.W_NEW, base_prompt=d.BASE_PROMPT,
                                  update=d.UPDATE)
                self.dpc_prompts[name] = names
        if not self.dpc_prompts:
            raise ValueError(f"DPC found no learnable prompt tensor in {type(self).__name__}'s registered models; "
                             "set `dpc_prompt_names` or make sure the backbone leaves its prompts trainable")
        n_tensors = sum(len(v) for v in self.dpc_prompts.values())
        print(f"DPC: {n_tensors} prompt tensors get a dual (update {d.UPDATE}, w_b={d.W_BASE:g}, "
              f"w_n={d.W_NEW:g}, base prompt {d.BASE_PROMPT})")
        decoupling.set_mode(self.dpc_net, "train")
        self.dpc_sampler = self.dpc_bank = None
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

    def _dpc_load_stage1(self) -> dict:
        d = self.cfg.DPC
        classnames = list(self.dm.dataset.classnames)
        files = {}
        for name, module in self._models.items():
            path = checkpoint_path(d.STAGE1_DIR, name, d.STAGE1_EPOCH)
            if not os.path.isfile(path):
                raise FileNotFoundError(self._dpc_missing_stage1(path))
            ckpt = load_checkpoint(path)
            if "dpc" in ckpt:
                raise ValueError(f"{path} is a DPC stage-2 checkpoint; DPC.STAGE1_DIR must point to the "
                                 f"{self.dpc_backbone_name()} (stage-1) run")
            check_classes(path, ckpt, classnames, "the classes stage 2 trains on (use the same dataset, "
                          "DATASET.SUBSAMPLE_CLASSES base and seed for both stages; to evaluate a trained DPC "
                          "model, leave DPC.STAGE1_DIR empty)")
            load_state_checked(
                module, ckpt.get("state_dict", ckpt), path,
                keys=decoupling.trainable_names(module, self.dpc_prompt_names),
                hint=f"Stage 1 must be a --trainer {self.dpc_backbone_name()} run with the same trainer options "
                     "(N_CTX, CTX_INIT, CSC, prompt depth, backbone) and classes as stage 2.")
            files[name] = os.path.abspath(path)
            epoch = ckpt.get("epoch")
            print(f"DPC: loaded stage-1 {name} from {path} (epoch {epoch})")
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
                raise ValueError(f"DPC.NEG_SOURCE full-train needs a dataset with a `full_train` list; "
                                 f"{type(dataset).__name__} has none (use few-shot)")
        num_classes = self.dm.num_classes
        by_class = index_by_class([item.label for item in items], num_classes)
        seed = self.cfg.SEED if self.cfg.SEED >= 0 else None
        self.dpc_sampler = HardNegativeSampler(by_class, num_classes, d.TOPK, rng=random.Random(seed),
                                               classnames=dataset.classnames)
        self.dpc_bank = ImageBank([item.impath for item in items], build_transform(self.cfg, is_train=True))
        print(f"DPC: negatives from {len(items)} {d.NEG_SOURCE} images of {num_classes} base classes, K={d.TOPK}")

    # ---------------------------------------------------------------- features
    def dpc_encode_image(self, images):
        net = self.dpc_net
        if hasattr(net, "encode_image"):
            return net.encode_image(images)
        return net.image_encoder(images.type(net.dtype))

    def dpc_encode_text(self):
        net = self.dpc_net
        if hasattr(net, "encode_text"):
            return net.encode_text()
        return net.text_encoder(net.prompt_learner(), net.tokenized_prompts)

    # ---------------------------------------------------------------- training
    def resume_model_if_exist(self, directory):
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
                raise ValueError(f"cannot resume from {path}: it is not a DPC stage-2 checkpoint; use a fresh --output-dir")
            d = self.cfg.DPC
            current = {"update": d.UPDATE, "w_base": d.W_BASE, "topk": d.TOPK, "neg_source": d.NEG_SOURCE,
                       "parallel_loss": d.PARALLEL_LOSS, "stage-1 checkpoint": self.dpc_stage1["files"].get(name)}
            saved = dict(meta, **{"stage-1 checkpoint": (meta.get("stage1") or {}).get("files", {}).get(name)})
            changed = [f"{key} {saved.get(key)!r} -> {value!r}" for key, value in current.items() if saved.get(key) != value]
            if changed:
                raise ValueError(f"cannot resume {path} with other DPC settings ({'; '.join(changed)}): "
                                 "use the run's original options or a fresh --output-dir")

    def before_train(self):
        if self.dpc_stage1 is None:
            raise ValueError("DPC.STAGE1_DIR is empty: stage 2 needs the stage-1 run of "
                             f"{self.dpc_backbone_name()}. " + self._dpc_missing_stage1("<DPC.STAGE1_DIR>"))
        super().before_train()
        with torch.no_grad(), decoupling.mode(self.dpc_net, "stage1"):
            self.dpc_stage1_text = F.normalize(self.dpc_encode_text().float(), dim=-1)
        atomic_write_text(os.path.join(self.output_dir, "dpc_stage1.json"),
                          json.dumps(self.dpc_stage1, indent=2) + "\n")

    def dpc_batch(self, images, labels):
        """Sample hard negatives for a batch of anchors: (negative images, pair labels, anchors' stage-1 features)."""
        with torch.no_grad(), decoupling.mode(self.dpc_net, "stage1"):
            anchor_features = self.dpc_encode_image(images)
            scores = F.normalize(anchor_features.float(), dim=-1) @ self.dpc_stage1_text.t()
        picked = self.dpc_sampler.sample(scores, labels)
        negatives = self.dpc_bank.load(picked.neg_items).to(images.device, images.dtype)
        pair_labels = torch.cat([labels, torch.tensor(picked.neg_labels, dtype=labels.dtype, device=labels.device)])
        return negatives, pair_labels, anchor_features

    def dpc_loss(self, images, labels):
        """L_CL over anchors and hard negatives, plus the backbone's parallel terms: (loss, logged values)."""
        negatives, pair_labels, anchor_features = self.dpc_batch(images, labels)
        if self.dpc_frozen_image_encoder:
            with torch.no_grad():
                parts = [anchor_features]
                if len(negatives):
                    parts.append(self.dpc_encode_image(negatives))
                image_features = torch.cat(parts)
        else:
            image_features = self.dpc_encode_image(torch.cat([images, negatives]) if len(negatives) else images)
        text_features = self.dpc_encode_text()
        loss = symmetric_infonce(image_features, text_features, pair_labels, self.dpc_net.logit_scale)
        logged = {"loss_cl": loss.item(), "pairs": len(pair_labels)}
        extra = self.dpc_extra_loss(images, labels, image_features[:len(images)], text_features)
        if isinstance(extra, torch.Tensor):
            extra = {"extra": extra}
        for name, term in (extra or {}).items():
            loss = loss + term
            logged[name] = term.item()
        return loss, logged

    def dpc_extra_loss(self, images, labels, image_features, text_features):
        """The backbone's own loss terms, added to L_CL in parallel: a tensor, {name: tensor} or None.

        Called in ``train`` mode with the anchors, their features under P' and the text features
        of all base classes under P' (the tensors L_CL uses). By default the backbone trainer's
        ``regularization_terms`` when it has them and ``DPC.PARALLEL_LOSS`` is on.
        """
        terms = getattr(self, "regularization_terms", None)
        if terms is None or not self.cfg.DPC.PARALLEL_LOSS:
            return None
        return terms(images, image_features, text_features)

    def forward_backward(self, batch):
        images = batch["img"].to(self.device)
        labels = batch["label"].to(self.device)
        scaler = getattr(self, "scaler", None)
        if scaler is not None:  # PREC amp on CUDA
            with torch.autocast("cuda"):
                loss, logged = self.dpc_loss(images, labels)
            self.model_zero_grad()
            scaler.scale(loss).backward()
            for name in self.get_model_names():
                if self._optims[name] is not None:
                    scaler.step(self._optims[name])
            scaler.update()
        else:
            loss, logged = self.dpc_loss(images, labels)
            self.model_backward_and_update(loss)
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return {"loss": loss.item(), **logged}

    # ---------------------------------------------------------------- evaluation
    def dpc_eval_mode(self) -> str:
        mode = self.cfg.DPC.EVAL_MODE
        if mode == "auto":
            mode = "new" if self.cfg.DATASET.get("SUBSAMPLE_CLASSES", "all") == "new" else "base"
        return mode

    def set_model_mode(self, mode="train", names=None):
        super().set_model_mode(mode, names)
        if getattr(self, "dpc_prompts", None):
            decoupling.set_mode(self.dpc_net, "train" if mode == "train" else self.dpc_eval_mode())

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
            "neg_source": d.NEG_SOURCE, "base_prompt": d.BASE_PROMPT, "prompt_tensors": self.dpc_prompts,
            "classnames": list(self.dm.dataset.classnames), "backbone": self.dpc_backbone_name(),
        }
        return extras

    def save_model(self, epoch, directory, is_best=False, val_result=None, model_name=""):
        save_registered_models(self, epoch, directory, is_best, val_result, model_name, self.checkpoint_extras())

    def load_model(self, directory, epoch=None):
        """Load a DPC stage-2 checkpoint (M and the frozen P of every prompt tensor) for evaluation."""
        if not directory:
            raise ValueError("--model-dir is required to evaluate a DPC model")
        for name, module in self._models.items():
            path, ckpt = read_saved_model(directory, name, epoch)
            meta = ckpt.get("dpc")
            if meta is None:
                raise ValueError(f"{path} is not a DPC stage-2 checkpoint (no 'dpc' record); evaluate a stage-1 "
                                 f"checkpoint with --trainer {self.dpc_backbone_name()}")
            check_evaluated_classes(path, ckpt, self.dm.dataset, self.cfg.DATASET.SUBSAMPLE_CLASSES)
            load_state_checked(module, ckpt["state_dict"], path, keys=decoupling.state_keys(module),
                               hint="Evaluate with the trainer and config the DPC model was trained with.")
            stage1 = meta.get("stage1") or {}
            print(f"Loaded DPC {name} from {path} (epoch {ckpt.get('epoch')}; stage 1: {stage1.get('dir')}, "
                  f"trained with update {meta.get('update', 'frozen')}, w_b={meta.get('w_base')}, K={meta.get('topk')})")
