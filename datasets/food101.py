"""Food-101 dishes."""

from dassl.data.datasets import DATASET_REGISTRY

from .base import CoOpDataset
from .specs import SPECS


@DATASET_REGISTRY.register()
class Food101(CoOpDataset):
    spec = SPECS["Food101"]
