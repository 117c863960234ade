"""Exporting trained models for deployment (ONNX)."""

from __future__ import annotations

from stadapt.tools.export.onnx import default_verify_videos, export_onnx, verify_onnx

__all__ = ["default_verify_videos", "export_onnx", "verify_onnx"]
