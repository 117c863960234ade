"""timm's ViTs (VisionTransformer), Evas (rotary embeddings) and Swin / SwinV2 as stadapt FrameBackbones.

The branches call timm's own submodules in the order timm's block `forward` does, so the decomposition
equals timm's forward pass (the conformance suite checks it); the timm model lives at `self.model`, so
the backbone's keys are `model.` + timm's keys.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from stadapt.backbones.attention import query_attention
from stadapt.backbones.base import ForeignModule, FrameBackbone
from stadapt.backbones.layout import TokenLayout
from stadapt.errors import PluginError, WeightsError, first_line
from stadapt_timm.hooks import SwinHooks, ViTHooks, scaled

_POST_NORM_BLOCKS = ("ResPostBlock", "EvaBlockPostNorm", "SwinTransformerV2Block")


def _fit_with_timm_filter(model: ForeignModule, state_dict: dict[str, torch.Tensor],
                          filter_fn: Callable[..., dict[str, torch.Tensor]], guarded: tuple[str, ...],
                          resampled: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Run timm's checkpoint filter of the model's family (foreign layouts -> timm keys, position
    embeddings resampled to the model's grid) on `model.`-prefixed tensors.

    Tensors of another shape whose key ends in `guarded` are kept out of the filter: it would resample
    them to fit (another patch or window size), where a wrong file must fail naming its shapes. Keys in
    `resampled` (position embeddings) are resampled to another grid of the same width, with a notice."""
    inner = {k[len("model."):]: v for k, v in state_dict.items() if k.startswith("model.")}
    others = {k: v for k, v in state_dict.items() if not k.startswith("model.")}
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    kept = {k: v for k, v in inner.items() if k in own and own[k] != tuple(v.shape) and (
        k.endswith(guarded) or (k in resampled and own[k][-1:] != tuple(v.shape)[-1:]))}
    if kept:  # a file of another architecture: nothing is resampled, the load names what does not fit
        kept.update({k: v for k, v in inner.items() if k in resampled and k in own and own[k] != tuple(v.shape)})
    try:
        out = filter_fn({k: v for k, v in inner.items() if k not in kept}, model)
    except Exception as exc:  # a foreign layout the filter cannot read
        raise WeightsError(f"timm's checkpoint filter for {type(model).__name__} cannot read this file "
                           f"({first_line(exc)})", "pass a timm checkpoint of this architecture") from exc
    for key in resampled:
        if key in inner and key in own and key not in kept and tuple(inner[key].shape) != own[key]:
            warnings.warn(_resample_notice(model, key, tuple(inner[key].shape), own[key]), stacklevel=4)
    return {**others, **{"model." + k: v for k, v in {**kept, **out}.items()}}


def _resample_notice(model: ForeignModule, key: str, found: tuple[int, ...], own: tuple[int, ...]) -> str:
    grid = tuple(model.patch_embed.grid_size)
    prefix = own[1] - grid[0] * grid[1]
    side = math.isqrt(max(found[1] - prefix, 0))
    old = f"{side}x{side}" if side * side == found[1] - prefix else f"{found[1] - prefix}-token"
    size = tuple(model.patch_embed.img_size)
    return (f"the weights' position embeddings ({key} {found}, a {old} patch grid) were resampled to this "
            f"backbone's {grid[0]}x{grid[1]} grid ({size[0]} px: {own}) as timm does (resample_abs_pos_embed, "
            "bicubic)")


class TimmSwinBackbone(SwinHooks):
    """Tokens (N, H, W, C) per block; the stage's patch merging is the transition before its first block.

    Swin (pre-norm blocks) and SwinV2 (post-norm blocks: the norm after attention / MLP, inside the branch).
    Features: the final norm on every token, then the mean over H and W (timm's avg-pool head), so the
    video feature is the mean over space and time of the normalised tokens; `video_norm` is the identity.
    Attention maps: no class token, so each window's mean query (`block_attention`).
    """

    def __init__(self, model: ForeignModule) -> None:
        super().__init__()
        if getattr(model, "global_pool", "avg") != "avg" or getattr(model, "dynamic_img_size", False):
            raise PluginError("the timm Swin backbone needs global_pool='avg' and a fixed image size",
                              "build the timm model with its defaults")
        self.model = model
        self.feature_width = int(model.num_features)
        self._blocks: list[ForeignModule] = []
        self._downsamples: list[nn.Module | None] = []  # the transition before each block, if any
        self._layouts: list[TokenLayout] = []
        for stage in model.layers:
            merge = None if isinstance(stage.downsample, nn.Identity) else stage.downsample
            for j, block in enumerate(stage.blocks):
                self._blocks.append(block)
                self._downsamples.append(merge if j == 0 else None)
                self._layouts.append(TokenLayout(width=int(block.dim), grid=tuple(block.input_resolution),
                                                 prefix_tokens=0, channels_last_grid=True))
        self._post_norm = type(self._blocks[0]).__name__ in _POST_NORM_BLOCKS

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.patch_embed(images)  # (N, H, W, C); timm's Swin has no absolute position embedding

    def block_layouts(self) -> list[TokenLayout]:
        return list(self._layouts)

    def transition(self, index: int, x: torch.Tensor) -> torch.Tensor:
        merge = self._downsamples[index]
        return x if merge is None else merge(x)

    def attn_branch(self, index: int, x: torch.Tensor) -> torch.Tensor:
        block = self._blocks[index]
        if self._post_norm:
            return block.drop_path1(block.norm1(block._attn(x)))
        return block.drop_path1(block._attn(block.norm1(x)))

    def mlp_branch(self, index: int, x: torch.Tensor) -> torch.Tensor:
        block = self._blocks[index]
        batch, height, width, channels = x.shape
        tokens = x.reshape(batch, -1, channels)  # timm runs the MLP on (N, H*W, C)
        if self._post_norm:
            out = block.drop_path2(block.norm2(block.mlp(tokens)))
        else:
            out = block.drop_path2(block.mlp(block.norm2(tokens)))
        return out.reshape(batch, height, width, channels)

    def block_modules(self, index: int) -> list[nn.Module]:
        # the patch merging runs as this block's transition: it belongs to the first block of its stage
        merge = self._downsamples[index]
        return [self._blocks[index]] + ([merge] if merge is not None else [])

    def frame_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.norm(x).mean(dim=(1, 2))

    def native_forward(self, images: torch.Tensor) -> torch.Tensor:
        m = self.model
        return m.forward_head(m.forward_features(images), pre_logits=True)

    def native_state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def block_attention(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Without a class token and with windowed attention: per token, the attention it receives averaged
        over the heads and over every query of its (shifted) window, mapped back to the un-shifted (H, W)
        grid and normalised per frame; (N, H*W), rows sum to 1."""
        block = self._blocks[index]
        h = x if self._post_norm else block.norm1(x)  # what timm's `_attn` receives
        batch, height, width, _ = h.shape
        probs = swin_window_probabilities(block, h)  # (N * windows, heads, A, A)
        received = probs.mean(dim=(1, 2))[..., None]  # (N * windows, A, 1): each key's mean over the queries
        window = tuple(block.window_size)
        padded = (-(-height // window[0]) * window[0], -(-width // window[1]) * window[1])  # whole windows
        grid = _merge_windows(received, window, padded)[:, :height, :width, 0]
        if any(block.shift_size):
            grid = torch.roll(grid, shifts=tuple(block.shift_size), dims=(1, 2))
        weights = grid.reshape(batch, height * width)
        return weights / weights.sum(dim=-1, keepdim=True)

    def fit_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """timm's Swin filter: drops the `relative_position_index` / `attn_mask` buffers of Microsoft's
        checkpoints and moves their end-of-stage downsample to the start of the next stage."""
        if self._post_norm:
            from timm.models.swin_transformer_v2 import checkpoint_filter_fn
        else:
            from timm.models.swin_transformer import checkpoint_filter_fn
        return _fit_with_timm_filter(self.model, state_dict, checkpoint_filter_fn,
                                     ("patch_embed.proj.weight", "relative_position_bias_table"))


class TimmViTBackbone(ViTHooks):
    """Tokens (N, P + H*W, C), P = CLS + register tokens (timm's VisionTransformer; Eva below).

    Features per head type: class-token pooling -> the CLS token before the final norm, `video_norm` =
    timm's `norm` then `fc_norm` on the time-averaged token (as CLIP's ln_post in the reference); every other
    head (average of the patch tokens, registers left out; attention pooling, SigLIP's MAP head) pools each
    frame as timm does after its per-token `norm`, and `video_norm` = `fc_norm` on the time average.
    """

    def __init__(self, model: ForeignModule) -> None:
        super().__init__()
        if getattr(model, "dynamic_img_size", False):
            raise PluginError("the timm ViT backbone needs a fixed image size",
                              "build the timm model with its defaults")
        if getattr(model, "attn_pool", None) is None and model.global_pool == "":
            raise PluginError("the timm ViT backbone needs a pooled feature, not global_pool=''",
                              "build the timm model with its default global_pool")
        self.model = model
        self.feature_width = int(getattr(model, "head_hidden_size", model.num_features))
        self._token_pool = getattr(model, "attn_pool", None) is None and model.global_pool == "token"
        self._blocks = list(model.blocks)
        self._post_norm = [type(b).__name__ in _POST_NORM_BLOCKS for b in self._blocks]
        self._prefix = int(model.num_prefix_tokens)
        self._class_token = getattr(model, "cls_token", None) is not None
        self._layout = TokenLayout(width=int(model.embed_dim), grid=tuple(model.patch_embed.grid_size),
                                   prefix_tokens=self._prefix)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = m.patch_embed(images)
        x = m._pos_embed(x)
        x = m.patch_drop(x)
        return m.norm_pre(x)

    def embed_tokens(self, images: torch.Tensor) -> torch.Tensor:
        m = self.model
        return m._pos_embed(m.patch_embed(images))

    def embed_norm(self, x: torch.Tensor) -> torch.Tensor:
        """Patch dropout (whole tokens, training only) and timm's `norm_pre` (often the identity)."""
        return self.model.norm_pre(self.model.patch_drop(x))

    def final_norm_modules(self) -> list[nn.Module]:
        """timm's `norm` and `fc_norm` (either may be the identity): what `frame_features` and `video_norm`
        apply after the blocks."""
        return [self.model.norm, self.model.fc_norm]

    def block_layouts(self) -> list[TokenLayout]:
        return [self._layout] * len(self._blocks)

    def attn_branch(self, index: int, x: torch.Tensor) -> torch.Tensor:
        block = self._blocks[index]
        if self._post_norm[index]:
            return block.drop_path1(block.norm1(self._attend(index, x)))
        return block.drop_path1(scaled(block, 1, self._attend(index, block.norm1(x))))

    def mlp_branch(self, index: int, x: torch.Tensor) -> torch.Tensor:
        block = self._blocks[index]
        if self._post_norm[index]:
            return block.drop_path2(block.norm2(block.mlp(x)))
        return block.drop_path2(scaled(block, 2, block.mlp(block.norm2(x))))

    def block_modules(self, index: int) -> list[nn.Module]:
        return [self._blocks[index]]

    def frame_features(self, x: torch.Tensor) -> torch.Tensor:
        if self._token_pool:
            return x[:, 0]
        return self.model.pool(self.model.norm(x))  # per-token norm, then timm's own pooling of this frame

    def video_norm(self, features: torch.Tensor) -> torch.Tensor:
        if self._token_pool:
            features = self.model.norm(features)
        return self.model.fc_norm(features)

    def native_forward(self, images: torch.Tensor) -> torch.Tensor:
        m = self.model
        return m.forward_head(m.forward_features(images), pre_logits=True)

    def native_state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def block_attention(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """The [CLS] query's attention (the mean query's without a class token; registers are prefix
        tokens), recomputed from the block's own q/k projections, q/k norms and rotary embedding."""
        block = self._blocks[index]
        attn = block.attn
        if type(attn).__name__ not in ("Attention", "EvaAttention", "AttentionRope"):
            raise PluginError(f"attention maps of timm's {type(attn).__name__} are not available",
                              "use a model with timm's Attention, EvaAttention or AttentionRope")
        h = x if self._post_norm[index] else block.norm1(x)
        q, k = _project_qk(attn, h, self._rope(index))
        n, length = h.shape[:2]
        heads = q.shape[1]
        q = q.transpose(1, 2).reshape(n, length, -1)
        k = k.transpose(1, 2).reshape(n, length, -1)
        return query_attention(q, k, heads, first_query=self._class_token)

    def fit_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """timm's ViT filter: position embeddings of another grid resampled (with a notice), foreign
        layouts (original DINOv2, OpenAI CLIP, big_vision...) converted to timm's keys."""
        from timm.models.vision_transformer import checkpoint_filter_fn

        return _fit_with_timm_filter(self.model, state_dict, checkpoint_filter_fn, ("patch_embed.proj.weight",),
                                     ("pos_embed",))


class TimmEvaBackbone(TimmViTBackbone):
    """timm's Eva (EVA-02, DINOv3, PE-Core...): a ViT whose attention takes rotary position embeddings,
    computed here as timm's `Eva._pos_embed` does for a fixed image size and passed to every block."""

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        m = self.model
        x, _ = m._pos_embed(m.patch_embed(images))  # the rotary embedding is recomputed per block: `_rope`
        return m.norm_pre(x)

    def embed_tokens(self, images: torch.Tensor) -> torch.Tensor:
        return self.model._pos_embed(self.model.patch_embed(images))[0]

    def embed_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.norm_pre(x)

    def _rope(self, index: int) -> torch.Tensor | None:
        rope = self.model.rope
        if rope is None:
            return None
        embed = rope.get_embed() if hasattr(rope, "feat_shape") else rope.get_embed(
            shape=self.model.patch_embed.grid_size)
        return embed[index] if getattr(self.model, "rope_mixed", False) else embed

    def _attend(self, index: int, h: torch.Tensor) -> torch.Tensor:
        return self._blocks[index].attn(h, rope=self._rope(index))

    def fit_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """timm's Eva filter (original EVA, DINOv3 and PE layouts; position embeddings resampled)."""
        from timm.models.eva import checkpoint_filter_fn

        return _fit_with_timm_filter(self.model, state_dict, checkpoint_filter_fn, ("patch_embed.proj.weight",),
                                     ("pos_embed",))


def _project_qk(attn: ForeignModule, h: torch.Tensor, rope: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(q, k) of shape (N, heads, L, d) as timm's Attention / EvaAttention / AttentionRope compute them
    before the softmax: fused or separate projections, q/k norms, rotary embedding on the patch tokens,
    key heads repeated for grouped-query attention."""
    n, length, _ = h.shape
    heads = attn.num_heads
    if getattr(attn, "qkv", None) is not None:
        bias = attn.qkv.bias
        if getattr(attn, "q_bias", None) is not None:
            bias = torch.cat((attn.q_bias, attn.k_bias, attn.v_bias))
        qkv = F.linear(h, attn.qkv.weight, bias).reshape(n, length, 3, heads, -1).permute(2, 0, 3, 1, 4)
        q, k = qkv[0], qkv[1]
    else:
        q = attn.q_proj(h).reshape(n, length, heads, -1).transpose(1, 2)
        k = attn.k_proj(h).reshape(n, length, getattr(attn, "num_kv_heads", heads), -1).transpose(1, 2)
    q, k = attn.q_norm(q), attn.k_norm(k)
    if rope is not None:
        from timm.layers import apply_rot_embed_cat

        npt, half = attn.num_prefix_tokens, getattr(attn, "rotate_half", False)
        q = torch.cat([q[:, :, :npt], apply_rot_embed_cat(q[:, :, npt:], rope, half=half)], dim=2)
        k = torch.cat([k[:, :, :npt], apply_rot_embed_cat(k[:, :, npt:], rope, half=half)], dim=2)
    if k.shape[1] != heads:
        k = k.repeat_interleave(heads // k.shape[1], dim=1)
    return q, k


def swin_window_probabilities(block: ForeignModule, h: torch.Tensor) -> torch.Tensor:
    """The softmax of timm's Swin / SwinV2 block `_attn` on its input h (N, H, W, C), (N * windows, heads, A, A)
    in timm's window order: cyclic shift, padding to whole windows, window partition and the shift mask as
    the block does them, then the block's `WindowAttention` scores (Swin: scaled q k^T + relative position
    bias; SwinV2: cosine similarity x clamped logit scale + 16 sigmoid(continuous position bias MLP))."""
    attn = block.attn
    if type(attn).__name__ != "WindowAttention":
        raise PluginError(f"attention maps of timm's {type(attn).__name__} are not available",
                          "use a timm Swin or SwinV2 model")
    window = tuple(block.window_size)
    shifted = torch.roll(h, shifts=(-block.shift_size[0], -block.shift_size[1]), dims=(1, 2)) \
        if any(block.shift_size) else h
    pad_h, pad_w = (-h.shape[1]) % window[0], (-h.shape[2]) % window[1]
    shifted = F.pad(shifted, (0, 0, 0, pad_w, 0, pad_h))
    mask = block.get_attn_mask(shifted) if getattr(block, "dynamic_mask", False) else block.attn_mask
    return _window_softmax(attn, _split_windows(shifted, window), mask)


def _window_softmax(attn: ForeignModule, windows: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """timm's WindowAttention (Swin or SwinV2) up to its softmax, on windows (N * windows, A, C)."""
    count, area, _ = windows.shape
    heads = attn.num_heads
    bias = attn.qkv.bias  # Swin; SwinV2 keeps q and v biases apart (its k bias is a zero buffer)
    if getattr(attn, "q_bias", None) is not None:
        bias = torch.cat((attn.q_bias, attn.k_bias, attn.v_bias))
    qkv = F.linear(windows, attn.qkv.weight, bias).reshape(count, area, 3, heads, -1).permute(2, 0, 3, 1, 4)
    q, k = qkv[0], qkv[1]
    if hasattr(attn, "cpb_mlp"):  # SwinV2
        scores = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        scores = scores * torch.clamp(attn.logit_scale, max=math.log(1.0 / 0.01)).exp()
        table = attn.cpb_mlp(attn.relative_coords_table).view(-1, heads)
        position = table[attn.relative_position_index.view(-1)].view(area, area, -1).permute(2, 0, 1)
        scores = scores + 16 * torch.sigmoid(position).unsqueeze(0)
    else:
        scores = (q * attn.scale) @ k.transpose(-2, -1) + attn._get_rel_pos_bias()
    if mask is not None:  # windows are frame-major: the mask repeats over the frames
        scores = scores.view(-1, mask.shape[0], heads, area, area) + mask.unsqueeze(1).unsqueeze(0)
        scores = scores.view(count, heads, area, area)
    return scores.float().softmax(dim=-1)


def _split_windows(x: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    """(N, H, W, C) -> (N * windows, A, C), windows row by row per frame (timm's window_partition)."""
    n, height, width, channels = x.shape
    x = x.view(n, height // window[0], window[0], width // window[1], window[1], channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window[0] * window[1], channels)


def _merge_windows(windows: torch.Tensor, window: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """(N * windows, A, C) -> (N, H, W, C): the inverse of `_split_windows` (timm's window_reverse)."""
    height, width = size
    x = windows.reshape(-1, height // window[0], width // window[1], window[0], window[1], windows.shape[-1])
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, windows.shape[-1])


def frame_backbone(model: ForeignModule) -> FrameBackbone:
    """The FrameBackbone of a timm model this plugin adapts (ViT, Eva, Swin / SwinV2), keys `model.` + timm's;
    also what other plugins use for timm towers (open_clip's SigLIP, PE-Core, EVA-CLIP)."""
    from stadapt.errors import UnknownBackboneError
    from stadapt_timm.catalog import FAMILIES, classify, why_not

    kind = classify(model)
    if kind is None:
        raise UnknownBackboneError(f"timm's {type(model).__name__} cannot be adapted: {why_not(model)}",
                                   f"the timm plugin adapts {FAMILIES}")
    return {"swin": TimmSwinBackbone, "vit": TimmViTBackbone, "eva": TimmEvaBackbone}[kind](model)
