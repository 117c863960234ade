"""A torch Dataset of video clips, reproducible per (seed, epoch, index).

Each item draws its randomness from `np.random.default_rng([seed, epoch, index])`, never from a
worker's global RNG state: resuming mid-epoch replays exactly the same clips, and the number of
DataLoader workers does not change what a run sees. A training video that fails to decode is
replaced by another (drawn from the same stream, so still reproducible) and the failure reported
with the item; a truncated file is such a failure (stadapt.data.pyav_reader never pads a clip with its last
decodable frame), a genuinely short video is not (the sampler repeats its last frame index). In
evaluation nothing is substituted: the item comes back as an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from stadapt.data.decode import open_video
from stadapt.data.decoders import check_decoder
from stadapt.data.on_device import stack_padded
from stadapt.data.prepared import VideoEntry
from stadapt.data.pyav_reader import VideoReader
from stadapt.data.sampling import FrameSampler
from stadapt.data.torchcodec_reader import TorchCodecReader
from stadapt.data.transforms import decode_short_side
from stadapt.errors import VideoDecodeError

TRAIN_RETRIES = 10  # other videos tried in place of one that fails to decode, before giving up on the item


class VideoClipDataset(torch.utils.data.Dataset):
    """Clips of labelled videos: one augmented clip in training, all test views in evaluation.

    `transform` is called as `transform(frames, rng)` in training (-> (3, T, S, S)) and as
    `transform(frames)` in evaluation (-> (spatial_views, 3, T, S, S), e.g. a `TestTransform`).
    With `on_device=True` only its `worker` half runs here: items are uint8 (3, T, H, W) clips (eval:
    (temporal_views, 3, T, H, W)) with their `params`, and `stadapt.data.on_device.to_model_input`
    finishes them where the model runs.
    """

    def __init__(
        self,
        entries: Sequence[VideoEntry],
        sampler: FrameSampler,
        transform: Any,  # TrainTransform / TestTransform (or any callable, without on_device)
        *,
        train: bool,
        seed: int = 0,
        temporal_views: int = 1,
        on_device: bool = False,
        decoder: str = "pyav",
        decode_device: str = "cpu",
    ) -> None:
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if temporal_views < 1:
            raise ValueError(f"temporal_views must be >= 1, got {temporal_views}")
        self.entries = list(entries)
        self.sampler = sampler
        self.transform = transform
        self.train = bool(train)
        self.seed = int(seed)
        self.temporal_views = int(temporal_views)
        self.epoch = 0
        self.on_device = bool(on_device)
        check_decoder(decoder, decode_device)  # refused here, in the main process, not in every worker
        self.decoder, self.decode_device = decoder, decode_device

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentation `__getitem__` reproduces (call before each epoch)."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """`dataset[i]` uses the epoch of `set_epoch`; `dataset[epoch, i]` names it (for samplers that
        span epochs, so that persistent DataLoader workers need no epoch hand-over).

        In training a video that fails to decode is replaced by another one drawn from the same
        (seed, epoch, index) stream, up to `TRAIN_RETRIES` times; the failures travel with the item
        under "replaced" so the loop can log and count them. In evaluation nothing is substituted:
        the item comes back with `video=None` and the error.
        """
        epoch, index = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (self.epoch, int(key))
        if not self.train:
            entry = self.entries[index]
            try:
                return {**self._views(entry), "label": entry.label, "index": index}
            except VideoDecodeError as exc:
                return {"video": None, "label": entry.label, "index": index, "path": str(entry.path),
                        "error": str(exc)}
        replaced: list[dict[str, Any]] = []
        draws = np.random.default_rng([self.seed, epoch, index, 1])  # where replacements come from
        chosen = index
        for attempt in range(TRAIN_RETRIES + 1):
            entry = self.entries[chosen]
            try:
                clip = self._clip(entry, index, epoch, attempt)
            except VideoDecodeError as exc:
                replaced.append({"index": chosen, "path": str(entry.path), "error": str(exc)})
                failed = {event["index"] for event in replaced}
                if len(failed) == len(self):
                    break
                while chosen in failed:
                    chosen = int(draws.integers(len(self)))
                continue
            return {**clip, "label": entry.label, "index": chosen, "replaced": replaced}
        last = replaced[-1]
        return {"video": None, "label": self.entries[last["index"]].label, "index": last["index"],
                "path": last["path"], "error": last["error"], "replaced": replaced[:-1]}

    def open_entry(self, entry: VideoEntry) -> VideoReader | TorchCodecReader:
        """A reader of `entry` whose frames are no larger than the transform needs (a 4000x3000 video
        decodes at the size the model's clip is made from, not at 36 MB a frame)."""
        return open_video(entry.path, self.decoder, self.decode_device,
                          max_short_side=decode_short_side(self.transform))

    def _clip(self, entry: VideoEntry, index: int, epoch: int, attempt: int = 0) -> dict[str, torch.Tensor]:
        key = [self.seed, epoch, index] + ([attempt] if attempt else [])  # attempt 0 keeps the old streams
        rng = np.random.default_rng(key)
        with self.open_entry(entry) as reader:
            frames = reader.read(self.sampler.train(reader.num_frames, rng))
        if self.on_device:
            video, params = self.transform.worker(frames, rng)
            return {"video": video, "params": params}
        return {"video": self.transform(frames, rng)}

    def _views(self, entry: VideoEntry) -> dict[str, torch.Tensor]:
        """(temporal_views * spatial_views, 3, T, S, S), temporal-major; one decode for all views.
        With `on_device`: (temporal_views, 3, T, H, W) uint8 and the params of the spatial views."""
        with self.open_entry(entry) as reader:
            views = self.sampler.test(reader.num_frames, self.temporal_views)
            union = sorted({i for view in views for i in view})
            frames = reader.read(union)
        row = {frame: r for r, frame in enumerate(union)}
        clips = [frames[[row[i] for i in view]] for view in views]
        if self.on_device:
            parts = [self.transform.worker(clip) for clip in clips]
            return {"video": stack_padded([video for video, _ in parts])[0], "params": parts[0][1]}  # one size
        out = []
        for clip in clips:
            views_of_clip = self.transform(clip)
            out.append(views_of_clip if views_of_clip.ndim == 5 else views_of_clip.unsqueeze(0))
        return {"video": torch.cat(out)}


def collate_clips(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the decodable items; list the failed ones under "skipped" and the videos that training
    replaced under "replaced" (index, path, error)."""
    good = [item for item in batch if item.get("video") is not None]
    skipped = [
        {"index": int(item["index"]), "path": str(item.get("path", "")), "error": str(item.get("error", ""))}
        for item in batch
        if item.get("video") is None
    ]
    deferred = bool(good) and "params" in good[0]
    video, lease = None, None
    if deferred:  # uint8 clips, finished on the device by to_model_input
        video, lease = stack_padded([item["video"] for item in good], shared=True)
    elif good:
        video = torch.stack([item["video"] for item in good])
    out: dict[str, Any] = {
        "video": video,
        "label": torch.tensor([int(item["label"]) for item in good], dtype=torch.long),
        "index": torch.tensor([int(item["index"]) for item in good], dtype=torch.long),
        "skipped": skipped,
        "replaced": [event for item in batch for event in item.get("replaced", ())],
    }
    if deferred:
        out["params"] = torch.stack([item["params"] for item in good])
    if lease is not None:  # last, so that torch's pin-memory thread pins the video before it releases
        out["lease"] = lease
    return out
