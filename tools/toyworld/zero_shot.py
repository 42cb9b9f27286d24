"""Zero-shot accuracy of a CLIP on the toy world, with the prompt "a photo of a {}.".

- 100-way over every colour-shape pair on clean pretraining-domain scenes (drawn with a fixed seed of its
  own, never used in training), split into the 70 seen and the 30 unseen pairs;
- on the downstream test split (the scenes tools.toyworld writes for ``world_seed``): 25-way (ToyWorld) within the
  base and within the new classes (what base-to-new zero-shot CLIP scores), and 50-way over all classes.
"""
from __future__ import annotations

import clip
import torch
import torch.nn.functional as F

from .dataset import render_split
from .render import render_pretraining
from .vocab import ALL_PAIRS, TOYWORLD, is_unseen, pair_name

PROMPT = "a photo of a {}."
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # the PIXEL_MEAN / PIXEL_STD of the trainer configs
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
EVAL_SEED = 2024  # scenes of the 100-way test
PER_PAIR = 20  # scenes per pair in the 100-way test


def normalize(images):
    """Images [n, 3, H, W] in [0, 1] -> CLIP's input normalisation."""
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (images - mean) / std


@torch.no_grad()
def text_features(model, names):
    tokens = clip.tokenize([PROMPT.format(name) for name in names], context_length=model.positional_embedding.shape[0])
    return F.normalize(model.encode_text(tokens).float(), dim=-1)


@torch.no_grad()
def image_features(model, images, batch=500):
    dtype = model.visual.conv1.weight.dtype
    chunks = [model.encode_image(normalize(images[i:i + batch]).to(dtype)).float()
              for i in range(0, len(images), batch)]
    return F.normalize(torch.cat(chunks), dim=-1)


def _percent(hits):
    return round(100.0 * hits.float().mean().item(), 2)


def pair_accuracy(model, per_pair=PER_PAIR):
    """100-way accuracy (%) on clean scenes: {"seen": .., "unseen": .., "all": ..}."""
    pairs = torch.tensor(ALL_PAIRS).repeat_interleave(per_pair, dim=0)
    labels = torch.arange(len(ALL_PAIRS)).repeat_interleave(per_pair)
    images, _, _ = render_pretraining(pairs, torch.Generator().manual_seed(EVAL_SEED))
    texts = text_features(model, [pair_name(p) for p in ALL_PAIRS])
    hits = (image_features(model, images) @ texts.t()).argmax(dim=1) == labels
    unseen = torch.tensor([is_unseen(p) for p in ALL_PAIRS])[labels]
    return {"seen": _percent(hits[~unseen]), "unseen": _percent(hits[unseen]), "all": _percent(hits)}


def downstream_accuracy(model, world_seed=0, per_class=None, variant=TOYWORLD):
    """Accuracy (%) on the downstream test split: base and new (25-way each for ToyWorld) and over all classes
    (all, base, new; keys *_50way, named after ToyWorld's 50 classes)."""
    images, labels = render_split("test", world_seed, per_class, variant)
    features = image_features(model, images.float() / 255)
    texts = text_features(model, variant.class_names)
    n_base = len(variant.base)
    base = labels < n_base
    predicted_50 = (features @ texts.t()).argmax(dim=1)
    predicted_base = (features[base] @ texts[:n_base].t()).argmax(dim=1)
    predicted_new = (features[~base] @ texts[n_base:].t()).argmax(dim=1) + n_base
    return {"base": _percent(predicted_base == labels[base]), "new": _percent(predicted_new == labels[~base]),
            "all_50way": _percent(predicted_50 == labels), "base_50way": _percent(predicted_50[base] == labels[base]),
            "new_50way": _percent(predicted_50[~base] == labels[~base])}
