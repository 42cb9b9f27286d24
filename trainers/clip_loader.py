"""Load OpenAI CLIP weights from a local file (no Dassl needed).

Where the weights come from, in order:
1. an explicit path (``MODEL.BACKBONE.PATH``),
2. ``<models dir>/<file>``, the models dir being ``$DPC_CLIP_MODELS`` or ``~/.cache/clip``
   (the directory ``clip.load`` downloads to), with OpenAI's file names (``ViT-B-16.pt``),
3. a download into the models dir, when the machine is online.

Both OpenAI's JIT archives (read with ``torch.jit.load``, as ``clip.load`` does) and plain state dicts
(read with ``weights_only=True``: ``dpc.safe_load``) load; the model is rebuilt from the state dict with the
pip-installed ``clip.model`` code, so no forked CLIP is needed.

The architecture read from the file must be the one ``MODEL.BACKBONE.NAME`` names (OpenAI's
published shapes); ``MODEL.BACKBONE.NAME custom`` loads any CLIP file given by ``MODEL.BACKBONE.PATH``
(e.g. the tiny test models of ``tools/tiny_clip.py``).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple, Union

import torch

import clip
from clip.model import build_model

from .dpc import safe_load
from .dpc.errors import ConfigError, UnsafeFileError, UserError
from .dpc.files import error_summary

MODELS_DIR_ENV = "DPC_CLIP_MODELS"
CUSTOM = "custom"  # MODEL.BACKBONE.NAME for a CLIP file of any architecture (MODEL.BACKBONE.PATH)

_fp16_notice_shown = False


class CLIPWeightsNotFound(UserError, FileNotFoundError):
    """No usable CLIP weight file was found."""


class CLIPWeightsError(UserError, ValueError):
    """A CLIP weight file is damaged or holds another architecture than the configured one."""


@dataclass(frozen=True)
class Architecture:
    """The shapes ``clip.model.build_model`` reads from a state dict."""

    kind: str  # "ViT" or "ResNet"
    vision_width: int
    vision_layers: Union[int, Tuple[int, ...]]  # ViT: blocks; ResNet: blocks per stage
    patch_size: Optional[int]  # ViT only
    image_size: int
    text_width: int
    text_layers: int
    embed_dim: int

    def __str__(self) -> str:
        if self.kind == "ViT":
            vision = f"ViT, width {self.vision_width}, {self.vision_layers} layers, patch {self.patch_size}"
        else:
            stages = "-".join(map(str, self.vision_layers))
            vision = f"ResNet, width {self.vision_width}, blocks {stages}"
        return (f"{vision}, {self.image_size} px; text width {self.text_width}, {self.text_layers} layers; "
                f"embed dim {self.embed_dim}")


def _vit(width, layers, patch, size, text_width, embed_dim):
    return Architecture("ViT", width, layers, patch, size, text_width, 12, embed_dim)


def _resnet(width, stages, size, text_width, embed_dim):
    return Architecture("ResNet", width, stages, None, size, text_width, 12, embed_dim)


# OpenAI's released models (CLIP paper, Tables 19 and 20).
OPENAI_ARCHITECTURES = {
    "RN50": _resnet(64, (3, 4, 6, 3), 224, 512, 1024),
    "RN101": _resnet(64, (3, 4, 23, 3), 224, 512, 512),
    "RN50x4": _resnet(80, (4, 6, 10, 6), 288, 640, 640),
    "RN50x16": _resnet(96, (6, 8, 18, 8), 384, 768, 768),
    "RN50x64": _resnet(128, (3, 15, 36, 10), 448, 1024, 1024),
    "ViT-B/32": _vit(768, 12, 32, 224, 512, 512),
    "ViT-B/16": _vit(768, 12, 16, 224, 512, 512),
    "ViT-L/14": _vit(1024, 24, 14, 224, 768, 768),
    "ViT-L/14@336px": _vit(1024, 24, 14, 336, 768, 768),
}


def default_models_dir() -> Path:
    return Path(os.environ.get(MODELS_DIR_ENV) or Path.home() / ".cache" / "clip").expanduser()


def check_name(name: str) -> None:
    """``name`` must be one of OpenAI's models or ``custom``."""
    if name != CUSTOM and name not in clip.clip._MODELS:
        raise ConfigError(
            f"Unknown CLIP backbone {name!r}; MODEL.BACKBONE.NAME must be one of "
            f"{', '.join(clip.available_models())}, or {CUSTOM} for a CLIP file of another architecture "
            "(given by MODEL.BACKBONE.PATH)"
        )


def weight_file_name(name: str) -> str:
    """OpenAI's file name for a backbone name, e.g. 'ViT-B/16' -> 'ViT-B-16.pt'."""
    check_name(name)
    if name == CUSTOM:
        raise CLIPWeightsNotFound(f"MODEL.BACKBONE.NAME {CUSTOM} needs MODEL.BACKBONE.PATH (the CLIP weight file)")
    return os.path.basename(clip.clip._MODELS[name])


def resolve_weights(name: str, path: str = "", models_dir: str | os.PathLike | None = None,
                    download: bool = True) -> Path:
    """Return the weight file for backbone ``name``; raise CLIPWeightsNotFound listing the places tried."""
    check_name(name)
    looked = []
    if path:
        candidate = Path(path).expanduser()
        if candidate.is_file():
            return candidate
        raise CLIPWeightsNotFound(
            f"MODEL.BACKBONE.PATH points to {candidate}, which is not a file. "
            "Set it to an OpenAI CLIP weight file (e.g. ViT-B-16.pt) or leave it empty to use the models dir."
        )
    directory = Path(models_dir).expanduser() if models_dir else default_models_dir()
    candidate = directory / weight_file_name(name)
    if candidate.is_file():
        return candidate
    looked.append(str(candidate))
    if download:
        try:
            return Path(clip.clip._download(clip.clip._MODELS[name], str(directory)))
        except Exception as err:  # offline, proxy, checksum: report below
            looked.append(f"download from OpenAI ({type(err).__name__}: {err})")
    raise CLIPWeightsNotFound(
        f"CLIP weights for {name} not found. Tried:\n  - " + "\n  - ".join(looked) + "\n"
        f"Copy {weight_file_name(name)} into {directory} (or set ${MODELS_DIR_ENV}), "
        "or set MODEL.BACKBONE.PATH to the file."
    )


def _damaged(file, problem: str) -> CLIPWeightsError:
    return CLIPWeightsError(
        f"cannot read CLIP weights {file} ({problem}): the file is truncated or damaged (an interrupted "
        "download or copy?). Delete it and fetch it again (OpenAI's files download into "
        f"${MODELS_DIR_ENV} or ~/.cache/clip when online), or set MODEL.BACKBONE.PATH to an intact copy.")


def read_state_dict(file: str | os.PathLike) -> dict:
    """State dict from a JIT archive (OpenAI's release format) or a plain torch.save file."""
    try:
        with warnings.catch_warnings():  # torch's deprecation notice for jit.load: OpenAI's files are JIT archives
            warnings.simplefilter("ignore", FutureWarning)
            archive = torch.jit.load(str(file), map_location="cpu")
        return archive.state_dict()
    except (RuntimeError, ValueError):
        pass
    try:
        state = safe_load.load(str(file))  # weights only: a file carrying a pickled payload is refused unread
    except UnsafeFileError:
        raise
    except Exception as err:  # truncated zip ("failed finding central directory"), bad pickle, ...
        raise _damaged(file, error_summary(err)) from err
    if isinstance(state, dict) and "state_dict" in state and "visual.proj" not in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or "token_embedding.weight" not in state:
        raise CLIPWeightsError(f"{file} is neither an OpenAI CLIP JIT archive nor a CLIP state dict: set "
                               "MODEL.BACKBONE.PATH to a CLIP weight file (e.g. OpenAI's ViT-B-16.pt)")
    return state


def _count(state: dict, prefix: str, depth: int) -> int:
    """Number of distinct indices at ``depth`` among keys starting with ``prefix``."""
    return len({key.split(".")[depth] for key in state if key.startswith(prefix)})


def architecture_of(state: dict, file="the file") -> Architecture:
    """The architecture a CLIP state dict holds, read as ``clip.model.build_model`` does."""
    try:
        text = dict(text_width=state["ln_final.weight"].shape[0],
                    text_layers=_count(state, "transformer.resblocks", 2),
                    embed_dim=state["text_projection"].shape[1])
        if "visual.proj" in state:  # ViT
            conv = state["visual.conv1.weight"]
            grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
            layers = len([k for k in state if k.startswith("visual.") and k.endswith(".attn.in_proj_weight")])
            return Architecture("ViT", conv.shape[0], layers, conv.shape[-1], conv.shape[-1] * grid, **text)
        stages = tuple(_count(state, f"visual.layer{b}", 2) for b in (1, 2, 3, 4))
        grid = round((state["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
        return Architecture("ResNet", state["visual.layer1.0.conv1.weight"].shape[0], stages, None, grid * 32, **text)
    except KeyError as err:
        raise _damaged(file, f"no tensor {err.args[0]!r}") from None


def check_architecture(name: str, arch: Architecture, file="the file") -> None:
    """The file's architecture must be the one OpenAI released as ``name`` (``custom`` takes any)."""
    check_name(name)
    if name == CUSTOM or arch == OPENAI_ARCHITECTURES[name]:
        return
    same = [other for other, known in OPENAI_ARCHITECTURES.items() if known == arch]
    fix = (f"set MODEL.BACKBONE.NAME {same[0]} (what the file holds), or set MODEL.BACKBONE.PATH to the {name} "
           f"weights ({weight_file_name(name)})" if same else
           f"set MODEL.BACKBONE.PATH to the {name} weights ({weight_file_name(name)}), or MODEL.BACKBONE.NAME "
           f"{CUSTOM} to use this file's own architecture (e.g. a small test model)")
    expected = OPENAI_ARCHITECTURES[name]
    raise CLIPWeightsError(f"{file} holds a CLIP {arch}, but MODEL.BACKBONE.NAME {name} is a {expected}: {fix}.")


def effective_precision(prec: str, device: torch.device | str) -> str:
    """fp16 and amp need CUDA; elsewhere they fall back to fp32 (logged once)."""
    global _fp16_notice_shown
    if prec not in ("fp16", "fp32", "amp"):
        raise ConfigError(f"PREC must be fp16, fp32 or amp, got {prec!r}")
    if prec != "fp32" and torch.device(device).type != "cuda":
        if not _fp16_notice_shown:
            print(f"PREC={prec} needs CUDA; running in fp32 on {torch.device(device).type}")
            _fp16_notice_shown = True
        return "fp32"
    return prec


def load_clip(name: str, path: str = "", models_dir=None, prec: str = "fp16",
              device: torch.device | str = "cpu", download: bool = True):
    """Build a frozen-ready CLIP model in eval mode, in fp16 only when ``prec`` stays fp16.

    The file must hold the architecture ``name`` stands for (any with ``name`` ``custom``).
    """
    file = resolve_weights(name, path, models_dir, download=download)
    state = read_state_dict(file)
    arch = architecture_of(state, file)
    check_architecture(name, arch, file)
    print(f"Loading CLIP {name} ({arch}) from {file}")
    model = build_model(state)  # build_model casts to fp16
    if effective_precision(prec, device) != "fp16":
        model.float()
    return model.to(device).eval()
