"""Turning a model into an ONNX graph: PyTorch's dynamo (torch.export-based) exporter first, the
TorchScript exporter only when the dynamo one fails, and which one ran (and why) said in the result.

The dynamo exporter is the one PyTorch develops (the TorchScript exporter is deprecated); it exports
every built-in backbone family. The fallback stays for third-party backbones whose Python control
flow torch.export cannot capture but tracing can.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from stadapt.errors import StadaptError, first_line
from stadapt.fileio import DISK_FULL_ERRNOS

INPUT_NAME = "video"
OUTPUT_NAME = "logits"
EXPORTERS = ("auto", "dynamo", "torchscript")  # auto: dynamo, TorchScript only when dynamo fails
DEFAULT_OPSET = 18  # the dynamo exporter's own opset: no version conversion (which fails for Pad, Squeeze, ...)
_NOISY_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx", "torch.export", "torch._dynamo", "torch.fx")


@dataclass(frozen=True)
class ExportedGraph:
    """Which exporter wrote the graph, and why the dynamo exporter was not the one (None when it was)."""

    exporter: str
    fallback_reason: str | None = None


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc` (or what it wraps) is a full disk or quota, also when an exporter's C++ code only
    passes on the message: such a failure is not the exporter's, and another exporter cannot help."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in DISK_FULL_ERRNOS:
            return True
        if any(os.strerror(code) in str(current) for code in DISK_FULL_ERRNOS):
            return True
        current = current.__cause__ or current.__context__
    return False


def _reason(exc: BaseException) -> str:
    """`Type: first line` of the innermost explicitly chained cause (the dynamo exporter wraps the real
    torch.export error, e.g. a data-dependent branch, in a generic "step 1/3" message), colours removed."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return re.sub(r"\x1b\[[0-9;]*m", "", first_line(exc)).strip()


@contextlib.contextmanager
def _quiet_exporters() -> Iterator[None]:
    """Keep the exporters' progress lines, graph dumps, tracer warnings and optimizer notes ("Skipping
    constant folding ...") off the console: nothing in them is for the user to act on; what went wrong
    reaches the user through the exception (`_reason`)."""
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    chatter = io.StringIO()  # graph dumps and progress lines, printed by both exporters on failure too
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


@contextlib.contextmanager
def _mha_fastpath_off() -> Iterator[None]:
    """nn.MultiheadAttention's fused eval fast path (aten::_native_multi_head_attention) has no ONNX
    translation in the TorchScript exporter; the ordinary path computes the same thing."""
    mha = getattr(torch.backends, "mha", None)
    if mha is None or not hasattr(mha, "set_fastpath_enabled"):
        yield
        return
    before = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(before)


def _dynamo(model: torch.nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    """The torch.export-based exporter, with a dynamic batch dimension; refuses to write a graph of
    another opset than asked (its version converter falls back silently to its own opset)."""
    program = torch.onnx.export(
        model, (example,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
        dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), opset_version=opset, dynamo=True,
        external_data=False, verbose=False,
    )
    if program is None:  # only a file destination makes torch.onnx.export return nothing
        raise RuntimeError("it returned no program")
    produced = program.model.opset_imports.get("", opset)
    if produced != opset:
        raise RuntimeError(f"it could not convert the graph to opset {opset} (it made opset {produced})")
    program.save(str(path), external_data=False)


def _torchscript(model: torch.nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    torch.onnx.export(
        model, (example,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, opset_version=opset,
        do_constant_folding=True, dynamo=False,
    )


def export_graph(model: torch.nn.Module, example: torch.Tensor, path: Path, opset: int,
                 exporter: str = "auto") -> ExportedGraph:
    """Export `model` (called on `example`, batch dimension dynamic) to `path`: with `exporter="auto"` the
    dynamo exporter, or the TorchScript exporter when that fails; "dynamo" or "torchscript" use that one
    only (the TorchScript exporter is several times faster on small models). A full disk is no exporter's
    fault: it is raised as it is, not retried. Failing raises one StadaptError naming every reason."""
    if exporter not in EXPORTERS:
        raise StadaptError(f"unknown exporter {exporter!r}", f"choose one of: {', '.join(EXPORTERS)}")
    with _quiet_exporters(), torch.no_grad():
        if exporter == "torchscript":
            return _only_torchscript(model, example, path, opset)
        try:
            _dynamo(model, example, path, opset)
            return ExportedGraph("dynamo")
        except Exception as exc:
            if is_disk_full(exc):
                raise
            reason = f"the dynamo exporter failed: {_reason(exc)}"
            if exporter == "dynamo":
                raise StadaptError(f"the model could not be exported to ONNX ({reason})",
                                   "try --exporter torchscript or another --opset") from None
        path.unlink(missing_ok=True)
        try:
            with _mha_fastpath_off():
                _torchscript(model, example, path, opset)
            return ExportedGraph("torchscript", reason)
        except Exception as exc:
            if is_disk_full(exc):
                raise
            raise StadaptError(f"the model could not be exported to ONNX ({reason}; the TorchScript exporter "
                               f"failed too: {_reason(exc)})",
                               "try another --opset, or report this with the backbone name") from None


def _only_torchscript(model: torch.nn.Module, example: torch.Tensor, path: Path, opset: int) -> ExportedGraph:
    """The TorchScript exporter alone, as asked (`--exporter torchscript`): no fallback reason to give."""
    try:
        with _mha_fastpath_off():
            _torchscript(model, example, path, opset)
    except Exception as exc:
        if is_disk_full(exc):
            raise
        raise StadaptError(f"the model could not be exported to ONNX (the TorchScript exporter failed: "
                           f"{_reason(exc)})", "try --exporter dynamo or another --opset") from None
    return ExportedGraph("torchscript")
