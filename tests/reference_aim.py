"""A line-by-line, plain-torch port of AIM's video model (Yang et al., ICLR 2023, "AIM: Adapting Image Models
for Efficient Video Action Recognition"), the reference for stadapt's AIM tuner and `import-checkpoint --format aim`.

Ported from taoyang1122/adapt-image-models at b3580d2d3a78ff5cffa6c7a82ce993165166f00f (2023-09-17; vit_clip.py last
changed in 4da311e, 2023-04-06, only comments since the model fix f7e148b of 2023-02-22):

- mmaction/models/backbones/vit_clip.py, lines 14-223: `Adapter` (14-32), `LayerNorm` (34-40), `QuickGELU` (43-45),
  `ResidualAttentionBlock` (48-92), `Transformer` (95-104), `ViT_CLIP` (107-223; `init_weights` 129-188 without the
  OpenAI CLIP download, `forward` 198-223). timm's `DropPath`/`drop_path` (imported there) is ported below too.
- mmaction/models/heads/i3d_head.py, lines 24-73: `I3DHead` (average pool, dropout, fc_cls; `normal_init` std 0.01).
- mmaction/models/recognizers/recognizer3d.py (`_do_test`, 31-85, without max_testing_views / feature_extraction)
  and base.py (`extract_feat` 142-158, `average_clip` 160-193): `Recognizer3D` below, reduced to the forward path.
- tools/train.py, lines 186-189: which parameters AIM trains (`trainable_names`).
- mmcv_custom/runner/checkpoint.py 14-80, mmcv_custom/runner/epoch_based_runner.py 39-73, tools/train.py 129-152 and
  179-184: the layout of the checkpoint files its training writes (`save_aim_checkpoint`).

Class and attribute names are the original's, so `Recognizer3D(...).state_dict()` has exactly the keys of AIM's
checkpoints: `backbone.*` (the whole CLIP vision tower without `proj`, `temporal_embedding`, and per block
`S_Adapter`, `T_Adapter`, `MLP_Adapter`, plus `T_Adapter_in` when num_tadapter == 2) and `cls_head.fc_cls.*`.

einops is not installed here: every `rearrange` of the original is written out with view/permute/reshape, with
the original pattern in a comment beside it. mmcv and mmaction are not needed: only their forward-path code is
ported. No weights are downloaded: `ViT_CLIP.init_weights` takes the `pretrained=None` branch.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

# --------------------------------------------------------------------------------------------------------------
# timm.models.layers.DropPath (timm 0.4.x-0.6.x, drop.py): the original imports it. Identity in eval mode.
# NB: AIM applies it to seq-first tensors (HW+1, BT, D), so its per-"sample" mask is per token (x.shape[0]).
# --------------------------------------------------------------------------------------------------------------


def drop_path(x: torch.Tensor, drop_prob: float = 0.0, training: bool = False, scale_by_keep: bool = True):
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    random_tensor = x.new_empty(shape).bernoulli_(keep_prob)
    if keep_prob > 0.0 and scale_by_keep:
        random_tensor.div_(keep_prob)
    return x * random_tensor


class DropPath(nn.Module):
    def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True):
        super().__init__()
        self.drop_prob = drop_prob
        self.scale_by_keep = scale_by_keep

    def forward(self, x):
        return drop_path(x, self.drop_prob, self.training, self.scale_by_keep)


# --------------------------------------------------------------------------------------------------------------
# mmaction/models/backbones/vit_clip.py
# --------------------------------------------------------------------------------------------------------------


class Adapter(nn.Module):  # vit_clip.py 14-32
    def __init__(self, D_features, mlp_ratio=0.25, act_layer=nn.GELU, skip_connect=True):
        super().__init__()
        self.skip_connect = skip_connect
        D_hidden_features = int(D_features * mlp_ratio)
        self.act = act_layer()  # nn.GELU(): the exact (erf) GELU, not CLIP's QuickGELU
        self.D_fc1 = nn.Linear(D_features, D_hidden_features)
        self.D_fc2 = nn.Linear(D_hidden_features, D_features)

    def forward(self, x):
        # x is (BT, HW+1, D)   [original comment; in the blocks it is seq-first, (HW+1, BT, D) or (T, B(HW+1), D)]
        xs = self.D_fc1(x)
        xs = self.act(xs)
        xs = self.D_fc2(xs)
        if self.skip_connect:
            x = x + xs
        else:
            x = xs
        return x


class LayerNorm(nn.LayerNorm):  # vit_clip.py 34-40
    """Subclass torch's LayerNorm to handle fp16."""

    def forward(self, x: torch.Tensor):
        orig_type = x.dtype
        ret = super().forward(x.type(torch.float32))
        return ret.type(orig_type)


class QuickGELU(nn.Module):  # vit_clip.py 43-45 (OpenAI CLIP's activation)
    def forward(self, x: torch.Tensor):
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):  # vit_clip.py 48-92
    def __init__(self, d_model: int, n_head: int, attn_mask: torch.Tensor = None, scale=1., num_tadapter=1,
                 num_frames=8, drop_path=0.):
        super().__init__()
        self.num_tadapter = num_tadapter
        self.attn = nn.MultiheadAttention(d_model, n_head)
        self.ln_1 = LayerNorm(d_model)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(d_model, d_model * 4)),
            ("gelu", QuickGELU()),
            ("c_proj", nn.Linear(d_model * 4, d_model))
        ]))
        self.ln_2 = LayerNorm(d_model)
        self.attn_mask = attn_mask
        self.n_head = n_head

        self.MLP_Adapter = Adapter(d_model, skip_connect=False)
        self.S_Adapter = Adapter(d_model)
        self.scale = scale
        self.T_Adapter = Adapter(d_model, skip_connect=False)
        if num_tadapter == 2:
            self.T_Adapter_in = Adapter(d_model)
        self.num_frames = num_frames
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def attention(self, x: torch.Tensor):
        self.attn_mask = self.attn_mask.to(dtype=x.dtype, device=x.device) if self.attn_mask is not None else None
        return self.attn(x, x, x, need_weights=False, attn_mask=self.attn_mask)[0]

    def forward(self, x: torch.Tensor):
        ## x shape [HW+1, BT, D]
        n, bt, d = x.shape
        ## temporal adaptation
        # xt = rearrange(x, 'n (b t) d -> t (b n) d', t=self.num_frames)
        t = self.num_frames
        xt = x.reshape(n, bt // t, t, d).permute(2, 1, 0, 3).reshape(t, (bt // t) * n, d)
        if self.num_tadapter == 2:
            xt = self.T_Adapter(self.attention(self.T_Adapter_in(self.ln_1(xt))))
        else:
            xt = self.T_Adapter(self.attention(self.ln_1(xt)))
        # xt = rearrange(xt, 't (b n) d -> n (b t) d', n=n)
        xt = xt.reshape(t, bt // t, n, d).permute(2, 1, 0, 3).reshape(n, bt, d)
        x = x + self.drop_path(xt)
        ## spatial adaptation
        x = x + self.S_Adapter(self.attention(self.ln_1(x)))
        ## joint adaptation
        xn = self.ln_2(x)
        x = x + self.mlp(xn) + self.drop_path(self.scale * self.MLP_Adapter(xn))
        return x


class Transformer(nn.Module):  # vit_clip.py 95-104
    def __init__(self, num_frames, width: int, layers: int, heads: int, attn_mask: torch.Tensor = None,
                 num_tadapter=1, scale=1., drop_path=0.1):
        super().__init__()
        self.width = width
        self.layers = layers
        dpr = [x.item() for x in torch.linspace(0, drop_path, self.layers, device="cpu")]  # device: meta-safe
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads, attn_mask, scale, num_tadapter,
                                                                num_frames, dpr[i]) for i in range(layers)])

    def forward(self, x: torch.Tensor):
        return self.resblocks(x)


class ViT_CLIP(nn.Module):  # vit_clip.py 107-223
    ## ViT definition in CLIP image encoder
    def __init__(self, input_resolution: int, num_frames: int, patch_size: int, width: int, layers: int, heads: int,
                 drop_path_rate, num_tadapter=1, adapter_scale=0.5, pretrained=None):
        super().__init__()
        self.input_resolution = input_resolution
        self.pretrained = pretrained
        self.conv1 = nn.Conv2d(in_channels=3, out_channels=width, kernel_size=patch_size, stride=patch_size,
                               bias=False)

        scale = width ** -0.5
        self.layers = layers
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn((input_resolution // patch_size) ** 2 + 1,
                                                                     width))
        self.ln_pre = LayerNorm(width)

        self.num_frames = num_frames
        self.temporal_embedding = nn.Parameter(torch.zeros(1, num_frames, width))

        self.transformer = Transformer(num_frames, width, layers, heads, num_tadapter=num_tadapter,
                                       scale=adapter_scale, drop_path=drop_path_rate)

        self.ln_post = LayerNorm(width)

    def init_weights(self, pretrained=None):
        """The original's `pretrained=None` branch (no OpenAI CLIP download: a string `pretrained` there loads
        `clip.load("ViT-B/16" if layers == 12 else "ViT-L/14").visual.state_dict()` minus `proj`, strict=False),
        then the zero init of every adapter's D_fc2, so that a fresh AIM model computes CLIP per frame."""

        def _init_weights(m):
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=.02)  # timm's trunc_normal_: same bounds (a=-2, b=2 absolute)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.LayerNorm):
                nn.init.constant_(m.bias, 0)
                nn.init.constant_(m.weight, 1.0)

        if pretrained is not None:
            raise NotImplementedError("the port does not download OpenAI CLIP; load a state dict instead")
        self.apply(_init_weights)

        ## initialize S_Adapter, T_Adapter, MLP_Adapter: D_fc2 weight and bias zero (vit_clip.py 163-188; the
        ## original's three loops, one per name; 'T_Adapter' also matches T_Adapter_in)
        for name in ("S_Adapter", "T_Adapter", "MLP_Adapter"):
            for n, m in self.transformer.named_modules():
                if name in n:
                    for n2, m2 in m.named_modules():
                        if 'D_fc2' in n2:
                            if isinstance(m2, nn.Linear):
                                nn.init.constant_(m2.weight, 0)
                                nn.init.constant_(m2.bias, 0)

    def forward(self, x: torch.Tensor):
        B, C, T, H, W = x.shape
        # x = rearrange(x, 'b c t h w -> (b t) c h w')
        x = x.permute(0, 2, 1, 3, 4).reshape(B * T, C, H, W)
        x = self.conv1(x)
        x = x.reshape(x.shape[0], x.shape[1], -1)
        x = x.permute(0, 2, 1)
        x = torch.cat([self.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype,
                                                                      device=x.device), x], dim=1)
        x = x + self.positional_embedding.to(x.dtype)

        n = x.shape[1]
        # x = rearrange(x, '(b t) n d -> (b n) t d', t=self.num_frames)
        t, d = self.num_frames, x.shape[-1]
        x = x.reshape(-1, t, n, d).permute(0, 2, 1, 3).reshape(-1, t, d)
        x = x + self.temporal_embedding
        # x = rearrange(x, '(b n) t d -> (b t) n d', n=n)
        x = x.reshape(-1, n, t, d).permute(0, 2, 1, 3).reshape(-1, n, d)

        x = self.ln_pre(x)

        x = x.permute(1, 0, 2)  # NLD -> LND
        x = self.transformer(x)
        x = x.permute(1, 0, 2)  # LND -> NLD
        x = self.ln_post(x)  # every token of every frame: the final norm is per frame, before any mean over time
        x = x[:, 0]
        # x = rearrange(x, '(b t) d -> b d t', b=B, t=T)
        x = x.reshape(B, T, -1).permute(0, 2, 1)

        x = x.unsqueeze(-1).unsqueeze(-1)  # BDTHW for I3D head

        return x


# --------------------------------------------------------------------------------------------------------------
# mmaction/models/heads/i3d_head.py (BaseHead's loss_cls holds no tensors in the state dict)
# --------------------------------------------------------------------------------------------------------------


class I3DHead(nn.Module):  # i3d_head.py 24-73
    def __init__(self, num_classes, in_channels, spatial_type='avg', dropout_ratio=0.5, init_std=0.01):
        super().__init__()
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.spatial_type = spatial_type
        self.dropout_ratio = dropout_ratio
        self.init_std = init_std
        if self.dropout_ratio != 0:
            self.dropout = nn.Dropout(p=self.dropout_ratio)
        else:
            self.dropout = None
        self.fc_cls = nn.Linear(self.in_channels, self.num_classes)

        if self.spatial_type == 'avg':
            # use `nn.AdaptiveAvgPool3d` to adaptively match the in_channels.
            self.avg_pool = nn.AdaptiveAvgPool3d((1, 1, 1))
        else:
            self.avg_pool = None

    def init_weights(self):
        """Initiate the parameters from scratch (mmcv's normal_init: normal(0, std) weight, zero bias)."""
        nn.init.normal_(self.fc_cls.weight, 0, self.init_std)
        nn.init.constant_(self.fc_cls.bias, 0)

    def forward(self, x):
        # [N, in_channels, 4, 7, 7]
        if self.avg_pool is not None:
            x = self.avg_pool(x)
        # [N, in_channels, 1, 1, 1]
        if self.dropout is not None:
            x = self.dropout(x)
        # [N, in_channels, 1, 1, 1]
        x = x.view(x.shape[0], -1)
        # [N, in_channels]
        cls_score = self.fc_cls(x)
        # [N, num_classes]
        return cls_score


# --------------------------------------------------------------------------------------------------------------
# mmaction/models/recognizers/{base,recognizer3d}.py: the forward path only
# --------------------------------------------------------------------------------------------------------------


class Recognizer3D(nn.Module):
    """`backbone` + `cls_head`, the two submodules whose tensors AIM's checkpoints hold."""

    def __init__(self, backbone: ViT_CLIP, cls_head: I3DHead, average_clips: str | None = 'prob'):
        super().__init__()
        self.backbone = backbone
        self.cls_head = cls_head
        self.test_cfg = dict(average_clips=average_clips)  # configs/_base_/models/vitclip_base.py: 'prob'

    def extract_feat(self, imgs):  # base.py 142-158 (mmaction2 backbone branch)
        return self.backbone(imgs)

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        """Logits: (N, C, T, H, W) -> (N, classes), the cls_head's output for one view (forward_dummy's path)."""
        return self.cls_head(self.extract_feat(imgs))

    def forward_test(self, imgs: torch.Tensor) -> torch.Tensor:
        """recognizer3d.py `_do_test` (31-85) without max_testing_views chunking (it only splits the batch):
        (N, views, C, T, H, W) -> per-view logits -> average_clip over the views."""
        num_segs = imgs.shape[1]
        imgs = imgs.reshape((-1, ) + imgs.shape[2:])
        cls_score = self.cls_head(self.extract_feat(imgs))
        return self.average_clip(cls_score, num_segs)

    def average_clip(self, cls_score, num_segs=1):  # base.py 160-193
        average_clips = self.test_cfg['average_clips']
        if average_clips not in ['score', 'prob', None]:
            raise ValueError(f'{average_clips} is not supported.')
        if average_clips is None:
            return cls_score
        batch_size = cls_score.shape[0]
        cls_score = cls_score.view(batch_size // num_segs, num_segs, -1)
        if average_clips == 'prob':
            cls_score = torch.softmax(cls_score, dim=2).mean(dim=1)
        elif average_clips == 'score':
            cls_score = cls_score.mean(dim=1)
        return cls_score


def trainable_names(model: nn.Module) -> list[str]:
    """tools/train.py 186-189: everything is frozen except names containing 'temporal_embedding', 'ln_post',
    'cls_head' or 'Adapter' (the latter covers S_Adapter, T_Adapter, T_Adapter_in and MLP_Adapter)."""
    return [name for name, _ in model.named_parameters()
            if not ('temporal_embedding' not in name and 'ln_post' not in name and 'cls_head' not in name
                    and 'Adapter' not in name)]


# --------------------------------------------------------------------------------------------------------------
# Builders for tests
# --------------------------------------------------------------------------------------------------------------

# The released configurations (configs/recognition/vit/vitclip_*.py over configs/_base_/models/vitclip_base.py)
VIT_B16 = dict(input_resolution=224, patch_size=16, width=768, layers=12, heads=12)
VIT_L14 = dict(input_resolution=224, patch_size=14, width=1024, layers=24, heads=16)
TINY = dict(input_resolution=32, patch_size=16, width=64, layers=3, heads=4)


def build_aim(*, num_classes: int, num_frames: int, input_resolution: int, patch_size: int, width: int, layers: int,
              heads: int, num_tadapter: int = 1, adapter_scale: float = 0.5, drop_path_rate: float = 0.2,
              dropout_ratio: float = 0.5) -> Recognizer3D:
    """AIM as its configs build it (vitclip_base.py + a vitclip_*.py override), freshly initialised as its training
    starts from (minus the CLIP weights): adapters' D_fc2 zero, temporal embedding zero, fc_cls normal(0, 0.01)."""
    backbone = ViT_CLIP(input_resolution=input_resolution, num_frames=num_frames, patch_size=patch_size, width=width,
                        layers=layers, heads=heads, drop_path_rate=drop_path_rate, num_tadapter=num_tadapter,
                        adapter_scale=adapter_scale)
    backbone.init_weights()
    head = I3DHead(num_classes=num_classes, in_channels=width, spatial_type='avg', dropout_ratio=dropout_ratio)
    head.init_weights()
    return Recognizer3D(backbone, head)


@torch.no_grad()
def perturb(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights on every path, so that no branch can be skipped unnoticed: every adapter's D_fc1 and D_fc2
    (AIM zero-initialises D_fc2), the temporal embedding (zero at init), every bias (zero at init), every norm."""
    g = torch.Generator().manual_seed(seed)

    def rand(p: torch.Tensor, std: float) -> torch.Tensor:
        return torch.randn(p.shape, generator=g, dtype=p.dtype) * std

    for name, p in model.named_parameters():
        if ".D_fc1.weight" in name:  # a bottleneck of order-1 activations, in GELU's curved range
            p.copy_(rand(p, 0.2))
        elif ".D_fc2.weight" in name:
            p.copy_(rand(p, 0.1))
        elif ".D_fc" in name:  # biases: small, so that no adapter's output is mostly its constant
            p.copy_(rand(p, 0.02))
        elif name.endswith("temporal_embedding"):
            p.copy_(rand(p, 0.5))
        elif name.split(".")[-2].startswith("ln_"):
            p.copy_(1 + rand(p, 0.2) if name.endswith(".weight") else rand(p, 0.1))
        elif name.endswith("bias"):
            p.add_(rand(p, 0.05))
        elif name.endswith("fc_cls.weight"):
            p.copy_(rand(p, 0.5))  # logits of order 1, so a 1e-4 difference is a real one
    return model


def tiny_aim(seed: int = 0, *, num_classes: int = 5, num_frames: int = 4, num_tadapter: int = 1,
             adapter_scale: float = 0.5, **shape) -> Recognizer3D:
    """A tiny AIM (width 64, 3 layers, 4 heads, patch 16, 32x32 input, 4 frames unless given) with random weights
    on every path (see `perturb`), in eval mode (dropout and drop path off)."""
    torch.manual_seed(seed)
    model = build_aim(num_classes=num_classes, num_frames=num_frames, num_tadapter=num_tadapter,
                      adapter_scale=adapter_scale, **{**TINY, **shape})
    return perturb(model, seed).eval()


def clip_visual_state_dict(model: Recognizer3D) -> dict[str, torch.Tensor]:
    """The backbone's CLIP tensors under OpenAI CLIP `visual.` names (no `proj`: AIM drops it)."""
    return {k: v for k, v in model.backbone.state_dict().items()
            if k != "temporal_embedding" and "Adapter" not in k}


# --------------------------------------------------------------------------------------------------------------
# The checkpoint files AIM's training writes
# --------------------------------------------------------------------------------------------------------------

# configs/recognition/vit/vitclip_base_k400.py's optimizer: paramwise custom_keys with decay_mult 0
NO_DECAY_KEYS = ("class_embedding", "positional_embedding", "ln_1", "ln_2", "ln_pre", "ln_post")


def aim_optimizer(model: nn.Module, lr: float = 3e-4, weight_decay: float = 0.05) -> torch.optim.Optimizer:
    """AdamW as mmcv's DefaultOptimizerConstructor builds it from the configs: one param group per parameter,
    weight decay 0 for the custom keys; frozen parameters stay in the groups (they get no state)."""
    trainable = set(trainable_names(model))
    for name, p in model.named_parameters():
        p.requires_grad_(name in trainable)
    groups = [{"params": [p], "weight_decay": 0.0 if any(k in name for k in NO_DECAY_KEYS) else weight_decay}
              for name, p in model.named_parameters()]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay)


def save_aim_checkpoint(model: Recognizer3D, path: str | Path, *, epoch: int = 30, iters: int = 1000,
                        optimizer: torch.optim.Optimizer | None = None, amp: bool = True,
                        config_name: str = "vitclip_base_k400.py", config: str | None = None) -> Path:
    """`epoch_{N}.pth` as AIM's training writes it: mmcv_custom/runner/checkpoint.py `save_checkpoint`,
    `{"meta", "state_dict", "optimizer"}` plus `"amp"` (apex's loss-scaler state: the released configs train
    with apex O1, use_fp16=True), written with torch.save.

    meta, in the order the real one is built: CheckpointHook's meta (tools/train.py 182-184: mmaction_version,
    config = the config's pretty text), the runner's epoch/iter (epoch_based_runner.py 60-63), the runner's own
    meta (tools/train.py 131-152: env_info text, seed, config_name, work_dir), then mmcv_version and time
    (checkpoint.py 30). All plain types, as in the real files, so `torch.load(weights_only=True)` reads it.
    `config` replaces the stand-in config text (the real one is the whole config, `adapter_scale=` included).
    state_dict: an OrderedDict of CPU fp32 tensors (apex O1 keeps fp32 weights) with the module `_metadata`
    (mmcv's weights_to_cpu keeps it); no `module.` prefix (mmcv unwraps DDP)."""
    path = Path(path)
    meta: dict = dict(mmaction_version="0.15.0+b3580d2",
                      config=config if config is not None else
                      "model = dict(type='Recognizer3D', backbone=dict(type='ViT_CLIP', ...))\n")
    meta.update(epoch=epoch, iter=iters)
    meta.update(env_info="sys.platform: linux\nPython: 3.7.13\nPyTorch: 1.10.0\nMMCV: 1.3.1\nMMAction2: 0.15.0",
                seed=None, config_name=config_name, work_dir=config_name.removesuffix(".py"))
    meta.update(mmcv_version="1.3.1", time=time.asctime())
    source = model.state_dict()
    state_dict: OrderedDict = OrderedDict((k, v.detach().cpu()) for k, v in source.items())
    state_dict._metadata = getattr(source, "_metadata", OrderedDict())  # type: ignore[attr-defined]
    checkpoint: dict = {"meta": meta, "state_dict": state_dict}
    if optimizer is not None:
        checkpoint["optimizer"] = optimizer.state_dict()
    if amp:  # apex.amp.state_dict()
        checkpoint["amp"] = OrderedDict(loss_scaler0={"loss_scale": 65536.0, "unskipped": 0})
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        torch.save(checkpoint, f)
        f.flush()
    return path


def expected_keys(layers: int, num_tadapter: int = 1) -> list[str]:
    """The state-dict keys of an AIM checkpoint, written down from vit_clip.py / i3d_head.py (not from the port)."""
    keys = ["backbone.class_embedding", "backbone.positional_embedding", "backbone.temporal_embedding",
            "backbone.conv1.weight"]
    adapters = ["MLP_Adapter", "S_Adapter", "T_Adapter"] + (["T_Adapter_in"] if num_tadapter == 2 else [])
    for i in range(layers):
        p = f"backbone.transformer.resblocks.{i}"
        keys += [f"{p}.attn.in_proj_weight", f"{p}.attn.in_proj_bias", f"{p}.attn.out_proj.weight",
                 f"{p}.attn.out_proj.bias"]
        for sub in ("ln_1", "ln_2", "mlp.c_fc", "mlp.c_proj"):
            keys += [f"{p}.{sub}.weight", f"{p}.{sub}.bias"]
        for a in adapters:
            keys += [f"{p}.{a}.{fc}.{w}" for fc in ("D_fc1", "D_fc2") for w in ("weight", "bias")]
    for ln in ("ln_pre", "ln_post"):
        keys += [f"backbone.{ln}.weight", f"backbone.{ln}.bias"]
    keys += ["cls_head.fc_cls.weight", "cls_head.fc_cls.bias"]
    return keys
