"""Caltech-101 objects, CoOp split (BACKGROUND_Google and Faces_easy left out)."""

from dassl.data.datasets import DATASET_REGISTRY

from .base import CoOpDataset
from .specs import SPECS


@DATASET_REGISTRY.register()
class Caltech101(CoOpDataset):
    spec = SPECS["Caltech101"]
