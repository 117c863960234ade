"""The optional backbone hooks tuning methods need (issue 25.2): the branch split, the attention projections,
the layers PEFT targets and attention over any sequence. The built-in plugins provide them where their
architecture allows, the conformance suite checks each (and catches a wrong one), a third party's plugin
without them still conforms, and a method needing a missing hook is refused in one line naming both."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
import torch
from torch import nn

from stadapt.backbones import load_plugin
from stadapt.backbones.base import FrameBackbone
from stadapt.errors import PluginError
from stadapt.model.conformance import check_plugin
from stadapt.model.hook_conformance import HOOK_CHECKS, block_inputs
from stadapt.tuners.contract import BACKBONE_HOOKS, Tuner, require_hooks

HOOK_NAMES = [name for name, _ in HOOK_CHECKS]
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "stadapt-plugin-example" / "src"


def _hook_results(plugin_name: str, variant: str | None = None) -> dict[str, tuple[bool, str]]:
    results = check_plugin(load_plugin(plugin_name), variant)
    return {r.name: (r.ok, r.detail) for r in results if r.name in HOOK_NAMES}


@pytest.mark.parametrize(("plugin", "variant"), [("clip", None), ("swag", None), ("timm", "vit_tiny_test")])
def test_global_attention_backbones_provide_every_hook(plugin: str, variant: str | None) -> None:
    results = _hook_results(plugin, variant)
    assert len(results) == len(HOOK_NAMES)
    for name, (ok, detail) in results.items():
        assert ok and "not provided" not in detail and detail.endswith("blocks"), (name, detail)


def test_swin_provides_the_split_and_peft_targets_but_not_global_attention() -> None:
    results = _hook_results("timm", "swin_tiny_test")
    assert all(ok for ok, _ in results.values())
    provided = {name for name, (_, detail) in results.items() if "not provided" not in detail}
    assert provided == {HOOK_NAMES[0], HOOK_NAMES[2], HOOK_NAMES[4]}  # its MLP is plain: mlp_projections
    backbone = load_plugin("timm").build("swin_tiny_test")
    with pytest.raises(NotImplementedError, match="windows"):
        backbone.attend_sequence(0, torch.zeros(1, 4, 16))


VIT = {"img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2}
SWIN = {"img_size": 32, "window_size": 4, "embed_dim": 16, "depths": [2, 2], "num_heads": [1, 2]}
TIMM_FAMILIES = {  # timm name -> (small configuration, the hooks provided: split, projections, peft, sequence,
    # mlp projections)
    "vit_small_patch14_reg4_dinov2": (VIT, (1, 1, 1, 1, 0)),  # registers, layer scale (after the MLP too)
    "vit_base_patch16_siglip_224": (VIT, (1, 1, 1, 1, 1)),  # no class token
    "eva_giant_patch14_224": (VIT, (1, 1, 1, 1, 1)),  # Eva without rotary embeddings: q/k/v biases apart
    "eva02_tiny_patch14_224": (VIT, (1, 0, 1, 0, 0)),  # rotary embeddings tie attention to the patch grid; SwiGLU
    "vit_base_patch16_rpn_224": (VIT, (0, 0, 1, 1, 0)),  # post-norm blocks: no norm opens a branch
    "swinv2_tiny_window8_256": (SWIN, (0, 0, 1, 0, 0)),  # post-norm, windowed attention
}


def _sized(plugin: object, options: dict) -> object:
    """The timm plugin building (and resolving) every variant with the small configuration's options."""
    class Sized(type(plugin)):  # type: ignore[misc]
        def build(self, variant: str, **more: object) -> FrameBackbone:
            return super().build(variant, **{**options, **more})

        def resolve_variant(self, wanted: str) -> object:
            info = super().resolve_variant(wanted)
            return self.configure(info, options) if info is not None else None

    return Sized()


@pytest.mark.parametrize("name", list(TIMM_FAMILIES))
def test_timm_families_provide_the_hooks_their_architecture_allows(name: str) -> None:
    options, provided = TIMM_FAMILIES[name]
    results = check_plugin(_sized(load_plugin("timm"), options), name)  # type: ignore[arg-type]
    assert all(r.ok for r in results), [r for r in results if not r.ok]
    details = [r.detail for r in results if r.name in HOOK_NAMES]
    assert tuple(int("not provided" not in d) for d in details) == provided, details


def test_a_third_partys_plugin_without_the_hooks_still_conforms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLE))
    from stadapt_regvit import plugin

    results = check_plugin(plugin)
    assert all(r.ok for r in results), [r for r in results if not r.ok]
    details = [r.detail for r in results if r.name in HOOK_NAMES]
    assert len(details) == len(HOOK_NAMES) and all(d.startswith("not provided (optional)") for d in details)
    sys.modules.pop("stadapt_regvit", None)


def _clip_tiny() -> tuple[FrameBackbone, list[torch.Tensor]]:
    torch.manual_seed(0)
    backbone = load_plugin("clip").build("tiny").eval()
    with torch.no_grad():  # open_clip's layer scale, off by default, on and away from 1: a dropped one shows
        for block in backbone.visual.transformer.resblocks:
            block.ls_1 = _LayerScale(torch.rand(block.ln_1.normalized_shape) + 0.5)
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return backbone, block_inputs(backbone, images, 3)


class _LayerScale(nn.Module):
    def __init__(self, gamma: torch.Tensor) -> None:
        super().__init__()
        self.gamma = nn.Parameter(gamma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


def test_clip_hooks_compute_the_blocks_own_attention_along_time() -> None:
    """AIM's use: the block's frozen attention over (tokens, T, C), equal to nn.MultiheadAttention's own
    forward on the same sequences; and the projections rebuild it with the layer scale."""
    backbone, inputs = _clip_tiny()
    for check in (c for _, c in HOOK_CHECKS):
        assert check(backbone, inputs) == "4 blocks"
    block = backbone.visual.transformer.resblocks[1]
    along_time = inputs[1].transpose(0, 1)  # (L, T, C)
    with torch.no_grad():
        h = block.ln_1(along_time)
        expected = block.ls_1(block.attn(h, h, h, need_weights=False)[0])
        ours = backbone.attend_sequence(1, along_time)
        rebuilt = backbone.attention_projections(1)(h)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(rebuilt, expected, atol=1e-5, rtol=0)
    projections = backbone.attention_projections(1)
    assert projections.qkv_weight is block.attn.in_proj_weight  # live: a merge writes the model's weight
    names = backbone.peft_target_modules(1)
    assert names == ["visual.transformer.resblocks.1.attn.out_proj", "visual.transformer.resblocks.1.mlp.c_fc",
                     "visual.transformer.resblocks.1.mlp.c_proj"]


def test_timm_peft_targets_are_the_blocks_linear_layers() -> None:
    backbone = load_plugin("timm").build("vit_tiny_test")
    assert backbone.peft_target_modules(2) == [f"model.blocks.2.{n}" for n in ("attn.qkv", "attn.proj", "mlp.fc1",
                                                                                 "mlp.fc2")]
    assert backbone.attention_projections(2).qkv_weight is backbone.model.blocks[2].attn.qkv.weight


@pytest.mark.parametrize("broken", ["split", "projections", "peft", "sequence", "mlp"])
def test_the_suite_catches_a_wrong_hook(broken: str, monkeypatch: pytest.MonkeyPatch) -> None:
    backbone, inputs = _clip_tiny()
    index = {"split": 0, "projections": 1, "peft": 2, "sequence": 3, "mlp": 4}[broken]
    if broken == "split":  # the layer scale forgotten in the body
        body = type(backbone).attn_body  # CLIP's branch is its split: keep the true one as the reference
        monkeypatch.setattr(backbone, "attn_branch", lambda i, x: body(backbone, i, backbone.attn_norm(i, x)))
        monkeypatch.setattr(backbone, "attn_body", lambda i, y: backbone._blocks[i].attention(y))
    elif broken == "projections":
        from dataclasses import replace

        real = type(backbone).attention_projections  # the heads miscounted
        monkeypatch.setattr(backbone, "attention_projections",
                            lambda i: replace(real(backbone, i), num_heads=2 * real(backbone, i).num_heads))
    elif broken == "peft":  # a LayerNorm named as a target
        monkeypatch.setattr(backbone, "peft_target_modules", lambda i: [f"visual.transformer.resblocks.{i}.ln_1"])
    elif broken == "mlp":  # the first layer named twice: its output is not the MLP's
        monkeypatch.setattr(backbone, "mlp_projections", lambda i: (backbone._blocks[i].mlp.c_fc,) * 2)
    else:  # positions baked in: not permutation-equivariant over time
        monkeypatch.setattr(backbone, "attend_sequence", lambda i, t: backbone.attn_branch(i, t) + torch.arange(
            t.shape[1], dtype=t.dtype)[None, :, None] * (t.shape[0] != inputs[0].shape[0]))
    with pytest.raises(AssertionError, match=r"block 0|\(0\)"):
        HOOK_CHECKS[index][1](backbone, inputs)


class _NeedsAll(Tuner):
    name = "needs_all"
    summary = "a method needing every optional backbone hook"
    needs = tuple(BACKBONE_HOOKS)

    def trainable(self, parts: Mapping[str, nn.Module]) -> Sequence[nn.Module]:
        return []


def test_hooks_are_registered_and_probed_cheaply() -> None:
    assert {"branch_split", "attention_projections", "peft_target_modules", "attend_sequence"} <= set(BACKBONE_HOOKS)
    require_hooks(_NeedsAll(), load_plugin("clip").build("tiny"), "clip:tiny")
    with torch.device("meta"):  # parameter counting builds on the meta device: the probes run there too
        meta = load_plugin("timm").build("vit_tiny_test")
    require_hooks(_NeedsAll(), meta, "timm:vit_tiny_test")


def test_a_method_on_a_backbone_without_the_hook_is_refused_in_one_line() -> None:
    with pytest.raises(PluginError) as info:
        require_hooks(_NeedsAll(), load_plugin("timm").build("swin_tiny_test"), "timm:swin_tiny_test")
    text = str(info.value)
    assert "needs the backbone hook attention_projections, which timm:swin_tiny_test does not provide" in text
    assert "\n" not in text and "relative position" in text
