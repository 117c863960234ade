"""The quickstart's `clip:tiny` weights (`synthetic`) carry a text tower locked-image tuned to its image tower
(stadapt_clip.pretrain_text): open vocabulary runs on the CPU with no downloads. What the captions said of
single frames (where the object is, its size, its colour) reads zero-shot; motion, which no caption could
say, is what a text head has to learn (`stadapt quickstart --heads`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stadapt.model.zero_shot import build_zero_shot
from stadapt_clip.pretrain_text import frames


def _clips(images: np.ndarray, size: int, mean, std) -> torch.Tensor:
    """(N, 3, 1, size, size) one-frame clips of uint8 frames, as the backbone's variant normalises them."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True).clamp(0, 1)
    x = (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    return x[:, :, None]


@pytest.mark.parametrize(("attribute", "labels", "template", "at_least"), [
    ("column", ("left", "right"), "a video of a shape on the {}.", 0.9),
    ("row", ("top", "bottom"), "a video of a shape at the {}.", 0.9),
    ("size", ("small", "large"), "a video of a {} shape.", 0.8),
])
def test_zero_shot_reads_what_the_captions_said(attribute: str, labels: tuple[str, ...], template: str,
                                                at_least: float) -> None:
    model = build_zero_shot("clip:tiny", "synthetic", list(labels), [template], device=torch.device("cpu"))
    images, attrs = frames(96, seed=1234)  # frames the text tower never saw (it trained on seed 0's)
    keep = [i for i, a in enumerate(attrs) if a[attribute] in labels]
    truth = torch.tensor([labels.index(attrs[i][attribute]) for i in keep])
    v = model.variant
    with torch.no_grad():
        predicted = model.model(_clips(images[keep], v.image_size, v.mean, v.std)).argmax(1)
    accuracy = float((predicted == truth).float().mean())
    assert len(keep) >= 40 and accuracy >= at_least, (attribute, accuracy)


def test_the_shipped_file_is_a_whole_open_clip_state_dict() -> None:
    import open_clip
    from safetensors.torch import load_file

    from stadapt.backbones import load_plugin
    from stadapt_clip.text import register_tiny

    path = load_plugin("clip").resolve_pretrained("tiny", "synthetic")
    model = open_clip.create_model(register_tiny(), load_weights=False)
    state = load_file(str(path))
    assert set(state) == set(model.state_dict())  # both towers, the projection and the logit scale


def test_clip_tinys_open_clip_registration_lists_no_second_model() -> None:
    """Building clip:tiny's text tower registers its configuration with open_clip; the plugin's search over
    open_clip's models must not then list it again under that name."""
    import stadapt
    from stadapt_clip.text import register_tiny

    register_tiny()
    listed = stadapt.list_backbones("tiny")
    assert "clip:tiny" in listed and "clip:stadapt-clip-tiny" not in listed
