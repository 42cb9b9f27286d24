"""SUN397 scenes."""

from dassl.data.datasets import DATASET_REGISTRY

from .base import CoOpDataset
from .specs import SPECS


@DATASET_REGISTRY.register()
class SUN397(CoOpDataset):
    spec = SPECS["SUN397"]
