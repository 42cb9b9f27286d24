"""Shared fixtures: a tiny real OpenAI CLIP saved in OpenAI's format and loaded like real weights."""
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tools.tiny_clip import save_tiny_clip  # noqa: E402
from trainers.clip_loader import load_clip  # noqa: E402

# One torch thread per test process, and for the train.py / tool processes the tests start (they inherit the
# environment): pytest-xdist runs one worker per CPU (pytest.ini), so more threads would only oversubscribe.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_clip_file(tmp_path_factory):
    """Path of a tiny ViT CLIP (4 layers, width 64, 32x32 images) saved as an fp16 state dict."""
    return save_tiny_clip(str(tmp_path_factory.mktemp("clip") / "tiny-vit.pt"))


@pytest.fixture
def tiny_clip(tiny_clip_file):
    """A fresh fp32 tiny CLIP, loaded through the same code path as released weights (name "custom": not an OpenAI shape)."""
    return load_clip("custom", tiny_clip_file, prec="fp32")
