"""Load OpenAI CLIP weights from a local file (no Dassl needed).

Where the weights come from, in order:
1. an explicit path (``MODEL.BACKBONE.PATH``),
2. ``<models dir>/<file>``, the models dir being ``$DPC_CLIP_MODELS`` or ``~/.cache/clip``
   (the directory ``clip.load`` downloads to), with OpenAI's file names (``ViT-B-16.pt``),
3. a download into the models dir, when the machine is online.

Both OpenAI's JIT archives and plain state dicts load; the model is rebuilt from the state
dict with the pip-installed ``clip.model`` code, so no forked CLIP is needed.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

import clip
from clip.model import build_model

MODELS_DIR_ENV = "DPC_CLIP_MODELS"

_fp16_notice_shown = False


class CLIPWeightsNotFound(FileNotFoundError):
    """No usable CLIP weight file was found."""


def default_models_dir() -> Path:
    return Path(os.environ.get(MODELS_DIR_ENV) or Path.home() / ".cache" / "clip").expanduser()


def weight_file_name(name: str) -> str:
    """OpenAI's file name for a backbone name, e.g. 'ViT-B/16' -> 'ViT-B-16.pt'."""
    if name not in clip.clip._MODELS:
        raise ValueError(
            f"Unknown CLIP backbone {name!r}; MODEL.BACKBONE.NAME must be one of "
            f"{', '.join(clip.available_models())}"
        )
    return os.path.basename(clip.clip._MODELS[name])


def resolve_weights(name: str, path: str = "", models_dir: str | os.PathLike | None = None,
                    download: bool = True) -> Path:
    """Return the weight file for backbone ``name``; raise CLIPWeightsNotFound listing the places tried."""
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


def read_state_dict(file: str | os.PathLike) -> dict:
    """State dict from a JIT archive (OpenAI's release format) or a plain torch.save file."""
    try:
        archive = torch.jit.load(str(file), map_location="cpu")
        return archive.state_dict()
    except RuntimeError:
        pass
    state = torch.load(str(file), map_location="cpu", weights_only=False)
    if isinstance(state, dict) and "state_dict" in state and "visual.proj" not in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or "token_embedding.weight" not in state:
        raise ValueError(f"{file} is neither an OpenAI CLIP JIT archive nor a CLIP state dict")
    return state


def effective_precision(prec: str, device: torch.device | str) -> str:
    """fp16 and amp need CUDA; elsewhere they fall back to fp32 (logged once)."""
    global _fp16_notice_shown
    if prec not in ("fp16", "fp32", "amp"):
        raise ValueError(f"PREC must be fp16, fp32 or amp, got {prec!r}")
    if prec != "fp32" and torch.device(device).type != "cuda":
        if not _fp16_notice_shown:
            print(f"PREC={prec} needs CUDA; running in fp32 on {torch.device(device).type}")
            _fp16_notice_shown = True
        return "fp32"
    return prec


def load_clip(name: str, path: str = "", models_dir=None, prec: str = "fp16",
              device: torch.device | str = "cpu", download: bool = True):
    """Build a frozen-ready CLIP model in eval mode, in fp16 only when ``prec`` stays fp16."""
    file = resolve_weights(name, path, models_dir, download=download)
    print(f"Loading CLIP ({name}) from {file}")
    model = build_model(read_state_dict(file))  # build_model casts to fp16
    if effective_precision(prec, device) != "fp16":
        model.float()
    return model.to(device).eval()
