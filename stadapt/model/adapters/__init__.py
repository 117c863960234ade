"""Spatio-Temporal Adapters and where they go."""

from stadapt.model.adapters.config import POSITIONS, AdapterConfig
from stadapt.model.adapters.module import STAdapter

__all__ = ["POSITIONS", "AdapterConfig", "STAdapter"]
