"""[CLS] attention of the last block, before adaptation (the plain image model) and after (the adapted
model), overlaid on the frames of a clip: the paper's Figure 1.

"Before" is the image model: the backbone as its weights were loaded, without the method's hooks (a method
that trained backbone parameters, such as full or partial fine-tuning, is shown against the backbone rebuilt
from its recorded weights); "after" runs the model as `VideoClassifier` does, with its tuning method. Both
stop at the input of the last block's attention, where the backbone's plugin recomputes the
attention from the block's own projections (`FrameBackbone.block_attention`: the [CLS] query's
softmax(q k^T / sqrt(d)), or the mean query's without a class token, averaged over the heads); the map
is restricted to the patch tokens and renormalised to sum to 1 per frame.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from stadapt.backbones.base import FrameBackbone
from stadapt.data.input_spec import InputSpec
from stadapt.errors import StadaptError
from stadapt.model.blocks import embed, run_blocks

if TYPE_CHECKING:
    from stadapt.model.classifier import VideoClassifier

#: the figure: 3 rows (frame, before, after) x T columns of CELL_IN-inch cells, at DPI dots per inch
CELL_IN = 2.0
LABEL_IN = 0.5  # left margin for the row titles
TITLE_IN = 0.75  # top margin for the figure title
DPI = 80
ROWS = ("frame", "before: image model", "after: {method}")  # {method}: the model's tuning method


def figure_size(frames: int) -> tuple[int, int]:
    """(width, height) in pixels of the PNG for a clip of `frames` frames."""
    return (round((LABEL_IN + CELL_IN * frames) * DPI), round((TITLE_IN + CELL_IN * len(ROWS)) * DPI))


def _check_attention(model: VideoClassifier) -> None:
    """A StadaptError before any decoding when the backbone's plugin does not provide `block_attention`, or
    when the tuning method changes the attention itself (its hooks at `attn_in`, between the block's norm
    and its attention, or replacing the attention body: ZeroI2V's head shift): a map recomputed from the
    block's own projections would not be the attention the adapted model computes."""
    backbone = model.backbone
    if type(backbone).block_attention is FrameBackbone.block_attention:
        raise StadaptError(
            f"the backbone plugin's {type(backbone).__name__} does not provide attention maps "
            "(FrameBackbone.block_attention, an optional part of the plugin contract)",
            "ask the plugin's authors for block_attention, or use a backbone whose plugin has it",
        )
    hooks = model.block_hooks(adapted=True)
    changed = [point for point in ("attn_in", "attn_body") if getattr(hooks, point, None) is not None]
    if changed:
        raise StadaptError(
            f"tuning={model.tuner.name} changes the attention itself (at the block loop's {' and '.join(changed)}), "
            "so the last block's attention recomputed from its projections would not be the adapted model's",
            "visualize a model of a method that keeps the backbone's attention (`stadapt methods` lists them)",
        )


def image_model(model: VideoClassifier, rebuild: Callable[[], VideoClassifier]) -> VideoClassifier:
    """The model whose backbone is the image model "before" adaptation: `model` itself when its method
    trained no backbone parameter (its hooks are left out below), else `rebuild()`, the same config on its
    recorded backbone weights with none of its trained tensors. A merged checkpoint (`stadapt merge`) has
    none: its recorded backbone already holds the method."""
    merged = getattr(model, "meta", {}).get("merged_from")
    if merged:
        raise StadaptError(
            f"this is a merged checkpoint (stadapt merge): its backbone already holds tuning={merged.get('tuning')}, "
            "so there is no image model to show before adaptation",
            f"visualize the checkpoint it was merged from ({merged.get('checkpoint')})",
        )
    if any(key.startswith("backbone.") for key in model.trainable_state_dict()):
        return rebuild()
    return model


def _last_attention_input(model: VideoClassifier, images: torch.Tensor, adapted: bool) -> torch.Tensor:
    """Tokens entering the last block's attention branch (before its ln_1), (N, L, C) or channels-last
    (N, H, W, C) as the layout says, with or without the adapters: the model's own block loop, stopped there."""
    hooks = model.block_hooks(adapted)
    tokens = embed(model.backbone, images, hooks)
    return run_blocks(model.backbone, tokens, hooks, stop_before_attn_of=model.num_blocks - 1)


@torch.no_grad()
def attention_maps(model: VideoClassifier, clip: torch.Tensor,
                   before: VideoClassifier | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(before, after): the last block's [CLS] attention over the patch grid, each (T, grid_h, grid_w)
    float32 summing to 1 per frame, for one normalised clip (3, T, S, S) or (1, 3, T, S, S).

    before = the plain image model: the backbone of `before` (default: `model`'s own, right when its method
    trained no backbone parameter: see `image_model`) without the method's hooks; after = the adapted model.
    """
    _check_attention(model)
    if clip.ndim == 5:
        if clip.shape[0] != 1:
            raise ValueError(f"attention_maps takes one clip, got a batch of {clip.shape[0]}")
        clip = clip[0]
    channels, frames, height, width = clip.shape
    if frames != model.num_frames:
        raise ValueError(f"this model takes clips of {model.num_frames} frames, got {frames}")
    layout = model.backbone.block_layouts()[-1]
    grid_h, grid_w = layout.grid
    prefix = layout.prefix_tokens
    out = []
    for source, adapted in ((before if before is not None else model, False), (model, True)):
        param = next(source.backbone.parameters())
        images = clip.transpose(0, 1).to(param.device, param.dtype)  # (T, 3, S, S): one clip, frames contiguous
        tokens = _last_attention_input(source, images, adapted)
        weights = source.backbone.block_attention(source.num_blocks - 1, tokens).float()
        weights = weights.reshape(frames, -1)[:, prefix:]
        weights = weights / weights.sum(dim=-1, keepdim=True)
        out.append(weights.reshape(frames, grid_h, grid_w).float().cpu())
    return out[0], out[1]


def load_video_clip(video: Path, spec: InputSpec) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """(normalised clip (3, T, S, S), display frames (T, S, S, 3) in 0..1, frame indices) of the
    centred test view of `video` (one temporal view, the centre crop), made as `spec` says."""
    from dataclasses import replace

    from stadapt.data.pyav_reader import VideoReader
    from stadapt.data.sampling import make_sampler
    from stadapt.data.views import video_views

    centre = spec.with_views((1, 1))
    clip = video_views(video, centre)[0]
    shown = video_views(video, replace(centre, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)))[0]
    with VideoReader(video) as reader:
        indices = make_sampler(spec.sampling, spec.frames, spec.stride).test(reader.num_frames, 1)[0]
    return clip, shown.permute(1, 2, 3, 0).clamp(0, 1), [int(i) for i in indices]


def _upsample(maps: torch.Tensor, size: int) -> torch.Tensor:
    return nn.functional.interpolate(maps[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]


def plot_attention(
    shown: torch.Tensor,
    before: torch.Tensor,
    after: torch.Tensor,
    out: Path,
    *,
    title: str = "",
    indices: list[int] | None = None,
    method: str = "st_adapter",
) -> Path:
    """Write the PNG: 3 rows (the frames; before; after, titled with the tuning `method`) x T columns,
    maps overlaid as heat maps.

    Before and after of one frame share a colour scale (0 to the larger of their maxima), so the two
    rows compare directly. The size in pixels is `figure_size(T)`.
    """
    from stadapt.plots import _pyplot, save_figure

    plt = _pyplot()
    frames, size = shown.shape[0], shown.shape[1]
    width_px, height_px = figure_size(frames)
    fig, axes = plt.subplots(len(ROWS), frames, figsize=(width_px / DPI, height_px / DPI), dpi=DPI, squeeze=False)
    fig.subplots_adjust(
        left=LABEL_IN * DPI / width_px, right=0.995, bottom=0.02, top=1 - TITLE_IN * DPI / height_px,
        wspace=0.04, hspace=0.12,
    )
    up_before, up_after = _upsample(before, size), _upsample(after, size)
    for t in range(frames):
        image = shown[t].numpy()
        vmax = float(max(up_before[t].max(), up_after[t].max())) or 1.0
        for row, heat in enumerate((None, up_before[t], up_after[t])):
            ax = axes[row][t]
            ax.imshow(image, interpolation="bilinear")
            if heat is not None:
                ax.imshow(heat.numpy(), cmap="jet", alpha=0.5, vmin=0.0, vmax=vmax, interpolation="bilinear")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                label = f"t={t}" if indices is None else f"t={t} (frame {indices[t]})"
                ax.set_title(label, fontsize=8, pad=2)
            if t == 0:
                ax.set_ylabel(ROWS[row].format(method=method), fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.12 * TITLE_IN * DPI / height_px, va="top")
    save_figure(fig, out, dpi=DPI)
    plt.close(fig)
    return out


def visualize(
    video: Path,
    checkpoint: Path | None,
    out: Path | None = None,
    *,
    backbone_weights: str | Path | None = None,
    device: str = "cpu",
    overwrite: bool = False,
    precision: str = "auto",
    which: str | None = None,
) -> Path:
    """Write the attention figure of `video` for a trained model and return its path.

    `checkpoint`: a run directory, a checkpoint directory, or None (the latest run under ./runs);
    `out`: default `<video stem>.attention.png` in the current directory; an existing file is an error
    unless `overwrite`. The title names the predicted class and its probability. The model runs in
    `precision` ("auto": the run's on this device, float32 on the CPU).
    """
    from stadapt.checkpoints.load import build_untrained, open_checkpoint
    from stadapt.errors import VideoDecodeError
    from stadapt.inference.loading import load_for_inference
    from stadapt.runs.lookup import resolve_target
    from stadapt.runtime.device import resolve_device

    video = Path(video)
    if not video.is_file():
        raise VideoDecodeError(f"{video} does not exist" if not video.exists() else f"{video} is not a file",
                               "pass the path of a video file")
    out = Path(out) if out is not None else Path(f"{video.stem}.attention.png")
    if out.suffix.lower() != ".png":
        raise StadaptError(f"{out} is not a .png file", "pass --out NAME.png")
    if out.exists() and not overwrite:
        raise StadaptError(f"{out} already exists", "pass --overwrite to replace it, or --out elsewhere")
    if not out.parent.is_dir():
        raise StadaptError(f"the folder {out.parent} does not exist", "create it, or pass --out elsewhere")
    checkpoint_dir, _ = resolve_target(checkpoint, which)
    model = load_for_inference(checkpoint_dir, backbone_weights=backbone_weights, device=resolve_device(device),
                               precision=precision)
    _check_attention(model)  # clear errors before decoding anything
    plain = image_model(model, lambda: build_untrained(open_checkpoint(checkpoint_dir), device=model.device,
                                                       backbone_weights=backbone_weights))
    clip, shown, indices = load_video_clip(video, model.input_spec)
    with torch.no_grad(), model.autocast():
        before, after = attention_maps(model, clip, plain)
        probs = model(clip[None].to(model.device)).float().softmax(dim=-1)[0].cpu()
    best = int(probs.argmax())
    name = model.classes[best] if best < len(model.classes) else f"class {best}"
    query = "[CLS]" if model.backbone.block_layouts()[-1].prefix_tokens else "mean-query"  # Swin, SigLIP: no CLS
    title = f"{video.name}: predicted {name!r} ({100 * float(probs[best]):.1f}%)  -  last-block {query} attention"
    return plot_attention(shown, before, after, out, title=title, indices=indices, method=model.tuner.name)
