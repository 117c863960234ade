"""ZeroI2V (Li et al., ECCV 2024, "ZeroI2V: Zero-Cost Adaptation of Pre-trained Transformers from Image to Video")
as a tuning method, exact to its code (leexinhao/ZeroI2V, vit_zero_clip.py + common/stdha.py; tests/reference_zeroi2v.py
ports it).

Per block, on the frozen backbone, with linear adapters (x + s * fc2(fc1(x)), no activation):

- attention: x + S_Adapter(STDHA(T_Adapter_in(ln_1(x)))), where STDHA is the block's own attention with channels
  of its keys and values taken from the neighbouring frames (the `attn_body` hook point);
- MLP: x + MLP_Adapter_out(mlp(MLP_Adapter(ln_2(x)))) (`num_tadapter: 2`; with 1, no MLP_Adapter_out).

A learned temporal embedding is added after the position embedding (before CLIP's ln_pre), the final norm is
applied per frame before the mean over time, and the head is stadapt's (dropout, fc): ZeroI2V's I3D head. What
trains is what upstream's init_weights leaves trainable: the adapters, the temporal embedding, the final norm
(ln_post) and the head. Every adapter is linear and sits next to a linear layer, so `merge` folds them into the
backbone's weights (upstream's tools/weight_reparam.py): the merged model is the backbone with STDHA, the temporal
embedding and the head, at the image model's cost.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stadapt.errors import StadaptError
from stadapt.tuners import BlockHooks, ModelConfigError, Tuner

if TYPE_CHECKING:  # torch only when a model is built: a recipe's validation asks this tuner too
    from torch import nn

    from stadapt.backbones.base import FrameBackbone


class ZeroI2VSettings(BaseModel):
    """The `zeroi2v:` section of a recipe, with the paper's defaults (configs/recognition/vit_zero_clip/
    vit_zero_base_clip_k400_16x8x1.py; the SSv2 config uses adapter_scale 1 and the long shift 12, right)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mlp_ratio: float = Field(0.25, gt=0, le=4)
    """Each adapter's bottleneck width as a fraction of the token width (LinearAdapter's mlp_ratio)."""
    adapter_scale: float = 0.5
    """The factor on every adapter's output (upstream's `adapter_scale`: 0.5 for K400, 1 for SSv2)."""
    num_tadapter: Literal[1, 2] = 2
    """2 (every released config) adds MLP_Adapter_out after the MLP; 1 has MLP_Adapter before it only."""
    shift_div: int = Field(12, ge=2)
    """STDHA moves C // shift_div channels of k and v from frame t-1 and as many from frame t+1."""
    long_shift_div: int = -1
    """> 0: C // long_shift_div more channels from frame t-2 (stdha_cfg long_shift_div; -1: off)."""
    long_shift_right: bool = False
    """With the long shift, as many again from frame t+2 (the SSv2 config)."""
    temporal_embedding: bool = True
    """A learned per-frame embedding added after the position embedding."""
    adapter_dropout: float = Field(0.1, ge=0, lt=1)
    """Dropout between each adapter's fc1 and fc2 while training (upstream's dropout_rate; SSv2: 0)."""
    merged: bool = False
    """The settings of a merged model: the adapters are folded into the backbone's weights, so only STDHA and the
    temporal embedding remain (what `merge` returns)."""


class ZeroI2VTuner(Tuner):
    """ZeroI2V's linear adapters and STDHA on a backbone with plain attention and MLP projections."""

    name = "zeroi2v"
    summary = "ZeroI2V: STDHA (keys/values shifted across frames) and linear adapters that merge into the backbone"
    section = "zeroi2v"
    settings = ZeroI2VSettings
    needs: ClassVar[tuple[str, ...]] = ("branch_split", "attention_projections", "mlp_projections", "embed_split",
                                        "final_norm_modules")
    pooling = "norm_then_mean"

    def recipe_problems(self, settings: Any) -> list[tuple[str, str]]:
        """`long_shift_right` without the long shift would shift nothing more (upstream ignores it)."""
        if not isinstance(settings, ZeroI2VSettings):  # a recipe's section, as plain data
            try:
                settings = self.read_settings(settings)
            except ValidationError:  # the recipe's validation names those problems itself
                return []
        if settings.long_shift_right and settings.long_shift_div <= 0:
            return [("long_shift_right", "shifts from frame t+2 only with the long shift: set long_shift_div > 0")]
        return []

    def check_fits(self, settings: Any, backbone: FrameBackbone, backbone_name: str) -> None:
        """The channels STDHA moves must exist: at least one per shift, no more than the width."""
        width = min(layout.width for layout in backbone.block_layouts())
        fold = width // settings.shift_div
        long_fold = width // settings.long_shift_div if settings.long_shift_div > 0 else 0
        moved = 2 * fold + long_fold * (2 if settings.long_shift_right else 1)
        if fold == 0 or moved > width:
            raise ModelConfigError(f"zeroi2v.shift_div={settings.shift_div} (long_shift_div="
                                   f"{settings.long_shift_div}) moves {moved} channels of {backbone_name}'s {width}",
                                   "choose shift_div and long_shift_div that move between 2 and the width")

    def attach(self, backbone: FrameBackbone, num_frames: int, settings: Any) -> nn.Module:
        from stadapt_tuners.zeroi2v_modules import ZeroI2VModules

        settings = settings if isinstance(settings, ZeroI2VSettings) else self.read_settings(settings)
        return ZeroI2VModules([layout.width for layout in backbone.block_layouts()], num_frames, settings)

    def hooks(self, modules: nn.Module, checkpointing: bool | str,
              backbone: FrameBackbone | None = None) -> BlockHooks:
        """STDHA replaces the attention body (it recomputes the attention from the block's projections);
        T_Adapter_in at attn_in, S_Adapter at attn_out, MLP_Adapter at mlp_in, MLP_Adapter_out at mlp_out, the
        temporal embedding at post_embed; a merged model runs STDHA and the embedding only. The adapters are
        two thin linear layers each: no checkpointing level recomputes them."""
        from stadapt_tuners.zeroi2v_modules import ZeroI2VModules

        if backbone is None:
            raise TypeError("tuning=zeroi2v re-runs the backbone's attention (STDHA): hooks() needs the backbone")
        zero = cast(ZeroI2VModules, modules)
        embedding = zero.add_temporal_embedding if zero.temporal_embedding is not None else None
        body = lambda index, y: zero.stdha(backbone.attention_projections(index), y)  # noqa: E731
        if len(zero.blocks) == 0:  # merged
            return BlockHooks(attn_body=body, post_embed=embedding)
        return BlockHooks(
            attn_in=lambda index, y: zero.block(index).t_adapter_in(y),
            attn_body=body,
            attn_out=lambda index, out: zero.block(index).s_adapter(out),
            mlp_in=lambda index, y: zero.block(index).mlp_adapter(y),
            mlp_out=None if zero.block(0).mlp_adapter_out is None else _mlp_out(zero),
            post_embed=embedding,
        )

    def trainable(self, parts: Mapping[str, nn.Module]) -> Sequence[nn.Module]:
        """Upstream's init_weights freezes every parameter whose name lacks temporal_embedding, ln_post, cls_head
        and Adapter: the adapters, the temporal embedding, the final norm and the head train."""
        backbone = cast("FrameBackbone", parts["backbone"])
        return [parts["adapters"], *backbone.final_norm_modules()]

    def merge(self, backbone: FrameBackbone, modules: nn.Module, settings: Any) -> Any:
        """Fold each block's adapters into the backbone's live weights (tools/weight_reparam.py): T_Adapter_in
        into the packed q/k/v projection (the shift moves whole channels after it, so it commutes),
        S_Adapter into the output projection, MLP_Adapter into the MLP's first layer, MLP_Adapter_out into
        its last. Every block is checked before any weight changes."""
        from stadapt_tuners.zeroi2v_modules import ZeroI2VModules, fold_after, fold_before

        zero = cast(ZeroI2VModules, modules)
        if settings.merged:
            return settings
        targets = [_merge_targets(backbone, index) for index in range(len(zero.blocks))]
        for index, (qkv_weight, qkv_bias, out_proj, first, last) in enumerate(targets):
            block = zero.block(index)
            fold_before(qkv_weight, qkv_bias, block.t_adapter_in)
            fold_after(out_proj.weight, out_proj.bias, block.s_adapter)
            fold_before(first.weight, first.bias, block.mlp_adapter)
            if block.mlp_adapter_out is not None:
                fold_after(last.weight, last.bias, block.mlp_adapter_out)
        return settings.model_copy(update={"merged": True})


def _mlp_out(zero: Any) -> Any:
    """The MLP_Adapter_out hook (a function, so that the type checker sees it is never None inside)."""
    return lambda index, out: zero.block(index).mlp_adapter_out(out)


def _merge_targets(backbone: FrameBackbone, index: int) -> tuple[Any, Any, Any, Any, Any]:
    """Block `index`'s (qkv weight, qkv bias, out_proj, MLP first layer, MLP last layer), each a live tensor or
    module of the backbone with a bias to take the adapter's; anything else refused in one line."""
    projections = backbone.attention_projections(index)
    first, last = backbone.mlp_projections(index)
    own = {id(p) for p in backbone.parameters()}
    fix = "merge a model whose backbone has plain attention and MLP layers with biases and no layer scale"
    if projections.layer_scale is not None:
        raise StadaptError(f"tuning=zeroi2v cannot merge block {index}: a layer scale sits between the attention's "
                           "output projection and S_Adapter", fix)
    if id(projections.qkv_weight) not in own or projections.qkv_bias is None or id(projections.qkv_bias) not in own:
        raise StadaptError(f"tuning=zeroi2v cannot merge block {index}: its q/k/v projection is not one packed "
                           "weight with a bias of the backbone (separate or bias-free projections)", fix)
    out_proj = projections.out_proj
    if any(getattr(layer, "bias", None) is None for layer in (out_proj, first, last)):
        raise StadaptError(f"tuning=zeroi2v cannot merge block {index}: a projection has no bias", fix)
    return projections.qkv_weight, projections.qkv_bias, out_proj, first, last
