"""The optional text side of an image-text backbone (CLIP, SigLIP): what zero-shot classification needs.

A plugin whose models were trained against a text encoder returns a `TextTower` from
`BackbonePlugin.text_tower(variant, weights, **options)`, built from the same weights source as the image
tower. The image tower (the plugin's `FrameBackbone`) stays as it is, without its image-text projection, so
image-only paths, checkpoints and fingerprints never change; the projection lives here instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from stadapt.errors import StadaptError


class NoTextTowerError(StadaptError):
    """The backbone has no text tower (an image-only model), so it cannot classify by label text."""


class TextTower(nn.Module):
    """A tokenizer, a text encoder and the image side's projection into their joint embedding space.

    `encode_text(tokens)` gives (n, D) projected text embeddings (not normalised); `project_image(f)` maps
    the image tower's per-frame feature, `video_norm(frame_features(x))` of its FrameBackbone (what its
    `native_forward` returns), to the same D (CLIP's `visual.proj`). Logits of unit-norm embeddings are
    `logit_scale * cos (+ logit_bias)`; `sigmoid` (SigLIP) says each label's probability is the sigmoid of
    its logit, not a softmax over the labels.
    """

    def __init__(self, *, tokenizer: Callable[[Sequence[str]], torch.Tensor], text_encoder: nn.Module,
                 image_projection: nn.Module, logit_scale: float, logit_bias: float | None = None,
                 sigmoid: bool = False, source: str | None = None) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.image_projection = image_projection
        self.logit_scale = float(logit_scale)
        self.logit_bias = None if logit_bias is None else float(logit_bias)
        self.sigmoid = bool(sigmoid)
        self.source = source

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """The texts as the encoder's token ids."""
        return self.tokenizer(list(texts))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """(n, context) token ids -> (n, D) projected text embeddings."""
        return self.text_encoder(tokens)

    def project_image(self, features: torch.Tensor) -> torch.Tensor:
        """(N, feature_width) per-frame image features -> (N, D) embeddings in the joint space."""
        return self.image_projection(features)

    @torch.no_grad()
    def embed_labels(self, labels: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
        """(len(labels), D) unit-norm class embeddings: each label filled into every template, the normalised
        embeddings of its prompts averaged and normalised again (the CLIP paper's prompt ensembling)."""
        device = next((p.device for p in self.parameters()), torch.device("cpu"))
        prompts = [template.format(label) for label in labels for template in templates]
        embedded = F.normalize(self.encode_text(self.tokenize(prompts).to(device)).float(), dim=-1)
        return F.normalize(embedded.reshape(len(labels), len(templates), -1).mean(dim=1), dim=-1)

    def logits(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """(B, D) image (or video) embeddings and (C, D) unit-norm class embeddings -> (B, C) logits."""
        logits = self.logit_scale * F.normalize(images.float(), dim=-1) @ classes.float().t()
        return logits if self.logit_bias is None else logits + self.logit_bias
