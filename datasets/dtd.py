"""Describable Textures Dataset (DTD), 47 textures."""

from dassl.data.datasets import DATASET_REGISTRY

from .base import CoOpDataset
from .specs import SPECS


@DATASET_REGISTRY.register()
class DescribableTextures(CoOpDataset):
    spec = SPECS["DescribableTextures"]
