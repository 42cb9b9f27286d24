"""Where a backbone's forward computes its image and text features, found by watching one forward pass.

DPC needs the features behind a backbone's logits: image features [N, D] and the text features of all
classes, [C, D], or [N, C, D] when the text depends on the image (CoCoOp). Instead of guessing from
attribute names how to call the encoders (MaPLe's need deep prompts as arguments, CoCoOp's text
encoder needs the image features), ``find_feature_sites`` runs the model's own forward once on a
probe batch, with hooks on every submodule, and picks

- the image site: an outermost submodule that receives the images and returns [N, D];
- the text site: an outermost submodule returning [C, D] (once, or once per image) or [N, C, D];

such that ``logit_scale * cos(image, text)`` reproduces the logits the forward returns.
``FeatureCapture`` then hooks those two modules and runs the same forward to get the features, with
gradients, in whatever prompt mode the model is in. Two shortcuts keep the cost at what the old
hand-written calls had, both exact:

- ``text``: a fixed text output (stage-1 text of shared prompts) is returned instead of recomputed;
- ``anchors``: when the image features depend on no trainable tensor and the image site takes the
  images as its only argument, the first rows are given (features already computed) and only the
  other images are encoded.

The forward runs with the model's modules in eval mode (gradients on): upstream forwards return their
own training loss in training mode (often needing labels) and logits in eval mode.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import UserError

FEATURES_METHOD = "dpc_features"
FEATURES_EXAMPLE = f"""\
    class DPC_MyLearner(DPCMixin, MyLearner):
        def {FEATURES_METHOD}(self, images):
            m = self.model                       # as MyLearner's forward computes them
            prompts = m.prompt_learner()
            image_features = m.image_encoder(images.type(m.dtype))
            text_features = m.text_encoder(prompts, m.tokenized_prompts)
            return image_features, text_features  # [N, D] and [C, D] (or [N, C, D])"""


class FeatureDiscoveryError(UserError, ValueError):
    pass


@dataclass
class FeatureSites:
    image: str  # dotted name of the submodule whose output is the image features
    text: str  # ... the text features
    conditioned: bool  # text features per image: [N, C, D]
    frozen_image: bool  # no trainable tensor feeds the image features
    image_takes_only_images: bool  # the image site is called as module(images)
    text_calls: int  # calls of the text site per forward (N for per-image text, else 1)
    logit_scale: torch.Tensor  # CLIP's log temperature as the model uses it
    n_classes: int  # classes the text site encodes (C)


@dataclass
class _Call:
    name: str
    output: torch.Tensor
    is_image: bool  # took the images, returned one row per image
    only_images: bool  # ... and took nothing else


def model_logits(output, n_images: int, n_classes: int) -> torch.Tensor:
    """The logits [N, C] in what a forward returns (a tensor, or the first fitting tensor of a tuple)."""
    items = output if isinstance(output, (tuple, list)) else (output,)
    for item in items:
        if torch.is_tensor(item) and tuple(item.shape) == (n_images, n_classes):
            return item
    shapes = [tuple(i.shape) if torch.is_tensor(i) else type(i).__name__ for i in items]
    raise FeatureDiscoveryError(f"the model's forward returned {shapes}, no logits of shape {(n_images, n_classes)}")


def cosine_logits(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """Cosine similarities [N, C] for shared ([C, D]) or per-image ([N, C, D]) text features."""
    image = F.normalize(image_features.float(), dim=-1)
    text = F.normalize(text_features.float(), dim=-1)
    if text.dim() == 3:
        return torch.einsum("nd,ncd->nc", image, text)
    return image @ text.t()


@contextlib.contextmanager
def eval_modules(model: nn.Module, modules: Optional[List[nn.Module]] = None):
    """Every module's ``training`` flag off for the block, each module's own flag restored afterwards (flags are set
    directly: a ``train()`` override is not called). ``modules``: ``list(model.modules())`` when the caller holds it
    (``FeatureCapture`` lists them once, not at every call)."""
    modules = list(model.modules()) if modules is None else modules
    flags = [m.training for m in modules]
    set_flag = object.__setattr__  # a plain attribute, set as Module.__init__ does (Module.__setattr__ is 10x slower)
    for m in modules:
        set_flag(m, "training", False)
    try:
        yield
    finally:
        for m, flag in zip(modules, flags):
            set_flag(m, "training", flag)


@contextlib.contextmanager
def replaced(obj, name: str, value):
    """``obj.name`` is ``value`` (an instance attribute) during the block; ``replaced(module, "forward", f)``
    makes ``module(...)`` call ``f`` (its hooks still run)."""
    missing = object()
    previous = obj.__dict__.get(name, missing)
    setattr(obj, name, value)
    try:
        yield
    finally:
        if previous is missing:
            delattr(obj, name)
        else:
            setattr(obj, name, previous)


def _outermost(names: List[str]) -> List[str]:
    return [n for n in names if not any(n.startswith(other + ".") for other in names if other != n)]


def probe_images(size, device) -> torch.Tensor:
    """Two fixed random images of ``INPUT.SIZE`` ``size`` (an int or (h, w)): the batch the sites are found with."""
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(0)).to(device)


def _keep_nothing(tensor):
    return None


def _kept_nothing(packed):
    raise RuntimeError("no backward through the feature discovery's forward: it keeps no activations")


def find_feature_sites(model: nn.Module, images: torch.Tensor, n_classes: int) -> FeatureSites:
    """Watch ``model(images)`` (run here, in eval mode with gradients) and locate its feature sites."""
    n = images.shape[0]
    calls: List[_Call] = []

    def watch(name):
        def hook(module, args, kwargs, output):
            if not torch.is_tensor(output) or output.dim() not in (2, 3):
                return
            takes_images = bool(args) and torch.is_tensor(args[0]) and args[0].shape == images.shape
            is_image = takes_images and output.dim() == 2 and output.shape[0] == n
            is_text = (output.dim() == 2 and output.shape[0] == n_classes) or \
                      (output.dim() == 3 and tuple(output.shape[:2]) == (n, n_classes))
            if is_image or is_text:
                calls.append(_Call(name, output, is_image, is_image and len(args) == 1 and not kwargs))
        return hook

    handles = [m.register_forward_hook(watch(name), with_kwargs=True)
               for name, m in model.named_modules() if name]
    try:  # with gradients, to see which outputs depend on trainable tensors; no activations kept (no backward
        # here): the text of every class would otherwise hold ~25 MB per class at ViT-B/16 size (12 GB at C = 500)
        with eval_modules(model), torch.enable_grad(), \
                torch.autograd.graph.saved_tensors_hooks(_keep_nothing, _kept_nothing):
            logits = model_logits(model(images), n, n_classes).detach().float()
    finally:
        for h in handles:
            h.remove()

    image_names = _outermost(list(dict.fromkeys(c.name for c in calls if c.is_image)))
    text_names = _outermost(list(dict.fromkeys(c.name for c in calls if not c.is_image)))
    scale = _logit_scale(model, logits)
    tried = []
    for image_name in image_names:
        image_calls = calls_of(calls, image_name)
        if len(image_calls) != 1:
            continue
        image = image_calls[0].output
        for text_name in text_names:
            text_calls = calls_of(calls, text_name)
            text = _text_output(text_calls, n)
            if text is None or text.shape[-1] != image.shape[-1]:
                continue
            recon = scale.exp().float() * cosine_logits(image.detach(), text.detach())
            error = (recon - logits).abs().max().item()
            tried.append(f"{image_name} + {text_name}: max logit error {error:.3g}")
            if error <= _tolerance(logits, image.dtype):
                return FeatureSites(image=image_name, text=text_name, conditioned=text.dim() == 3,
                                    frozen_image=not image.requires_grad,
                                    image_takes_only_images=image_calls[0].only_images,
                                    text_calls=len(text_calls), logit_scale=scale, n_classes=n_classes)
    found = "; ".join(tried) or (f"image candidates {image_names or 'none'}, text candidates {text_names or 'none'}")
    raise FeatureDiscoveryError(
        f"DPC could not find where {type(model).__name__}.forward computes its image and text features "
        f"(it looks for a submodule taking the images and returning [N, D], and one returning the text "
        f"features [{n_classes}, D] or [N, {n_classes}, D], whose cosine similarities times logit_scale give "
        f"the model's logits; found: {found}). Define the one method DPC needs, `{FEATURES_METHOD}`, in your "
        f"DPC trainer:\n{FEATURES_EXAMPLE}\n(see README, 'Using DPC in your own CoOp-family repository').")


def calls_of(calls: List[_Call], name: str) -> List[_Call]:
    return [c for c in calls if c.name == name]


def _text_output(text_calls: List[_Call], n: int) -> Optional[torch.Tensor]:
    """Text features of one forward: one [C, D] or [N, C, D] call, or one [C, D] call per image."""
    if len(text_calls) == 1:
        return text_calls[0].output
    if len(text_calls) == n and all(c.output.dim() == 2 for c in text_calls):
        return torch.stack([c.output for c in text_calls])
    return None


def _logit_scale(model: nn.Module, logits: torch.Tensor) -> torch.Tensor:
    scale = getattr(model, "logit_scale", None)
    if torch.is_tensor(scale) and scale.numel() == 1:
        return scale
    raise FeatureDiscoveryError(
        f"{type(model).__name__} has no `logit_scale` (CLIP's log temperature, as in every CoOp-family model); "
        f"DPC's contrastive loss needs it: set `self.logit_scale = clip_model.logit_scale` in the model")


def _tolerance(logits: torch.Tensor, dtype: torch.dtype) -> float:
    relative = 1e-3 if dtype in (torch.float32, torch.float64) else 3e-2
    return relative * max(logits.abs().max().item(), 1.0)


class FeatureCapture:
    """Runs the model's forward and returns the features at its two sites."""

    def __init__(self, model: nn.Module, sites: FeatureSites):
        modules = dict(model.named_modules())
        self.model, self.sites = model, sites
        self.image_module, self.text_module = modules[sites.image], modules[sites.text]
        self.modules = list(model.modules())  # the model's structure is fixed from here on

    def can_reuse_anchors(self) -> bool:
        return self.sites.frozen_image and self.sites.image_takes_only_images

    def can_fix_text(self) -> bool:
        return not self.sites.conditioned and self.sites.text_calls == 1

    def __call__(self, images: torch.Tensor, text: torch.Tensor | None = None,
                 anchors: torch.Tensor | None = None, classes: torch.Tensor | None = None
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
        """(image features [N, D], text features [C, D] or [N, C, D]) of ``images``.

        ``text``: the text site's output to use instead of running it (``can_fix_text``).
        ``anchors``: image features of the first images (``can_reuse_anchors``).
        ``classes``: encode only these classes (``check_class_rows``): [R] for shared text, [N, R] for per-image
        text (image i's own R classes); the text features then have R rows instead of C.
        """
        image_out, text_out = [], []
        handles = [self.image_module.register_forward_hook(lambda m, a, o: image_out.append(o)),
                   self.text_module.register_forward_hook(lambda m, a, o: text_out.append(o))]
        with contextlib.ExitStack() as stack:
            stack.callback(lambda: [h.remove() for h in handles])
            if text is not None:
                stack.enter_context(replaced(self.text_module, "forward", lambda *args, **kwargs: text))
            if anchors is not None:
                stack.enter_context(replaced(self.image_module, "forward", self._encode_after(anchors)))
            if classes is not None:
                handles.append(self.text_module.register_forward_pre_hook(self._cut_to(classes), with_kwargs=True))
            stack.enter_context(eval_modules(self.model, self.modules))
            self.model(images)
        if len(image_out) != 1:
            raise RuntimeError(f"{self.sites.image} ran {len(image_out)} times in one forward; expected once")
        if self.sites.conditioned and len(text_out) > 1:
            return image_out[0], torch.stack(text_out)
        if len(text_out) != 1:
            raise RuntimeError(f"{self.sites.text} ran {len(text_out)} times in one forward; expected once")
        return image_out[0], text_out[0]

    def _cut_to(self, classes: torch.Tensor):
        """Pre-hook of the text site: every tensor input with one row per class keeps the rows of ``classes``
        (call i of per-image text: ``classes[i]``)."""
        calls = []

        def cut(value, rows):
            if torch.is_tensor(value) and value.dim() >= 1 and value.shape[0] == self.sites.n_classes:
                return value.index_select(0, rows.to(value.device))
            return value

        def hook(module, args, kwargs):
            rows = classes if classes.dim() == 1 else classes[len(calls)]
            calls.append(rows)
            return tuple(cut(a, rows) for a in args), {k: cut(v, rows) for k, v in kwargs.items()}
        return hook

    def check_class_rows(self, images: torch.Tensor) -> Optional[str]:
        """None when the text site encodes a subset of classes exactly (``classes``: its inputs with one row per
        class cut to those rows give those rows of the full output), else why not. Checked on ``images``
        (``probe_images``) with every other class, so a missed class-dependent tensor or a wrong order shows."""
        if self.sites.conditioned and self.sites.text_calls != images.shape[0]:
            return f"{self.sites.text} computes the per-image text features of all images in one call"
        n_classes = self.sites.n_classes
        rows = torch.arange(1, n_classes, 2) if n_classes > 1 else torch.zeros(1, dtype=torch.long)
        classes = rows.expand(images.shape[0], -1) if self.sites.conditioned else rows
        with torch.no_grad():
            _, full = self(images)
            try:
                _, part = self(images, classes=classes)
            except (RuntimeError, IndexError, ValueError) as err:
                return f"{self.sites.text} fails on the inputs of a subset of classes ({type(err).__name__}: {err})"
        expected = full[:, rows] if self.sites.conditioned else full[rows]
        if part.shape != expected.shape:
            return (f"{self.sites.text} returned {tuple(part.shape)} for {len(rows)} of {n_classes} classes, not "
                    f"{tuple(expected.shape)}: it reads a class-dependent tensor that is not among its inputs")
        error = (part.float() - expected.float()).abs().max().item()
        if error > _tolerance(expected.float(), expected.dtype):
            return f"{self.sites.text}'s features of a subset of classes differ from its full output by {error:.3g}"
        return None

    def _encode_after(self, anchors: torch.Tensor):
        encode = type(self.image_module).forward.__get__(self.image_module)
        k = anchors.shape[0]

        def forward(images):
            if images.shape[0] == k:
                return anchors
            return torch.cat([anchors.to(images.device), encode(images[k:]).to(anchors.dtype)])
        return forward
