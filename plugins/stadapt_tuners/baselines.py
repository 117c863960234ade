"""The paper's baselines as tuning methods: a linear probe, full fine-tuning and fine-tuning the last block."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

from stadapt.tuners import Tuner

if TYPE_CHECKING:
    from torch import nn


class LinearProbe(Tuner):
    """The head alone, on the frozen backbone's features."""

    name = "linear"
    summary = "the head only: a linear probe of the frozen backbone's features"

    def trainable(self, parts: Mapping[str, nn.Module]) -> Sequence[nn.Module]:
        return []


class FullFinetune(Tuner):
    """Every backbone parameter and the head; the backbone runs in train mode (dropout, drop-path)."""

    name = "full_finetune"
    summary = "every backbone parameter and the head; the backbone runs in train mode"
    backbone_train_mode = True

    def trainable(self, parts: Mapping[str, nn.Module]) -> Sequence[nn.Module]:
        return [parts["backbone"]]


class PartialFinetune(Tuner):
    """The backbone's last block and the head; the final norm stays frozen and the backbone keeps its
    inference behaviour. Needs the backbone to name each block's modules."""

    name = "partial_finetune"
    summary = "the backbone's last block and the head (its final norm stays frozen)"
    needs: ClassVar[tuple[str, ...]] = ("block_modules",)

    def trainable(self, parts: Mapping[str, nn.Module]) -> Sequence[nn.Module]:
        backbone = parts["backbone"]
        return list(backbone.block_modules(len(backbone.block_layouts()) - 1))  # type: ignore[operator]
