"""Zero-shot video classification: a frozen image-text backbone scores videos against label texts, no training.

A video's embedding is the mean over its frames of the image tower's projected per-frame embeddings,
L2-normalised; a label's embedding is the normalised mean of its prompts' normalised text embeddings (the
CLIP paper's prompt ensembling), computed once per label set; the logits are the model's own logit scale
times their cosine, plus its logit bias (SigLIP). The image tower is the plugin's FrameBackbone, run through
the one block loop without hooks, so its per-frame feature is the one the video classifier starts from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stadapt.backbones.base import FrameBackbone
from stadapt.backbones.plugin import VariantInfo
from stadapt.backbones.registry import parse_backbone
from stadapt.backbones.text import TextTower
from stadapt.backbones.weights import fingerprint
from stadapt.errors import StadaptError
from stadapt.model.blocks import embed, run_blocks
from stadapt.model.classifier import load_backbone_weights
from stadapt.model.text_cache import cached_class_embeddings
from stadapt.vocabulary import DEFAULT_TEMPLATE, holds_label_once, weights_is_path


class ZeroShotClassifier(nn.Module):
    """(B, 3, T, H, W) clips -> (B, C) logits over the label set its class embeddings were made of."""

    class_embeddings: torch.Tensor  # (C, D) unit-norm, a buffer: made once per label set

    def __init__(self, backbone: FrameBackbone, tower: TextTower, class_embeddings: torch.Tensor) -> None:
        super().__init__()
        self.backbone = backbone
        self.tower = tower
        self.register_buffer("class_embeddings", class_embeddings.float())

    def video_embeddings(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, D) unit-norm video embeddings: each frame through the image tower and its
        projection, the mean over the frames, normalised."""
        batch, channels, frames, height, width = video.shape
        images = video.transpose(1, 2).reshape(batch * frames, channels, height, width)
        tokens = run_blocks(self.backbone, embed(self.backbone, images))
        per_frame = self.tower.project_image(self.backbone.video_norm(self.backbone.frame_features(tokens)))
        return nn.functional.normalize(per_frame.float().reshape(batch, frames, -1).mean(dim=1), dim=-1)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.tower.logits(self.video_embeddings(video), self.class_embeddings)


@dataclass
class ZeroShotModel:
    """A ZeroShotClassifier with what it was made of: the backbone variant, the weights and the prompts."""

    model: ZeroShotClassifier
    backbone: str
    variant: VariantInfo
    weights: dict[str, Any]
    labels: list[str]
    templates: list[str]


def build_zero_shot(backbone: str, weights: str | Path | None, labels: Sequence[str],
                    templates: Sequence[str] = (DEFAULT_TEMPLATE,), *, device: torch.device | str = "cpu",
                    options: dict[str, Any] | None = None, text_cache: Path | None = None) -> ZeroShotModel:
    """The zero-shot classifier of `backbone` (PLUGIN:VARIANT) with `weights` (a tag or a file holding both
    towers) over `labels`, each filled into every template (`{}` marks where); in eval mode on `device`.
    With `text_cache` (OUT.text.safetensors) the label set's text embeddings are read from there when it holds
    them for these weights, labels and templates, else computed and filed there."""
    labels, templates = check_labels(labels), check_templates(templates)
    plugin, variant = parse_backbone(backbone)
    if weights is None:
        tags = ", ".join(plugin.pretrained_tags(variant.name)) or "none"
        raise StadaptError(f"zero-shot needs {backbone}'s pretrained image and text weights",
                           f"pass --weights TAG (its tags: {tags}) or a file holding both towers")
    user = dict(options or {})
    implied = plugin.options_for_weights(variant.name, weights)
    # None: the weights do not say that option and the user must (build refuses it, naming the choices)
    options = {**user, **{k: v for k, v in implied.items() if v is not None or k not in user}}
    variant = plugin.configure(variant, options)
    tower = plugin.text_tower(variant.name, weights, **options)  # first: an image-only model is refused at once
    image = plugin.build(variant.name, **options)
    path = Path(weights) if weights_is_path(weights) else Path(plugin.resolve_pretrained(variant.name, str(weights)))
    load_backbone_weights(image, plugin, variant.name, path)
    record = {"source": str(path.resolve()) if weights_is_path(weights) else str(weights),
              "fingerprint": fingerprint(image)}
    tower = tower.to(device).eval()
    classes = cached_class_embeddings(tower, labels, templates, backbone=f"{plugin.name}:{variant.name}",
                                      source=record["source"], cache=text_cache)
    model = ZeroShotClassifier(image, tower, classes).to(device).eval()
    return ZeroShotModel(model, f"{plugin.name}:{variant.name}", variant, record, labels, templates)


def check_labels(labels: Sequence[str]) -> list[str]:
    """The labels, stripped; none, an empty one or a repeated one is refused in one line."""
    cleaned = [str(label).strip() for label in labels]
    if not cleaned or not any(cleaned):
        raise StadaptError("no labels given", "pass --labels 'label one,label two' or a file with one label a line")
    empty = [str(i + 1) for i, label in enumerate(cleaned) if not label]
    if empty:
        raise StadaptError(f"label {', '.join(empty)} of {len(cleaned)} is empty", "remove the empty entries")
    repeated = sorted({label for label in cleaned if cleaned.count(label) > 1})
    if repeated:
        raise StadaptError(f"labels repeated: {', '.join(repeated)}", "give each label once")
    return cleaned


def check_templates(templates: Sequence[str]) -> list[str]:
    """The prompt templates; each must hold `{}` once, where the label goes."""
    found = list(templates) or [DEFAULT_TEMPLATE]
    bad = [t for t in found if not holds_label_once(t)]
    if bad:
        raise StadaptError(f"template {bad[0]!r} does not hold '{{}}' exactly once",
                           "write where the label goes as {}, e.g. --template 'a video of {}.'")
    return found
