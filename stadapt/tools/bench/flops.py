"""FLOPs of a forward pass, and the bf16 dense peaks of common GPUs, for `stadapt bench`.

FLOPs come from PyTorch's own `FlopCounterMode` (matmuls, convolutions, attention: 2 per multiply-add;
elementwise work, norms and softmax are not counted, as in every published GFLOPs figure). Its table
lacks the CPU's fused attention kernel, so that one is added here with PyTorch's own attention formula:
the count does not depend on the device it runs on.

The achieved fraction of the peak is (FLOPs per clip x clips/s) / the device's bf16 dense tensor-core
peak (no sparsity), looked up by the name CUDA reports; an unknown device gets no fraction, and says so.
"""

from __future__ import annotations

from typing import Any

# bf16 dense tensor-core peak in TFLOPS (vendor datasheets, no sparsity), by a piece of the name
# torch.cuda.get_device_name reports; the first match counts, so more specific names come first.
BF16_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("GH200", 989.0),
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM ("NVIDIA H100 80GB HBM3")
    ("H800", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("A6000", 155.0),
    ("V100", 0.0),  # no bf16 tensor cores
)


def bf16_peak_tflops(device_name: str) -> float | None:
    """The bf16 dense peak of a GPU by its CUDA name; None when the table does not know it (or when the
    GPU has no bf16 tensor cores)."""
    for piece, peak in BF16_PEAK_TFLOPS:
        if piece.lower() in device_name.lower():
            return peak or None
    return None


def _cpu_attention_flops() -> dict[Any, Any]:
    """FlopCounterMode's formula for the fused attention kernel the CPU runs (missing from its table)."""
    import torch
    from torch.utils.flop_counter import sdpa_flop_count

    def formula(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
        return sdpa_flop_count(query, key, value)

    ops = {}
    for name in ("_scaled_dot_product_flash_attention_for_cpu",):
        op = getattr(torch.ops.aten, name, None)
        if op is not None:
            ops[op] = formula
    return ops


def count_flops(model: Any, inputs: Any) -> int:
    """FLOPs of one forward pass of `model(inputs)` (run for real, no gradients)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_cpu_attention_flops()) as counter:
        model(inputs)
    return int(counter.get_total_flops())
