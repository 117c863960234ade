"""Hugging Face PEFT's LoRA (Hu et al., ICLR 2022), DoRA (Liu et al., ICML 2024) and IA3 (Liu et al., NeurIPS
2022) as tuning methods: PEFT's own layers, injected into the frozen backbone with `peft.inject_adapter_in_model`
on the nn.Linear layers the backbone plugin names (`FrameBackbone.peft_target_modules`), so the adapted layers
compute exactly what PEFT computes on the same image model.

The injected tensors live inside the backbone, so their checkpoint keys are PEFT's own under `backbone.`
(`backbone.<layer>.lora_A.default.weight`, `...lora_magnitude_vector.default.weight`, `...ia3_l.default`) and
they form the optimizer's `backbone` group (`optim.scale.backbone` scales them). `merge` folds them with PEFT's
own `merge()` and puts each base layer back, so the merged backbone has its native keys again.

peft is imported only when a model is built (`stadapt methods` and a recipe's validation stay fast).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast

from pydantic import BaseModel, ConfigDict, Field

from stadapt.tuners import ModelConfigError, Tuner

if TYPE_CHECKING:  # torch only when a model is built: a recipe's validation asks these tuners too
    from torch import nn

    from stadapt.backbones.base import FrameBackbone

Targets = Literal["attention", "mlp", "all"]
_ATTENTION_WORDS = ("attn", "attention")
_MLP_WORDS = ("mlp", "ffn", "feed_forward", "feedforward")


class _PeftSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    blocks: tuple[int, ...] | None = None
    """The blocks whose layers are adapted (negative indices count from the end); null: every block."""
    merged: bool = False
    """Set by `merge`: the adapters are folded into the backbone's weights, so nothing is injected."""


class LoraSettings(_PeftSettings):
    """The `lora:` (and `dora:`) section of a recipe, with PEFT's LoraConfig defaults."""

    r: int = Field(8, ge=1)
    """The rank of each low-rank update (PEFT's `r`)."""
    alpha: float = Field(8.0, gt=0)
    """The update is scaled by alpha / r (alpha / sqrt(r) with `rslora`): PEFT's `lora_alpha`."""
    dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the input of each update, in training (PEFT's `lora_dropout`)."""
    rslora: bool = False
    """Rank-stabilised scaling alpha / sqrt(r) (Kalajdzievski 2023; PEFT's `use_rslora`)."""
    targets: Targets = "all"
    """Which of the backbone's linear layers are adapted, per block: `attention` (q/k/v and output
    projections where they are nn.Linear layers; CLIP's packed q/k/v is not), `mlp`, or `all` of those the
    backbone plugin names (what PEFT's `all-linear` selects in a block)."""


class Ia3Settings(_PeftSettings):
    """The `ia3:` section of a recipe: IA3's learned vectors on the chosen layers, with PEFT's IA3Config
    semantics (an MLP layer's input is rescaled, any other layer's output)."""

    targets: Targets = "all"
    """Which of the backbone's linear layers get a vector: `attention`, `mlp` (the feed-forward modules,
    whose inputs are rescaled) or `all`."""


def layer_kind(name: str) -> str | None:
    """`attention` or `mlp` for a layer's path, from its nearest enclosing module named like one (timm's
    `attn` / `mlp`, CLIP's `attn` / `mlp`, SWAG's `self_attention` / `mlp`); None when none is."""
    for part in reversed(name.lower().split(".")[:-1]):
        if any(word in part for word in _ATTENTION_WORDS):
            return "attention"
        if any(word in part for word in _MLP_WORDS):
            return "mlp"
    return None


def _block_indices(settings: _PeftSettings, num_blocks: int) -> list[int]:
    if settings.blocks is None:
        return list(range(num_blocks))
    return sorted({b % num_blocks for b in settings.blocks})


def target_names(backbone: FrameBackbone, settings: _PeftSettings, targets: str) -> list[str]:
    """The layers (names relative to the backbone) that `targets` selects in the chosen blocks."""
    names: list[str] = []
    for index in _block_indices(settings, len(backbone.block_layouts())):
        names += [n for n in backbone.peft_target_modules(index) if targets == "all" or layer_kind(n) == targets]
    return names


def adapter_layers(backbone: nn.Module) -> list[tuple[str, nn.Module]]:
    """PEFT's injected layers (its BaseTunerLayer wrappers) in the backbone, by name."""
    return [(name, m) for name, m in backbone.named_modules()
            if hasattr(m, "adapter_layer_names") and hasattr(m, "base_layer")]


class PeftTuner(Tuner):
    """What LoRA, DoRA and IA3 share: PEFT injects its layers into the backbone; they and the head train."""

    needs: ClassVar[tuple[str, ...]] = ("peft_target_modules",)
    settings: ClassVar[type[_PeftSettings]]

    def read_settings(self, data: Mapping[str, Any] | None) -> Any:
        return data if isinstance(data, self.settings) else self.settings.model_validate(dict(data or {}))

    def peft_config(self, settings: Any, names: list[str], backbone: FrameBackbone) -> Any:
        """PEFT's config of the method on the layers `names`."""
        raise NotImplementedError

    def recipe_problems(self, settings: Any) -> list[tuple[str, str]]:
        """`blocks: []` would train the head alone; `merged` is what `Tuner.merge` records, not a choice."""
        data = settings if isinstance(settings, Mapping) else {}
        problems = []
        if data.get("blocks") is not None and not data["blocks"]:
            problems.append(("blocks", f"is empty, so tuning: {self.name} would adapt no layer (a linear probe); "
                                       "list the blocks to adapt, or leave it unset for every block"))
        if data.get("merged"):
            problems.append(("merged", "is set when a trained model is merged (stadapt merge), not in a recipe: "
                                       "remove it"))
        return problems

    def check_fits(self, settings: Any, backbone: FrameBackbone, backbone_name: str) -> None:
        """Every index in `blocks` names a block, and `targets` selects a layer in each chosen block."""
        settings = self.read_settings(settings)
        num_blocks = len(backbone.block_layouts())
        outside = [b for b in settings.blocks or () if not -num_blocks <= b < num_blocks]
        if outside:
            raise ModelConfigError(
                f"{self.section}.blocks: block {outside[0]} does not exist: {backbone_name} has {num_blocks} blocks, "
                f"valid indices are 0 to {num_blocks - 1} (or -{num_blocks} to -1, counting from the end)",
                f"list blocks in that range, or leave {self.section}.blocks unset to adapt every block")
        if settings.merged:
            return
        for index in _block_indices(settings, num_blocks):
            names = backbone.peft_target_modules(index)
            if not any(settings.targets == "all" or layer_kind(n) == settings.targets for n in names):
                raise ModelConfigError(
                    f"{self.section}.targets: {settings.targets} selects no linear layer in block {index} of "
                    f"{backbone_name} (its PEFT targets: {', '.join(names) or 'none'})",
                    f"set {self.section}.targets to all")

    def attach(self, backbone: FrameBackbone, num_frames: int, settings: Any) -> nn.Module | None:
        """Inject PEFT's layers into the backbone in place (nothing once merged); the method keeps no
        modules of its own (`model.adapters` stays empty)."""
        from stadapt.extras import require

        settings = self.read_settings(settings)
        if settings.merged:
            return None
        peft = require("peft", extra="peft", what=f"tuning={self.name}")
        names = target_names(backbone, settings, settings.targets)
        peft.inject_adapter_in_model(self.peft_config(settings, names, backbone), backbone)
        return None

    def trainable(self, parts: Mapping[str, nn.Module]) -> Sequence[nn.Module]:
        """The injected layers' adapter tensors (lora_A / lora_B / DoRA's magnitude, ia3_l), not their base
        layers."""
        return [getattr(layer, attr) for _, layer in adapter_layers(parts["backbone"])
                for attr in cast("tuple[str, ...]", layer.adapter_layer_names) if hasattr(layer, attr)]

    def train_mode_modules(self, parts: Mapping[str, nn.Module]) -> Sequence[nn.Module]:
        """The injected layers follow the model's mode, so that LoRA's dropout acts in training (their base
        layers are nn.Linear: no mode of their own)."""
        return [layer for _, layer in adapter_layers(parts["backbone"])]

    def merge(self, backbone: FrameBackbone, modules: nn.Module, settings: Any) -> Any:
        """PEFT's own merge of each injected layer into its base layer's weight, then the base layer back in
        its place (what `merge_and_unload` does): the backbone's keys are its native ones again."""
        for name, layer in adapter_layers(backbone):
            layer.merge()  # type: ignore[operator]
            parent, _, child = name.rpartition(".")
            setattr(backbone.get_submodule(parent) if parent else backbone, child, layer.get_base_layer())  # type: ignore[operator]
        return self.read_settings(settings).model_copy(update={"merged": True})


class LoraTuner(PeftTuner):
    """LoRA: W x + (alpha / r) B A x on the chosen linear layers, B zero-initialised (PEFT's LoraConfig)."""

    name = "lora"
    summary = "LoRA (PEFT): low-rank updates of the backbone's linear layers, and the head"
    section = "lora"
    settings = LoraSettings
    use_dora: ClassVar[bool] = False

    def peft_config(self, settings: Any, names: list[str], backbone: FrameBackbone) -> Any:
        from peft import LoraConfig

        return LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                          use_rslora=settings.rslora, use_dora=self.use_dora, target_modules=names)


class DoraTuner(LoraTuner):
    """DoRA: LoRA's direction update with a learned per-output magnitude (PEFT's LoraConfig(use_dora=True))."""

    name = "dora"
    summary = "DoRA (PEFT): LoRA plus a learned magnitude per output of each adapted layer, and the head"
    section = "dora"
    use_dora = True


class Ia3Tuner(PeftTuner):
    """IA3: learned vectors rescaling the chosen layers' outputs (an MLP layer's input), initialised to ones."""

    name = "ia3"
    summary = "IA3 (PEFT): learned rescaling vectors on the backbone's linear layers, and the head"
    section = "ia3"
    settings = Ia3Settings

    def peft_config(self, settings: Any, names: list[str], backbone: FrameBackbone) -> Any:
        from peft import IA3Config

        return IA3Config(target_modules=names, feedforward_modules=[n for n in names if layer_kind(n) == "mlp"])

    def train_mode_modules(self, parts: Mapping[str, nn.Module]) -> Sequence[nn.Module]:
        return []  # IA3 has no dropout: its layers keep the frozen backbone's mode
