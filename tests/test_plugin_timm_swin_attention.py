"""Attention maps of timm's Swin and SwinV2 for `stadapt visualize`: the mean query's attention of each
(shifted) window, recomputed from the block's own projections, relative position bias (Swin) or cosine
attention with the continuous position bias (SwinV2), shift and mask, equals timm's own softmax inside the
block; mapped back to the un-shifted grid it sums to 1 per frame. (The console-script chain, 3 training
steps then `stadapt visualize` writing its PNG for a small SwinV2, is tests/test_plugin_timm_open.py's.)"""

from __future__ import annotations

import sys

import pytest
import torch
from helpers import perturb_layer_norms
from torch import nn

from stadapt.backbones import load_plugin
from stadapt.model.adapters import AdapterConfig
from stadapt.model.classifier import ModelConfig, build_model
from stadapt.tools.visualize import attention_maps

SWIN = {"patch_size": 4, "window_size": 4, "embed_dim": 16, "depths": [2, 2], "num_heads": [2, 2]}
SWINV2 = {"window_size": 4, "embed_dim": 16, "depths": [2, 2], "num_heads": [2, 2]}
CASES = {  # id -> (timm name, create_model arguments)
    "swin": ("swin_tiny_patch4_window7_224", {**SWIN, "img_size": 32}),  # 8x8 grid: block 1 shifted
    "swin-padded": ("swin_tiny_patch4_window7_224", {**SWIN, "img_size": 24}),  # 6x6 grid, window 4: padded
    "swinv2": ("swinv2_tiny_window8_256", {**SWINV2, "img_size": 32}),
    "swinv2-padded": ("swinv2_tiny_window8_256", {**SWINV2, "img_size": 24}),
}


def _backbone(case: str) -> nn.Module:
    """The plugin's backbone of a small configuration, its timm weights perturbed so that every part of the
    attention shows: relative position biases, q/v biases, SwinV2's logit scales and post-norms."""
    name, options = CASES[case]
    torch.manual_seed(0)
    backbone = load_plugin("timm").build(name, **options).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for key, param in backbone.model.named_parameters():
            if key.endswith(("relative_position_bias_table", "q_bias", "v_bias", "qkv.bias")):
                param.copy_(torch.randn(param.shape, generator=generator))
            elif key.endswith("logit_scale"):
                param.add_(torch.randn(param.shape, generator=generator))
    perturb_layer_norms(backbone.model, 2)
    return backbone


def _timm_probabilities(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """timm's own softmax inside the block, (windows, heads, A, A), captured where its attention dropout
    receives it during the block's forward pass (Swin's unfused path)."""
    captured: list[torch.Tensor] = []
    hook = block.attn.attn_drop.register_forward_hook(lambda module, args, out: captured.append(args[0]))
    if hasattr(block.attn, "fused_attn"):
        block.attn.fused_attn = False
    try:
        block(x)
    finally:
        hook.remove()
    [probs] = captured
    return probs


def _timm_map(block: nn.Module, probs: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The expected (N, H*W) map from timm's probabilities, through timm's own window_reverse and roll: each
    token's attention received, averaged over the heads and its window's queries, normalised per frame."""
    timm_module = sys.modules[type(block).__module__]
    window = block.window_size
    padded = (-(-height // window[0]) * window[0], -(-width // window[1]) * window[1])
    received = probs.mean(dim=(1, 2)).reshape(-1, window[0], window[1], 1)
    if "v2" in timm_module.__name__:
        grid = timm_module.window_reverse(received, window, padded)
    else:
        grid = timm_module.window_reverse(received, window, *padded)
    grid = torch.roll(grid[:, :height, :width, 0], shifts=block.shift_size, dims=(1, 2))
    grid = grid.reshape(grid.shape[0], -1)
    return grid / grid.sum(dim=-1, keepdim=True)


@pytest.mark.parametrize("case", list(CASES))
def test_block_attention_is_timms_own_windowed_softmax(case: str) -> None:
    """Every block, shifted or not, padded or not: the recomputed per-window probabilities equal timm's
    softmax; the map is theirs mapped back to the (H, W) grid, (N, H*W), summing to 1 per frame."""
    from stadapt_timm.backbone import swin_window_probabilities

    backbone = _backbone(case)
    blocks = [block for stage in backbone.model.layers for block in stage.blocks]
    x = backbone.embed(torch.randn(2, 3, *[CASES[case][1]["img_size"]] * 2, generator=torch.Generator().manual_seed(3)))
    shifted = padded = False
    with torch.no_grad():
        for index, block in enumerate(blocks):
            x = backbone.transition(index, x)
            batch, height, width, _ = x.shape
            shifted |= any(block.shift_size)
            padded |= height % block.window_size[0] != 0
            expected = _timm_probabilities(block, x)
            h = x if "v2" in case else block.norm1(x)
            ours = swin_window_probabilities(block, h)
            torch.testing.assert_close(ours, expected, atol=1e-6, rtol=0)
            weights = backbone.block_attention(index, x)
            assert weights.shape == (batch, height * width)
            torch.testing.assert_close(weights.sum(dim=-1), torch.ones(batch), atol=1e-6, rtol=0)
            torch.testing.assert_close(weights, _timm_map(block, expected, height, width), atol=1e-6, rtol=0)
            assert weights.std() > 1e-3  # not a uniform map
            x = x + backbone.attn_branch(index, x)
            x = x + backbone.mlp_branch(index, x)
    assert shifted and (padded == case.endswith("padded"))


@pytest.mark.parametrize("case", ["swin", "swinv2"])
def test_attention_maps_of_a_swin_video_model_cover_its_last_grid(case: str) -> None:
    """What `stadapt visualize` draws: before and after adaptation, (T, grid_h, grid_w), 1 per frame;
    the adapters (perturbed from their identity init) change the map."""
    name, options = CASES[case]
    config = ModelConfig(f"timm:{name}", 3, 2, AdapterConfig(bottleneck_ratio=0.5, positions=("pre_attn",)),
                         dropout=0.0, backbone_options=options)
    model = build_model(config, seed=0).model.eval()
    with torch.no_grad():
        for key, param in model.named_parameters():
            if "adapter" in key and "conv" in key:
                param.normal_(0, 0.5, generator=torch.Generator().manual_seed(4))
    clip = torch.randn(3, 2, 32, 32, generator=torch.Generator().manual_seed(5))
    before, after = attention_maps(model, clip)
    grid = tuple(model.backbone.block_layouts()[-1].grid)
    assert before.shape == after.shape == (2, *grid)
    torch.testing.assert_close(before.sum(dim=(1, 2)), torch.ones(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(after.sum(dim=(1, 2)), torch.ones(2), atol=1e-5, rtol=0)
    assert not torch.allclose(before, after, atol=1e-4)
