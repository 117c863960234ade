"""Self-checks of tests/reference_aim.py, the line-by-line port of AIM (taoyang1122/adapt-image-models), before it
serves as the reference for stadapt's AIM: its shapes, that every adapter path and the temporal embedding count,
that its written-out einops rearranges mean what the patterns say, that its state-dict keys are AIM's checkpoint
keys, that its checkpoint files load with weights_only=True, and that its CLIP part is open_clip's CLIP."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from reference_aim import (
    VIT_B16,
    VIT_L14,
    aim_optimizer,
    build_aim,
    clip_visual_state_dict,
    expected_keys,
    save_aim_checkpoint,
    tiny_aim,
    trainable_names,
)

B, T, SIZE = 2, 4, 32


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread is fastest, and far faster than several on a busy machine. Restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _video(seed: int = 1, frames: int = T) -> torch.Tensor:
    return torch.randn(B, 3, frames, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def _zero(model, *fragments: str) -> None:
    """Zero the parameters whose names contain all the fragments."""
    hit = 0
    for name, p in model.named_parameters():
        if all(f in name for f in fragments):
            p.zero_()
            hit += 1
    assert hit, fragments


def test_shapes_and_head():
    model = tiny_aim()
    video = _video()
    with torch.no_grad():
        feats = model.backbone(video)
        logits = model(video)
        views = model.forward_test(torch.stack([video, video.flip(2)], dim=1))
    assert feats.shape == (B, 64, T, 1, 1)  # per-frame CLS after ln_post, BDTHW for the I3D head
    assert logits.shape == (B, 5)
    # the head: mean over time of the per-frame normed CLS, dropout (off in eval), fc
    head = model.cls_head.fc_cls
    torch.testing.assert_close(logits, head(feats.flatten(2).mean(-1)), rtol=0, atol=1e-6)
    assert views.shape == (B, 5)  # 'prob': softmax averaged over the views
    torch.testing.assert_close(views.sum(-1), torch.ones(B))
    assert logits.abs().max() > 0.1


@pytest.mark.parametrize("num_tadapter", [1, 2])
def test_every_path_counts(num_tadapter):
    """Zeroing any one path's output changes the logits: T_Adapter (and T_Adapter_in, an Adapter with skip whose
    zeroed D_fc2 makes it the identity), S_Adapter, MLP_Adapter, the temporal embedding and the adapter scale."""
    model = tiny_aim(num_tadapter=num_tadapter)
    video = _video()
    with torch.no_grad():
        base = model(video)
    paths = [("T_Adapter.D_fc2",), ("S_Adapter.D_fc2",), ("MLP_Adapter.D_fc2",), ("temporal_embedding",)]
    if num_tadapter == 2:
        paths.append(("T_Adapter_in.D_fc2",))
    for fragments in paths:
        other = tiny_aim(num_tadapter=num_tadapter)
        _zero(other, *fragments)
        with torch.no_grad():
            diff = (other(video) - base).abs().max().item()
        assert diff > 1e-2, (fragments, diff)
    scaled = tiny_aim(num_tadapter=num_tadapter, adapter_scale=1.0)
    with torch.no_grad():
        assert (scaled(video) - base).abs().max() > 1e-2


def test_temporal_adapter_mixes_frames_only_within_a_token():
    """The temporal path attends along time, per clip and per token position: changing one frame of clip 0 moves
    every frame's output of clip 0 (through T_Adapter), and never clip 1's; with T_Adapter zeroed (and so no
    temporal path) the other frames of clip 0 do not move."""
    video = _video()
    changed = video.clone()
    changed[0, :, 1] += 1.0
    for zero_t, moves in ((False, True), (True, False)):
        model = tiny_aim()
        if zero_t:
            _zero(model, "T_Adapter.D_fc2")
        with torch.no_grad():
            a, b = model.backbone(video), model.backbone(changed)
        diff = (a - b).abs().flatten(3).amax(-1)  # (B, D, T)
        assert diff[1].max() == 0
        others = diff[0][:, [0, 2, 3]].max().item()
        assert (others > 1e-3) if moves else (others < 1e-6), (zero_t, others)
        assert diff[0][:, 1].max() > 1e-3


def _mha(x, attn):
    """nn.MultiheadAttention's math for a (L, N, D) seq-first batch, written out."""
    length, batch, d = x.shape
    h = attn.num_heads
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).reshape(length, batch, 3, h, d // h)
    q, k, v = qkv.permute(2, 1, 3, 0, 4)
    w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // h), dim=-1)
    out = (w @ v).permute(2, 0, 1, 3).reshape(length, batch, d)
    return F.linear(out, attn.out_proj.weight, attn.out_proj.bias)


def test_block_rearranges_against_explicit_loops():
    """One block, computed the port's way (reshape/permute for einops) and by loops over clips and tokens that
    follow the einops patterns literally ('n (b t) d -> t (b n) d': frames of clip b are rows b*t..b*t+t-1)."""
    model = tiny_aim(num_tadapter=2)
    block = model.backbone.transformer.resblocks[1]
    n, d = 5, 64
    x = torch.randn(n, B * T, d, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ours = block(x)
        temporal = torch.zeros_like(x)
        for b in range(B):
            for i in range(n):
                seq = x[i, b * T:(b + 1) * T].unsqueeze(1)  # (T, 1, D): one token position of one clip, over time
                y = block.T_Adapter(_mha(block.T_Adapter_in(block.ln_1(seq)), block.attn))
                temporal[i, b * T:(b + 1) * T] = y[:, 0]
        want = x + temporal  # the temporal branch: no skip inside T_Adapter, added to the residual
        a = _mha(block.ln_1(want), block.attn)
        spatial = block.S_Adapter.D_fc2(F.gelu(block.S_Adapter.D_fc1(a)))
        want = want + a + spatial  # S_Adapter after the attention, with its skip
        xn = block.ln_2(want)
        c = F.linear(xn, block.mlp.c_fc.weight, block.mlp.c_fc.bias)
        mlp = F.linear(c * torch.sigmoid(1.702 * c), block.mlp.c_proj.weight, block.mlp.c_proj.bias)
        mlp_adapter = block.MLP_Adapter.D_fc2(F.gelu(block.MLP_Adapter.D_fc1(xn)))
        want = want + mlp + 0.5 * mlp_adapter
    torch.testing.assert_close(ours, want, rtol=0, atol=1e-5)


def test_embedding_rearranges_against_explicit_indexing():
    """ViT_CLIP.forward's '(b t) n d -> (b n) t d' + temporal_embedding + back: frame t of every token of every
    clip gets temporal_embedding[0, t]; and 'b c t h w -> (b t) c h w' / '(b t) d -> b d t' order frames clip-major."""
    model = tiny_aim()
    backbone = model.backbone
    video = _video()
    captured = []
    hook = backbone.ln_pre.register_forward_hook(lambda m, args, out: captured.append(args[0]))  # returns None
    with torch.no_grad():
        feats = backbone(video)
        frames = video.permute(0, 2, 1, 3, 4).reshape(B * T, 3, SIZE, SIZE)
        tokens = backbone.conv1(frames).flatten(2).transpose(1, 2)
        cls = backbone.class_embedding.expand(B * T, 1, -1)
        x = torch.cat([cls, tokens], 1) + backbone.positional_embedding
        want = x.clone()
        for b in range(B):
            for t in range(T):
                want[b * T + t] += backbone.temporal_embedding[0, t]
        one = backbone(video[1:])  # clip 1 alone gives clip 1's features: clips do not mix
    hook.remove()
    torch.testing.assert_close(captured[0], want, rtol=0, atol=1e-6)
    torch.testing.assert_close(feats[1:], one, rtol=0, atol=1e-5)


@pytest.mark.parametrize("num_tadapter", [1, 2])
def test_state_dict_keys_are_aims(num_tadapter):
    model = tiny_aim(num_tadapter=num_tadapter)
    keys = list(model.state_dict())
    want = expected_keys(3, num_tadapter)
    assert sorted(keys) == sorted(want)
    assert len(keys) == len(want) == 4 + 3 * (12 + 4 * (3 + (num_tadapter == 2))) + 4 + 2


@pytest.mark.parametrize("shape, frames, classes, tunable_m, total_m", [(VIT_B16, 8, 400, 11, 97),
                                                                         (VIT_L14, 8, 400, 38, 341)])
def test_released_shapes_and_parameter_counts(shape, frames, classes, tunable_m, total_m):
    """At full size (on the meta device: no memory) the tensors have the released models' shapes, and the counts
    round to the README's 'Param' and 'Tunable Param' columns (millions), so the trainable set is AIM's."""
    with torch.device("meta"):
        model = build_aim(num_classes=classes, num_frames=frames, **shape)
    sd = model.state_dict()
    width, layers = shape["width"], shape["layers"]
    grid = shape["input_resolution"] // shape["patch_size"]
    assert sd["backbone.temporal_embedding"].shape == (1, frames, width)
    assert sd["backbone.positional_embedding"].shape == (grid * grid + 1, width)
    assert sd["backbone.conv1.weight"].shape == (width, 3, shape["patch_size"], shape["patch_size"])
    assert sd["backbone.transformer.resblocks.0.T_Adapter.D_fc1.weight"].shape == (width // 4, width)
    assert sd["backbone.transformer.resblocks.0.MLP_Adapter.D_fc2.weight"].shape == (width, width // 4)
    assert sd["cls_head.fc_cls.weight"].shape == (classes, width)
    assert sorted(sd) == sorted(expected_keys(layers))
    params = dict(model.named_parameters())
    tunable = sum(params[n].numel() for n in trainable_names(model))
    assert round(tunable / 1e6) == tunable_m
    assert round(sum(p.numel() for p in params.values()) / 1e6) == total_m


def test_checkpoint_round_trip_weights_only(tmp_path):
    model = tiny_aim(num_tadapter=2)
    optimizer = aim_optimizer(model)
    model(_video()).logsumexp(-1).sum().backward()
    optimizer.step()
    model.eval()
    path = save_aim_checkpoint(model, tmp_path / "work_dir" / "epoch_30.pth", optimizer=optimizer)
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    assert list(loaded) == ["meta", "state_dict", "optimizer", "amp"]
    meta = loaded["meta"]
    assert list(meta) == ["mmaction_version", "config", "epoch", "iter", "env_info", "seed", "config_name",
                          "work_dir", "mmcv_version", "time"]
    assert meta["epoch"] == 30 and isinstance(meta["config"], str)
    sd = loaded["state_dict"]
    assert list(sd) == list(model.state_dict())
    assert all(v.dtype == torch.float32 and v.device.type == "cpu" for v in sd.values())
    assert hasattr(sd, "_metadata")
    # only the trainable tensors have optimizer state (frozen ones sit in the groups with none)
    assert len(loaded["optimizer"]["state"]) == len(trainable_names(model))
    assert loaded["amp"]["loss_scaler0"]["loss_scale"] == 65536.0
    fresh = tiny_aim(seed=5, num_tadapter=2)
    fresh.load_state_dict(sd, strict=True)
    video = _video()
    with torch.no_grad():
        torch.testing.assert_close(fresh(video), model(video), rtol=0, atol=0)


def _open_clip_tiny():
    """open_clip's own CLIP (QuickGELU, as OpenAI's weights use) with a vision tower of the port's tiny shape."""
    from open_clip.model import CLIP

    torch.manual_seed(0)
    return CLIP(embed_dim=32, quick_gelu=True,
                vision_cfg=dict(image_size=SIZE, patch_size=16, width=64, layers=3, head_width=16, mlp_ratio=4.0),
                text_cfg=dict(context_length=8, vocab_size=16, width=32, heads=2, layers=1)).eval()


def test_clip_part_is_open_clip():
    """With the adapters the identity (every D_fc2 zero, as AIM's init leaves them) and no temporal embedding, the
    port's per-frame features, through CLIP's `proj`, are open_clip's image features of each frame; with them
    on, they are not."""
    clip = _open_clip_tiny()
    model = tiny_aim()
    missing, unexpected = clip.visual.load_state_dict(clip_visual_state_dict(model), strict=False)
    assert missing == ["proj"] and unexpected == []
    video = _video()
    frames = video.permute(0, 2, 1, 3, 4).reshape(B * T, 3, SIZE, SIZE)
    with torch.no_grad():
        theirs = clip.encode_image(frames)

        def ours(m):
            return m.backbone(video).flatten(2).permute(0, 2, 1).reshape(B * T, -1) @ clip.visual.proj

        adapted = ours(model)
        _zero(model, "D_fc2")
        _zero(model, "temporal_embedding")
        plain = ours(model)
    torch.testing.assert_close(plain, theirs, rtol=0, atol=1e-5)
    assert (adapted - theirs).abs().max() > 1e-2
