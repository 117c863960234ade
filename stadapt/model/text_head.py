"""Text heads: the classifier made of the text tower's embeddings of the class names (`model.head.type: text`).

The video feature goes through the image side's projection (frozen, the text tower's) into the joint
image-text space and is L2-normalised; the logits are the model's logit scale times its cosine with each
class's unit-norm text embedding (plus SigLIP's logit bias): what zero-shot classification computes. Frozen
(`train: false`), the embeddings are a buffer that the checkpoint does not store: the text tower they come
from is rebuilt from its weights source, checked by fingerprint, and can embed labels the run never trained
on. Trained (`train: true`), they initialise a linear layer over the normalised projected feature, so that
step 0 gives exactly the frozen head's logits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from stadapt.backbones.text import TextTower
from stadapt.errors import StadaptError
from stadapt.vocabulary import DEFAULT_TEMPLATE

HEAD_TYPES = ("linear", "text")


@dataclass(frozen=True)
class HeadConfig:
    """What the classifier head is: `linear` (a trained layer over the pooled feature) or `text` (the text
    tower's embeddings of the class names, filled into `templates`; `train`: whether they train)."""

    type: str = "linear"
    templates: tuple[str, ...] = (DEFAULT_TEMPLATE,)
    train: bool = False

    def __post_init__(self) -> None:
        if self.type not in HEAD_TYPES:
            raise ValueError(f"head type {self.type!r} is not one of {', '.join(HEAD_TYPES)}")

    @property
    def text(self) -> bool:
        return self.type == "text"

    @property
    def frozen_text(self) -> bool:
        """A text head whose class embeddings do not train: it can answer over any label set."""
        return self.text and not self.train

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "templates": list(self.templates), "train": self.train}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> HeadConfig:
        """A checkpoint's `model.head` (absent: the linear head of every checkpoint before text heads)."""
        if not data:
            return cls()
        templates = data.get("templates") or [DEFAULT_TEMPLATE]
        return cls(type=str(data.get("type", "linear")), templates=tuple(str(t) for t in templates),
                   train=bool(data.get("train", False)))


class TextHeadError(StadaptError):
    """A text head asked of a model that cannot have one, or new labels asked of a head that cannot take them."""


class TextHead(nn.Module):
    """(B, feature_width) video features -> (B, C) logits against the class names' text embeddings.

    Only `fc` trains, and only with `train=True`; the projection (the text tower's own parameter) never
    does, so `requires_grad_` leaves it alone whatever the model asks of its head.
    """

    weight: torch.Tensor  # (C, D) logit_scale x unit-norm class embeddings (frozen head)
    bias: torch.Tensor  # (C,) the logit bias (0 without one)

    def __init__(self, tower: TextTower, class_embeddings: torch.Tensor, *, train: bool, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.projection = tower.image_projection
        self.trains = bool(train)
        self.sigmoid = tower.sigmoid  # each label its own sigmoid (SigLIP): how inference fuses the views
        self._tower = [tower]  # in a list: not a submodule, so neither in the state dict nor moved with the model
        weight, bias = self._scaled(class_embeddings)
        # the unit class embeddings themselves: what a checkpoint keeps so loading need not embed the names again
        self.register_buffer("class_embeddings", class_embeddings.detach().float().clone(), persistent=False)
        if self.trains:
            self.fc = nn.Linear(weight.shape[1], weight.shape[0])
            with torch.no_grad():
                self.fc.weight.copy_(weight)
                self.fc.bias.copy_(bias)
        self.register_buffer("weight", weight, persistent=False)
        self.register_buffer("bias", bias, persistent=False)
        self.requires_grad_(True)

    @property
    def tower(self) -> TextTower:
        return self._tower[0]

    def _scaled(self, class_embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tower = self.tower
        weight = class_embeddings.detach().float() * tower.logit_scale
        bias = torch.full((weight.shape[0],), 0.0 if tower.logit_bias is None else tower.logit_bias)
        return weight, bias

    def requires_grad_(self, requires_grad: bool = True) -> TextHead:
        for p in self.parameters():
            p.requires_grad_(False)
        if self.trains:
            self.fc.requires_grad_(requires_grad)
        return self

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """(B, feature_width) -> (B, D) unit-norm embeddings in the joint image-text space."""
        return F.normalize(self.projection(self.dropout(features)).float(), dim=-1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        embedded = self.embed(features)
        if self.trains:
            return self.fc(embedded)
        return embedded @ self.weight.t() + self.bias

    def set_labels(self, labels: Sequence[str], templates: Sequence[str]) -> None:
        """Answer over `labels` from now on: their text embeddings (the recorded tower's) become the classes."""
        if self.trains:
            raise TextHeadError("this run's text head trained (model.head.train: true): its classes are fixed",
                                "train with model.head: {type: text, train: false} to answer new labels")
        device = self.weight.device
        embeddings = self.tower.embed_labels(labels, templates)
        weight, bias = self._scaled(embeddings)
        self.weight, self.bias = weight.to(device), bias.to(device)
        self.class_embeddings = embeddings.float().to(device)


def text_tower_for(plugin: Any, variant: str, weights: Any, options: Mapping[str, Any]) -> TextTower:
    """The plugin's text tower from `weights` (the backbone's source), built without touching torch's RNG
    (so adapters initialise as they would beside a linear head); a backbone without one refuses in one line."""
    if weights is None:
        raise TextHeadError("model.head.type: text needs the backbone's pretrained weights (its text tower's)",
                            "set backbone.weights to a tag or a file holding both towers")
    with torch.random.fork_rng(devices=[]):
        return plugin.text_tower(variant, weights, **dict(options)).eval()


def build_text_head(tower: TextTower, config: HeadConfig, classes: Sequence[str], dropout: float,
                    embeddings: torch.Tensor | None = None) -> TextHead:
    """The text head of `classes`: their embeddings with `config`'s templates, or `embeddings` where a
    checkpoint kept them (the tower's own, of the same names and templates: its fingerprint is checked)."""
    if embeddings is None or embeddings.ndim != 2 or embeddings.shape[0] != len(classes):
        embeddings = tower.embed_labels(list(classes), list(config.templates))
    return TextHead(tower, embeddings, train=config.train, dropout=dropout)
