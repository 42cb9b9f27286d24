"""CLIP encoders that accept learned prompts, built on the pip-installed OpenAI CLIP modules.

Deep prompts are inserted by running ``transformer.resblocks`` one block at a time and
overwriting the prompt tokens before the blocks that have a deep prompt; no CLIP code is forked.

Token layout (sequence-first, as CLIP's transformer expects):
- text:   [SOS, prompt_1 .. prompt_n, class tokens, EOS, pad...]; deep text prompts overwrite
  positions 1 .. n.
- vision: [CLS, patches..., prompt_1 .. prompt_n]; deep vision prompts overwrite the last n tokens.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

import clip
from clip.simple_tokenizer import SimpleTokenizer

from .dpc.errors import ConfigError

_tokenizer = SimpleTokenizer()


def count_tokens(text: str) -> int:
    """Number of BPE tokens of ``text`` (without SOS/EOS)."""
    return len(_tokenizer.encode(text))


def context_length(clip_model) -> int:
    """Number of text tokens the CLIP text tower takes (77 for OpenAI's models), read from its positions."""
    return clip_model.positional_embedding.shape[0]


def tokenize(clip_model, texts: Sequence[str]) -> torch.Tensor:
    """Token ids [n, context length] of ``texts`` for ``clip_model``; a text that does not fit is an error naming it."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    length = context_length(clip_model)
    for text in texts:
        needed = count_tokens(text) + 2  # with start and end tokens
        if needed > length:
            raise ConfigError(
                f"prompt {text!r} needs {needed} tokens (with start and end) but this CLIP's text encoder takes "
                f"{length}: use fewer context tokens (N_CTX, CTX_INIT), a shorter template or shorter class "
                "names, or a CLIP with a longer context")
    return clip.tokenize(texts, context_length=length)


def embed_texts(clip_model, texts: Sequence[str]):
    """Tokenize ``texts`` and look up their token embeddings: (tokens [n, L], embeddings [n, L, width]),
    L being the model's context length (77 for OpenAI's models)."""
    tokens = tokenize(clip_model, texts)
    device = clip_model.token_embedding.weight.device
    with torch.no_grad():
        embedding = clip_model.token_embedding(tokens.to(device)).type(clip_model.dtype)
    return tokens, embedding


def replace_text_prompt(x: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
    """Overwrite tokens 1..n of a sequence-first text batch [L, N, D] with ``prompt`` [n, D]."""
    n = prompt.shape[0]
    prompt = prompt.unsqueeze(1).expand(-1, x.shape[1], -1).to(x.dtype)  # cast after expand: fp32 gradient sum
    return torch.cat([x[:1], prompt, x[1 + n:]], dim=0)


def replace_vision_prompt(x: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
    """Overwrite the last n tokens of a sequence-first image batch [L, N, D] with ``prompt`` [n, D]."""
    n = prompt.shape[0]
    prompt = prompt.unsqueeze(1).expand(-1, x.shape[1], -1).to(x.dtype)
    return torch.cat([x[:-n], prompt], dim=0)


def run_blocks(blocks: nn.Sequential, x: torch.Tensor,
               deep_prompts: Optional[Sequence[Optional[torch.Tensor]]],
               replace: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], checkpoint: bool = False) -> torch.Tensor:
    """Run residual blocks; ``deep_prompts[i]`` (if any) replaces the prompt tokens before block i + 1.

    Block 0 sees the prompts inserted at the input, so a prompt depth of d uses d - 1 deep prompts.
    ``checkpoint``: keep only each block's input for the backward pass and run the block again there
    (activation checkpointing: less memory, one more forward of the blocks).
    """
    deep_prompts = list(deep_prompts or [])
    if len(deep_prompts) >= len(blocks):
        raise ConfigError(f"{len(deep_prompts)} deep prompts need more than {len(blocks)} blocks "
                         "(prompt depth must not exceed the number of transformer layers)")
    for i, block in enumerate(blocks):
        if 0 < i <= len(deep_prompts) and deep_prompts[i - 1] is not None:
            x = replace(x, deep_prompts[i - 1])
        x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False) if checkpoint else block(x)
    return x


def require_vit(clip_model, method: str) -> None:
    """Vision prompts need a token sequence: refuse ResNet CLIP models with a clear message."""
    if not hasattr(clip_model.visual, "transformer"):
        raise ConfigError(f"{method} prompts the image transformer and needs a ViT CLIP backbone "
                         "(ViT-B/32, ViT-B/16, ViT-L/14); ResNet backbones (RN50, ...) are not supported")


class TextEncoder(nn.Module):
    """CLIP's text tower applied to prompt embeddings instead of token ids. ``checkpoint``: activation
    checkpointing of its residual blocks while gradients are on (MODEL.CHECKPOINT_TEXT, ``checkpoint_text``)."""

    def __init__(self, clip_model):
        super().__init__()
        self.checkpoint = False
        self.transformer = clip_model.transformer
        self.positional_embedding = clip_model.positional_embedding
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection
        self.dtype = clip_model.dtype

    def forward(self, prompts: torch.Tensor, tokenized_prompts: torch.Tensor,
                deep_prompts: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
        x = prompts.type(self.dtype) + self.positional_embedding.type(self.dtype)
        x = run_blocks(self.transformer.resblocks, x.permute(1, 0, 2), deep_prompts, replace_text_prompt,
                       checkpoint=self.checkpoint and torch.is_grad_enabled())
        x = self.ln_final(x.permute(1, 0, 2)).type(self.dtype)
        eot = tokenized_prompts.argmax(dim=-1)  # EOT has the largest token id
        return x[torch.arange(x.shape[0], device=x.device), eot] @ self.text_projection


def checkpoint_text(model: nn.Module, on: bool) -> int:
    """Turn activation checkpointing of every ``TextEncoder`` in ``model`` on or off; returns how many there are."""
    encoders = [m for m in model.modules() if isinstance(m, TextEncoder)]
    for encoder in encoders:
        encoder.checkpoint = on
    return len(encoders)


class PromptedVisionEncoder(nn.Module):
    """CLIP's ViT with prompt tokens appended after the patch tokens (shallow and deep)."""

    def __init__(self, clip_model):
        super().__init__()
        require_vit(clip_model, "vision prompting")
        self.visual = clip_model.visual
        self.dtype = clip_model.dtype

    def forward(self, image: torch.Tensor, prompt: Optional[torch.Tensor] = None,
                deep_prompts: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
        v = self.visual
        x = v.conv1(image.type(self.dtype))
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)  # [N, grid**2, width]
        cls = v.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype, device=x.device)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        if prompt is not None:
            x = torch.cat([x, prompt.unsqueeze(0).expand(x.shape[0], -1, -1).to(x.dtype)], dim=1)
        elif deep_prompts:
            raise ConfigError("deep vision prompts need a shallow vision prompt at the input")
        x = v.ln_pre(x).permute(1, 0, 2)
        x = run_blocks(v.transformer.resblocks, x, deep_prompts, replace_vision_prompt)
        x = v.ln_post(x.permute(1, 0, 2)[:, 0, :])
        return x @ v.proj


class PromptedCLIP(nn.Module):
    """Base of every prompt model here: subclasses define ``encode_image`` and ``encode_text``.

    ``encode_text()`` returns the (unnormalised) features of all classes, which the trainers' own loss
    terms use. ``forward`` calls ``image_encoder`` and ``text_encoder`` once each; DPC reads the
    features at those two submodules (``trainers/dpc/features.py``).
    """

    def __init__(self, clip_model):
        super().__init__()
        self.logit_scale = clip_model.logit_scale
        self.dtype = clip_model.dtype

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode_text(self) -> torch.Tensor:
        raise NotImplementedError

    def logits(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        image_features = F.normalize(image_features, dim=-1)
        text_features = F.normalize(text_features, dim=-1)
        return self.logit_scale.exp() * image_features @ text_features.t()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.logits(self.encode_image(image), self.encode_text())
