"""From a video file to a model's input views, as an InputSpec (stadapt.data.input_spec) describes them.

The one path for inference: evaluation's dataset (`test_dataset`) and every single-video reader (predict,
export's verification clips, visualize) go through it, so a clip is made the same way everywhere.
`video_transform` hands it out as a callable, the model's transform (a loaded model's `transform()`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from stadapt.data.dataset import VideoClipDataset, collate_clips
from stadapt.data.input_spec import InputSpec
from stadapt.data.on_device import to_model_input
from stadapt.data.prepared import VideoEntry
from stadapt.data.sampling import make_sampler
from stadapt.data.transforms import TestTransform
from stadapt.errors import VideoDecodeError


def test_dataset(entries: Sequence[VideoEntry], spec: InputSpec, *, decoder: str = "pyav",
                 decode_device: str = "cpu") -> VideoClipDataset:
    """The evaluation dataset of `entries`: each item holds the decoded uint8 temporal views of one video
    (or the error of a video that does not decode); `stadapt.data.on_device.to_model_input` with the
    dataset's transform turns a batch into (B, T_views * S_views, 3, T, S, S) normalised views where the
    model runs. `decoder` and `decode_device` choose the video decoder (stadapt.data.decode), not the input.
    Frames whose short side exceeds twice the crop size are decoded scaled down to it (the transform's
    `decode_short_side`): a 4000x3000 video costs what its clip needs, an ordinary one decodes as ever."""
    temporal, spatial = spec.views
    transform = TestTransform(spec.image_size, spec.mean, spec.std, spatial_views=spatial,
                              interpolation=spec.interpolation)
    return VideoClipDataset(entries, make_sampler(spec.sampling, spec.frames, spec.stride), transform, train=False,
                            temporal_views=temporal, on_device=True, decoder=decoder, decode_device=decode_device)


test_dataset.__test__ = False  # type: ignore[attr-defined]  # not a pytest test despite the name


def video_views(path: str | Path, spec: InputSpec, views: tuple[int, int] | None = None,
                device: str | torch.device = "cpu") -> torch.Tensor:
    """The (V, 3, T, S, S) input views of one video file (`views`: other test views than the spec's) on
    `device`, made exactly as evaluation makes them (the same dataset, collate and device step); a video
    that does not decode raises VideoDecodeError."""
    dataset = test_dataset([VideoEntry(Path(path), 0)], spec.with_views(views))
    item = dataset[0]
    if item["video"] is None:
        raise VideoDecodeError(item["error"])
    return to_model_input(collate_clips([item]), dataset.transform, torch.device(device))[0]


def video_transform(spec: InputSpec, views: tuple[int, int] | None = None,
                    device: str | torch.device = "cpu") -> Callable[[str | Path], torch.Tensor]:
    """The input transform of the model `spec` describes, as a callable (what timm's `create_transform`
    gives): a video file's path -> its (V, 3, T, S, S) input views on `device`, `video_views` with `spec`,
    `views` and `device` bound, so a user feeds the model exactly as evaluation does."""
    return functools.partial(video_views, spec=spec, views=views, device=device)
