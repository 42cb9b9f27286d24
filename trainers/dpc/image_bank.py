"""Training images for hard negatives, read from disk once and decoded per draw (the general path: any train
transform; ``negatives.DecodedBank`` replaces it for the crop/flip/normalise transform of the configs).

The encoded bytes of each drawn image stay in memory (least recently used first out beyond
``max_bytes``), so with the few-shot source no file is ever read twice; decoding and the random
training transform run per draw, as for anchors. A full-train source larger than the cap
(ImageNet's base split is tens of GB) re-reads the images that fell out.

Also the image-file helpers shared with the data loading: ``open_image`` (a full decode whose
errors name the file) and ``image_problem`` (a cheap check of one file, for checking a split up front).
"""
from __future__ import annotations

import io
import os
from collections import OrderedDict
from typing import Callable, List, Optional, Sequence

import torch
from PIL import Image

from .errors import UserError
from .files import error_summary

DEFAULT_MAX_BYTES = 4 << 30

IMAGE_HINT = ("A damaged or non-image file (an interrupted download, copy or extraction?) must be replaced "
              "with an intact copy: re-extract or re-download the dataset (see CoOp's DATASETS.md).")

# what PIL raises for damaged files: OSError (truncated, unidentified), SyntaxError (broken PNG chunks), ...
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError)

# bytes every complete file of these formats ends with (JPEG: EOI marker, PNG: IEND chunk type)
_END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND"}
_TAIL_BYTES = 1024


class ImageFileError(UserError, OSError):
    """An image file cannot be read; the message names the file(s) and says what to do."""


def open_image(path: str, data: Optional[bytes] = None) -> Image.Image:
    """Decode ``path`` (or its bytes ``data``) to an RGB image; any failure names the file."""
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as img:
            return img.convert("RGB")  # decodes everything: a truncated file fails here, not later
    except DECODE_ERRORS as err:
        raise ImageFileError(f"cannot read image {path} ({error_summary(err)}). {IMAGE_HINT}") from err


def read_negative(path: str) -> bytes:
    """The encoded bytes of a negative image; a file that cannot be read is an error naming it."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise ImageFileError(f"cannot read negative image {path} ({error_summary(err)}). {IMAGE_HINT}") from err


def image_problem(path: str) -> Optional[str]:
    """Why ``path`` is not a readable image, or None; cheap for intact files.

    Reads the header (PIL opens lazily) and, for JPEG and PNG, looks for the format's end marker
    in the last KiB, which a truncated file lacks. Only a file without it is decoded in full, so
    a complete file with trailing bytes after the marker still passes.
    """
    try:
        with Image.open(path) as img:
            marker = _END_MARKERS.get(img.format)
        if marker is None:
            return None
        with open(path, "rb") as f:
            f.seek(max(os.path.getsize(path) - _TAIL_BYTES, 0))
            if marker in f.read():
                return None
        with Image.open(path) as img:
            img.load()
    except DECODE_ERRORS as err:
        return error_summary(err)
    return None


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
