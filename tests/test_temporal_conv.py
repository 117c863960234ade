"""The adapter's temporal convolution: every form is the reference's depthwise Conv3d, exactly, over the
same parameters (so checkpoints do not change), and the per-device choice lives in one table."""

import pytest
import torch

from stadapt.backbones import TokenLayout
from stadapt.model.adapters import STAdapter
from stadapt.model.adapters.module import TEMPORAL_CONV, TEMPORAL_FORMS
from stadapt.tools.bench.temporal_conv import bench_temporal_conv, format_result

T = 5


def _adapter(kernel: int, layout: TokenLayout) -> STAdapter:
    torch.manual_seed(kernel)
    adapter = STAdapter(layout, T, bottleneck=12, kernel=(kernel, 1, 1)).double()
    with torch.no_grad():
        for p in adapter.parameters():
            p.copy_(torch.randn(p.shape, dtype=p.dtype) * 0.5)
    return adapter


def _run(adapter: STAdapter, form: str, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    adapter.temporal_conv = form
    adapter.zero_grad()
    x = x.clone().requires_grad_(True)
    y = adapter(x)
    (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)).sum().backward()
    grads = {name: p.grad.clone() for name, p in adapter.named_parameters()}
    grads["input"] = x.grad.clone()
    return y.detach(), grads


@pytest.mark.parametrize("kernel", [1, 3, 5])
@pytest.mark.parametrize("layout", [TokenLayout(width=16, grid=(3, 2), prefix_tokens=1),
                                    TokenLayout(width=16, grid=(2, 3), prefix_tokens=0, channels_last_grid=True)],
                         ids=["vit", "swin"])
@pytest.mark.parametrize("form", ["conv1d", "shift"])
def test_every_form_equals_conv3d_in_outputs_and_gradients(kernel, layout, form):
    adapter = _adapter(kernel, layout)
    x = torch.randn((3,) + layout.shape(T)[1:], dtype=torch.float64).repeat_interleave(T, 0)
    x = x + torch.randn_like(x)  # frames differ, so a wrong time shift shows
    want_y, want_g = _run(adapter, "conv3d", x)
    got_y, got_g = _run(adapter, form, x)
    torch.testing.assert_close(got_y, want_y, rtol=1e-12, atol=1e-12)
    assert want_g.keys() == got_g.keys()
    for name in want_g:
        torch.testing.assert_close(got_g[name], want_g[name], rtol=1e-12, atol=1e-12, msg=name)


@pytest.mark.parametrize("form", ["conv1d", "shift"])
def test_float32_forms_agree_tightly(form):
    adapter = _adapter(3, TokenLayout(width=32, grid=(4, 4), prefix_tokens=1)).float()
    x = torch.randn(2 * T, 17, 32)
    want_y, want_g = _run(adapter, "conv3d", x)
    got_y, got_g = _run(adapter, form, x)
    torch.testing.assert_close(got_y, want_y, rtol=1e-5, atol=1e-5)
    for name in want_g:  # float32 sums in another order: within 5e-5 of each tensor's largest entry
        scale = float(want_g[name].abs().max())
        torch.testing.assert_close(got_g[name], want_g[name], rtol=1e-5, atol=5e-5 * scale, msg=name)


def test_parameters_and_state_dict_are_the_same_whatever_the_form():
    adapter = _adapter(3, TokenLayout(width=16, grid=(3, 2)))
    names = {k: v.shape for k, v in adapter.state_dict().items()}
    adapter.temporal_conv = "shift"
    assert {k: v.shape for k, v in adapter.state_dict().items()} == names
    assert set(names) == {"fc1.weight", "fc1.bias", "conv.weight", "conv.bias", "fc2.weight", "fc2.bias"}


def test_the_choice_is_one_table_and_spatial_kernels_stay_conv3d():
    assert set(TEMPORAL_CONV.values()) <= set(TEMPORAL_FORMS)
    adapter = STAdapter(TokenLayout(width=8, grid=(3, 3)), T, bottleneck=4, kernel=(3, 3, 3))
    adapter.temporal_conv = "shift"
    assert adapter.form(torch.device("cpu")) == "conv3d"
    adapter = STAdapter(TokenLayout(width=8, grid=(3, 3)), T, bottleneck=4)
    assert adapter.form(torch.device("cpu")) == TEMPORAL_CONV["cpu"]
    adapter.temporal_conv = "winograd"
    with pytest.raises(ValueError, match="temporal_conv must be one of"):
        adapter.form(torch.device("cpu"))


def test_micro_benchmark_times_every_form():
    result = bench_temporal_conv(clips=1, frames=4, grid=4, bottleneck=8, runs=2, warmup=0)
    assert set(result["forms"]) == set(TEMPORAL_FORMS)
    assert all(f["ms"] > 0 for f in result["forms"].values())
    assert result["faster"] in TEMPORAL_FORMS and result["default"] == TEMPORAL_CONV["cpu"]
    assert "fastest:" in format_result(result)
