"""The `Tuner` contract: what every tuning method (ST-Adapter, the baselines, a third party's) declares.

A method is a plugin, found through the `stadapt.tuners` entry-point group (stadapt.tuners.registry), as
PEFT has one config + tuner per method. The model asks its tuner, never a method's name: which settings
it reads (and from which recipe section), what it attaches and at which hook points of the one block loop,
which parameters train, whether the backbone runs in train mode, what it needs from a backbone and
whether it merges into the backbone's weights.

A method's modules live on the model as `model.adapters`, so its tensors are keyed `adapters.<name>` in a
checkpoint (the keys checkpoints have always had) and form the optimizer's `adapters` group; trained
backbone parameters keep their `backbone.` keys and group, the head its `head.` ones.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel

from stadapt.errors import PluginError, StadaptError
from stadapt.tuners.hooks import NO_HOOKS, BlockHooks

if TYPE_CHECKING:  # a recipe's validation asks a tuner for its section and settings without importing torch
    from torch import nn

    from stadapt.backbones.base import FrameBackbone

PREFIX = "adapters"  # the model attribute holding a method's modules, and their checkpoint key prefix


class ModelConfigError(StadaptError, ValueError):
    """A model description that does not fit its backbone (e.g. an adapter block the backbone lacks); a
    ValueError too, as the library raised before it became a user-facing error."""


def _last_block_modules(backbone: FrameBackbone) -> object:
    return backbone.block_modules(len(backbone.block_layouts()) - 1)


def _last_block_tokens(backbone: FrameBackbone) -> tuple[int, Any]:
    """The last block's index and one frame of zero tokens in its layout, on the backbone's device and in
    its dtype (the meta device too): what a probe runs a hook on."""
    import torch

    layouts = backbone.block_layouts()
    param = next(backbone.parameters(), None)
    tokens = torch.zeros(layouts[-1].shape(1))
    return len(layouts) - 1, tokens if param is None else tokens.to(param.device, param.dtype)


def _branch_split(backbone: FrameBackbone) -> object:
    import torch

    index, x = _last_block_tokens(backbone)
    with torch.no_grad():
        return backbone.attn_body(index, backbone.attn_norm(index, x)), backbone.mlp_body(
            index, backbone.mlp_norm(index, x))


def _attend_sequence(backbone: FrameBackbone) -> object:
    import torch

    index, x = _last_block_tokens(backbone)
    with torch.no_grad():  # two tokens of the block's width, standing for any sequence (e.g. along time)
        return backbone.attend_sequence(index, x.reshape(-1, x.shape[-1])[None, :2])


def _embed_split(backbone: FrameBackbone) -> object:
    import torch

    from stadapt.backbones.base import FrameBackbone

    if type(backbone).embed_tokens is FrameBackbone.embed_tokens:
        return backbone.embed_tokens(torch.zeros(0))  # raises the NotImplementedError naming the hook
    _, x = _last_block_tokens(backbone)
    with torch.no_grad():  # the norm on tokens of the blocks' width: the probe knows no image size
        return backbone.embed_norm(x)


# The optional backbone hooks a method may need (a Tuner's `needs` names them; FrameBackbone documents each):
# each probe raises NotImplementedError when the backbone lacks it, and runs on the last block only.
BACKBONE_HOOKS: dict[str, Callable[[FrameBackbone], object]] = {
    "block_modules": _last_block_modules,
    "branch_split": _branch_split,  # attn_norm / attn_body, mlp_norm / mlp_body
    "attention_projections": lambda b: b.attention_projections(len(b.block_layouts()) - 1),
    "mlp_projections": lambda b: b.mlp_projections(len(b.block_layouts()) - 1),
    "peft_target_modules": lambda b: b.peft_target_modules(len(b.block_layouts()) - 1),
    "attend_sequence": _attend_sequence,
    "embed_split": _embed_split,  # embed_tokens / embed_norm: where the post_embed hook point runs
    "final_norm_modules": lambda b: b.final_norm_modules(),
}


class Tuner(ABC):
    """A tuning method. Subclass it, set the class attributes, implement `trainable` (and `attach` and
    `hooks` when the method inserts modules), and register an instance under `stadapt.tuners`."""

    name: ClassVar[str]
    """The method's name: what `tuning: NAME` selects; the entry point's name too."""
    summary: ClassVar[str]
    """One line for `stadapt methods`."""
    section: ClassVar[str | None] = None
    """The recipe section holding its settings (e.g. `adapter`); None when it has none."""
    settings: ClassVar[type[BaseModel] | None] = None
    """Its typed settings with the paper's defaults (a pydantic model), or None."""
    needs: ClassVar[tuple[str, ...]] = ()
    """The optional backbone hooks it requires (names of BACKBONE_HOOKS)."""
    pooling: ClassVar[str] = "mean_then_norm"
    """How per-frame features become a video's (stadapt.tuners.hooks.POOLINGS): the mean over time then the
    final norm, or `norm_then_mean`, the final norm per frame (AIM's and ZeroI2V's)."""
    backbone_train_mode: ClassVar[bool] = False
    """Whether the backbone runs in train mode (dropout, drop-path on): full fine-tuning only; a frozen or
    partly trained backbone keeps its inference behaviour."""

    def read_settings(self, data: Mapping[str, Any] | None) -> Any:
        """The settings `attach` takes, from a recipe section or a checkpoint's record (None: defaults)."""
        if self.settings is None:
            return None
        return self.settings.model_validate(dict(data or {}))

    def settings_dict(self, settings: Any) -> dict[str, Any] | None:
        """What a checkpoint records of `settings` (read back by `read_settings`)."""
        if settings is None:
            return None
        return settings.model_dump(mode="json") if isinstance(settings, BaseModel) else dict(settings)

    def recipe_problems(self, settings: Any) -> list[tuple[str, str]]:
        """(key within the section, problem) pairs a recipe is refused with, e.g. settings that train nothing.
        `settings` is the recipe's section as plain data (a dict with the defaults filled in, as YAML and the
        recipe give it), not the typed settings `read_settings` returns to `check_fits` and `attach`."""
        return []

    def check_fits(self, settings: Any, backbone: FrameBackbone, backbone_name: str) -> None:
        """Refuse settings that do not fit the backbone (ModelConfigError), before anything is built."""
        return None

    def attach(self, backbone: FrameBackbone, num_frames: int, settings: Any) -> nn.Module | None:
        """The modules the method inserts, initialised (stored as `model.adapters`); None: it inserts none."""
        return None

    def hooks(self, modules: nn.Module, checkpointing: bool | str,
              backbone: FrameBackbone | None = None) -> BlockHooks:
        """What runs at the block loop's hook points. `checkpointing` is the model's activation-checkpointing
        level while training with gradients (False otherwise): "adapters" and "mlp" ask the method to keep
        only its modules' inputs. `backbone` is there for hooks that call the backbone (AIM runs a block's
        attention along time): passed here, not registered in `modules`, so that its parameters are not
        keyed twice in a state dict."""
        return NO_HOOKS

    def train_mode_modules(self, parts: Mapping[str, nn.Module]) -> Sequence[nn.Module]:
        """Modules inside a frozen backbone that follow the model's train / eval mode while the rest of the
        backbone keeps its inference behaviour: a method's layers injected into the backbone (PEFT's LoRA
        layers), whose dropout must act in training. Default: none."""
        return []

    @abstractmethod
    def trainable(self, parts: Mapping[str, nn.Module]) -> Sequence[nn.Module]:
        """The modules whose parameters train besides the head (which always trains), given the model's
        parts `backbone`, `adapters` and `head`: they decide the optimizer groups by the part they are in."""

    def checkpoint_keys(self, parts: Mapping[str, nn.Module]) -> list[str]:
        """The checkpoint keys of the tensors that train, sorted: `<part>.<parameter name>`."""
        chosen = {id(p) for module in [*self.trainable(parts), parts["head"]] for p in module.parameters()}
        return sorted(f"{part}.{name}" for part, module in parts.items()
                      for name, p in module.named_parameters() if id(p) in chosen)

    @property
    def merges(self) -> bool:
        """Whether the method folds into the backbone's weights (it overrides `merge`)."""
        return type(self).merge is not Tuner.merge

    def merge(self, backbone: FrameBackbone, modules: nn.Module, settings: Any) -> Any:
        """Fold the method's modules into the backbone's weights, in place, keeping the logits, and return
        the merged model's settings: what `attach` builds from them holds only what does not fold (e.g.
        ZeroI2V's temporal embedding, under the same keys), and the backbone's keys are its native ones
        again. stadapt.model.merge builds the merged model around the same backbone from them."""
        raise StadaptError(f"tuning={self.name} does not merge into the backbone",
                           "`stadapt methods` says which methods merge")


def require_hooks(tuner: Tuner, backbone: FrameBackbone, backbone_name: str,
                  alternatives: Callable[[], list[str]] | None = None) -> None:
    """Refuse, in one line naming the hook and the backbone, a method whose backbone hook is missing."""
    for hook in tuner.needs:
        probe = BACKBONE_HOOKS.get(hook)
        if probe is None:
            raise PluginError(f"tuning method '{tuner.name}' needs an unknown backbone hook '{hook}'",
                              f"known hooks: {', '.join(BACKBONE_HOOKS)}")
        try:
            probe(backbone)
        except NotImplementedError as exc:
            others = alternatives() if alternatives is not None else []
            listed = ", ".join(f"tuning={n}" for n in others)
            raise PluginError(
                f"tuning={tuner.name} needs the backbone hook {hook}, which {backbone_name} does not provide "
                f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})",
                f"use {listed or 'another method'} with this backbone (`stadapt methods` lists them)",
            ) from exc
