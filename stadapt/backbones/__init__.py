"""Backbone plugins: the protocol and entry-point discovery (the conformance suite, which builds models,
is stadapt.model.conformance, a layer above).

Importing this package does not import torch (FrameBackbone is loaded on first use), so listing
plugins stays instant.
"""

from typing import Any

from stadapt.backbones.layout import TokenLayout
from stadapt.backbones.plugin import BackbonePlugin, VariantInfo
from stadapt.backbones.registry import (
    GROUP,
    PluginEntry,
    clear_cache,
    installed_plugins,
    load_plugin,
    parse_backbone,
    resolve_variant,
)

__all__ = [
    "GROUP",
    "BackbonePlugin",
    "FrameBackbone",
    "PluginEntry",
    "TokenLayout",
    "VariantInfo",
    "clear_cache",
    "installed_plugins",
    "load_plugin",
    "parse_backbone",
    "resolve_variant",
]


def __getattr__(name: str) -> Any:
    if name == "FrameBackbone":
        from stadapt.backbones.base import FrameBackbone

        return FrameBackbone
    raise AttributeError(f"module 'stadapt.backbones' has no attribute {name!r}")
