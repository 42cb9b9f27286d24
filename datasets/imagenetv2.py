"""ImageNetV2 matched-frequency; evaluation only."""

from dassl.data.datasets import DATASET_REGISTRY

from .base import CoOpDataset
from .specs import SPECS


@DATASET_REGISTRY.register()
class ImageNetV2(CoOpDataset):
    spec = SPECS["ImageNetV2"]
