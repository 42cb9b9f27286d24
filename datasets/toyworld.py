"""ToyWorld: 50 colour-shape classes of a synthetic 32x32 world (written by `python -m tools.toyworld`).

Base classes (labels 0..24) and new classes (25..49) share no colour or shape word; see tools/toyworld.
ToyWorldWide: all 100 pairs, base (0..49) = the first 5 colours x 10 shapes, new = the other 5 colours.
"""

from dassl.data.datasets import DATASET_REGISTRY

from .base import CoOpDataset
from .specs import SPECS


@DATASET_REGISTRY.register()
class ToyWorld(CoOpDataset):
    spec = SPECS["ToyWorld"]


@DATASET_REGISTRY.register()
class ToyWorldWide(CoOpDataset):
    spec = SPECS["ToyWorldWide"]
