"""Tuning methods as plugins: the `Tuner` contract, the block loop's hook contract and entry-point discovery."""

from stadapt.tuners.contract import BACKBONE_HOOKS, PREFIX, ModelConfigError, Tuner, require_hooks
from stadapt.tuners.hooks import HOOK_POINTS, NO_HOOKS, POOLINGS, BlockHooks, EmbedHook, Hook, Observer
from stadapt.tuners.registry import GROUP, UnknownTunerError, clear_cache, installed_tuners, load_tuner

__all__ = ["BACKBONE_HOOKS", "GROUP", "HOOK_POINTS", "NO_HOOKS", "POOLINGS", "PREFIX", "BlockHooks", "EmbedHook",
           "Hook", "ModelConfigError", "Observer", "Tuner", "UnknownTunerError", "clear_cache", "installed_tuners",
           "load_tuner", "require_hooks"]
