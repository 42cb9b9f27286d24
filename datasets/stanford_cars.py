"""Stanford Cars, 196 make/model/year classes."""

from dassl.data.datasets import DATASET_REGISTRY

from .base import CoOpDataset
from .specs import SPECS


@DATASET_REGISTRY.register()
class StanfordCars(CoOpDataset):
    spec = SPECS["StanfordCars"]
