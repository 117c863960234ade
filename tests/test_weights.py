"""CLIP weights in every form users have, read safely; bad files give clear errors."""

import pickle

import pytest
import torch
from helpers import tiny_visual, write_openai_archive
from safetensors.torch import save_file

from stadapt.backbones.weights import fingerprint, read_state_dict
from stadapt.errors import WeightsError
from stadapt.model.classifier import ModelConfig, build_model

CONFIG = ModelConfig("clip:tiny", 3, 2)


@pytest.fixture(scope="module")
def visual():
    return tiny_visual(seed=7)


def _forms(visual, root):
    sd = visual.state_dict()
    text = {"token_embedding.weight": torch.zeros(10, 8), "logit_scale": torch.ones([])}
    forms = {
        "openai_archive": write_openai_archive(visual, root / "ViT-tiny.pt"),
        "full_clip": root / "full.pt",
        "visual_prefixed": root / "visual_prefixed.pt",
        "visual_only": root / "visual_only.bin",
        "safetensors": root / "visual.safetensors",
        "wrapped_ddp": root / "open_clip_epoch_3.pt",
    }
    torch.save({**{f"visual.{k}": v for k, v in sd.items()}, **text}, forms["full_clip"])
    torch.save({f"visual.{k}": v for k, v in sd.items()}, forms["visual_prefixed"])
    torch.save(sd, forms["visual_only"])
    save_file({k: v.contiguous() for k, v in sd.items()}, str(forms["safetensors"]))
    torch.save({"epoch": 3, "state_dict": {f"module.visual.{k}": v for k, v in sd.items()}}, forms["wrapped_ddp"])
    return forms


def test_every_form_loads_the_same_backbone(visual, tmp_path):
    forms = _forms(visual, tmp_path)
    prints = {}
    for name, path in forms.items():
        built = build_model(CONFIG, path)
        prints[name] = built.weights["fingerprint"]
        assert built.load_report.unexpected == [], name
        assert built.load_report.ignored == ["visual.proj"], name
    # OpenAI's archive holds fp16 weights; the others hold the float32 originals
    assert len({v for k, v in prints.items() if k != "openai_archive"}) == 1
    half = tiny_visual(seed=7).half().float()
    ref = build_model(CONFIG).model.backbone
    ref.visual.load_state_dict({k: v for k, v in half.state_dict().items() if k != "proj"})
    assert prints["openai_archive"] == fingerprint(ref)


def test_openai_weights_imply_quick_gelu(visual, tmp_path):
    archive = write_openai_archive(visual, tmp_path / "ViT-tiny.pt")
    plain = tmp_path / "visual.pt"
    torch.save(visual.state_dict(), plain)
    gelu = ModelConfig("clip:tiny", 3, 2, backbone_options={"quick_gelu": False})
    assert build_model(CONFIG, archive).config.backbone_options == {"quick_gelu": True}
    with pytest.raises(WeightsError, match="require quick_gelu=True but the backbone options say quick_gelu=False"):
        build_model(gelu, archive)
    assert build_model(gelu, plain).config.backbone_options == {"quick_gelu": False}
    act = build_model(CONFIG, archive).model.backbone.visual.transformer.resblocks[0].mlp.gelu
    assert type(act).__name__ == "QuickGELU"


def test_wrong_architecture_names_expected_and_found_shapes(visual, tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(visual.state_dict(), path)
    with pytest.raises(WeightsError, match=r"visual\.class_embedding expects \(768,\) but the file has \(128,\)"):
        # a plain state dict for clip:ViT-B-16 must say its activation (issue 15): the shapes are checked after
        build_model(ModelConfig("clip:ViT-B-16", 3, 2, backbone_options={"quick_gelu": True}), path)


def test_missing_tensors_are_an_error(visual, tmp_path):
    sd = visual.state_dict()
    del sd["transformer.resblocks.2.mlp.c_fc.weight"]
    path = tmp_path / "partial.pt"
    torch.save(sd, path)
    with pytest.raises(WeightsError, match=r"lacks 1 of the backbone's .*resblocks\.2\.mlp\.c_fc\.weight"):
        build_model(CONFIG, path)


@pytest.mark.parametrize("damage", ["truncated", "empty", "missing", "text", "truncated_archive"])
def test_unreadable_files_are_clear_errors(visual, tmp_path, damage):
    good = tmp_path / "good.pt"
    torch.save(visual.state_dict(), good)
    bad = tmp_path / "bad.pt"
    if damage == "truncated":
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif damage == "empty":
        bad.write_bytes(b"")
    elif damage == "text":
        bad.write_text("<html>404 Not Found</html>")
    elif damage == "truncated_archive":
        archive = write_openai_archive(visual, tmp_path / "a.pt")
        bad.write_bytes(archive.read_bytes()[:-2000])
    pattern = {"missing": "does not exist", "empty": "is empty"}.get(damage, "truncated, corrupt")
    with pytest.raises(WeightsError, match=pattern):
        read_state_dict(bad)


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, (f"touch {_Exploit.marker}",))


def test_pickles_that_would_run_code_are_refused(tmp_path):
    _Exploit.marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": _Exploit()}, f)
    with pytest.raises(WeightsError):
        read_state_dict(path)
    torch.save({"conv1.weight": torch.zeros(1), "evil": _Exploit()}, path)
    with pytest.raises(WeightsError, match=r"refusing to load .* pickles the Python object (posix|os)\.system"):
        read_state_dict(path)
    assert not _Exploit.marker.exists()
