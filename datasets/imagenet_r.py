"""ImageNet-R (renditions, 200 classes); evaluation only."""

from dassl.data.datasets import DATASET_REGISTRY

from .base import CoOpDataset
from .specs import SPECS


@DATASET_REGISTRY.register()
class ImageNetR(CoOpDataset):
    spec = SPECS["ImageNetR"]
