"""Parameter counts of a backbone with and without ST-Adapters, without allocating its weights.

The model is built on PyTorch's `meta` device (shapes only), so even ViT-H/14 is counted in a second; a
text head (`model.head.type: text`) is the real one, its tower built without weights on the CPU.
"Without adapters" is the same frozen backbone and head (a linear probe): the adapters are the only
difference, so the two columns differ by exactly their parameters.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from stadapt.model.adapters import AdapterConfig, STAdapter

if TYPE_CHECKING:
    from stadapt.model.classifier import BuiltModel, ModelConfig
    from stadapt.model.text_head import HeadConfig


def parameter_report(backbone: str, *, adapter: AdapterConfig, num_classes: int = 400,
                     frames: int = 8) -> dict[str, Any]:
    """{backbone, adapter, num_classes, parts{backbone, adapters, head}, with_adapters{total, trainable},
    without_adapters{total, trainable}} for `backbone` ('plugin:variant')."""
    from stadapt.model.classifier import ModelConfig

    config = ModelConfig(backbone, num_classes, frames, adapter, dropout=0.0, tuning="st_adapter")
    built, parts, with_adapters = model_parameter_counts(config)
    model = built.model
    slots = list(model.adapters.children())  # st_adapter's: one BlockAdapters per adapted block
    bottlenecks = sorted({a.bottleneck for slot in slots for a in slot.children() if isinstance(a, STAdapter)})
    return {
        "backbone": f"{built.plugin.name}:{built.variant.name}",
        "image_size": built.variant.image_size,
        "num_classes": num_classes,
        "frames": frames,
        "adapter": {**adapter.to_dict(), "adapted_blocks": len(slots), "bottlenecks": bottlenecks},
        "parts": parts,
        "with_adapters": with_adapters,
        "without_adapters": {"total": with_adapters["total"] - parts["adapters"], "trainable": parts["head"]},
    }


def model_parameter_counts(config: ModelConfig) -> tuple[BuiltModel, dict[str, int], dict[str, int]]:
    """The model of `config` built on the meta device: (built, parts{backbone, adapters, head},
    {total, trainable} under the config's tuning)."""
    import torch

    from stadapt.model.classifier import build_model
    from stadapt.model.text_head import HeadConfig

    with torch.device("meta"):  # build_model reads a text head's weights: built linear, its text head put next
        built = build_model(replace(config, head=HeadConfig()))
    if config.head.text:
        _with_text_head(built, config.head)
    model = built.model
    parts = {
        "backbone": sum(p.numel() for p in model.backbone.parameters()),
        "adapters": sum(p.numel() for p in model.adapters.parameters()),
        "head": sum(p.numel() for p in model.head.parameters()),
    }
    return built, parts, model.parameter_counts()


def _with_text_head(built: BuiltModel, head: HeadConfig) -> None:
    """Replace the meta model's linear head by the text head `head`, as training builds it: the projection
    into the joint space (frozen) and, with `train`, a linear layer of (joint dim D) x classes over it.
    Its tower is the plugin's built without weights (random, nothing read; on the CPU, as the plugin builds
    it: seconds for a large model); the class embeddings are zeros of its D, their values count for nothing."""
    import torch

    from stadapt.model.text_head import TextHead

    config, model = built.config, built.model
    with torch.random.fork_rng(devices=[]):
        tower = built.plugin.text_tower(built.variant.name, None, **config.backbone_options)
    with torch.no_grad():
        dim = tower.project_image(torch.zeros(1, model.backbone.feature_width)).shape[-1]
    model.head = TextHead(tower, torch.zeros(config.num_classes, dim), train=head.train, dropout=config.dropout)
    model.set_tuning(config.tuning)  # the new head's parameters as the method wants them
    built.config = replace(config, head=head)


def format_parameter_report(report: dict[str, Any]) -> str:
    """The report as a two-column table (without / with adapters)."""
    a, parts = report["adapter"], report["parts"]
    size = "bottleneck " + (f"{a['bottleneck_ratio']:g} x width = " if a.get("bottleneck_ratio") else "")
    size += "/".join(str(b) for b in a["bottlenecks"])
    lines = [
        f"{report['backbone']} ({report['image_size']} px), {report['num_classes']} classes; adapters "
        f"{'+'.join(a['positions'])} in {a['adapted_blocks']} blocks, {size}, kernel "
        f"{'x'.join(str(k) for k in a['kernel'])}",
        f"{'':<10} {'without adapters':>17} {'with adapters':>17}",
    ]
    rows = [("backbone", parts["backbone"], parts["backbone"]), ("adapters", 0, parts["adapters"]),
            ("head", parts["head"], parts["head"])]
    for name, plain, adapted in rows:
        lines.append(f"{name:<10} {plain:>17,} {adapted:>17,}")
    plain, adapted = report["without_adapters"], report["with_adapters"]
    lines.append(f"{'total':<10} {plain['total']:>17,} {adapted['total']:>17,}")
    lines.append(f"{'trainable':<10} {plain['trainable']:>17,} {adapted['trainable']:>17,}")
    lines.append(f"{'':<10} {100 * plain['trainable'] / plain['total']:>16.2f}% "
                 f"{100 * adapted['trainable'] / adapted['total']:>16.2f}%")
    return "\n".join(lines)
