"""The optional FrameBackbone hooks tuning methods need (branch split, attention projections, PEFT targets,
attention over any sequence), for timm's ViT / Eva and Swin backbones; kept apart from backbone.py, whose
branches they split, so that each module stays readable.
"""

from __future__ import annotations

import torch
from torch import nn

from stadapt.backbones.attention import AttentionProjections
from stadapt.backbones.base import ForeignModule, FrameBackbone, linear_names

_PLAIN_ATTENTION = ("Attention", "EvaAttention", "AttentionRope")


def layer_scale(block: ForeignModule, which: int) -> torch.Tensor | None:
    """The per-channel layer scale of branch `which` (1: attention, 2: MLP): timm's ViT `ls1`/`ls2` modules
    (their `gamma`), Eva's `gamma_1`/`gamma_2` parameters; None where there is none."""
    module = getattr(block, f"ls{which}", None)
    if module is not None:
        return getattr(module, "gamma", None)
    return getattr(block, f"gamma_{which}", None)


def scaled(block: ForeignModule, which: int, x: torch.Tensor) -> torch.Tensor:
    """x through the layer scale of branch `which`, as timm's block applies it."""
    module = getattr(block, f"ls{which}", None)
    if module is not None:
        return module(x)
    gamma = getattr(block, f"gamma_{which}", None)
    return x if gamma is None else gamma * x


def _identity(module: object) -> bool:
    return module is None or isinstance(module, nn.Identity)


def plain_mlp(block: ForeignModule, index: int) -> tuple[nn.Linear, nn.Linear]:
    """(fc1, fc2) of a block whose MLP is timm's plain `Mlp` (linear, activation, dropout, no norm, linear) and
    whose MLP branch has no layer scale after it: what `mlp_projections` gives."""
    mlp = block.mlp
    fc1, fc2 = getattr(mlp, "fc1", None), getattr(mlp, "fc2", None)
    if not (type(mlp).__name__ == "Mlp" and isinstance(fc1, nn.Linear) and isinstance(fc2, nn.Linear)
            and _identity(getattr(mlp, "norm", None)) and layer_scale(block, 2) is None):
        raise NotImplementedError(f"block {index}'s timm {type(mlp).__name__} is not a plain Mlp with nothing after "
                                  "its fc2 (a gated MLP, a norm inside it or a layer scale after it), so it has no "
                                  "mlp_projections")
    return fc1, fc2


class ViTHooks(FrameBackbone):
    """The hooks of timm's ViT and Eva blocks. Post-norm blocks (ResPostBlock, EvaBlockPostNorm) have no
    norm opening their branches, so they do not split; rotary embeddings tie the attention to the patch
    grid, so an Eva with rope has no `attention_projections` or `attend_sequence`."""

    _blocks: list[ForeignModule]
    _post_norm: list[bool]

    def _attend(self, index: int, h: torch.Tensor) -> torch.Tensor:
        """The block's attention module on its normed input (the backbone passes its rotary embedding)."""
        return self._blocks[index].attn(h)

    def _rope(self, index: int) -> torch.Tensor | None:
        return None

    def _pre_norm(self, index: int, hook: str) -> ForeignModule:
        if self._post_norm[index]:
            raise NotImplementedError(f"block {index} of this timm model normalises after its branches "
                                      f"(a post-norm block), so it has no {hook}")
        return self._blocks[index]

    def attn_norm(self, index: int, x: torch.Tensor) -> torch.Tensor:
        return self._pre_norm(index, "attn_norm").norm1(x)

    def attn_body(self, index: int, y: torch.Tensor) -> torch.Tensor:
        block = self._pre_norm(index, "attn_body")
        return block.drop_path1(scaled(block, 1, self._attend(index, y)))

    def mlp_norm(self, index: int, x: torch.Tensor) -> torch.Tensor:
        return self._pre_norm(index, "mlp_norm").norm2(x)

    def mlp_body(self, index: int, y: torch.Tensor) -> torch.Tensor:
        block = self._pre_norm(index, "mlp_body")
        return block.drop_path2(scaled(block, 2, block.mlp(y)))

    def attention_projections(self, index: int) -> AttentionProjections:
        """timm's fused `qkv` Linear (its live weight; Eva's q/k/v biases concatenated) or Eva's separate
        q/k/v projections (concatenated: a copy), `proj` and the layer scale; refused where the attention
        is not plain softmax attention over them (q/k norms, a scale norm, a gate, rotary embeddings,
        grouped-query heads) or the block is post-norm."""
        attn = self._pre_norm(index, "attention_projections").attn
        kind = type(attn).__name__
        plain = (kind in _PLAIN_ATTENTION and _identity(getattr(attn, "q_norm", None))
                 and _identity(getattr(attn, "k_norm", None)) and _identity(getattr(attn, "norm", None))
                 and getattr(attn, "gate", None) is None and self._rope(index) is None
                 and getattr(attn, "num_kv_heads", attn.num_heads) == attn.num_heads)
        if not plain:
            raise NotImplementedError(f"block {index}'s timm {kind} is not plain softmax attention over its "
                                      "projections (q/k norm, scale norm, gate, rotary embedding or grouped "
                                      "heads), so it has no attention_projections")
        if getattr(attn, "qkv", None) is not None:
            weight, bias = attn.qkv.weight, attn.qkv.bias
            if getattr(attn, "q_bias", None) is not None:
                bias = torch.cat((attn.q_bias, attn.k_bias, attn.v_bias))
        else:
            weight = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
            biases = [attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]
            bias = None if any(b is None for b in biases) else torch.cat(biases)
        return AttentionProjections(weight, bias, attn.proj, int(attn.num_heads), layer_scale(self._blocks[index], 1))

    def mlp_projections(self, index: int) -> tuple[nn.Linear, nn.Linear]:
        """timm's plain `Mlp` (`fc1`, activation, `fc2`, no norm inside); refused for SwiGLU / GLU MLPs, a
        block whose MLP is followed by a layer scale (DINOv2's `ls2`, Eva's `gamma_2`) or a post-norm block."""
        return plain_mlp(self._pre_norm(index, "mlp_projections"), index)

    def peft_target_modules(self, index: int) -> list[str]:
        """Every nn.Linear of the block's attention (`qkv`, or Eva's `q_proj`/`k_proj`/`v_proj`; `proj`) and of
        its MLP (`fc1`, `fc2`; SwiGLU's `fc1_g`, `fc1_x`, `fc2`), named from the backbone (`model.blocks.i...`)."""
        block = self._blocks[index]
        return linear_names(self, block.attn, block.mlp)

    def attend_sequence(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        """The attention branch over any (N, L, C) sequence: timm's attention is global and, without rotary
        embeddings, position-free (positions enter at `embed`)."""
        if self._rope(index) is not None:
            raise NotImplementedError(f"block {index} applies rotary position embeddings of the patch grid, so "
                                      "its attention cannot run over another token sequence (attend_sequence)")
        block = self._blocks[index]
        if self._post_norm[index]:
            return block.drop_path1(block.norm1(self._attend(index, tokens)))
        return self.attn_body(index, self.attn_norm(index, tokens))


class SwinHooks(FrameBackbone):
    """The hooks of timm's Swin blocks: the branch split (Swin's pre-norm blocks; SwinV2 normalises after
    its branches) and the PEFT targets. Window attention with relative position biases has neither plain
    projections nor a meaning over another token sequence."""

    _blocks: list[ForeignModule]
    _post_norm: bool

    def _pre_norm(self, index: int, hook: str) -> ForeignModule:
        if self._post_norm:
            raise NotImplementedError(f"SwinV2 blocks normalise after their branches, so they have no {hook}")
        return self._blocks[index]

    def attn_norm(self, index: int, x: torch.Tensor) -> torch.Tensor:
        return self._pre_norm(index, "attn_norm").norm1(x)

    def attn_body(self, index: int, y: torch.Tensor) -> torch.Tensor:
        block = self._pre_norm(index, "attn_body")
        return block.drop_path1(block._attn(y))

    def mlp_norm(self, index: int, x: torch.Tensor) -> torch.Tensor:
        return self._pre_norm(index, "mlp_norm").norm2(x)

    def mlp_body(self, index: int, y: torch.Tensor) -> torch.Tensor:
        block = self._pre_norm(index, "mlp_body")
        batch, height, width, channels = y.shape
        out = block.drop_path2(block.mlp(y.reshape(batch, -1, channels)))  # timm runs the MLP on (N, H*W, C)
        return out.reshape(batch, height, width, channels)

    def mlp_projections(self, index: int) -> tuple[nn.Linear, nn.Linear]:
        """The MLP's `fc1` and `fc2` (Swin's pre-norm blocks have no layer scale)."""
        return plain_mlp(self._pre_norm(index, "mlp_projections"), index)

    def attention_projections(self, index: int) -> AttentionProjections:
        raise NotImplementedError("Swin's window attention adds relative position biases (SwinV2: cosine "
                                  "logits too), so it has no plain attention_projections")

    def peft_target_modules(self, index: int) -> list[str]:
        """The window attention's `qkv` and `proj` and the MLP's `fc1` and `fc2` (not SwinV2's position-bias MLP)."""
        block = self._blocks[index]
        return linear_names(self, block.attn.qkv, block.attn.proj, block.mlp)

    def attend_sequence(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("Swin attends within shifted windows of its patch grid with relative position "
                                  "biases, not over any token sequence, so it has no attend_sequence")
