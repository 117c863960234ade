"""The uint8 data path (issue 16.1): workers hand uint8 clips and per-clip parameters to the loop, the
float conversion, resize, crop, flip and normalisation run where the model runs, and the clips that
come out equal the old all-in-the-worker transform's.

Bound: on the CPU the new pipeline's clips equal the old pipeline's BIT FOR BIT (max |difference| = 0).
The only uint8 steps are the decoded frames themselves, RandAugment (uint8 in the old pipeline too)
and an integer crop box (lossless), so there is no extra rounding to allow for.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stadapt.backbones.registry import parse_backbone
from stadapt.data.dataset import collate_clips
from stadapt.data.encode import write_video
from stadapt.data.on_device import to_model_input
from stadapt.data.prepared import VideoEntry
from stadapt.data.pyav_reader import VideoReader
from stadapt.recipe import load_recipe
from stadapt.runtime.build import eval_dataset, train_dataset
from stadapt.runtime.views import parse_views

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


# ---- today's transform, frozen: the maths the new pipeline must reproduce ----------------------------

def _old_resize_short(clip: torch.Tensor, short: int, interpolation: str) -> torch.Tensor:
    height, width = clip.shape[-2:]
    if min(height, width) == short:
        return clip
    if height <= width:
        new_h, new_w = short, max(short, round(width * short / height))
    else:
        new_h, new_w = max(short, round(height * short / width)), short
    out = F.interpolate(clip, size=(new_h, new_w), mode=interpolation, antialias=True, align_corners=False)
    return out.clamp_(0.0, 255.0)


def _old_normalise(clip: torch.Tensor, t) -> torch.Tensor:
    mean, std = torch.tensor(t.mean).view(1, 3, 1, 1), torch.tensor(t.std).view(1, 3, 1, 1)
    return ((clip / 255.0 - mean) / std).permute(1, 0, 2, 3).contiguous()


def old_train(t, frames: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    """TrainTransform.__call__ as it was: everything in the worker, in float32."""
    from stadapt.data.augment import random_resized_crop_box

    clip = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).contiguous()
    if t.randaugment is not None:
        clip = t.randaugment(clip, rng)
    clip = clip.to(torch.float32)
    s = t.size
    if t.crop == "jitter":
        short = max(s, round(s * rng.uniform(*t.scale)))
        clip = _old_resize_short(clip, short, t.interpolation)
        height, width = clip.shape[-2:]
        top, left = int(rng.integers(0, height - s + 1)), int(rng.integers(0, width - s + 1))
        clip = clip[..., top : top + s, left : left + s]
    else:
        top, left, h, w = random_resized_crop_box(*clip.shape[-2:], t.area, t.ratio, rng=rng)
        clip = F.interpolate(clip[..., top : top + h, left : left + w], size=(s, s), mode=t.interpolation,
                             antialias=True, align_corners=False).clamp_(0.0, 255.0)
    if t.flip and rng.random() < 0.5:
        clip = clip.flip(-1)
    return _old_normalise(clip, t)


def old_test(t, frames: np.ndarray) -> torch.Tensor:
    """TestTransform.__call__ as it was."""
    clip = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).to(torch.float32)
    clip = _old_resize_short(clip, t.size, t.interpolation)
    s = t.size
    return torch.stack([_old_normalise(clip[..., top : top + s, left : left + s], t)
                        for top, left in t.crop_offsets(*clip.shape[-2:])])


# ---- fixtures -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> list[VideoEntry]:
    """Real H.264 files of two sizes (K400's 320x240 and a portrait 240x256), so batches need padding."""
    root = tmp_path_factory.mktemp("uint8_videos")
    rng = np.random.default_rng(0)
    entries = []
    for n, (height, width) in enumerate([(240, 320), (256, 240), (240, 320)]):
        frames = rng.integers(0, 256, (20, height, width, 3), dtype=np.uint8)
        frames = np.clip(frames.astype(np.int16) // 4 * 4, 0, 255).astype(np.uint8)
        entries.append(VideoEntry(write_video(root / f"v{n}.mp4", frames), n % 2))
    return entries


def _recipe(name: str):
    recipe = load_recipe(RECIPES / name, check_files=False)
    _, variant = parse_backbone(recipe.backbone.name, dict(recipe.backbone.options))
    return recipe, variant


# ---- tests --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("recipe_file", ["k400_vitb.yaml", "ssv2_vitb.yaml"])
def test_training_clips_equal_the_old_pipeline_bit_for_bit(recipe_file: str, videos) -> None:
    recipe, variant = _recipe(recipe_file)
    dataset = train_dataset(recipe, videos, variant)
    for epoch in (2,):
        items = [dataset[epoch, i] for i in range(len(videos))]
        assert all(item["video"].dtype == torch.uint8 and item["video"].shape[0] == 3 for item in items)
        batch = collate_clips(items)
        assert batch["video"].dtype == torch.uint8 and batch["video"].ndim == 5  # padded to one size
        new = to_model_input(batch, dataset.transform, torch.device("cpu"))
        for i, entry in enumerate(videos):
            rng = np.random.default_rng([recipe.train.seed, epoch, i])
            with VideoReader(entry.path) as reader:
                frames = reader.read(dataset.sampler.train(reader.num_frames, rng))
            old = old_train(dataset.transform, frames, rng)
            assert new[i].dtype == torch.float32 and new[i].shape == old.shape
            assert (new[i] - old).abs().max().item() == 0.0, f"{recipe_file}, epoch {epoch}, clip {i}"


@pytest.mark.parametrize("recipe_file", ["k400_vitb.yaml", "ssv2_vitb.yaml"])
def test_test_views_equal_the_old_pipeline_bit_for_bit(recipe_file: str, videos) -> None:
    recipe, variant = _recipe(recipe_file)
    temporal, spatial = parse_views(recipe.data.views)
    dataset = eval_dataset(videos, variant, frames=recipe.data.frames, sampling=recipe.data.sampling,
                           stride=recipe.data.stride, views=(temporal, spatial))
    batch = collate_clips([dataset[i] for i in range(len(videos))])
    assert batch["video"].dtype == torch.uint8 and batch["video"].shape[1] == temporal
    new = to_model_input(batch, dataset.transform, torch.device("cpu"))
    assert new.shape[:2] == (len(videos), temporal * spatial)
    for i, entry in enumerate(videos):
        with VideoReader(entry.path) as reader:
            views = dataset.sampler.test(reader.num_frames, temporal)
            old = torch.cat([old_test(dataset.transform, reader.read(view)) for view in views])
        assert (new[i] - old).abs().max().item() == 0.0, f"{recipe_file}, video {i}"


def test_worker_count_changes_no_uint8_batch(videos) -> None:
    recipe, variant = _recipe("k400_vitb.yaml")
    dataset = train_dataset(recipe, videos, variant)

    def batches(workers: int) -> list[dict]:
        loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=workers, collate_fn=collate_clips)
        return list(loader)

    for one, two in zip(batches(0), batches(2), strict=True):
        assert one["video"].dtype == torch.uint8
        assert torch.equal(one["video"], two["video"]) and torch.equal(one["params"], two["params"])


TINY = {
    "backbone": {"name": "clip:tiny", "weights": "synthetic"},
    "adapter": {"bottleneck": 16},
    "data": {"frames": 4, "stride": 2, "views": "1x2", "num_workers": 1},
    "optim": {"lr": 1e-3, "batch_size": 2, "steps": 2, "warmup_steps": 0},
    "train": {"device": "cpu", "log_every": 1, "val_every": 0, "save_every": 100},
}


def test_uint8_batches_reach_the_loop_and_are_normalised_where_the_model_runs(tmp_path: Path, monkeypatch) -> None:
    """The loop (its step unit) and evaluation call `to_model_input` at the spot where a batch moves to the
    device, with a uint8 batch straight from a DataLoader worker; what the model gets is float and normalised."""
    from stadapt.data import on_device
    from stadapt.data.synthetic import SyntheticSpec, write_synthetic
    from stadapt.recipe import recipe_from_dict
    from stadapt.training import loop, step

    root = tmp_path / "data"
    write_synthetic(root, SyntheticSpec(motions=("horizontal",), train_per_class=2, val_per_class=1, frames=8,
                                        size=32, clutter=2))
    seen: list[tuple[str, torch.dtype, torch.dtype, float]] = []
    real = on_device.to_model_input

    def spy(where: str):
        def call(batch, transform, device):
            out = real(batch, transform, device)
            seen.append((where, batch["video"].dtype, out.dtype, float(out.min())))
            return out
        return call

    monkeypatch.setattr(step, "to_model_input", spy("train"))  # the loop's step unit
    monkeypatch.setattr(on_device, "to_model_input", spy("eval"))  # evaluation imports it when it runs
    raw = json.loads(json.dumps(TINY))
    raw["data"]["root"], raw["output"] = str(root), {"dir": str(tmp_path / "run")}
    loop.train(recipe_from_dict(raw, source="test"), progress=False)
    assert {where for where, *_ in seen} == {"train", "eval"}
    for where, batch_dtype, model_dtype, low in seen:
        assert batch_dtype == torch.uint8, where
        assert model_dtype == torch.float32 and low < 0.0, where  # normalised: below 0 after the mean is taken


def test_collation_copies_clips_as_they_lie_in_memory(videos) -> None:
    """Issue 22.5: the worker's one copy of a clip (collation) is made row by row from the decoded
    (T, H, W, 3) frames, not as a permuting gather into (3, T, H, W) memory (which cost a worker as much
    again as the copy); the batch is a (B, 3, T, H, W) view of (B, T, H, W, 3) memory, same values."""
    recipe, variant = _recipe("k400_vitb.yaml")
    dataset = train_dataset(recipe, videos, variant)
    items = [dataset[0, i] for i in (0, 2)]  # both 320x240: no padding
    batch = collate_clips(items)["video"]
    assert batch.shape == (2, 3, *items[0]["video"].shape[1:])
    assert batch.permute(0, 2, 3, 4, 1).is_contiguous()
    assert torch.equal(batch, torch.stack([item["video"].contiguous() for item in items]))
    padded = collate_clips([dataset[0, i] for i in range(len(videos))])["video"]  # 320x240 and 240x256
    assert padded.permute(0, 2, 3, 4, 1).is_contiguous()


class _CollatedInWorker(torch.utils.data.Dataset):
    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return 1

    def __getitem__(self, n: int) -> dict:
        batch = collate_clips([self.dataset[0, 0], self.dataset[0, 1]])
        return {"shared": batch["video"].is_shared(), "video": batch["video"].clone()}


def test_a_worker_collates_straight_into_shared_memory(videos) -> None:
    """In a DataLoader worker the batch is allocated in shared memory (as torch's default collate does),
    so handing it to the main process costs no second copy of every clip."""
    recipe, variant = _recipe("k400_vitb.yaml")
    dataset = train_dataset(recipe, videos, variant)
    loader = torch.utils.data.DataLoader(_CollatedInWorker(dataset), batch_size=None, num_workers=1)
    (out,) = list(loader)
    assert out["shared"] is True
    assert torch.equal(out["video"], collate_clips([dataset[0, 0], dataset[0, 1]])["video"])
    assert not collate_clips([dataset[0, 0]])["video"].is_shared()  # outside a worker: ordinary memory
