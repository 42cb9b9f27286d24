"""Hard-negative images off the critical path: decoded once, augmented per step as tensors.

``ImageBank`` (the general path) decodes a JPEG and runs Dassl's PIL train transform for every draw, one
image after another, in the training process: a few ms per negative, ~28 negatives per step. When the
train transform is the one every config here uses (random_resized_crop, random_flip, normalize; any
interpolation PIL and torch share), ``DecodedBank`` replaces it:

- each image is decoded once with PIL (the anchors' decoder, so the same pixels) into a uint8 [3, H, W]
  tensor; a background thread decodes the whole pool ahead of use, so no step waits for a decode once it
  is done (``close`` stops it; at the latest it is stopped and joined when the interpreter exits, however
  the run ended: left running, it would be killed inside torch code and abort the process with "terminate
  called without an active exception"); memory is capped (least recently used out), the figure is
  ``stored_bytes``;
- the augmentation parameters are drawn in the main process, negative after negative, with the same random
  calls on the same generator as the PIL transform they replace (torch's default CPU generator, which
  Dassl seeds and our checkpoints save for an exact resume; or a ``generator`` of the caller's): the same
  distribution as the anchors', and for a given RNG state the very crops and flips ``ImageBank`` drew;
- each crop is a view of the stored image, resized on the target device with torch's antialiased
  bicubic/bilinear filter (PIL's filters), then the batch is flipped and normalised in one call.

The test transform (Resize, CenterCrop, ToTensor, Normalize; ``DPC.NEG_TRANSFORM test``) is deterministic:
``FixedAugment`` runs its PIL steps once per image when it is decoded and stores the result, so every draw is
Dassl's test-transform tensor bit for bit.

``negative_bank(impaths, transform, ...)`` picks the fast bank when it can and says why not otherwise.
"""
from __future__ import annotations

import atexit
import math
import threading
import weakref
from collections import OrderedDict
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T

from .image_bank import ImageBank
from .image_files import ImageFileError, open_image, read_negative

DEFAULT_STORE_BYTES = 6 << 30  # ImageNet's few-shot base pool (500 x 16 images of ~500x375) takes ~4.2 GiB
_prefilling = weakref.WeakSet()  # banks whose decode thread may still run


@atexit.register  # before the interpreter finalizes, when a daemon thread would die mid-call
def _stop_prefills() -> None:
    for bank in list(_prefilling):
        bank.close()
_MODES = {T.InterpolationMode.BICUBIC: "bicubic", T.InterpolationMode.BILINEAR: "bilinear"}


def _pixels(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)  # [3, h, w] uint8, a view of HWC


def _normalization(steps) -> Optional[tuple]:
    """(mean, std), or (None, None) without Normalize, when ``steps`` are ToTensor -> [Normalize]; else None."""
    if not steps or not isinstance(steps[0], T.ToTensor):
        return None
    rest = steps[1:]
    if not rest:
        return None, None
    if len(rest) == 1 and isinstance(rest[0], T.Normalize):
        return rest[0].mean, rest[0].std
    return None


class _Finish:
    """What every fast path ends with: uint8 batch -> flipped where drawn, float in [0, 1], normalised."""

    def __init__(self, mean=None, std=None):
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def finish(self, batch: torch.Tensor, flips: Sequence[bool]) -> torch.Tensor:
        """uint8 [n, 3, H, W] -> flipped where drawn, float in [0, 1], normalised: one call each for the batch."""
        flip = torch.tensor(flips, dtype=torch.bool, device=batch.device).view(-1, 1, 1, 1)
        batch = torch.where(flip, batch.flip(-1), batch)
        x = batch.float().div_(255)
        if self.mean is not None:
            x = x.sub_(self.mean.to(x.device)).div_(self.std.to(x.device))
        return x


class FixedAugment(_Finish):
    """Deterministic PIL steps (Resize, CenterCrop: Dassl's test transform) -> ToTensor -> [Normalize]. The PIL
    steps run once per image, when it is decoded (``store``); a draw only stacks and normalises."""

    STEPS = (T.Resize, T.CenterCrop)

    def __init__(self, pil_steps, mean=None, std=None):
        super().__init__(mean, std)
        self.pil_steps = list(pil_steps)

    @classmethod
    def from_transform(cls, transform) -> Tuple[Optional["FixedAugment"], str]:
        steps = list(getattr(transform, "transforms", []))
        kinds = [type(s).__name__ for s in steps]
        n = 0
        while n < len(steps) and isinstance(steps[n], cls.STEPS):
            n += 1
        last = steps[n - 1] if n else None
        if not isinstance(last, T.CenterCrop) and not (isinstance(last, T.Resize) and not isinstance(last.size, int)
                                                       and len(last.size) == 2):
            return None, (f"the transform ({', '.join(kinds) or type(transform).__name__}) does not start with "
                          "resize and centre crop to a fixed size")
        norm = _normalization(steps[n:])
        if norm is None:
            return None, f"the transform ({', '.join(kinds)}) has other steps than resize, crop, normalise"
        return cls(steps[:n], *norm), ""

    def store(self, img: Image.Image) -> Tuple[torch.Tensor, int, int]:
        for step in self.pil_steps:
            img = step(img)
        pixels = _pixels(img)
        return pixels, pixels.shape[1], pixels.shape[2]

    def crop(self, pixels, height, width, generator, device) -> Tuple[torch.Tensor, bool]:
        return pixels.to(device), False


class TensorAugment(_Finish):
    """RandomResizedCrop -> [RandomHorizontalFlip] -> ToTensor -> [Normalize], read off a torchvision Compose."""

    def __init__(self, size: Tuple[int, int], scale, ratio, mode: str, flip_p: Optional[float] = None, mean=None,
                 std=None):
        super().__init__(mean, std)
        self.size = (int(size[0]), int(size[1]))
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.mode = mode
        self.flip_p = flip_p  # None: no flip step (and no random draw for it)

    @classmethod
    def from_transform(cls, transform) -> Tuple[Optional["TensorAugment"], str]:
        """(augment, "") when ``transform`` is a supported Compose, else (None, why not)."""
        steps = list(getattr(transform, "transforms", []))
        kinds = [type(s).__name__ for s in steps]
        if not steps or not isinstance(steps[0], T.RandomResizedCrop):
            return None, (f"the train transform ({', '.join(kinds) or type(transform).__name__}) does not start "
                          "with RandomResizedCrop")
        crop, rest = steps[0], steps[1:]
        if crop.interpolation not in _MODES:
            return None, f"interpolation {crop.interpolation.value} has no antialiased tensor equivalent"
        flip_p = None
        if rest and isinstance(rest[0], T.RandomHorizontalFlip):
            flip_p, rest = rest[0].p, rest[1:]
        norm = _normalization(rest)
        if norm is None:
            return None, f"the train transform ({', '.join(kinds)}) has other steps than crop, flip, normalise"
        mean, std = norm
        size = crop.size if isinstance(crop.size, (tuple, list)) else (crop.size, crop.size)
        if len(size) == 1:
            size = (size[0], size[0])
        return cls(size, crop.scale, crop.ratio, _MODES[crop.interpolation], flip_p, mean, std), ""

    def max_pixels(self) -> int:
        """Largest image worth storing at full size: beyond it, even the smallest crop (area scale[0], aspect
        ratio[0]) has more pixels than the output on each side, so a downscaled copy loses no detail that
        survives the resize (only a second resampling)."""
        return math.ceil(self.size[0] * self.size[1] / (self.scale[0] * min(self.ratio[0], 1 / self.ratio[1])))

    def draw(self, height: int, width: int, g: torch.Generator) -> Tuple[int, int, int, int, bool]:
        """(top, left, h, w, flip) for an image of ``height`` x ``width``: torchvision's random calls, in order
        (crop tries, then the flip), from ``g``."""
        area = height * width
        lo, hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        box = None
        for _ in range(10):
            target = area * torch.empty(1).uniform_(self.scale[0], self.scale[1], generator=g).item()
            aspect = math.exp(torch.empty(1).uniform_(lo, hi, generator=g).item())
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, size=(1,), generator=g).item())
                left = int(torch.randint(0, width - w + 1, size=(1,), generator=g).item())
                box = (top, left, h, w)
                break
        if box is None:  # no try fitted: the centred crop of the whole image at the nearest allowed aspect
            aspect = width / height
            if aspect < min(self.ratio):
                w, h = width, int(round(width / min(self.ratio)))
            elif aspect > max(self.ratio):
                h, w = height, int(round(height * max(self.ratio)))
            else:
                h, w = height, width
            box = ((height - h) // 2, (width - w) // 2, h, w)
        flip = self.flip_p is not None and torch.rand(1, generator=g).item() < self.flip_p
        return (*box, bool(flip))

    def resize(self, crop: torch.Tensor, device: torch.device) -> torch.Tensor:
        """uint8 [3, h, w] crop -> uint8 [3, H, W] on ``device`` (PIL's filter, rounded like PIL)."""
        if device.type == "cpu":  # torch's uint8 path (vectorised, channels last) rounds and saturates itself
            x = crop.unsqueeze(0).contiguous(memory_format=torch.channels_last)
            return F.interpolate(x, size=self.size, mode=self.mode, antialias=True)[0]
        return self.resize_float(crop.to(device, non_blocking=True))

    def resize_float(self, crop: torch.Tensor) -> torch.Tensor:
        """The same in float on ``crop``'s device (CUDA has no uint8 antialiased kernels), rounded to uint8."""
        x = F.interpolate(crop.unsqueeze(0).float(), size=self.size, mode=self.mode, antialias=True)[0]
        return x.round_().clamp_(0, 255).to(torch.uint8)

    def store(self, img: Image.Image) -> Tuple[torch.Tensor, int, int]:
        """(uint8 [3, h, w], original height, original width): above ``max_pixels`` a downscaled copy."""
        width, height = img.size
        if width * height > self.max_pixels():  # keep the aspect, shrink to the pixel budget
            factor = math.sqrt(self.max_pixels() / (width * height))
            img = img.resize((max(1, round(width * factor)), max(1, round(height * factor))), Image.BICUBIC)
        return _pixels(img), height, width

    def crop(self, pixels, height, width, generator, device) -> Tuple[torch.Tensor, bool]:
        """A random crop of a stored image, resized on ``device``, and whether to flip it."""
        top, left, h, w, flip = self.draw(height, width, generator)
        if pixels.shape[1] != height:  # stored downscaled: the same box in stored pixels
            fy, fx = pixels.shape[1] / height, pixels.shape[2] / width
            top, left = int(top * fy), int(left * fx)
            h, w = max(1, round(h * fy)), max(1, round(w * fx))
        return self.resize(pixels[:, top:top + h, left:left + w], device), flip


class DecodedBank:
    """Negative images decoded once into a uint8 store (LRU-capped at ``max_bytes``) and augmented as tensors."""

    def __init__(self, impaths: Sequence[str], augment, generator: Optional[torch.Generator] = None,
                 max_bytes: int = DEFAULT_STORE_BYTES, prefill: bool = True):
        """``augment``: a ``TensorAugment`` (train transform) or ``FixedAugment`` (test transform)."""
        self.impaths = list(impaths)
        self.augment = augment
        self.max_bytes = int(max_bytes)
        self.generator = generator  # None: torch's default CPU generator
        # index -> (uint8 [3, h, w], original height, original width)
        self._store: "OrderedDict[int, Tuple[torch.Tensor, int, int]]" = OrderedDict()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.stored_bytes = 0
        self.decodes = 0  # decodes made by ``load`` itself (on the critical path)
        self._thread = None
        if prefill and self.impaths:
            self._thread = threading.Thread(target=self._prefill, name="dpc-negative-decode", daemon=True)
            _prefilling.add(self)
            self._thread.start()

    def __len__(self) -> int:
        return len(self.impaths)

    # ------------------------------------------------------------ store
    def _decode(self, index: int) -> Tuple[torch.Tensor, int, int]:
        path = self.impaths[index]
        return self.augment.store(open_image(path, read_negative(path)))

    def _put(self, index: int, entry, evict: bool) -> bool:
        size = entry[0].numel()
        with self._lock:
            if index in self._store:
                return True
            if not evict and self.stored_bytes + size > self.max_bytes:
                return False
            self._store[index] = entry
            self.stored_bytes += size
            while self.stored_bytes > self.max_bytes and len(self._store) > 1:
                _, (dropped, _, _) = self._store.popitem(last=False)
                self.stored_bytes -= dropped.numel()
        return True

    def _prefill(self) -> None:
        for index in range(len(self.impaths)):
            if self._stop.is_set():
                return
            with self._lock:
                if index in self._store:
                    continue
            try:
                entry = self._decode(index)
            except (ImageFileError, OSError):
                continue  # ``load`` decodes it again and reports the file
            if not self._put(index, entry, evict=False):
                return  # the cap is reached: later images are decoded when drawn

    def _entry(self, index: int):
        with self._lock:
            entry = self._store.get(index)
            if entry is not None:
                self._store.move_to_end(index)
                return entry
        entry = self._decode(index)
        self.decodes += 1
        self._put(index, entry, evict=True)
        return entry

    def wait_prefilled(self, timeout: Optional[float] = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def close(self) -> None:
        """Stop the decode thread (after the image it is decoding) and wait for it; draws still work."""
        self._stop.set()
        self.wait_prefilled()
        _prefilling.discard(self)

    # ------------------------------------------------------------ draws
    def load(self, indices: Sequence[int], device=None) -> torch.Tensor:
        """Augmented images [n, 3, H, W] (float32, normalised) on ``device``; empty list -> empty batch."""
        device = torch.device(device or "cpu")
        if not len(indices):
            return torch.empty(0, device=device)
        crops, flips = [], []
        for index in indices:
            crop, flip = self.augment.crop(*self._entry(index), self.generator, device)
            crops.append(crop)
            flips.append(flip)
        return self.augment.finish(torch.stack(crops), flips)


def negative_bank(impaths: Sequence[str], transform: Callable, generator: Optional[torch.Generator] = None,
                  max_bytes: int = DEFAULT_STORE_BYTES, prefill: bool = True, log=print):
    """``DecodedBank`` when ``transform`` is random crop/flip/normalise (train) or resize/centre crop/normalise
    (test), else the per-draw PIL ``ImageBank``."""
    augment, why = TensorAugment.from_transform(transform)
    if augment is None:
        augment, why_not_fixed = FixedAugment.from_transform(transform)
        why = f"{why}; {why_not_fixed}"
    if augment is None:
        if log:
            log(f"DPC: negatives are decoded and transformed per draw with PIL ({why})")
        return ImageBank(impaths, transform)
    if log:
        log(f"DPC: negative images are decoded once into memory (at most {max_bytes / 2 ** 30:.1f} GiB, "
            f"{'filled ahead by a background thread' if prefill else 'filled as drawn'}) and augmented as tensors")
    return DecodedBank(impaths, augment, generator=generator, max_bytes=max_bytes, prefill=prefill)
