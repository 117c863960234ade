"""What a backbone plugin builds: an image model seen as blocks with two residual branches.

The model a plugin builds is a `FrameBackbone`:

    embed(images) -> [transition -> pre_attn adapter -> x + attn_branch(x) -> pre_mlp adapter
                      -> x + mlp_branch(x)] per block -> frame_features -> (mean over time) -> video_norm

so the core places adapters on each block's residual stream without matching module names.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from stadapt.backbones.layout import TokenLayout

#: A module of the third-party model a plugin wraps (timm, open_clip, classy_vision): its members differ by
#: architecture and version, so plugins read them duck-typed (nn.Module's typed `__getattr__` would call
#: each one `Tensor | Module`).
ForeignModule = Any


class FrameBackbone(nn.Module):
    """A frozen per-frame image model, exposing each block's two residual branches.

    Subclasses implement the methods below; `native_forward` and `native_state_dict` exist for the
    conformance suite, which checks that the decomposition reproduces the model's own forward pass.
    """

    #: width of the per-frame features returned by `frame_features`
    feature_width: int

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised images -> tokens entering block 0."""
        raise NotImplementedError

    def block_layouts(self) -> list[TokenLayout]:
        """The token layout entering each block (after its transition); its length is the block count."""
        raise NotImplementedError

    def transition(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Work between blocks, applied before block `index` (e.g. Swin's patch merging)."""
        return x

    def attn_branch(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """The attention residual branch of block `index`: the block does x = x + attn_branch(x)."""
        raise NotImplementedError

    def mlp_branch(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """The MLP residual branch of block `index`: the block does x = x + mlp_branch(x)."""
        raise NotImplementedError

    def block_modules(self, index: int) -> list[nn.Module]:
        """The modules that hold block `index`'s parameters (all of them, nothing of another block or of
        the final norm): what `tuning=partial_finetune` trains for the last block. Optional part of the
        plugin contract; without it, that tuning mode is unavailable for the backbone."""
        raise NotImplementedError(
            f"{type(self).__name__} does not implement FrameBackbone.block_modules(index), the part of the "
            "backbone plugin contract (stadapt.backbones.base) that names each block's modules"
        )

    def frame_features(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens after the last block -> (N, feature_width) per-frame features, before the final norm."""
        raise NotImplementedError

    def video_norm(self, features: torch.Tensor) -> torch.Tensor:
        """The final norm, applied to features averaged over time (the reference's CLIP head)."""
        return features

    def native_forward(self, images: torch.Tensor) -> torch.Tensor:
        """The wrapped model's own forward to the normalised features, for the conformance suite."""
        raise NotImplementedError

    def block_attention(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """(N, L) attention weights of block `index` over its L tokens, averaged over the heads (rows sum to
        1), given the tokens `x` entering its attention branch: the [CLS] token's query where the layout has
        prefix tokens, else the mean over all queries (`stadapt.backbones.attention.query_attention`).
        Optional part of the contract: `stadapt visualize` needs it."""
        raise NotImplementedError(
            f"{type(self).__name__} does not implement FrameBackbone.block_attention(index, x), the part of the "
            "backbone plugin contract (stadapt.backbones.base) that `stadapt visualize` reads attention through"
        )

    def fit_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A weights file's tensors, already converted to this backbone's keys, fitted to the backbone as
        built with its options (e.g. position embeddings of another image size resampled, with a printed
        notice); what does not fit is left as it is, so the load names it. Default: unchanged."""
        return state_dict

    def native_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights in the plugin's native file layout (what `convert_state_dict` reads)."""
        return self.state_dict()
