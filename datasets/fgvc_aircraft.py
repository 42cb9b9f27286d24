"""FGVC-Aircraft 2013b, 100 variants, read from its own list files."""

from dassl.data.datasets import DATASET_REGISTRY

from .base import CoOpDataset
from .specs import SPECS


@DATASET_REGISTRY.register()
class FGVCAircraft(CoOpDataset):
    spec = SPECS["FGVCAircraft"]
