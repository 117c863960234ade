"""What a backbone plugin builds: an image model seen as blocks with two residual branches.

The model a plugin builds is a `FrameBackbone`:

    embed(images) -> [transition -> pre_attn adapter -> x + attn_branch(x) -> pre_mlp adapter
                      -> x + mlp_branch(x)] per block -> frame_features -> (mean over time) -> video_norm

so the core places adapters on each block's residual stream without matching module names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from stadapt.backbones.layout import TokenLayout

if TYPE_CHECKING:
    from stadapt.backbones.attention import AttentionProjections

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

    # The optional hooks tuning methods need (issue 25): each raises NotImplementedError naming itself where a
    # plugin does not provide it, and a method that needs one is refused naming hook and backbone
    # (stadapt.tuners.contract.BACKBONE_HOOKS); the conformance suite checks those provided.

    def attn_norm(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """The norm opening block `index`'s attention branch, so that a method can work between the norm and
        the attention (AIM, ZeroI2V): attn_branch(i, x) == attn_body(i, attn_norm(i, x)). Optional."""
        raise _missing(self, "attn_norm(index, x)", "splits the attention branch into its norm and its body")

    def attn_body(self, index: int, y: torch.Tensor) -> torch.Tensor:
        """The attention branch after its norm: attention, output projection, layer scale, drop-path. Optional."""
        raise _missing(self, "attn_body(index, y)", "splits the attention branch into its norm and its body")

    def mlp_norm(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """The norm opening block `index`'s MLP branch: mlp_branch(i, x) == mlp_body(i, mlp_norm(i, x)). Optional."""
        raise _missing(self, "mlp_norm(index, x)", "splits the MLP branch into its norm and its body")

    def mlp_body(self, index: int, y: torch.Tensor) -> torch.Tensor:
        """The MLP branch after its norm: MLP, layer scale, drop-path. Optional."""
        raise _missing(self, "mlp_body(index, y)", "splits the MLP branch into its norm and its body")

    def attention_projections(self, index: int) -> AttentionProjections:
        """Block `index`'s attention as its packed q/k/v projection, output projection, head count and layer
        scale, such that `attention_projections(i)(attn_norm(i, x)) == attn_body(i, attn_norm(i, x))` in eval
        mode: a method re-runs the attention with modified keys/values (ZeroI2V's STDHA) or folds weights into
        it (merge). Optional; only where the attention is plain softmax attention over those projections (no
        q/k norms, rotary embeddings or relative position biases)."""
        raise _missing(self, "attention_projections(index)", "exposes the attention's q/k/v and output projections")

    def mlp_projections(self, index: int) -> tuple[nn.Linear, nn.Linear]:
        """Block `index`'s MLP as its first and last linear layers (the model's live modules), such that in eval
        mode the first takes the normed tokens `mlp_norm(i, x)` and the last's output is `mlp_body`'s (no layer
        scale after it): a method folds its own linear maps into them (ZeroI2V's merge). Optional; only where the
        MLP is plain (linear, activation, linear) and nothing follows its last layer."""
        raise _missing(self, "mlp_projections(index)", "exposes the MLP's first and last linear layers")

    def peft_target_modules(self, index: int) -> list[str]:
        """Names, relative to this backbone module (as PEFT's `target_modules` takes them), of the nn.Linear
        layers of block `index` that LoRA-style methods adapt: the attention's q/k/v and output projections
        and the MLP's layers, wherever they are nn.Linear modules. Optional."""
        raise _missing(self, "peft_target_modules(index)", "names the linear layers PEFT targets")

    def attend_sequence(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        """Block `index`'s attention branch without the residual, attn_body(attn_norm(tokens)), over ANY
        (N, L, C) token sequence, with no assumption on what the L tokens are (no position embedding, window
        or class token): AIM runs it along time over (L*B, T, C). Optional; only for global attention."""
        raise _missing(self, "attend_sequence(index, tokens)", "runs a block's attention over any token sequence")

    def embed_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """`embed` up to its pre-blocks norm: the tokens with their position embedding, where AIM and ZeroI2V
        add a temporal embedding before CLIP's ln_pre; embed(x) == embed_norm(embed_tokens(x)). Optional."""
        raise _missing(self, "embed_tokens(images)", "splits the embedding before its pre-blocks norm")

    def embed_norm(self, x: torch.Tensor) -> torch.Tensor:
        """The rest of `embed` after `embed_tokens` (CLIP's ln_pre; the identity without one). Optional."""
        raise _missing(self, "embed_norm(x)", "splits the embedding before its pre-blocks norm")

    def final_norm_modules(self) -> list[nn.Module]:
        """The modules holding the final norm's parameters (what `video_norm` applies), which AIM trains
        (its ln_post). Optional."""
        raise _missing(self, "final_norm_modules()", "names the final norm's modules")

    def fit_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A weights file's tensors, already converted to this backbone's keys, fitted to the backbone as
        built with its options (e.g. position embeddings of another image size resampled, with a printed
        notice); what does not fit is left as it is, so the load names it. Default: unchanged."""
        return state_dict

    def native_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights in the plugin's native file layout (what `convert_state_dict` reads)."""
        return self.state_dict()


def _missing(backbone: FrameBackbone, hook: str, what: str) -> NotImplementedError:
    """The error of an optional hook a plugin does not provide: one line naming the hook and the class."""
    return NotImplementedError(f"{type(backbone).__name__} does not implement FrameBackbone.{hook}, the optional "
                               f"hook of the backbone plugin contract (stadapt.backbones.base) that {what}")


def linear_names(root: nn.Module, *modules: nn.Module) -> list[str]:
    """The names, relative to `root`, of the nn.Linear layers among `modules` and their submodules, in
    `root`'s order: what `peft_target_modules` returns, built from the modules rather than guessed names."""
    wanted = {id(m) for module in modules for m in module.modules() if isinstance(m, nn.Linear)}
    return [name for name, m in root.named_modules() if id(m) in wanted]
