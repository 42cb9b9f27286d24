"""Training images for hard negatives, read from disk once and decoded per draw (the general path: any train
transform; ``negatives.DecodedBank`` replaces it for the crop/flip/normalise transform of the configs).

The encoded bytes of each drawn image stay in memory (least recently used first out beyond
``max_bytes``), so with the few-shot source no file is ever read twice; decoding and the random
training transform run per draw, as for anchors. A full-train source larger than the cap
(ImageNet's base split is tens of GB) re-reads the images that fell out.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, List, Sequence

import torch
from PIL import Image

from .image_files import open_image, read_negative

DEFAULT_MAX_BYTES = 4 << 30


class ImageBank:
    def __init__(self, impaths: Sequence[str], transform: Callable[[Image.Image], torch.Tensor],
                 max_bytes: int = DEFAULT_MAX_BYTES):
        self.impaths = list(impaths)
        self.transform = transform
        self.max_bytes = max_bytes
        self._bytes: "OrderedDict[int, bytes]" = OrderedDict()
        self._size = 0

    def __len__(self) -> int:
        return len(self.impaths)

    def _encoded(self, index: int) -> bytes:
        data = self._bytes.get(index)
        if data is not None:
            self._bytes.move_to_end(index)
            return data
        data = read_negative(self.impaths[index])
        self._bytes[index] = data
        self._size += len(data)
        while self._size > self.max_bytes and len(self._bytes) > 1:
            _, dropped = self._bytes.popitem(last=False)
            self._size -= len(dropped)
        return data

    def image(self, index: int) -> Image.Image:
        return open_image(self.impaths[index], self._encoded(index))

    def load(self, indices: Sequence[int], device=None) -> torch.Tensor:
        """Transformed images stacked into a batch [n, C, H, W] on ``device`` (empty list -> empty batch)."""
        images: List[torch.Tensor] = [self.transform(self.image(i)) for i in indices]
        if not images:
            return torch.empty(0, device=device)
        return torch.stack(images).to(device or "cpu")
