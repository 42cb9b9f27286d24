"""Oxford-IIIT Pets, 37 cat and dog breeds."""

from dassl.data.datasets import DATASET_REGISTRY

from .base import CoOpDataset
from .specs import SPECS


@DATASET_REGISTRY.register()
class OxfordPets(CoOpDataset):
    spec = SPECS["OxfordPets"]
