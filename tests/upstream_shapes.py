"""Small Dassl trainers shaped like the prompt learners people fork, to test the DPC plug-in against.

Written for these tests; nothing here is copied from the upstream repositories. Each trainer keeps the
*shape* of one upstream trainer: what it registers, its model's attributes and forward signatures and
return values, where prompts and frozen tensors live, what forward_backward and load_model do.
Numerics are kept only where the shape needs them. Tiny settings are class constants (no TRAINER.<X>
config node), fp32 only, CLIP from ``trainers.clip_loader``.

    UpCoOp       KaiyangZhou/CoOp                          trainers/coop.py
    UpCoCoOp     KaiyangZhou/CoOp                          trainers/cocoop.py
    UpMaPLe      muzairkhattak/multimodal-prompt-learning  trainers/maple.py
    UpPromptSRC  muzairkhattak/PromptSRC                   trainers/promptsrc.py
    UpKgCoOp     htyao89/KgCoOp                            KgCoOp/trainers/kgcoop.py

Importing this module registers the trainers in Dassl's TRAINER_REGISTRY, once however often (and
under whatever name) it is imported.
"""
import copy
import math
import os.path as osp
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F
from clip import tokenize
from clip.model import ResidualAttentionBlock, VisionTransformer
from dassl.engine import TRAINER_REGISTRY, TrainerX
from dassl.metrics import compute_accuracy
# module-level names, as the upstream trainers import them: a patch of Dassl's loader must reach this one
from dassl.utils import load_pretrained_weights, load_checkpoint
from dassl.optim import build_optimizer, build_lr_scheduler

from trainers.clip_loader import load_clip
from trainers.encoders import embed_texts, replace_text_prompt, replace_vision_prompt, run_blocks


def register(cls):
    """Register ``cls``; if this module, imported before (under another name, reloaded), already did,
    the name stays bound to the registered class. A foreign trainer of the same name: Dassl's KeyError."""
    if cls.__name__ in TRAINER_REGISTRY.registered_names():
        known = TRAINER_REGISTRY.get(cls.__name__)
        if getattr(known, "UPSTREAM_SHAPE", False):
            return known
    TRAINER_REGISTRY.register(cls)
    return cls


@torch.no_grad()
def eval_logits(trainer, images):
    """The trainer's evaluation logits for a batch of images (model in eval mode, as Dassl's test())."""
    trainer.set_model_mode("eval")
    return trainer.model_inference(images.to(trainer.device))


# ---------------------------------------------------------------------------------------------- parts
class TextEncoder(nn.Module):
    """CLIP's text tower on prompt embeddings; forward(prompts, tokenized_prompts) as in CoOp."""

    def __init__(self, clip_model):
        super().__init__()
        self.transformer = clip_model.transformer
        self.positional_embedding = clip_model.positional_embedding
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection
        self.dtype = clip_model.dtype

    def forward(self, prompts, tokenized_prompts):
        return self.encode(prompts, tokenized_prompts, None)

    def encode(self, prompts, tokenized_prompts, deep_prompts):
        x = (prompts + self.positional_embedding).permute(1, 0, 2)  # [n_tkn, n_cls, dim]
        x = self.ln_final(run_blocks(self.transformer.resblocks, x, deep_prompts, replace_text_prompt).permute(1, 0, 2))
        return x[torch.arange(x.shape[0]), tokenized_prompts.argmax(dim=-1)] @ self.text_projection  # EOT token


class MaPLeTextEncoder(TextEncoder):
    """MaPLe's: the deep text prompts are a required argument."""

    def forward(self, prompts, tokenized_prompts, compound_prompts_deeper_text):
        return self.encode(prompts, tokenized_prompts, compound_prompts_deeper_text)


def prompted_vit(visual, image, prompt, deep_prompts=None):
    """CLIP's ViT with ``prompt`` [n, width] appended after the patch tokens (deep ones overwrite it)."""
    x = visual.conv1(image)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype, device=x.device)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding
    x = visual.ln_pre(torch.cat([x, prompt.expand(x.shape[0], -1, -1)], dim=1)).permute(1, 0, 2)
    x = run_blocks(visual.transformer.resblocks, x, deep_prompts, replace_vision_prompt).permute(1, 0, 2)
    return visual.ln_post(x[:, 0, :]) @ visual.proj


# Upstream edits CLIP's own classes (clip/model.py). Here the loaded modules get a subclass instead
# (``swap_class``), so state-dict keys stay CLIP's, as upstream's do.
class MaPLeVisionTransformer(VisionTransformer):
    def forward(self, x, shared_ctx, compound_deeper_prompts):
        return prompted_vit(self, x, shared_ctx, compound_deeper_prompts)


class IVLPVisionTransformer(VisionTransformer):
    """Owns its shallow prompt ``VPT``; forward(x) as CLIP's."""

    def forward(self, x):
        return prompted_vit(self, x, self.VPT)


class IVLPBlock(ResidualAttentionBlock):
    """A block owning its deep prompt ``VPT_shallow``, written over the prompt tokens before the block runs."""

    def forward(self, x):
        replace = replace_text_prompt if self.text_layer else replace_vision_prompt
        return super().forward(replace(x, self.VPT_shallow))


def swap_class(module, cls, **attributes):
    module.__class__ = cls
    for name, value in attributes.items():
        setattr(module, name, value)
    return module


def add_ivlp_prompts(clip_model, n_ctx, depth):
    """Upstream's IVLP prompts inside CLIP's own modules: ``visual.VPT`` and ``VPT_shallow`` on blocks
    1 .. depth - 1 of both towers (created in that order)."""
    visual = swap_class(clip_model.visual, IVLPVisionTransformer,
                        VPT=new_prompt(n_ctx, clip_model.visual.conv1.out_channels))
    for blocks, text_layer in ((clip_model.transformer.resblocks, True), (visual.transformer.resblocks, False)):
        for block in list(blocks)[1:depth]:
            swap_class(block, IVLPBlock, text_layer=text_layer, VPT_shallow=new_prompt(n_ctx, block.ln_1.weight.shape[0]))
    return clip_model


def new_prompt(n_ctx, dim):
    return nn.Parameter(torch.randn(n_ctx, dim) * 0.02)


def encode_hand_written(clip_model, template, classnames):
    """Zero-shot CLIP text features of ``template`` filled with each class name."""
    tokens = torch.cat([tokenize(template.format(name.replace("_", " "))) for name in classnames])
    with torch.no_grad():
        return clip_model.encode_text(tokens.to(clip_model.logit_scale.device))


class PromptLearner(nn.Module):
    """CoOp's: a context ``ctx`` shared by the classes; SOS and class-name tokens in persistent buffers."""

    def __init__(self, classnames, clip_model, n_ctx):
        super().__init__()
        texts = [" ".join(["X"] * n_ctx) + f" {name.replace('_', ' ')}." for name in classnames]
        tokens, embedding = embed_texts(clip_model, texts)
        self.ctx = new_prompt(n_ctx, embedding.shape[-1])
        self.register_buffer("token_prefix", embedding[:, :1])  # SOS
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx:])  # class name, ".", EOS
        self.tokenized_prompts = tokens  # a plain tensor on the CPU, as upstream
        self.n_cls, self.n_ctx = len(classnames), n_ctx

    def construct_prompts(self, ctx):  # ctx [n_cls, n_ctx, dim]
        return torch.cat([self.token_prefix, ctx, self.token_suffix], dim=1)

    def forward(self):
        return self.construct_prompts(self.ctx.unsqueeze(0).expand(self.n_cls, -1, -1))


class CustomCLIP(nn.Module):
    """CoOp's model: logits from forward(image)."""

    def __init__(self, prompt_learner, clip_model, text_encoder=TextEncoder):
        super().__init__()
        self.prompt_learner = prompt_learner
        self.tokenized_prompts = prompt_learner.tokenized_prompts
        self.image_encoder = clip_model.visual
        self.text_encoder = text_encoder(clip_model)
        self.logit_scale = clip_model.logit_scale
        self.dtype = clip_model.dtype

    def logits(self, image_features, text_features):
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        return self.logit_scale.exp() * image_features @ text_features.t()

    def forward(self, image):
        text_features = self.text_encoder(self.prompt_learner(), self.tokenized_prompts)
        return self.logits(self.image_encoder(image.type(self.dtype)), text_features)


class UpTrainer(TrainerX):
    """What the upstream trainers share (each has its own copy): build_model's steps, parse_batch_train,
    load_model (``model-best.pth.tar`` unless an epoch is given; the token buffers are not loaded)."""

    UPSTREAM_SHAPE = True
    N_CTX = 2
    REGISTERED = "prompt_learner"  # name of the registered model ...
    TRAINED = "prompt_learner"  # ... and the attribute of self.model it is
    PROMPT_BUFFERS = ("token_prefix", "token_suffix")  # their keys in its state dict

    def build_custom_clip(self, classnames, clip_model):
        raise NotImplementedError

    def trainable(self, name):
        return "prompt_learner" in name

    def build_model(self):
        cfg = self.cfg
        clip_model = load_clip(cfg.MODEL.BACKBONE.NAME, cfg.MODEL.BACKBONE.PATH, prec="fp32", device=self.device)
        self.model = self.build_custom_clip(self.dm.dataset.classnames, clip_model)
        for name, param in self.model.named_parameters():
            param.requires_grad_(self.trainable(name))
        trained = self.model if self.TRAINED == "model" else getattr(self.model, self.TRAINED)
        if cfg.MODEL.INIT_WEIGHTS:
            load_pretrained_weights(trained, cfg.MODEL.INIT_WEIGHTS)
        self.model.to(self.device)
        self.optim = build_optimizer(trained, cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        self.register_model(self.REGISTERED, trained, self.optim, self.sched)

    def parse_batch_train(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device)

    def load_model(self, directory, epoch=None):
        if not directory:
            print("load_model() skipped: no directory given")
            return
        model_file = "model-best.pth.tar" if epoch is None else f"model.pth.tar-{epoch}"
        for name in self.get_model_names():
            path = osp.join(directory, name, model_file)
            if not osp.exists(path):
                raise FileNotFoundError(f'Model not found at "{path}"')
            state_dict = load_checkpoint(path)["state_dict"]
            for key in self.PROMPT_BUFFERS:  # built from the current class names, not loaded
                state_dict.pop(key, None)
            self._models[name].load_state_dict(state_dict, strict=False)


# ------------------------------------------------------------------------------------------ trainers
@register
class UpCoOp(UpTrainer):
    """CoOp: forward(image) -> logits; CE through model_backward_and_update."""

    def build_custom_clip(self, classnames, clip_model):
        return CustomCLIP(PromptLearner(classnames, clip_model, self.N_CTX), clip_model)

    def forward_backward(self, batch):
        image, label = self.parse_batch_train(batch)
        output = self.model(image)
        loss = F.cross_entropy(output, label)
        self.model_backward_and_update(loss)
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return {"loss": loss.item(), "acc": compute_accuracy(output, label)[0].item()}


class CoCoOpPromptLearner(PromptLearner):
    """Per-image prompts: meta_net(image features) is added to ctx; forward -> [B, n_cls, n_tkn, dim]."""

    def __init__(self, classnames, clip_model, n_ctx):
        super().__init__(classnames, clip_model, n_ctx)
        vis_dim, ctx_dim = clip_model.visual.output_dim, self.ctx.shape[-1]
        self.meta_net = nn.Sequential(OrderedDict([("linear1", nn.Linear(vis_dim, vis_dim // 16)),
                                                   ("relu", nn.ReLU(inplace=True)),
                                                   ("linear2", nn.Linear(vis_dim // 16, ctx_dim))]))

    def forward(self, im_features):
        ctx_shifted = self.ctx.unsqueeze(0) + self.meta_net(im_features).unsqueeze(1)  # [B, n_ctx, dim]
        return torch.stack([self.construct_prompts(ctx_i.unsqueeze(0).expand(self.n_cls, -1, -1))
                            for ctx_i in ctx_shifted])


class CoCoOpCLIP(CustomCLIP):
    """forward(image, label=None): the CE loss while the prompt learner trains, logits otherwise."""

    def forward(self, image, label=None):
        image_features = self.image_encoder(image.type(self.dtype))
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        logits = []
        for pts_i, imf_i in zip(self.prompt_learner(image_features), image_features):
            text_features = self.text_encoder(pts_i, self.tokenized_prompts)
            text_features = text_features / text_features.norm(dim=-1, keepdim=True)
            logits.append(self.logit_scale.exp() * imf_i @ text_features.t())
        logits = torch.stack(logits)
        if self.prompt_learner.training:
            return F.cross_entropy(logits, label)
        return logits


@register
class UpCoCoOp(UpTrainer):
    """CoCoOp: the model returns its own CE loss in training; the optimizer is stepped directly."""

    def build_custom_clip(self, classnames, clip_model):
        return CoCoOpCLIP(CoCoOpPromptLearner(classnames, clip_model, self.N_CTX), clip_model)

    def forward_backward(self, batch):
        image, label = self.parse_batch_train(batch)
        loss = self.model(image, label)
        self.optim.zero_grad()
        loss.backward()
        self.optim.step()
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return {"loss": loss.item()}


class MultiModalPromptLearner(PromptLearner):
    """forward() -> (prompts, shared_ctx, deep text prompts, deep vision prompts); vision = f(text)."""

    def __init__(self, classnames, clip_model, n_ctx, depth):
        super().__init__(classnames, clip_model, n_ctx)
        ctx_dim, vis_width = self.ctx.shape[-1], clip_model.visual.conv1.out_channels
        self.proj = nn.Linear(ctx_dim, vis_width)
        self.compound_prompts_text = nn.ParameterList([new_prompt(n_ctx, ctx_dim) for _ in range(depth - 1)])
        self.compound_prompt_projections = nn.ModuleList([nn.Linear(ctx_dim, vis_width) for _ in range(depth - 1)])

    def forward(self):
        prompts = super().forward()
        vision = [layer(p) for layer, p in zip(self.compound_prompt_projections, self.compound_prompts_text)]
        return prompts, self.proj(self.ctx), self.compound_prompts_text, vision


class MaPLeCLIP(CustomCLIP):
    def forward(self, image, label=None):
        prompts, shared_ctx, deep_text, deep_vision = self.prompt_learner()
        text_features = self.text_encoder(prompts, self.tokenized_prompts, deep_text)
        logits = self.logits(self.image_encoder(image.type(self.dtype), shared_ctx, deep_vision), text_features)
        if self.prompt_learner.training:
            return F.cross_entropy(logits, label)
        return logits


@register
class UpMaPLe(UpTrainer):
    """MaPLe: the whole model is registered and optimised; training steps as CoCoOp's."""

    DEPTH = 2
    REGISTERED, TRAINED = "MultiModalPromptLearner", "model"
    PROMPT_BUFFERS = ("prompt_learner.token_prefix", "prompt_learner.token_suffix")

    def trainable(self, name):
        return "prompt_learner" in name or "VPT" in name

    def build_custom_clip(self, classnames, clip_model):
        swap_class(clip_model.visual, MaPLeVisionTransformer)
        learner = MultiModalPromptLearner(classnames, clip_model, self.N_CTX, self.DEPTH)
        return MaPLeCLIP(learner, clip_model, MaPLeTextEncoder)

    forward_backward = UpCoCoOp.forward_backward


class VLPromptLearner(PromptLearner):
    """Text context plus PromptSRC's frozen teachers: a zero-shot image encoder (a submodule, so in the
    checkpoint) and the zero-shot text features of a few templates (a plain tensor, not saved)."""

    TEMPLATES = ("a photo of a {}.", "a blurry photo of the {}.")

    def __init__(self, classnames, clip_model, n_ctx, zero_shot_clip):
        super().__init__(classnames, clip_model, n_ctx)
        self.ZS_image_encoder = zero_shot_clip.visual
        features = [encode_hand_written(zero_shot_clip, template, classnames) for template in self.TEMPLATES]
        self.fixed_embeddings = torch.stack(features).mean(dim=0)


class PromptSRCCLIP(CustomCLIP):
    """forward(image, label=None): in training the 7-tuple the self-regulating losses need, else logits."""

    def __init__(self, prompt_learner, clip_model, total_epochs):
        super().__init__(prompt_learner, clip_model)
        self.total_epochs = total_epochs

    def forward(self, image, label=None):
        text_features = self.text_encoder(self.prompt_learner(), self.tokenized_prompts)
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        image_features = self.image_encoder(image.type(self.dtype))
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        logits = self.logit_scale.exp() * image_features @ text_features.t()
        if not self.prompt_learner.training:
            return logits
        fixed = self.prompt_learner.fixed_embeddings
        fixed = fixed / fixed.norm(dim=-1, keepdim=True)
        with torch.no_grad():
            zs_features = self.prompt_learner.ZS_image_encoder(image.type(self.dtype))
            zs_features = zs_features / zs_features.norm(dim=-1, keepdim=True)
            zs_logits = self.logit_scale.exp() * zs_features @ fixed.t()
        return (F.cross_entropy(logits, label), text_features, fixed, zs_features, image_features, zs_logits,
                logits)


@register
class UpPromptSRC(UpTrainer):
    """PromptSRC: IVLP prompts inside the encoders, the whole model registered, self-regulating losses and
    Gaussian prompt aggregation (GPA) over the whole state dict inside forward_backward.

    GPA's Gaussian is centred on the last epoch (upstream: epoch 15 of 20); with 2 epochs centred
    between them the weights would be 0.5 and 0.5 and the frozen weights would come back bit-exact."""

    DEPTH = 2
    GPA_STD = 1.0
    TEXT_LOSS_WEIGHT, IMAGE_LOSS_WEIGHT = 25.0, 10.0
    REGISTERED, TRAINED = "VLPromptLearner", "model"
    PROMPT_BUFFERS = ("prompt_learner.token_prefix", "prompt_learner.token_suffix")

    def trainable(self, name):
        return ("prompt_learner" in name or "VPT" in name) and "ZS_image_encoder" not in name

    def build_custom_clip(self, classnames, clip_model):
        cfg = self.cfg
        zero_shot = load_clip(cfg.MODEL.BACKBONE.NAME, cfg.MODEL.BACKBONE.PATH, prec="fp32", device=self.device)
        add_ivlp_prompts(clip_model, self.N_CTX, self.DEPTH)
        learner = VLPromptLearner(classnames, clip_model, self.N_CTX, zero_shot)
        return PromptSRCCLIP(learner, clip_model, cfg.OPTIM.MAX_EPOCH)

    def build_model(self):
        super().build_model()
        n, mean = self.cfg.OPTIM.MAX_EPOCH, self.cfg.OPTIM.MAX_EPOCH
        gauss = [math.exp(-0.5 * ((epoch - mean) / self.GPA_STD) ** 2) for epoch in range(1, n + 1)]
        self.gauss = [g / sum(gauss) for g in gauss]
        self.step_counter = 1
        self.previous_model_gpa = None

    def forward_backward(self, batch):
        image, label = self.parse_batch_train(batch)
        model, optim = self.model, self.optim
        loss_ce, text_features, zs_text, zs_image, image_features, zs_logits, logits = model(image, label)
        loss_text = F.l1_loss(text_features, zs_text, reduction="mean") * self.TEXT_LOSS_WEIGHT
        loss_image = F.l1_loss(image_features, zs_image, reduction="mean") * self.IMAGE_LOSS_WEIGHT
        loss_kl = F.kl_div(F.log_softmax(logits, dim=1), F.log_softmax(zs_logits, dim=1), reduction="sum",
                           log_target=True) / logits.numel()
        loss = loss_ce + loss_text + loss_image + loss_kl
        optim.zero_grad()
        loss.backward()
        optim.step()
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
            self.step_counter += 1
            weight = self.gauss[self.step_counter - 2]
            weighted = {key: value * weight for key, value in copy.deepcopy(model.state_dict()).items()}
            if self.previous_model_gpa is None:
                self.previous_model_gpa = weighted
            else:
                self.previous_model_gpa = {key: value + weighted[key] for key, value in self.previous_model_gpa.items()}
        if self.step_counter == self.model.total_epochs + 1:
            model.load_state_dict(self.previous_model_gpa)
        return {"loss": loss.item()}


class KgCoOpCLIP(CustomCLIP):
    """forward(image) -> (logits, score) always; score = 1 - mean cosine(prompted, hand-written features)."""

    def __init__(self, prompt_learner, clip_model, ori_embedding):
        super().__init__(prompt_learner, clip_model)
        self.ori_embedding = ori_embedding

    def forward(self, image):
        text_features = self.text_encoder(self.prompt_learner(), self.tokenized_prompts)
        logits = self.logits(self.image_encoder(image.type(self.dtype)), text_features)
        score = F.cosine_similarity(F.normalize(text_features, dim=-1), F.normalize(self.ori_embedding, dim=-1),
                                    dim=1, eps=1e-7)
        return logits, 1.0 - score.mean()


@register
class UpKgCoOp(UpTrainer):
    """KgCoOp: CoOp + W * score; only names with "ctx" train (prompt_learner also holds a frozen parameter,
    saved with it); the scheduler is stepped directly; model_inference takes the logits of the tuple."""

    W = 8.0
    TEMPLATE = "a photo of a {}."

    def trainable(self, name):
        return "ctx" in name

    def build_custom_clip(self, classnames, clip_model):
        learner = PromptLearner(classnames, clip_model, self.N_CTX)
        learner.bias_vectors = new_prompt(1, learner.ctx.shape[-1])  # unused and frozen, as upstream
        ori_embedding = encode_hand_written(clip_model, self.TEMPLATE, classnames)
        return KgCoOpCLIP(learner, clip_model, ori_embedding / ori_embedding.norm(dim=-1, keepdim=True))

    def forward_backward(self, batch):
        image, label = self.parse_batch_train(batch)
        output, score = self.model(image)
        loss = F.cross_entropy(output, label) + self.W * score
        self.model_backward_and_update(loss)
        if (self.batch_idx + 1) == self.num_batches:
            self.sched.step()
        return {"loss": loss.item(), "acc": compute_accuracy(output, label)[0].item()}

    def model_inference(self, input):
        return self.model(input)[0]
