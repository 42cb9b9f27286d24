"""Oxford 102 Flowers."""

from dassl.data.datasets import DATASET_REGISTRY

from .base import CoOpDataset
from .specs import SPECS


@DATASET_REGISTRY.register()
class OxfordFlowers(CoOpDataset):
    spec = SPECS["OxfordFlowers"]
