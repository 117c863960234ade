"""AIM (Yang et al., ICLR 2023, "AIM: Adapting Image Models for Efficient Video Action Recognition") as a tuning
method, exact to its code (taoyang1122/adapt-image-models, vit_clip.py; tests/reference_aim.py ports it).

Per block, on the frozen backbone:

- temporal: x + T_Adapter(attn(ln_1(x)) along time), the block's own attention run over each token position's
  T frames, through a bottleneck without skip (with `num_tadapter: 2`, T_Adapter_in, with skip, before it);
- spatial: x + S_Adapter(attn(ln_1(x))), the adapter after the attention, with its skip;
- MLP: x + mlp(ln_2(x)) + scale * MLP_Adapter(ln_2(x)), the adapter parallel to the MLP, without skip.

A learned temporal embedding is added after the position embedding (before CLIP's ln_pre), the final norm is
applied per frame before the mean over time, and the head is stadapt's (dropout, fc): AIM's I3D head. What
trains is what AIM's training script trains: the adapters, the temporal embedding, the final norm and the head.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast

from pydantic import BaseModel, ConfigDict, Field

from stadapt.tuners import BlockHooks, Tuner

if TYPE_CHECKING:  # torch only when a model is built: a recipe's validation asks this tuner too
    from torch import nn

    from stadapt.backbones.base import FrameBackbone


class AimSettings(BaseModel):
    """The `aim:` section of a recipe, with the paper's defaults (configs/recognition/vit/vitclip_*.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mlp_ratio: float = Field(0.25, gt=0, le=4)
    """Each adapter's bottleneck width as a fraction of the token width (AIM's Adapter mlp_ratio)."""
    adapter_scale: float = 0.5
    """The factor on the MLP adapter's output, parallel to the MLP (AIM's `adapter_scale`)."""
    num_tadapter: Literal[1, 2] = 1
    """1: the temporal adapter after the temporal attention; 2 adds T_Adapter_in before it (AIM's SSv2 ViT-B)."""
    temporal_embedding: bool = True
    """A learned per-frame embedding added after the position embedding."""


class AimTuner(Tuner):
    """AIM's adapters on a backbone whose branches split into norm and body and whose attention is global."""

    name = "aim"
    summary = "AIM: temporal, spatial and parallel MLP adapters, a temporal embedding, the final norm and the head"
    section = "aim"
    settings = AimSettings
    needs: ClassVar[tuple[str, ...]] = ("branch_split", "attend_sequence", "embed_split", "final_norm_modules")
    pooling = "norm_then_mean"

    def attach(self, backbone: FrameBackbone, num_frames: int, settings: Any) -> nn.Module:
        from stadapt_tuners.aim_modules import AimModules

        settings = settings if isinstance(settings, AimSettings) else self.read_settings(settings)
        return AimModules([layout.width for layout in backbone.block_layouts()], num_frames, settings)

    def hooks(self, modules: nn.Module, checkpointing: bool | str,
              backbone: FrameBackbone | None = None) -> BlockHooks:
        """The temporal path at pre_attn (it calls the backbone's attention along time), S_Adapter at attn_out,
        the MLP adapter at mlp_parallel and the temporal embedding at post_embed. The "adapters" checkpointing
        level keeps their activations (the temporal path is mostly the backbone's attention, which "block"
        recomputes); under "mlp" the MLP adapter is recomputed with the MLP branch."""
        from stadapt_tuners.aim_modules import AimModules

        if backbone is None:
            raise TypeError("tuning=aim runs the backbone's attention along time: hooks() needs the backbone")
        aim = cast(AimModules, modules)
        return BlockHooks(
            pre_attn=lambda index, x: aim.temporal(backbone, index, x),
            attn_out=lambda index, out: aim.block(index).s_adapter(out),
            mlp_parallel=lambda index, y: aim.scale * aim.block(index).mlp_adapter(y),
            post_embed=aim.add_temporal_embedding if aim.temporal_embedding is not None else None,
        )

    def trainable(self, parts: Mapping[str, nn.Module]) -> Sequence[nn.Module]:
        """AIM's tools/train.py trains names containing Adapter, temporal_embedding, ln_post and cls_head."""
        backbone = cast("FrameBackbone", parts["backbone"])
        return [parts["adapters"], *backbone.final_norm_modules()]
