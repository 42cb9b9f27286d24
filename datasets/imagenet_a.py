"""ImageNet-A (natural adversarial examples, 200 classes); evaluation only."""

from dassl.data.datasets import DATASET_REGISTRY

from .base import CoOpDataset
from .specs import SPECS


@DATASET_REGISTRY.register()
class ImageNetA(CoOpDataset):
    spec = SPECS["ImageNetA"]
