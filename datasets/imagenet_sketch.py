"""ImageNet-Sketch; evaluation only."""

from dassl.data.datasets import DATASET_REGISTRY

from .base import CoOpDataset
from .specs import SPECS


@DATASET_REGISTRY.register()
class ImageNetSketch(CoOpDataset):
    spec = SPECS["ImageNetSketch"]
