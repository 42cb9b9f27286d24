"""CoOp-format datasets for Dassl.

`datasets.register()` registers ImageNet, Caltech101, OxfordPets, StanfordCars,
OxfordFlowers, Food101, FGVCAircraft, SUN397, DescribableTextures, EuroSAT,
UCF101, ImageNetV2, ImageNetSketch, ImageNetA and ImageNetR with Dassl's
DATASET_REGISTRY, and ToyWorld, the synthetic world of tools/toyworld. The logic lives in modules that do not import Dassl
(records, readers, fewshot, subsample, specs, pipeline): `import datasets` imports only those, so the option
checks run without torch (`train.py --check-only`).
"""

from .pipeline import Splits, build_splits, count_classes
from .readers import DatasetNotFoundError
from .specs import SPECS, config_files, get_spec
from .subsample import SUBSAMPLE_CHOICES

__all__ = ["SPECS", "SUBSAMPLE_CHOICES", "DatasetNotFoundError", "Splits", "build_splits",
           "config_files", "count_classes", "get_spec"]


def register():
    """Import the Dassl dataset modules, which registers them (imports Dassl and torch: seconds)."""
    from . import (  # noqa: F401
        caltech101,
        dtd,
        eurosat,
        fgvc_aircraft,
        food101,
        imagenet,
        imagenet_a,
        imagenet_r,
        imagenet_sketch,
        imagenetv2,
        oxford_flowers,
        oxford_pets,
        stanford_cars,
        sun397,
        toyworld,
        ucf101,
    )
