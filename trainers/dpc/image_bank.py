"""Training images for hard negatives, read from disk once and decoded per draw.

The encoded bytes of each image are kept in memory after its first use, so drawing a negative
never re-reads a file; decoding and the (random) training transform run per draw, as for anchors.
"""
from __future__ import annotations

import io
from typing import Callable, Dict, List, Sequence

import torch
from PIL import Image


class ImageBank:
    def __init__(self, impaths: Sequence[str], transform: Callable[[Image.Image], torch.Tensor]):
        self.impaths = list(impaths)
        self.transform = transform
        self._bytes: Dict[int, bytes] = {}

    def __len__(self) -> int:
        return len(self.impaths)

    def _encoded(self, index: int) -> bytes:
        data = self._bytes.get(index)
        if data is None:
            with open(self.impaths[index], "rb") as f:
                data = self._bytes[index] = f.read()
        return data

    def image(self, index: int) -> Image.Image:
        return Image.open(io.BytesIO(self._encoded(index))).convert("RGB")

    def load(self, indices: Sequence[int]) -> torch.Tensor:
        """Transformed images stacked into a batch [n, C, H, W] (empty list -> empty batch)."""
        images: List[torch.Tensor] = [self.transform(self.image(i)) for i in indices]
        if not images:
            return torch.empty(0)
        return torch.stack(images)
