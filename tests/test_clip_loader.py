import os

import pytest
import torch

from tools.tiny_clip import build_tiny_clip, save_tiny_clip
from trainers import clip_loader
from trainers.clip_loader import CLIPWeightsNotFound, load_clip, resolve_weights


def test_plain_state_dict_and_jit_archive_load_the_same_weights(tmp_path):
    plain = save_tiny_clip(str(tmp_path / "plain.pt"))
    jit = save_tiny_clip(str(tmp_path / "jit.pt"), jit=True)
    a = load_clip("custom", plain, prec="fp32")
    b = load_clip("custom", jit, prec="fp32")
    reference = build_tiny_clip()
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(pa, pb.to(pa.dtype), atol=1e-3), name
    # the plain file stores fp16 like OpenAI's release; values agree with the fp32 original to fp16 precision
    assert torch.allclose(a.visual.proj, reference.visual.proj, atol=1e-3)
    image = torch.randn(2, 3, 32, 32)
    assert torch.allclose(a.encode_image(image), b.encode_image(image), atol=5e-3)  # fp16 vs fp32 file


def test_fp16_falls_back_to_fp32_without_cuda(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(clip_loader, "_fp16_notice_shown", False)
    model = load_clip("custom", save_tiny_clip(str(tmp_path / "m.pt")), prec="fp16", device="cpu")
    assert model.dtype == torch.float32
    assert "fp32" in capsys.readouterr().out


def test_models_dir_from_environment(tmp_path, monkeypatch):
    save_tiny_clip(str(tmp_path / "ViT-B-16.pt"))
    monkeypatch.setenv(clip_loader.MODELS_DIR_ENV, str(tmp_path))
    assert resolve_weights("ViT-B/16", download=False) == tmp_path / "ViT-B-16.pt"
    # the file found there is read, and its (tiny) architecture is not ViT-B/16's
    with pytest.raises(clip_loader.CLIPWeightsError, match=f"{tmp_path / 'ViT-B-16.pt'} holds a CLIP ViT, width 64"):
        load_clip("ViT-B/16", prec="fp32", download=False)


def test_missing_weights_error_lists_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv(clip_loader.MODELS_DIR_ENV, str(tmp_path / "models"))
    with pytest.raises(CLIPWeightsNotFound) as err:
        resolve_weights("ViT-B/16", download=False)
    message = str(err.value)
    assert str(tmp_path / "models" / "ViT-B-16.pt") in message and "MODEL.BACKBONE.PATH" in message
    with pytest.raises(CLIPWeightsNotFound, match="not a file"):
        resolve_weights("ViT-B/16", path=str(tmp_path / "nope.pt"))


def test_unknown_backbone_name_is_rejected():
    with pytest.raises(ValueError, match="ViT-B/16"):
        resolve_weights("ViT-B/17", download=False)


def test_bad_precision_is_rejected():
    with pytest.raises(ValueError, match="fp16, fp32 or amp"):
        clip_loader.effective_precision("bf16", "cpu")


def test_file_that_is_not_clip_is_rejected(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="neither"):
        clip_loader.read_state_dict(str(path))
    assert os.path.exists(path)


def test_fp16_and_amp_stay_on_cuda():
    assert clip_loader.effective_precision("fp16", torch.device("cuda")) == "fp16"
    assert clip_loader.effective_precision("amp", "cuda:0") == "amp"
    assert clip_loader.effective_precision("fp32", "cuda") == "fp32"
