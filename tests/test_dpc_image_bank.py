import os

import torch
from PIL import Image
from torchvision import transforms

from trainers.dpc.image_bank import ImageBank


def test_each_file_is_read_once_and_transformed_per_draw(tmp_path):
    paths = []
    for i in range(3):
        path = tmp_path / f"{i}.jpg"
        Image.new("RGB", (20, 20), (40 * i, 10, 200)).save(path)
        paths.append(str(path))
    bank = ImageBank(paths, transforms.Compose([transforms.RandomResizedCrop(8), transforms.ToTensor()]))
    first = bank.load([0, 2, 2])
    assert first.shape == (3, 3, 8, 8)
    for path in paths:
        os.remove(path)  # nothing is re-read from disk after the first draw
    second = bank.load([2, 0])
    assert second.shape == (2, 3, 8, 8)
    assert bank.load([]).numel() == 0
    assert torch.allclose(second[1].mean(dim=(1, 2)), first[0].mean(dim=(1, 2)), atol=0.05)
