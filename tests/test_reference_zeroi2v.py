"""Self-checks of tests/reference_zeroi2v.py, the plain-torch port of leexinhao/ZeroI2V's model (no stadapt)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from reference_zeroi2v import (
    STDHA,
    ResidualAttentionBlock_ZeroI2V,
    TemporalShift,
    build_tiny_zeroi2v,
    build_tiny_zeroi2v_eval,
    merge_linear_adapters,
    save_mmaction_checkpoint,
    zero_init_adapters,
)
from torch import nn

T = 4
WIDTH = 96
FOLD = WIDTH // 12


def _video(batch: int = 2, seed: int = 1, frames: int = T) -> torch.Tensor:
    return torch.randn(batch, 3, frames, 32, 32, generator=torch.Generator().manual_seed(seed))


# the keys of a ZeroI2V checkpoint's state_dict as read from the repository (vit_zero_clip.py module order:
# ViT_Zero_CLIP's own parameters, then conv1, ln_pre, transformer.resblocks.N, ln_post; each block attn, ln_1,
# mlp, ln_2, MLP_Adapter, MLP_Adapter_out, S_Adapter, T_Adapter_in; Recognizer3D's cls_head.fc_cls)
_BLOCK = [
    "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias",
    "ln_1.weight", "ln_1.bias",
    "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias",
    "ln_2.weight", "ln_2.bias",
    "MLP_Adapter.D_fc1.weight", "MLP_Adapter.D_fc1.bias", "MLP_Adapter.D_fc2.weight", "MLP_Adapter.D_fc2.bias",
    "MLP_Adapter_out.D_fc1.weight", "MLP_Adapter_out.D_fc1.bias",
    "MLP_Adapter_out.D_fc2.weight", "MLP_Adapter_out.D_fc2.bias",
    "S_Adapter.D_fc1.weight", "S_Adapter.D_fc1.bias", "S_Adapter.D_fc2.weight", "S_Adapter.D_fc2.bias",
    "T_Adapter_in.D_fc1.weight", "T_Adapter_in.D_fc1.bias", "T_Adapter_in.D_fc2.weight", "T_Adapter_in.D_fc2.bias",
]


def _expected_keys(layers: int, num_tadapter: int = 2, adapters: bool = True) -> list[str]:
    block = [k for k in _BLOCK if adapters and (num_tadapter == 2 or "MLP_Adapter_out" not in k)
             or "Adapter" not in k]
    keys = ["backbone.class_embedding", "backbone.positional_embedding", "backbone.temporal_embedding",
            "backbone.conv1.weight", "backbone.ln_pre.weight", "backbone.ln_pre.bias"]
    for i in range(layers):
        keys += [f"backbone.transformer.resblocks.{i}.{k}" for k in block]
    return keys + ["backbone.ln_post.weight", "backbone.ln_post.bias", "cls_head.fc_cls.weight", "cls_head.fc_cls.bias"]


@pytest.fixture(scope="module")
def model():
    return build_tiny_zeroi2v(seed=0)


def test_shapes(model):
    video = _video()
    with torch.no_grad():
        features = model.backbone(video)
        logits = model(video)
    assert features.shape == (2, WIDTH, T, 1, 1)
    assert logits.shape == (2, 5)
    assert torch.isfinite(logits).all()
    # the I3D head: mean over T, (dropout off in eval), fc_cls
    expected = model.cls_head.fc_cls(features.flatten(2).mean(-1))
    torch.testing.assert_close(logits, expected)
    # several views of one video: softmax averaged over views
    views = torch.stack([_video(1, seed=s)[0] for s in (1, 2, 3)]).unsqueeze(0)
    with torch.no_grad():
        averaged = model.predict_views(views)
        single = torch.softmax(model(views[0]), dim=-1).mean(0, keepdim=True)
    torch.testing.assert_close(averaged, single)


def test_every_path_is_live(model):
    """Adapters, temporal embedding and shift each change the logits (so a comparison against this port
    exercises them)."""
    video = _video()
    with torch.no_grad():
        base = model(video)
        for adapter in ("T_Adapter_in", "S_Adapter", "MLP_Adapter", "MLP_Adapter_out"):
            other = build_tiny_zeroi2v(seed=0)
            for blk in other.backbone.transformer.resblocks:
                nn.init.zeros_(getattr(blk, adapter).D_fc2.weight)
                nn.init.zeros_(getattr(blk, adapter).D_fc2.bias)
            assert (other(video) - base).abs().max() > 1e-3, adapter
        other = build_tiny_zeroi2v(seed=0)
        other.backbone.temporal_embedding.zero_()
        assert (other(video) - base).abs().max() > 1e-3
        other = build_tiny_zeroi2v(seed=0)
        for blk in other.backbone.transformer.resblocks:
            blk.attn.time_shift.fold_div = 10**9  # fold 0: no channel moves
        assert (other(video) - base).abs().max() > 1e-3
    assert model.backbone.temporal_embedding.abs().min() > 0


def test_temporal_embedding_is_per_frame_on_every_token(model):
    """The rearranges: frame t of clip b is row b*T + t, and temporal_embedding[0, t] goes to all its tokens."""
    bb = model.backbone
    video = _video()
    seen = {}
    handle = bb.ln_pre.register_forward_hook(lambda m, args, out: seen.setdefault("x", args[0]))
    with torch.no_grad():
        bb(video)
        handle.remove()
        for b in range(video.shape[0]):
            for t in range(T):
                patches = bb.conv1(video[b, :, t][None]).flatten(2)[0].T
                tokens = torch.cat([bb.class_embedding[None], patches]) + bb.positional_embedding
                tokens = tokens + bb.temporal_embedding[0, t]
                torch.testing.assert_close(seen["x"][b * T + t], tokens)


def test_temporal_shift_channels_and_edges():
    """Over the whole width: [0, C/12) from t-1, [C/12, 2C/12) from t+1, the rest own; edges keep their own."""
    shift = TemporalShift(num_frames=T, n_head=12, n_div=12, divide_head=False)
    n, b = 3, 2
    x = torch.randn(n, b * T, WIDTH)
    out = shift(x).view(n, b, T, WIDTH)
    feat = x.view(n, b, T, WIDTH)
    for t in range(T):
        prev_t = t - 1 if t > 0 else t  # frame 0 keeps its own
        next_t = t + 1 if t < T - 1 else t  # the last frame keeps its own
        torch.testing.assert_close(out[:, :, t, :FOLD], feat[:, :, prev_t, :FOLD], rtol=0, atol=0)
        torch.testing.assert_close(out[:, :, t, FOLD:2 * FOLD], feat[:, :, next_t, FOLD:2 * FOLD], rtol=0, atol=0)
        torch.testing.assert_close(out[:, :, t, 2 * FOLD:], feat[:, :, t, 2 * FOLD:], rtol=0, atol=0)
    # the heads play no part (divide_head=False): with 4 heads of 24 channels the same channels move
    torch.testing.assert_close(TemporalShift(T, 4, n_div=12)(x), shift(x), rtol=0, atol=0)


def test_temporal_shift_long_shift():
    """stdha_ablation's long shift (SSv2/u32 configs): [2f, 3f) from t-2, and with long_shift_right [3f, 4f) from
    t+2; frames without that neighbour keep their own."""
    shift = TemporalShift(num_frames=T, n_head=12, n_div=12, long_shift_div=12, long_shift_right=True)
    x = torch.randn(2, T, WIDTH)
    out, feat = shift(x).view(2, 1, T, WIDTH), x.view(2, 1, T, WIDTH)
    for t in range(T):
        src_l = t - 2 if t >= 2 else t
        src_r = t + 2 if t < T - 2 else t
        torch.testing.assert_close(out[:, :, t, 2 * FOLD:3 * FOLD], feat[:, :, src_l, 2 * FOLD:3 * FOLD])
        torch.testing.assert_close(out[:, :, t, 3 * FOLD:4 * FOLD], feat[:, :, src_r, 3 * FOLD:4 * FOLD])
        torch.testing.assert_close(out[:, :, t, 4 * FOLD:], feat[:, :, t, 4 * FOLD:])


def _independent_stdha(attn: STDHA, x: torch.Tensor, frames: int) -> torch.Tensor:
    """STDHA restated: project, replace k/v channel slices by the neighbouring frames', then SDPA."""
    n, bt, c = x.shape
    heads, f = attn.num_heads, c // 12
    q, k, v = (x @ attn.in_proj_weight.T + attn.in_proj_bias).split(c, dim=-1)

    def shift(z):
        z = z.reshape(n, bt // frames, frames, c)
        prev = torch.cat([z[:, :, :1], z[:, :, :-1]], dim=2)  # frame t-1, frame 0 its own
        nxt = torch.cat([z[:, :, 1:], z[:, :, -1:]], dim=2)  # frame t+1, the last its own
        return torch.cat([prev[..., :f], nxt[..., f:2 * f], z[..., 2 * f:]], dim=-1).reshape(n, bt, c)

    k, v = shift(k), shift(v)
    split = [z.reshape(n, bt, heads, c // heads).permute(1, 2, 0, 3) for z in (q, k, v)]
    out = F.scaled_dot_product_attention(*split).permute(2, 0, 1, 3).reshape(n, bt, c)
    return out @ attn.out_proj.weight.T + attn.out_proj.bias


def test_stdha_matches_a_restatement_and_plain_mha_without_frames():
    torch.manual_seed(0)
    attn = STDHA(embed_dim=WIDTH, num_heads=12, num_frames=T, shift_div=12, divide_head=False).eval()
    x = torch.randn(5, 2 * T, WIDTH)
    with torch.no_grad():
        torch.testing.assert_close(attn(x, x, x, need_weights=False)[0], _independent_stdha(attn, x, T))
        # one frame per clip: nothing to shift, so STDHA is torch's MultiheadAttention
        single = STDHA(embed_dim=WIDTH, num_heads=12, num_frames=1, shift_div=12, divide_head=False).eval()
        single.load_state_dict(attn.state_dict())
        ours = single(x, x, x, need_weights=False)[0]
        torch_mha = nn.MultiheadAttention.forward(single, x, x, x, need_weights=False)[0]
        torch.testing.assert_close(ours, torch_mha)


def test_stdha_moves_information_to_the_neighbouring_frames_only():
    """One layer, adapters off (upstream init): changing frame t's input changes frames t-1, t, t+1's outputs,
    not t+2's."""
    torch.manual_seed(0)
    blk = ResidualAttentionBlock_ZeroI2V(WIDTH, 12, scale=0.5, num_tadapter=2, num_frames=T,
                                         stdha_cfg={"shift_div": 12, "divide_head": False}).eval()
    zero_init_adapters(blk)
    x = torch.randn(5, 2 * T, WIDTH)
    t = 1
    y = x.clone()
    y[:, t] += torch.randn(5, WIDTH)  # clip 0, frame t
    with torch.no_grad():
        diff = (blk(y) - blk(x)).abs().amax(dim=(0, 2)).view(2, T)
    assert diff[0, t - 1] > 1e-4 and diff[0, t] > 1e-4 and diff[0, t + 1] > 1e-4
    assert diff[0, t + 2] == 0
    assert (diff[1] == 0).all()  # the other clip
    # an edge frame: changing the last frame reaches only the one before it
    y = x.clone()
    y[:, T - 1] += torch.randn(5, WIDTH)
    with torch.no_grad():
        diff = (blk(y) - blk(x)).abs().amax(dim=(0, 2)).view(2, T)
    assert diff[0, T - 2] > 1e-4 and diff[0, T - 1] > 1e-4
    assert (diff[0, : T - 2] == 0).all()


def test_state_dict_keys_are_the_repository_checkpoint_keys(model):
    assert list(model.state_dict()) == _expected_keys(layers=2)
    one = build_tiny_zeroi2v(num_tadapter=1, layers=3)
    assert list(one.state_dict()) == _expected_keys(layers=3, num_tadapter=1)
    assert list(build_tiny_zeroi2v_eval().state_dict()) == _expected_keys(layers=2, adapters=False)
    sd = model.state_dict()
    assert sd["backbone.temporal_embedding"].shape == (1, T, WIDTH)
    assert sd["backbone.positional_embedding"].shape == (5, WIDTH)
    assert sd["backbone.transformer.resblocks.0.attn.in_proj_weight"].shape == (3 * WIDTH, WIDTH)
    assert sd["backbone.transformer.resblocks.0.T_Adapter_in.D_fc1.weight"].shape == (WIDTH // 4, WIDTH)
    assert sd["backbone.conv1.weight"].shape == (WIDTH, 3, 16, 16)


def test_checkpoint_round_trips_weights_only(model, tmp_path):
    path = save_mmaction_checkpoint(model, tmp_path / "epoch_40.pth")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert set(ckpt) == {"meta", "state_dict"}
    assert ckpt["meta"]["epoch"] == 40 and "adapter_scale=0.5" in ckpt["meta"]["cfg"]
    assert "num_tadapter=2" in ckpt["meta"]["cfg"] and "type='ViT_Zero_CLIP'" in ckpt["meta"]["cfg"]
    assert list(ckpt["state_dict"]) == _expected_keys(layers=2)
    fresh = build_tiny_zeroi2v(seed=123)
    fresh.load_state_dict(ckpt["state_dict"], strict=True)
    video = _video()
    with torch.no_grad():
        torch.testing.assert_close(fresh(video), model(video), rtol=0, atol=0)


@pytest.mark.parametrize("num_tadapter", [2, 1])
def test_merged_weights_give_the_same_logits_without_adapters(num_tadapter, tmp_path):
    """weight_reparam.py's fold: the adapter-free eval model on the merged weights == the adapted model."""
    adapted = build_tiny_zeroi2v(seed=3, num_tadapter=num_tadapter)
    merged = merge_linear_adapters(adapted.state_dict(), scale=0.5)
    assert not any("Adapter" in k for k in merged)
    plain = build_tiny_zeroi2v_eval(num_tadapter=num_tadapter)
    plain.load_state_dict(merged, strict=True)
    # the input state_dict is left alone
    assert any("Adapter" in k for k in adapted.state_dict())
    video = _video()
    with torch.no_grad():
        expected, got = adapted(video), plain(video)
    assert (expected - build_tiny_zeroi2v_eval(num_tadapter=num_tadapter)(video)).abs().max() > 1e-2
    assert (got - expected).abs().max() <= 1e-5
    # and as upstream saves it (a flat state_dict), weights-only
    torch.save(merged, tmp_path / "epoch_40_eval.pth")
    flat = torch.load(tmp_path / "epoch_40_eval.pth", weights_only=True)
    assert list(flat) == _expected_keys(layers=2, adapters=False)


def test_merge_math_per_adapter():
    """W' = I + s W2 W1, b' = s (W2 b1 + b2), then composed with the projection on the right side."""
    from reference_zeroi2v import LinearAdapter, fuse_Adapter2Proj, reparameterize_LinearAdapter

    torch.manual_seed(0)
    ad = LinearAdapter(WIDTH, scale=0.5).eval()
    proj = nn.Linear(WIDTH, 2 * WIDTH)
    x = torch.randn(7, WIDTH)
    W, b = reparameterize_LinearAdapter(ad.D_fc1.weight, ad.D_fc2.weight, ad.D_fc1.bias, ad.D_fc2.bias, scale=0.5)
    with torch.no_grad():
        torch.testing.assert_close(x @ W.T + b, ad(x))
        Wf, bf = fuse_Adapter2Proj(W, proj.weight, b, proj.bias, adapter_fisrt=True)
        torch.testing.assert_close(x @ Wf.T + bf, proj(ad(x)))
        back = nn.Linear(2 * WIDTH, WIDTH)
        z = torch.randn(7, 2 * WIDTH)
        Wb, bb = fuse_Adapter2Proj(W, back.weight, b, back.bias, adapter_fisrt=False)
        torch.testing.assert_close(z @ Wb.T + bb, ad(back(z)))
    assert math.isclose(ad.scale, 0.5)
