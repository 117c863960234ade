"""Discovery of backbone plugins through the `stadapt.backbones` entry-point group.

Built-in plugins and third-party ones are found the same way; the core never imports a plugin by
name. Loading is lazy: listing the installed plugins imports only their small plugin objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from importlib.metadata import EntryPoint
from typing import Any

from stadapt.backbones.plugin import BackbonePlugin, VariantInfo
from stadapt.entrypoints import PluginEntry, discover, import_entry
from stadapt.errors import PluginError, UnknownBackboneError
from stadapt.vocabulary import did_you_mean

GROUP = "stadapt.backbones"


@lru_cache(maxsize=None)
def _entry_points() -> dict[str, tuple[EntryPoint, PluginEntry]]:
    return discover(GROUP, "backbone plugin")


def installed_plugins() -> list[PluginEntry]:
    """Every installed plugin, sorted by name, without importing any of them."""
    return [entry for _, entry in sorted(_entry_points().values(), key=lambda pair: pair[1].name)]


@lru_cache(maxsize=None)
def load_plugin(name: str) -> BackbonePlugin:
    """Import the plugin registered as `name`; errors name the distribution that provides it."""
    eps = _entry_points()
    if name not in eps:
        names = sorted(eps)
        raise UnknownBackboneError(
            f"unknown backbone plugin '{name}'; installed: {', '.join(names) or 'none'}",
            f"{did_you_mean(name, names)}`stadapt backbones` lists plugins and variants; "
            "a plugin from another package must be pip-installed first",
        )
    ep, entry = eps[name]
    plugin: Any = import_entry(ep, entry, "backbone plugin")
    missing = [attr for attr in ("variants", "build") if not callable(getattr(plugin, attr, None))]
    if missing:
        raise PluginError(
            f"backbone plugin '{name}' from {entry.distribution} lacks {', '.join(missing)}()",
            "a plugin must follow stadapt.backbones.BackbonePlugin",
        )
    if getattr(plugin, "name", name) != name:
        raise PluginError(
            f"backbone plugin registered as '{name}' from {entry.distribution} calls itself '{plugin.name}'",
            "make the entry-point name and the plugin's `name` agree",
        )
    return plugin


def plugin_distribution(name: str) -> str:
    """The distribution that provides plugin `name` (e.g. 'stadapt 0.1.0')."""
    return _entry_points()[name][1].distribution


def resolve_variant(plugin: BackbonePlugin, variant: str) -> VariantInfo:
    """The plugin's variant called `variant` or one of its aliases (case-insensitive), else whatever the
    plugin's `resolve_variant` accepts (open-ended plugins: any model their library builds)."""
    variants = plugin.variants()
    if variant in variants:
        return variants[variant]
    lowered = variant.lower()
    for info in variants.values():
        if lowered == info.name.lower() or lowered in (a.lower() for a in info.aliases):
            return info
    resolved = plugin.resolve_variant(variant)
    if resolved is not None:
        return resolved
    names = list(variants)
    known = names if not plugin.open_ended else plugin.search("*")
    listed = f"variants: {', '.join(names)}" + (" (and any name `stadapt backbones --search` finds)"
                                                 if plugin.open_ended else "")
    raise UnknownBackboneError(
        f"backbone plugin '{plugin.name}' has no variant '{variant}'; {listed}",
        f"{did_you_mean(variant, known, n=3 if plugin.open_ended else 1)}use {plugin.name}:VARIANT",
    )


def parse_backbone(spec: str, options: Mapping[str, Any] | None = None) -> tuple[BackbonePlugin, VariantInfo]:
    """'clip:ViT-B-16' -> (the clip plugin, the ViT-B-16 variant), as built with `options`."""
    name, sep, variant = spec.partition(":")
    if not sep or not name or not variant:
        raise UnknownBackboneError(
            f"backbone '{spec}' is not of the form PLUGIN:VARIANT", "e.g. clip:ViT-B-16; `stadapt backbones` lists them"
        )
    plugin = load_plugin(name)
    info = resolve_variant(plugin, variant)
    return plugin, plugin.configure(info, options) if options else info


def clear_cache() -> None:
    """Forget discovered plugins (after installing one at run time, and in tests)."""
    _entry_points.cache_clear()
    load_plugin.cache_clear()
