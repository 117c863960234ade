"""The STAdapter module against the reference spec: patch tokens only, fc1, depthwise temporal conv, fc2."""

import pytest
import torch

from stadapt.backbones import TokenLayout
from stadapt.model.adapters import STAdapter

LAYOUT = TokenLayout(width=16, grid=(3, 2), prefix_tokens=1)
T = 4


def _randomise(adapter: STAdapter, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def test_identity_at_init_with_reference_init():
    adapter = STAdapter(LAYOUT, T, bottleneck=8)
    assert torch.count_nonzero(adapter.conv.weight) == 0 and torch.count_nonzero(adapter.conv.bias) == 0
    assert torch.count_nonzero(adapter.fc1.bias) == 0 and torch.count_nonzero(adapter.fc2.bias) == 0
    assert torch.count_nonzero(adapter.fc1.weight) > 0 and torch.count_nonzero(adapter.fc2.weight) > 0
    x = torch.randn(2 * T, 7, 16)
    assert torch.equal(adapter(x), x)


def test_matches_the_spec_formula_and_leaves_cls_and_input_alone():
    adapter = STAdapter(LAYOUT, T, bottleneck=8, kernel=(3, 1, 1))
    _randomise(adapter)
    x = torch.randn(2 * T, 7, 16)
    before, version = x.clone(), x._version
    y = adapter(x)
    assert torch.equal(x, before) and x._version == version, "the block input was written in place"
    assert torch.equal(y[:, 0], x[:, 0]), "the CLS token changed"
    # the spec, by hand: z = fc1(patches); out_t = w0 z_{t-1} + w1 z_t + w2 z_{t+1} + b; y = patches + fc2(out)
    z = (x[:, 1:] @ adapter.fc1.weight.T + adapter.fc1.bias).reshape(2, T, 6, 8)
    w = adapter.conv.weight.reshape(8, 3)
    padded = torch.nn.functional.pad(z, (0, 0, 0, 0, 1, 1))
    out = padded[:, :-2] * w[:, 0] + padded[:, 1:-1] * w[:, 1] + padded[:, 2:] * w[:, 2] + adapter.conv.bias
    expected = x[:, 1:] + (out.reshape(2 * T, 6, 8) @ adapter.fc2.weight.T + adapter.fc2.bias)
    torch.testing.assert_close(y[:, 1:], expected, rtol=1e-5, atol=1e-5)


def test_learns_after_one_step_on_a_real_loss():
    adapter = STAdapter(LAYOUT, T, bottleneck=8)
    x = torch.randn(2 * T, 7, 16)
    target = torch.randn(2 * T, 7, 16)
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=1e-2)
    before = adapter(x).detach()
    torch.nn.functional.mse_loss(adapter(x), target).backward()
    assert adapter.conv.weight.grad is not None and adapter.conv.weight.grad.abs().sum() > 0
    optimizer.step()
    after = adapter(x).detach()
    assert not torch.equal(after[:, 1:], before[:, 1:]), "the adapter output did not move"
    assert torch.equal(after[:, 0], x[:, 0])


def test_channels_last_grid_and_larger_kernels():
    layout = TokenLayout(width=16, grid=(4, 4), prefix_tokens=0, channels_last_grid=True)
    adapter = STAdapter(layout, T, bottleneck=8, kernel=(3, 3, 3))
    assert adapter.conv.padding == (1, 1, 1)
    x = torch.randn(2 * T, 4, 4, 16)
    assert torch.equal(adapter(x), x)
    _randomise(adapter)
    assert adapter(x).shape == x.shape


def test_frames_of_one_clip_are_contiguous():
    """Changing clip 1 never changes clip 0; changing frame 1 of a clip changes its frame 0."""
    adapter = STAdapter(LAYOUT, T, bottleneck=8)
    _randomise(adapter)
    x = torch.randn(2 * T, 7, 16)
    y = adapter(x)
    other = x.clone()
    other[T:] += 1  # clip 1
    torch.testing.assert_close(adapter(other)[:T], y[:T], rtol=0, atol=0)
    neighbour = x.clone()
    neighbour[1] += 1  # frame 1 of clip 0
    assert not torch.equal(adapter(neighbour)[0], y[0])


@pytest.mark.parametrize("kernel", [(2, 1, 1), (3, 1), (0, 1, 1)])
def test_rejects_bad_kernels(kernel):
    with pytest.raises(ValueError):
        STAdapter(LAYOUT, T, bottleneck=8, kernel=kernel)
