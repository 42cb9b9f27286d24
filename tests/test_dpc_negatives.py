"""The decoded-once negative store and its tensor augmentation (trainers/dpc/negatives.py), against Dassl's
PIL train transform: same random draws, same pixels within rounding; and against Dassl's test transform
(DPC.NEG_TRANSFORM test): the same tensors bit for bit."""
import contextlib
import io
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from trainers.dpc.image_bank import ImageBank
from trainers.dpc.image_files import ImageFileError
from trainers.dpc.negatives import DecodedBank, FixedAugment, TensorAugment, negative_bank

MEAN, STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]


def dassl_train_transform(size=32, transforms=("random_resized_crop", "random_flip", "normalize"), is_train=True):
    from dassl.config import get_cfg_default
    from dassl.data.transforms import build_transform

    cfg = get_cfg_default()
    cfg.INPUT.SIZE, cfg.INPUT.INTERPOLATION, cfg.INPUT.TRANSFORMS = (size, size), "bicubic", list(transforms)
    cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD = MEAN, STD
    with contextlib.redirect_stdout(io.StringIO()):
        return build_transform(cfg, is_train=is_train)


def write_photos(folder, sizes, seed=0):
    """Smooth random JPEGs with some noise (detail at every scale), one per (width, height)."""
    rng = np.random.default_rng(seed)
    paths = []
    for k, (w, h) in enumerate(sizes):
        coarse = Image.fromarray((rng.random((max(h // 6, 2), max(w // 6, 2), 3)) * 255).astype(np.uint8))
        pixels = np.asarray(coarse.resize((w, h), Image.BICUBIC)).astype(int) + rng.integers(-20, 20, (h, w, 3))
        path = str(folder / f"{k}.jpg")
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def test_same_draws_and_pixels_as_dassls_pil_transform(tmp_path):
    """For one RNG state, the bank draws torchvision's crops and flips (any other draw would differ by far more
    than the tolerance) and resizes with PIL's bicubic filter: the distribution is the anchors'."""
    transform = dassl_train_transform()
    paths = write_photos(tmp_path, [(80, 60), (60, 80), (30, 24), (45, 45), (12, 40)])
    bank = negative_bank(paths, transform, prefill=False, log=None)
    assert isinstance(bank, DecodedBank)
    indices = list(range(len(paths))) * 8
    torch.manual_seed(3)
    expected = torch.stack([transform(Image.open(paths[i]).convert("RGB")) for i in indices])
    torch.manual_seed(3)
    got = bank.load(indices)
    assert got.shape == expected.shape == (40, 3, 32, 32) and got.dtype == torch.float32
    error = ((got - expected) * torch.tensor(STD).view(1, 3, 1, 1) * 255).abs()  # in 8-bit levels
    assert error.max() <= 4.01 and error.mean() < 0.3


def test_test_transform_is_stored_once_and_drawn_bit_for_bit(tmp_path):
    """The test transform (resize the shorter side, centre crop, normalise) is deterministic: each image is
    transformed once when decoded, and every draw is Dassl's tensor exactly, drawing no random numbers."""
    transform = dassl_train_transform(is_train=False)
    paths = write_photos(tmp_path, [(80, 60), (60, 80), (30, 24), (12, 40)])
    bank = negative_bank(paths, transform, prefill=False, log=None)
    assert isinstance(bank, DecodedBank) and isinstance(bank.augment, FixedAugment)
    indices = [0, 1, 2, 3, 2, 0]
    state = torch.get_rng_state()
    got = bank.load(indices)
    assert torch.equal(torch.get_rng_state(), state)
    expected = torch.stack([transform(Image.open(paths[i]).convert("RGB")) for i in indices])
    assert got.shape == (6, 3, 32, 32) and torch.equal(got, expected)
    assert bank.decodes == 4 and bank.stored_bytes == 4 * 3 * 32 * 32  # the transformed images are stored
    assert torch.equal(ImageBank(paths, transform).load(indices), expected)  # the per-draw path agrees


def test_own_generator_is_deterministic_and_the_cuda_float_path_matches(tmp_path):
    paths = write_photos(tmp_path, [(40, 30), (30, 40)])
    transform = dassl_train_transform()
    outs = []
    for prefill in (True, False):
        bank = negative_bank(paths, transform, generator=torch.Generator().manual_seed(7), prefill=prefill, log=None)
        bank.wait_prefilled()
        outs.append(bank.load([0, 1, 1, 0]))
    assert torch.equal(outs[0], outs[1])
    augment, _ = TensorAugment.from_transform(transform)
    crop = torch.from_numpy(np.asarray(Image.open(paths[0]).convert("RGB")).copy()).permute(2, 0, 1)[:, 3:25, 5:30]
    diff = augment.resize_float(crop).int() - augment.resize(crop, torch.device("cpu")).int()
    assert diff.abs().max() <= 1


def test_each_file_is_decoded_once_ahead_of_use_and_memory_is_capped(tmp_path):
    paths = write_photos(tmp_path, [(20, 16)] * 4)
    transform = dassl_train_transform(size=8)
    bank = negative_bank(paths, transform, log=None)
    bank.wait_prefilled()
    assert bank.stored_bytes == 4 * 3 * 20 * 16
    for path in paths:
        os.remove(path)  # the background thread decoded everything: no file is read again
    assert bank.load([3, 0, 3]).shape == (3, 3, 8, 8) and bank.decodes == 0
    assert bank.load([]).numel() == 0

    paths = write_photos(tmp_path, [(20, 16)] * 4)
    small = negative_bank(paths, transform, max_bytes=int(2.5 * 3 * 20 * 16), log=None)
    small.wait_prefilled()
    assert sorted(small._store) == [0, 1]  # the prefill stops at the cap
    small.load([0, 2])  # 2 is decoded when drawn; 1, least recently used, goes
    assert sorted(small._store) == [0, 2] and small.decodes == 1 and small.stored_bytes <= small.max_bytes


def test_large_images_are_stored_at_a_bounded_size(tmp_path):
    """Beyond ``max_pixels`` even the smallest crop is larger than the output: the copy is downscaled."""
    augment = TensorAugment((8, 8), (0.5, 1.0), (3 / 4, 4 / 3), "bicubic", 0.5, MEAN, STD)
    assert augment.max_pixels() == 171
    path = write_photos(tmp_path, [(60, 45)])
    bank = DecodedBank(path, augment, prefill=False)
    out = bank.load([0, 0, 0])
    pixels, height, width = bank._store[0]
    assert (height, width) == (45, 60) and pixels.shape[1] * pixels.shape[2] <= 171
    assert out.shape == (3, 3, 8, 8) and torch.isfinite(out).all()


def test_damaged_image_is_named_and_other_transforms_keep_the_pil_path(tmp_path):
    paths = write_photos(tmp_path, [(20, 16)] * 2)
    with open(paths[1], "r+b") as f:
        f.truncate(200)
    bank = negative_bank(paths, dassl_train_transform(size=8), log=None)
    bank.wait_prefilled()
    bank.load([0])
    with pytest.raises(ImageFileError, match=str(paths[1])):
        bank.load([1])

    messages = []
    jitter = dassl_train_transform(size=8, transforms=("random_resized_crop", "colorjitter", "normalize"))
    fallback = negative_bank(paths[:1], jitter, log=messages.append)
    assert isinstance(fallback, ImageBank) and "per draw with PIL" in messages[0]
    assert fallback.load([0]).shape == (1, 3, 8, 8)
    plain = negative_bank(paths[:1], T.Compose([T.RandomResizedCrop(8), T.ToTensor()]), log=None)
    assert isinstance(plain, DecodedBank) and plain.augment.flip_p is None and plain.augment.mean is None
