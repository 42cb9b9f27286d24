"""Build a tiny randomly initialised OpenAI CLIP and save it in OpenAI's formats.

Used by the tests and the benchmarks: real ``clip.model.CLIP`` code and the real tokenizer,
small enough for a CPU. Saved as a plain state dict (or a JIT archive with ``--jit``), it loads
through the same code path as the released weights (``trainers.clip_loader``), under
``MODEL.BACKBONE.NAME custom`` (its shapes are none of OpenAI's models).

    python -m tools.tiny_clip OUT.pt [--layers 4] [--width 64] [--jit]
"""
from __future__ import annotations

import argparse

import torch
from clip.model import CLIP


# OpenAI's shapes (random weights) for the benchmarks; the input size is the caller's (224 for both)
VIT_B16 = dict(layers=12, width=512, vision_width=768, embed_dim=512, patch_size=16)  # text 512 wide, image 768
VIT_L14 = dict(layers=12, vision_layers=24, width=768, vision_width=1024, embed_dim=768, patch_size=14)


def build_tiny_clip(layers: int = 4, width: int = 64, embed_dim: int = 32, image_size: int = 32,
                    patch_size: int = 16, seed: int = 0, vision_width: int | None = None,
                    context_length: int = 77, vision_layers: int | None = None) -> CLIP:
    """A ViT CLIP with ``layers`` blocks per tower (the image tower ``vision_layers`` if given); widths are
    multiples of 64 (CLIP: 64 dims per head)."""
    torch.manual_seed(seed)
    model = CLIP(embed_dim=embed_dim, image_resolution=image_size, vision_layers=vision_layers or layers,
                 vision_width=vision_width or width,
                 vision_patch_size=patch_size, context_length=context_length, vocab_size=49408,
                 transformer_width=width, transformer_heads=width // 64, transformer_layers=layers)
    return model.eval()


def save_tiny_clip(path: str, jit: bool = False, **options) -> str:
    """Save like OpenAI does: fp16 weights, either a plain state dict or a traced JIT archive."""
    model = build_tiny_clip(**options)
    if jit:
        size = model.visual.input_resolution
        example = (torch.zeros(1, 3, size, size), torch.zeros(1, model.context_length, dtype=torch.long))
        traced = torch.jit.trace(model, example, check_trace=False)
        torch.jit.save(traced, path)
    else:
        state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
        torch.save(state, path)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=64, help="text width (and vision width unless given)")
    parser.add_argument("--vision-width", type=int, default=None)
    parser.add_argument("--embed-dim", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jit", action="store_true")
    a = parser.parse_args()
    print(save_tiny_clip(a.out, jit=a.jit, layers=a.layers, width=a.width, embed_dim=a.embed_dim,
                         image_size=a.image_size, seed=a.seed,
                         vision_width=a.vision_width))


if __name__ == "__main__":
    main()
