"""Entry-point discovery, shared by the plugin groups (backbones, tuning methods): who provides each name,
two distributions claiming one name refused, and an import failure named with its distribution.

Listing reads package metadata only; `import_entry` imports one plugin's object.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from stadapt.errors import PluginError


@dataclass(frozen=True)
class PluginEntry:
    """An installed plugin as its package metadata declares it."""

    name: str
    target: str
    distribution: str

    @classmethod
    def from_entry_point(cls, ep: EntryPoint) -> PluginEntry:
        dist = ep.dist
        label = f"{dist.metadata['Name']} {dist.version}" if dist is not None else "an unknown distribution"
        return cls(name=ep.name, target=ep.value, distribution=label)


def discover(group: str, kind: str) -> dict[str, tuple[EntryPoint, PluginEntry]]:
    """The entry points of `group` by name; `kind` ("backbone plugin") names them in the refusal of two
    distributions registering one name (the same distribution seen twice on sys.path is one)."""
    found: dict[str, tuple[EntryPoint, PluginEntry]] = {}
    for ep in entry_points(group=group):
        entry = PluginEntry.from_entry_point(ep)
        if ep.name in found:
            other = found[ep.name][1]
            if (other.target, other.distribution) == (entry.target, entry.distribution):
                continue
            raise PluginError(
                f"two {kind}s are named '{ep.name}': {other.target} from {other.distribution} "
                f"and {entry.target} from {entry.distribution}",
                "uninstall one of the two distributions",
            )
        found[ep.name] = (ep, entry)
    return found


def import_entry(ep: EntryPoint, entry: PluginEntry, kind: str) -> object:
    """The object `ep` registers; any failure inside a third party's code is one line naming its distribution."""
    try:
        return ep.load()
    except Exception as exc:
        raise PluginError(
            f"{kind} '{entry.name}' ({entry.target}) from {entry.distribution} failed to import: "
            f"{type(exc).__name__}: {exc}",
            f"reinstall or upgrade {entry.distribution.split()[0]}",
        ) from exc
