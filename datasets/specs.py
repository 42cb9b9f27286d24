"""What each CoOp dataset looks like on disk (no Dassl import).

Folder names, split files and layouts are those of the CoOp DATASETS.md;
`DatasetSpec.name` is the Dassl registry name and `config` the file stem of
configs/datasets/<config>.yaml.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetSpec:
    name: str  # Dassl registry name (DATASET.NAME)
    folder: str  # folder under DATASET.ROOT
    config: str  # configs/datasets/<config>.yaml
    kind: str  # split_json | fgvc | imagenet | imagenetv2 | class_folders
    image_dir: str  # image root inside `folder` ("" = the dataset folder)
    layout: str  # expected layout, shown in error messages
    split_file: str = ""  # CoOp split JSON (kind split_json)
    test_only: bool = False  # evaluation-only: no few-shot sampling
    val_is_test: bool = False  # no val split: val is the test split (ImageNet)
    required: tuple = ()  # further folders that must exist
    fix: str = ""  # how to get the data, when not CoOp's download instructions

    @property
    def index_files(self) -> tuple:
        """Files in ``folder`` that say which image is in which split and class (the run fingerprint hashes
        them; the images themselves are too many to hash)."""
        if self.kind == "split_json":
            return (self.split_file,)
        if self.kind == "fgvc":
            return ("variants.txt",) + tuple(f"images_variant_{s}.txt" for s in ("train", "val", "test"))
        return ("classnames.txt",)  # ImageNet and its variants: class folders listed there


def fewshot_file(num_shots: int, seed: int) -> str:
    """Few-shot cache of (shots, seed), relative to the dataset folder (upstream CoOp's name)."""
    return f"split_fewshot/shot_{num_shots}-seed_{seed}.pkl"


def _json_spec(name, folder, config, image_dir, split_file, images, extra=(), required=(), fix=""):
    layout = "\n".join([f"{folder}/", *[f"  {line}" for line in (*images, split_file, *extra)]])
    return DatasetSpec(name, folder, config, "split_json", image_dir, layout, split_file,
                       required=required, fix=fix)


def _folders_spec(name, folder, config, image_dir, pattern, kind="class_folders"):
    layout = f"{folder}/\n  {image_dir}/{pattern}\n  classnames.txt  (copied from imagenet/)"
    return DatasetSpec(name, folder, config, kind, image_dir, layout, test_only=True)


_ALL = [
    DatasetSpec(
        "ImageNet", "imagenet", "imagenet", "imagenet", "images",
        "imagenet/\n"
        "  images/train/<wnid>/<image>.JPEG  (1,000 folders like n01440764)\n"
        "  images/val/<wnid>/<image>.JPEG\n"
        "  classnames.txt  ('<wnid> <class name>' per line)",
        val_is_test=True,
    ),
    _json_spec("Caltech101", "caltech-101", "caltech101", "101_ObjectCategories",
               "split_zhou_Caltech101.json", ["101_ObjectCategories/<category>/<image>.jpg"]),
    _json_spec("OxfordPets", "oxford_pets", "oxford_pets", "images", "split_zhou_OxfordPets.json",
               ["images/<Breed>_<n>.jpg"], extra=["annotations/"]),
    _json_spec("StanfordCars", "stanford_cars", "stanford_cars", "", "split_zhou_StanfordCars.json",
               ["cars_train/<image>.jpg", "cars_test/<image>.jpg"],
               extra=["devkit/", "cars_test_annos_withlabels.mat"],
               required=("cars_train", "cars_test")),
    _json_spec("OxfordFlowers", "oxford_flowers", "oxford_flowers", "jpg",
               "split_zhou_OxfordFlowers.json", ["jpg/image_<n>.jpg"],
               extra=["cat_to_name.json", "imagelabels.mat"]),
    _json_spec("Food101", "food-101", "food101", "images", "split_zhou_Food101.json",
               ["images/<dish>/<image>.jpg"], extra=["meta/"]),
    DatasetSpec(
        "FGVCAircraft", "fgvc_aircraft", "fgvc_aircraft", "fgvc", "images",
        "fgvc_aircraft/  (the data/ folder of fgvc-aircraft-2013b, renamed)\n"
        "  images/<image id>.jpg\n"
        "  variants.txt\n"
        "  images_variant_train.txt, images_variant_val.txt, images_variant_test.txt",
    ),
    _json_spec("SUN397", "sun397", "sun397", "SUN397", "split_zhou_SUN397.json",
               ["SUN397/<letter>/<scene>/<image>.jpg"]),
    _json_spec("DescribableTextures", "dtd", "dtd", "images",
               "split_zhou_DescribableTextures.json", ["images/<texture>/<image>.jpg"],
               extra=["imdb/", "labels/"]),
    _json_spec("EuroSAT", "eurosat", "eurosat", "2750", "split_zhou_EuroSAT.json",
               ["2750/<Class>/<image>.jpg"]),
    _json_spec("UCF101", "ucf101", "ucf101", "UCF-101-midframes", "split_zhou_UCF101.json",
               ["UCF-101-midframes/<Action_Name>/<frame>.jpg"]),
    _json_spec("ToyWorld", "toyworld", "toyworld", "images", "split_zhou_ToyWorld.json",
               ["images/<colour>_<shape>/<n>.png"],
               extra=[".toyworld  (generator version and seed)"],
               fix="ToyWorld is synthetic: write it with `python -m tools.toyworld --root DATA_ROOT` "
                   "(DATA_ROOT = DATASET.ROOT)."),
    _json_spec("ToyWorldWide", "toyworld_wide", "toyworld_wide", "images", "split_zhou_ToyWorldWide.json",
               ["images/<colour>_<shape>/<n>.png"],
               extra=[".toyworld  (generator version, seed and variant)"],
               fix="ToyWorldWide is synthetic: write it with `python -m tools.toyworld --root DATA_ROOT --variant "
                   "toyworld_wide` (DATA_ROOT = DATASET.ROOT)."),
    _folders_spec("ImageNetV2", "imagenetv2", "imagenetv2",
                  "imagenetv2-matched-frequency-format-val", "<0..999>/<image>.jpeg",
                  kind="imagenetv2"),
    _folders_spec("ImageNetSketch", "imagenet-sketch", "imagenet_sketch", "images",
                  "<wnid>/<image>.JPEG"),
    _folders_spec("ImageNetA", "imagenet-adversarial", "imagenet_a", "imagenet-a",
                  "<wnid>/<image>.jpg  (200 folders)"),
    _folders_spec("ImageNetR", "imagenet-rendition", "imagenet_r", "imagenet-r",
                  "<wnid>/<image>.jpg  (200 folders)"),
]

SPECS = {spec.name: spec for spec in _ALL}


def get_spec(name):
    """Spec by registry name (EuroSAT), config stem (eurosat) or folder (caltech-101)."""
    if name in SPECS:
        return SPECS[name]
    for spec in _ALL:
        if name.lower() in (spec.name.lower(), spec.config, spec.folder):
            return spec
    raise KeyError(f"unknown dataset {name!r}; known: {sorted(SPECS)}")


def config_files(prefix="configs/datasets"):
    """Registry name -> dataset config file, e.g. 'EuroSAT' -> 'configs/datasets/eurosat.yaml'."""
    return {spec.name: f"{prefix}/{spec.config}.yaml" for spec in _ALL}
