import os

import torch
from PIL import Image
from torchvision import transforms

from trainers.dpc.image_bank import ImageBank


def write_images(folder, colours, size, ext):
    paths = []
    for i, colour in enumerate(colours):
        path = folder / f"{i}.{ext}"
        Image.new("RGB", (size, size), colour).save(path)
        paths.append(str(path))
    return paths


def test_each_file_is_read_once_and_transformed_per_draw(tmp_path):
    paths = write_images(tmp_path, [(40 * i, 10, 200) for i in range(3)], 20, "jpg")
    bank = ImageBank(paths, transforms.Compose([transforms.RandomResizedCrop(8), transforms.ToTensor()]))
    first = bank.load([0, 2, 2])
    assert first.shape == (3, 3, 8, 8)
    for path in paths:
        os.remove(path)  # nothing is re-read from disk after the first draw
    second = bank.load([2, 0])
    assert second.shape == (2, 3, 8, 8)
    assert bank.load([]).numel() == 0
    assert torch.allclose(second[1].mean(dim=(1, 2)), first[0].mean(dim=(1, 2)), atol=0.05)


def test_memory_is_capped_least_recently_used_first(tmp_path):
    paths = write_images(tmp_path, [(60 * i, 0, 0) for i in range(4)], 16, "png")
    one = os.path.getsize(paths[0])
    bank = ImageBank(paths, transforms.ToTensor(), max_bytes=int(2.5 * one))
    bank.load([0, 1])
    bank.load([0])  # 0 is now the most recently used
    bank.load([2])  # over the cap: 1 goes
    assert set(bank._bytes) == {0, 2}
    os.remove(paths[0])
    assert bank.load([0]).shape == (1, 3, 16, 16)  # still in memory
