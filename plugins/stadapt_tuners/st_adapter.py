"""ST-Adapter (Pan et al., NeurIPS 2022) as a tuning method: spatio-temporal adapters before the attention
and/or the MLP branch of each adapted block; the backbone frozen, the adapters and the head train."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from stadapt.recipe.schema import AdapterSection
from stadapt.tuners import NO_HOOKS, BlockHooks, Hook, ModelConfigError, Tuner

if TYPE_CHECKING:  # torch only when a model is built: a recipe's validation asks this tuner too
    import torch
    from torch import nn

    from stadapt.backbones.base import FrameBackbone
    from stadapt.model.adapters.config import AdapterConfig


class StAdapterTuner(Tuner):
    """Settings from the recipe's `adapter:` section (an AdapterConfig in the model and its checkpoints)."""

    name = "st_adapter"
    summary = "ST-Adapters (depth-wise 3D conv in a bottleneck) on the frozen backbone, and the head"
    section = "adapter"
    settings = AdapterSection

    def read_settings(self, data: Mapping[str, Any] | None) -> AdapterConfig:
        from stadapt.model.adapters.config import AdapterConfig

        if isinstance(data, AdapterConfig):
            return data
        return AdapterConfig() if data is None else AdapterConfig.from_dict(data)

    def settings_dict(self, settings: Any) -> dict[str, Any] | None:
        return None if settings is None else cast("AdapterConfig", settings).to_dict()

    def recipe_problems(self, settings: Any) -> list[tuple[str, str]]:
        """`adapter.blocks: []` would silently train the head alone."""
        blocks = settings.get("blocks") if isinstance(settings, Mapping) else getattr(settings, "blocks", None)
        if blocks is not None and not blocks:
            return [("blocks", "is empty, so tuning: st_adapter would train no adapters (a linear probe); list "
                               "the blocks to adapt (or leave it unset for every block), or set tuning: linear for "
                               "a head-only model")]
        return []

    def check_fits(self, settings: Any, backbone: FrameBackbone, backbone_name: str) -> None:
        """Every index in adapter.blocks must name one of the backbone's blocks (only the plugin knows how many)."""
        num_blocks = len(backbone.block_layouts())
        if settings is None or settings.blocks is None:
            return
        outside = [b for b in settings.blocks if not -num_blocks <= b < num_blocks]
        if outside:
            which = f"block {outside[0]} does" if len(outside) == 1 else f"blocks {', '.join(map(str, outside))} do"
            raise ModelConfigError(
                f"adapter.blocks: {which} not exist: {backbone_name} has {num_blocks} blocks, "
                f"valid indices are 0 to {num_blocks - 1} (or -{num_blocks} to -1, counting from the end)",
                "list blocks in that range, or leave adapter.blocks unset to adapt every block",
            )

    def attach(self, backbone: FrameBackbone, num_frames: int, settings: Any) -> nn.Module:
        from torch import nn

        from stadapt_tuners.modules import BlockAdapters

        layouts = backbone.block_layouts()
        modules = nn.ModuleDict()
        if settings is not None:
            for index in settings.block_indices(len(layouts)):
                modules[str(index)] = BlockAdapters(layouts[index], num_frames, settings)
        return modules

    def hooks(self, modules: nn.Module, checkpointing: bool | str,
              backbone: FrameBackbone | None = None) -> BlockHooks:
        """The adapters at pre_attn / pre_mlp; the checkpointing levels that name them keep only each
        adapter's input (pre_mlp's is recomputed with the MLP branch under "mlp")."""
        from torch.utils.checkpoint import checkpoint

        slots = cast("nn.ModuleDict", modules)
        if not len(slots):
            return NO_HOOKS

        def hook(position: str, recompute: bool) -> Hook:
            def run(index: int, x: torch.Tensor) -> torch.Tensor:
                slot = slots[str(index)] if str(index) in slots else None
                adapter = getattr(slot, position) if slot is not None else None
                if adapter is None:
                    return x
                return checkpoint(adapter, x, use_reentrant=False) if recompute else adapter(x)
            return run

        return BlockHooks(pre_attn=hook("pre_attn", checkpointing in ("adapters", "mlp")),
                          pre_mlp=hook("pre_mlp", checkpointing == "adapters"))

    def trainable(self, parts: Mapping[str, nn.Module]) -> Sequence[nn.Module]:
        return [parts["adapters"]]
