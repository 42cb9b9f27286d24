"""EuroSAT Sentinel-2 land use, 10 classes."""

from dassl.data.datasets import DATASET_REGISTRY

from .base import CoOpDataset
from .specs import SPECS


@DATASET_REGISTRY.register()
class EuroSAT(CoOpDataset):
    spec = SPECS["EuroSAT"]
