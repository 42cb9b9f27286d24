"""ImageNet-1k (ILSVRC-2012); its val images are the test split."""

from dassl.data.datasets import DATASET_REGISTRY

from .base import CoOpDataset
from .specs import SPECS


@DATASET_REGISTRY.register()
class ImageNet(CoOpDataset):
    spec = SPECS["ImageNet"]
