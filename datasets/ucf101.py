"""UCF101 actions, one middle frame per video."""

from dassl.data.datasets import DATASET_REGISTRY

from .base import CoOpDataset
from .specs import SPECS


@DATASET_REGISTRY.register()
class UCF101(CoOpDataset):
    spec = SPECS["UCF101"]
