"""The conformance checks of the optional backbone hooks tuning methods need (FrameBackbone.attn_norm ...
attend_sequence, mlp_projections, embed_tokens/embed_norm and final_norm_modules, issue 25): each hook is either
"not provided (optional)" or checked against the branches (or the embedding and features) the decomposition check
has already tied to the model's own forward, so a method built on a hook computes what the backbone computes. Part
of the backbone suite (stadapt.model.conformance), kept apart for size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from stadapt.backbones.base import FrameBackbone
from stadapt.model.blocks import BlockHooks, run_blocks

NOT_PROVIDED = "not provided (optional): methods that need {hook} are refused on this backbone"


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """The largest difference relative to the reference's scale (at least 1); inf for another shape."""
    if a.shape != b.shape:
        return float("inf")
    return float((a - b).abs().max()) / max(1.0, float(b.abs().max()))


def block_inputs(backbone: FrameBackbone, images: torch.Tensor, frames: int) -> list[torch.Tensor]:
    """The tokens entering each block's attention branch for `images` (one clip of `frames` frames)."""
    seen: list[torch.Tensor] = []

    def keep(index: int, x: torch.Tensor) -> torch.Tensor:
        seen.append(x)
        return x

    with torch.no_grad():
        run_blocks(backbone, backbone.embed(images), BlockHooks(pre_attn=keep))
    return seen


def _per_block(inputs: list[torch.Tensor], hook: str, check: Callable[[int, torch.Tensor], None]) -> str:
    """Run `check` on every block; a NotImplementedError on every block means the hook is not provided,
    on some blocks only that it is provided for the others (e.g. a model mixing block kinds)."""
    missing: list[int] = []
    for index, x in enumerate(inputs):
        try:
            with torch.no_grad():
                check(index, x)
        except NotImplementedError:
            missing.append(index)
    if len(missing) == len(inputs):
        return NOT_PROVIDED.format(hook=hook)
    if missing:
        return f"{len(inputs) - len(missing)} of {len(inputs)} blocks (not blocks {missing})"
    return f"{len(inputs)} blocks"


def check_branch_split(backbone: FrameBackbone, inputs: list[torch.Tensor]) -> str:
    """attn_body(attn_norm(x)) == attn_branch(x) and mlp_body(mlp_norm(x)) == mlp_branch(x) (<= 1e-6)."""
    def check(index: int, x: torch.Tensor) -> None:
        attn = backbone.attn_body(index, backbone.attn_norm(index, x))
        error = _diff(attn, backbone.attn_branch(index, x))
        assert error <= 1e-6, f"block {index}: attn_body(attn_norm(x)) differs from attn_branch(x) by {error:.3g}"
        mlp = backbone.mlp_body(index, backbone.mlp_norm(index, x))
        error = _diff(mlp, backbone.mlp_branch(index, x))
        assert error <= 1e-6, f"block {index}: mlp_body(mlp_norm(x)) differs from mlp_branch(x) by {error:.3g}"

    return _per_block(inputs, "branch_split (attn_norm/attn_body, mlp_norm/mlp_body)", check)


def check_attention_projections(backbone: FrameBackbone, inputs: list[torch.Tensor]) -> str:
    """The attention recomputed from `attention_projections` equals attn_body on the normed tokens (<= 1e-5)."""
    def check(index: int, x: torch.Tensor) -> None:
        projections = backbone.attention_projections(index)
        try:
            h = backbone.attn_norm(index, x)
        except NotImplementedError as exc:
            raise AssertionError(f"block {index}: attention_projections is provided but attn_norm is not "
                                 "(the projections act on the normed tokens)") from exc
        q, k, v = projections.project(h)
        width = projections.qkv_weight.shape[0] // 3
        assert q.shape[1] == projections.num_heads and q.shape[1] * q.shape[-1] == width, \
            f"block {index}: q has shape {tuple(q.shape)} for {projections.num_heads} heads of total width {width}"
        error = _diff(projections.attend(q, k, v), backbone.attn_body(index, h))
        assert error <= 1e-5, f"block {index}: attention from attention_projections differs from attn_body by " \
                              f"{error:.3g}"

    return _per_block(inputs, "attention_projections", check)


def check_mlp_projections(backbone: FrameBackbone, inputs: list[torch.Tensor]) -> str:
    """The MLP's first linear layer takes the normed tokens and its last one gives the MLP body's output
    (<= 1e-6), both nn.Linear modules of the backbone: what a method folding into them relies on."""
    own = {id(m) for m in backbone.modules()}

    def check(index: int, x: torch.Tensor) -> None:
        layers = backbone.mlp_projections(index)
        assert len(layers) == 2 and all(isinstance(m, nn.Linear) and id(m) in own for m in layers), \
            f"block {index}: mlp_projections does not give two nn.Linear modules of the backbone"
        try:
            y = backbone.mlp_norm(index, x)
        except NotImplementedError as exc:
            raise AssertionError(f"block {index}: mlp_projections is provided but mlp_norm is not") from exc
        seen: dict[str, torch.Tensor] = {}

        def keep(name: str, tensor: torch.Tensor) -> None:  # a forward hook returning a tensor would replace it
            seen.setdefault(name, tensor)

        handles = [layers[0].register_forward_hook(lambda m, args, out: keep("first", args[0])),
                   layers[1].register_forward_hook(lambda m, args, out: keep("last", out))]
        try:
            out = backbone.mlp_body(index, y)
        finally:
            for handle in handles:
                handle.remove()
        assert len(seen) == 2, f"block {index}: mlp_body does not run the layers mlp_projections names"
        width = y.shape[-1]
        for name, got, want in (("first layer's input", seen["first"], y), ("last layer's output", seen["last"], out)):
            error = _diff(got.reshape(-1, width), want.reshape(-1, width))
            assert error <= 1e-6, f"block {index}: the MLP's {name} differs from the branch's by {error:.3g}"

    return _per_block(inputs, "mlp_projections", check)


def check_peft_targets(backbone: FrameBackbone, inputs: list[torch.Tensor]) -> str:
    """Every name resolves to an nn.Linear of the backbone, and no layer is named for two blocks."""
    named: dict[str, int] = {}

    def check(index: int, x: torch.Tensor) -> None:
        names = backbone.peft_target_modules(index)
        assert names, f"peft_target_modules({index}) names no layer"
        for name in names:
            try:
                module = backbone.get_submodule(name)
            except AttributeError as exc:
                raise AssertionError(f"peft_target_modules({index}) names {name!r}, not a module of the "
                                     "backbone") from exc
            assert isinstance(module, nn.Linear), \
                f"peft_target_modules({index}) names {name!r}, a {type(module).__name__}, not an nn.Linear"
            assert named.setdefault(name, index) == index, f"{name!r} is named for blocks {named[name]} and {index}"

    return _per_block(inputs, "peft_target_modules", check)


def check_attend_sequence(backbone: FrameBackbone, inputs: list[torch.Tensor]) -> str:
    """On the block's own tokens it equals the attention branch; along time (the frames as the sequence,
    AIM's use) it runs and is permutation-equivariant (<= 1e-5)."""
    def check(index: int, x: torch.Tensor) -> None:
        tokens = x.reshape(x.shape[0], -1, x.shape[-1])  # (T, L, C); a grid layout flattened
        own = backbone.attend_sequence(index, tokens)
        error = _diff(own, backbone.attn_branch(index, x).reshape(tokens.shape))
        assert error <= 1e-5, f"block {index}: attend_sequence on its own tokens differs from the attention " \
                              f"branch by {error:.3g}"
        along_time = tokens.transpose(0, 1)  # (L, T, C): each token position's sequence over the frames
        out = backbone.attend_sequence(index, along_time)
        assert out.shape == along_time.shape, f"block {index}: attend_sequence over time gave {tuple(out.shape)}"
        order = torch.arange(along_time.shape[1] - 1, -1, -1)
        error = _diff(backbone.attend_sequence(index, along_time[:, order]), out[:, order])
        assert error <= 1e-5, f"block {index}: attend_sequence is not permutation-equivariant over time " \
                              f"(differs by {error:.3g})"

    return _per_block(inputs, "attend_sequence", check)


HOOK_CHECKS: list[tuple[str, Callable[[FrameBackbone, list[torch.Tensor]], str]]] = [
    ("branch_split: each branch's norm and body compose to it", check_branch_split),
    ("attention_projections recompute the attention", check_attention_projections),
    ("peft_target_modules name nn.Linear layers of each block", check_peft_targets),
    ("attend_sequence runs a block's attention over any sequence", check_attend_sequence),
    ("mlp_projections are the MLP's first and last linear layers", check_mlp_projections),
]


def check_embed_split(backbone: FrameBackbone, images: torch.Tensor) -> str:
    """embed_norm(embed_tokens(images)) == embed(images) (<= 1e-6): the post_embed hook point changes nothing
    when nothing runs there."""
    with torch.no_grad():
        try:
            tokens = backbone.embed_tokens(images)
        except NotImplementedError:
            return NOT_PROVIDED.format(hook="embed_split (embed_tokens/embed_norm)")
        error = _diff(backbone.embed_norm(tokens), backbone.embed(images))
    assert error <= 1e-6, f"embed_norm(embed_tokens(x)) differs from embed(x) by {error:.3g}"
    return f"tokens {tuple(tokens.shape)} before the pre-blocks norm"


def check_final_norm_modules(backbone: FrameBackbone, images: torch.Tensor) -> str:
    """The modules named hold backbone parameters, and each of them takes part in the video features."""
    try:
        modules = backbone.final_norm_modules()
    except NotImplementedError:
        return NOT_PROVIDED.format(hook="final_norm_modules")
    params = [p for module in modules for p in module.parameters()]
    own = {id(p) for p in backbone.parameters()}
    assert params, "final_norm_modules() holds no parameters"
    assert all(id(p) in own for p in params), "final_norm_modules() holds parameters that are not the backbone's"
    with torch.no_grad():
        tokens = run_blocks(backbone, backbone.embed(images))
    flags = [p.requires_grad for p in params]
    try:
        with torch.enable_grad():
            for p in params:
                p.requires_grad_(True)
            features = backbone.video_norm(backbone.frame_features(tokens))
            grads = torch.autograd.grad(features.square().sum(), params, allow_unused=True)
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)
    unused = sum(g is None for g in grads)
    assert not unused, f"{unused} parameters of final_norm_modules() do not take part in the video features"
    return f"{sum(p.numel() for p in params):,} parameters"


EMBED_CHECKS: list[tuple[str, Callable[[FrameBackbone, torch.Tensor], str]]] = [
    ("embed_split: embed_tokens then embed_norm is embed", check_embed_split),
    ("final_norm_modules hold the final norm's parameters", check_final_norm_modules),
]
