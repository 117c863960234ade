"""Spatio-Temporal Adapters and where they go."""

from stadapt.adapters.config import POSITIONS, AdapterConfig
from stadapt.adapters.module import STAdapter

__all__ = ["POSITIONS", "AdapterConfig", "STAdapter"]
