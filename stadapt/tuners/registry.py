"""Discovery of tuning methods through the `stadapt.tuners` entry-point group.

The built-in methods (plugins/stadapt_tuners) and third-party ones are found the same way; the core never
imports a method by name. Listing reads package metadata only; loading imports the method's object.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.metadata import EntryPoint

from stadapt.entrypoints import PluginEntry, discover, import_entry
from stadapt.errors import PluginError, StadaptError
from stadapt.tuners.contract import Tuner
from stadapt.vocabulary import did_you_mean

GROUP = "stadapt.tuners"


class UnknownTunerError(StadaptError, ValueError):
    """A tuning method that is not installed; a ValueError too, as the model config raised before."""


@lru_cache(maxsize=None)
def _entry_points() -> dict[str, tuple[EntryPoint, PluginEntry]]:
    return discover(GROUP, "tuning method")


def installed_tuners() -> list[str]:
    """The names of every installed method, sorted, without importing any of them."""
    return sorted(_entry_points())


@lru_cache(maxsize=None)
def load_tuner(name: str) -> Tuner:
    """The method registered as `name`; one-line errors for an unknown name or a broken plugin."""
    eps = _entry_points()
    if name not in eps:
        names = sorted(eps)
        raise UnknownTunerError(
            f"tuning must be one of the installed methods ({', '.join(names) or 'none'}), got {name!r}",
            f"{did_you_mean(name, names)}`stadapt methods` lists them; a method from another package must be "
            "pip-installed first")
    ep, entry = eps[name]
    tuner = import_entry(ep, entry, "tuning method")
    if not isinstance(tuner, Tuner):
        raise PluginError(f"tuning method '{name}' from {entry.distribution} is a {type(tuner).__name__}, not a Tuner",
                          "register an instance of a stadapt.tuners.Tuner subclass")
    if tuner.name != name:
        raise PluginError(f"tuning method registered as '{name}' from {entry.distribution} calls itself '{tuner.name}'",
                          "make the entry-point name and the tuner's `name` agree")
    return tuner


def tuner_distribution(name: str) -> str:
    """The distribution that provides method `name` (e.g. 'stadapt 0.1.0')."""
    return _entry_points()[name][1].distribution


def methods_without_needs() -> list[str]:
    """The installed methods that need no optional backbone hook (what a backbone lacking one can run)."""
    out = []
    for name in installed_tuners():
        try:
            if not load_tuner(name).needs:
                out.append(name)
        except PluginError:
            continue
    return out


def clear_cache() -> None:
    """Forget discovered methods (after installing one at run time, and in tests)."""
    _entry_points.cache_clear()
    load_tuner.cache_clear()
