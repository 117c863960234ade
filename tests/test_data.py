"""The video data layer: prepared layout, decoding, sampling, transforms and the clip dataset.

Videos are tiny real H.264 files written with PyAV; frame t of a "grey" video is filled with the value
10 * t, so the mean of a decoded frame tells which frame it is despite compression.
"""

import json
import pickle
import subprocess
import sys

import av
import numpy as np
import pytest
import torch

from stadapt.data.dataset import VideoClipDataset, collate_clips
from stadapt.data.encode import write_video
from stadapt.data.prepared import (
    VideoEntry,
    file_sha256,
    open_prepared,
    read_classes,
    read_list,
    write_list,
    write_prepared,
)
from stadapt.data.pyav_reader import VideoReader, read_frames
from stadapt.data.sampling import SegmentSampler, StrideSampler, make_sampler
from stadapt.data.transforms import TestTransform, TrainTransform
from stadapt.errors import DataError, VideoDecodeError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
FRAMES, HEIGHT, WIDTH = 20, 32, 40


def grey_frames(n=FRAMES, height=HEIGHT, width=WIDTH):
    return np.stack([np.full((height, width, 3), 10 * t, np.uint8) for t in range(n)])


def textured_frames(n=FRAMES, height=HEIGHT, width=48):
    y, x = np.mgrid[0:height, 0:width]
    pattern = (x * 3 + (y % 8) * 8).astype(np.int32)
    return np.stack([np.clip(pattern + 4 * t, 0, 255).astype(np.uint8) for t in range(n)])[..., None].repeat(3, -1)


def frame_ids(frames):
    """Recover the frame index of grey frames from their mean level."""
    return [round(float(f.mean()) / 10) for f in frames]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    paths = {
        "grey": write_video(root / "grey.mp4", grey_frames()),
        "grey_mkv": write_video(root / "grey.mkv", grey_frames()),
        "spaced": write_video(root / "clips" / "my clip ü.mp4", textured_frames()),
        "short": write_video(root / "short.mp4", grey_frames(n=3)),
    }
    text = root / "text.mp4"
    text.write_text("this is not a video\n")
    empty = root / "empty.mp4"
    empty.write_bytes(b"")
    data = paths["grey"].read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 2])
    data = paths["grey_mkv"].read_bytes()
    (root / "truncated.mkv").write_bytes(data[: len(data) // 3])
    with av.open(str(root / "audio.wav"), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    paths.update({"text": text, "empty": empty, "root": root})
    return paths


# ----------------------------------------------------------------------------------------- package


def test_importing_the_package_stays_light():
    code = (
        "import sys, stadapt.data, stadapt.data.prepared; "
        "assert 'torch' not in sys.modules and 'av' not in sys.modules, sorted(sys.modules); "
        "assert stadapt.data.StrideSampler.__name__ == 'StrideSampler'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ----------------------------------------------------------------------------------------- prepared


def test_prepared_round_trip(tmp_path):
    out = tmp_path / "prep"
    abs_video = tmp_path / "elsewhere" / "abs video.mp4"
    manifest = write_prepared(
        out,
        ["air drumming", "ünïcode class"],
        {"train": [("videos/my clip ü.mp4", 1), (str(abs_video), 0)], "val": [("v/a.mp4", 0)]},
        source="unit-test",
        quarantine=[("videos/bad.mp4", "cannot decode\tit")],
        extra={"note": "x"},
    )
    data = open_prepared(out)
    assert data.classes == ["air drumming", "ünïcode class"] and data.root == out.resolve()
    assert data.manifest == manifest == json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["format"] == "stadapt-prepared" and manifest["format_version"] == 1
    assert manifest["source"] == "unit-test" and manifest["num_classes"] == 2 and manifest["note"] == "x"
    assert manifest["classes_sha256"] == file_sha256(out / "classes.txt")
    train_sha = file_sha256(out / "train.txt")
    assert manifest["splits"]["train"] == {"file": "train.txt", "count": 2, "sha256": train_sha}
    assert manifest["splits"]["val"]["count"] == 1 and data.splits == ["train", "val"]
    assert manifest["quarantine"] == {"file": "quarantine.txt", "count": 1}
    assert (out / "quarantine.txt").read_text(encoding="utf-8") == "videos/bad.mp4\tcannot decode it\n"

    train = data.entries("train.txt")
    assert train == [VideoEntry(out.resolve() / "videos" / "my clip ü.mp4", 1), VideoEntry(abs_video, 0)]
    assert all(e.path.is_absolute() for e in train)
    assert data.entries("val") == data.entries(out / "val.txt")  # a bare split name finds val.txt
    assert data.list_sha256("train.txt") == manifest["splits"]["train"]["sha256"]
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]

    # preparing again without quarantined videos removes the stale quarantine file
    again = write_prepared(out, ["a", "b"], {"train": [("x.mp4", 1)]}, source="unit-test")
    assert again["quarantine"] == {"file": None, "count": 0} and not (out / "quarantine.txt").exists()


def test_write_refuses_what_would_not_read_back(tmp_path):
    with pytest.raises(DataError, match="labels outside"):
        write_prepared(tmp_path, ["a"], {"train": [("x.mp4", 1)]}, source="t")
    with pytest.raises(DataError, match="duplicate class"):
        write_prepared(tmp_path, ["a", "a"], {"train": [("x.mp4", 0)]}, source="t")
    with pytest.raises(DataError, match="cannot write list path"):
        write_list(tmp_path / "l.txt", [("bad\nname.mp4", 0)])
    with pytest.raises(DataError, match="bad split name"):
        write_prepared(tmp_path, ["a"], {"classes": [("x.mp4", 0)]}, source="t")


def test_open_prepared_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist") as missing:
        open_prepared(tmp_path / "nope")
    assert "stadapt prepare-data synthetic --out DIR" in missing.value.hint
    with pytest.raises(DataError, match="no classes.txt") as bare:
        open_prepared(tmp_path)
    assert "prepare-data" in bare.value.hint
    write_prepared(tmp_path / "p", ["a"], {"train": [("x.mp4", 0)]}, source="t")
    with pytest.raises(DataError, match="list file .*test.txt does not exist.*train"):
        open_prepared(tmp_path / "p").entries("test.txt")


def test_read_classes_errors(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("a\n\nb\n", encoding="utf-8")
    with pytest.raises(DataError, match="blank lines \\(line 2\\)"):
        read_classes(path)
    path.write_text("a\nb\na\nb\n", encoding="utf-8")
    with pytest.raises(DataError, match="'a' on lines 1 and 3; 'b' on lines 2 and 4"):
        read_classes(path)
    with pytest.raises(DataError, match="does not exist"):
        read_classes(tmp_path / "missing.txt")


def test_bad_list_lines_are_reported_together(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("ok.mp4 0\nnolabel.mp4\n\nvideo x.mp4 one\nfar.mp4 7\nneg.mp4 -1\nf.mp4 1.0\ng.mp4 1\n")
    with pytest.raises(DataError) as caught:
        read_list(path, tmp_path, num_classes=3)
    message = caught.value.message
    assert str(path) in message and "5 bad line(s)" in message
    assert "line 2 (no label), 4 (label 'one' is not an integer), 5 (label 7 not in 0..2)" in message
    assert "6 (label -1 not in 0..2) (and 1 more)" in message and "0..2" in caught.value.hint

    path.write_text("a b c.mp4 2\n\n  \n", encoding="utf-8")
    assert read_list(path, tmp_path, 3) == [VideoEntry(tmp_path / "a b c.mp4", 2)]
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="no entries"):
        read_list(path, tmp_path, 3)


# ----------------------------------------------------------------------------------------- decoding


def test_reader_metadata(videos):
    with VideoReader(videos["grey"]) as reader:
        assert reader.num_frames == FRAMES and reader.size == (WIDTH, HEIGHT) and reader.fps == 12.0
    with VideoReader(videos["grey_mkv"]) as reader:  # mkv stores no frame count: packets are counted
        assert reader.num_frames == FRAMES
        assert frame_ids(reader.read([19, 0])) == [19, 0]


def test_read_exact_indices(videos):
    indices = [7, 2, 2, 19, 0, 7]
    frames = read_frames(videos["grey"], indices)
    assert frames.shape == (6, HEIGHT, WIDTH, 3) and frames.dtype == np.uint8
    assert frame_ids(frames) == indices
    assert all(abs(float(f.mean()) - 10 * i) < 2.0 for f, i in zip(frames, indices, strict=True))
    with VideoReader(videos["grey"]) as reader:  # a reader can be read again (it restarts)
        assert frame_ids(reader.read([3])) == [3] and frame_ids(reader.read([1, 5])) == [1, 5]
        assert reader.read([]).shape == (0, HEIGHT, WIDTH, 3)


def test_indices_past_the_end_are_clamped(videos):
    assert frame_ids(read_frames(videos["grey"], [25, 18, 100])) == [19, 18, 19]
    assert frame_ids(read_frames(videos["short"], [0, 2, 4, 6])) == [0, 2, 2, 2]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("missing.mp4", "no such file"),
        ("empty.mp4", "empty file"),
        ("text.mp4", "not a readable video container"),
        ("truncated.mp4", "not a readable video container"),
        ("truncated.mkv", "no frame"),
        ("audio.wav", "no video stream"),
        (".", "not a regular file"),
    ],
)
def test_broken_videos_raise_decode_errors(videos, name, reason):
    path = videos["root"] / name
    with pytest.raises(VideoDecodeError, match=reason) as caught:
        read_frames(path, [0, 1])
    assert caught.value.message.startswith(f"cannot decode {path}") and caught.value.hint


# ----------------------------------------------------------------------------------------- sampling


def test_stride_sampler_by_hand():
    sampler = StrideSampler(4, 2)  # span 7
    assert sampler.test(20, 1) == [[7, 9, 11, 13]]  # max_start 13: centre start int(0.5 * 14) = 7
    assert sampler.test(20, 3) == [[2, 4, 6, 8], [7, 9, 11, 13], [11, 13, 15, 17]]
    assert sampler.test(7, 2) == [[0, 2, 4, 6], [0, 2, 4, 6]]
    assert sampler.test(5, 1) == [[0, 2, 4, 4]]  # shorter than the clip: repeat the last valid index
    assert sampler.train(5, np.random.default_rng(0)) == [0, 2, 4, 4]
    assert sampler.train(1, np.random.default_rng(0)) == [0, 0, 0, 0]
    starts = set()
    for seed in range(300):
        clip = sampler.train(20, np.random.default_rng(seed))
        assert clip == [clip[0] + 2 * i for i in range(4)]
        starts.add(clip[0])
    assert starts == set(range(14))
    assert StrideSampler(8, 16).test(300, 1) == [[94 + 16 * i for i in range(8)]]  # K400 8x16


def test_segment_sampler_by_hand():
    sampler = SegmentSampler(4)  # n = 10: segments {0,1,2} {3,4} {5,6,7} {8,9}
    assert sampler.test(10, 1) == [[1, 3, 6, 8]]
    assert sampler.test(10, 2) == [[0, 3, 5, 8], [1, 4, 6, 9]]
    seen = [set() for _ in range(4)]
    for seed in range(200):
        for k, i in enumerate(sampler.train(10, np.random.default_rng(seed))):
            seen[k].add(i)
    assert seen == [{0, 1, 2}, {3, 4}, {5, 6, 7}, {8, 9}]
    # shorter than the clip: empty segments take int(k * n / T)
    assert sampler.train(3, np.random.default_rng(1)) == [0, 1, 2, 2]
    assert sampler.test(3, 1) == [[0, 1, 1, 2]]
    assert SegmentSampler(8).train(2, np.random.default_rng(5)) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert SegmentSampler(8).test(1, 3) == [[0] * 8] * 3


def test_make_sampler():
    assert isinstance(make_sampler("stride", 8, 16), StrideSampler) and make_sampler("stride", 8, 16).stride == 16
    assert isinstance(make_sampler("segment", 8, 16), SegmentSampler)
    with pytest.raises(DataError, match="unknown frame sampler 'dense'") as caught:
        make_sampler("dense", 8, 4)
    assert "stride" in caught.value.hint and "segment" in caught.value.hint


# ----------------------------------------------------------------------------------------- transforms


def x_gradient(t, height, width):
    row = (np.arange(width) * 5).astype(np.uint8)[None, None, :, None]
    return np.broadcast_to(row, (t, height, width, 3)).copy()


def test_transform_shapes_and_normalisation():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (4, 32, 40, 3), dtype=np.uint8)
    train = TrainTransform(16, CLIP_MEAN, CLIP_STD, flip=True)(frames, np.random.default_rng(1))
    assert train.shape == (3, 4, 16, 16) and train.dtype == torch.float32
    test = TestTransform(16, CLIP_MEAN, CLIP_STD, spatial_views=3)(frames)
    assert test.shape == (3, 3, 4, 16, 16) and test.dtype == torch.float32
    assert TestTransform(16, CLIP_MEAN, CLIP_STD)(frames).shape == (1, 3, 4, 16, 16)

    grey = np.full((2, 30, 50, 3), 128, np.uint8)
    expected = torch.tensor([(128 / 255 - m) / s for m, s in zip(CLIP_MEAN, CLIP_STD, strict=True)]).view(3, 1, 1, 1)
    outputs = [
        TrainTransform(16, CLIP_MEAN, CLIP_STD)(grey, rng),
        *TestTransform(16, CLIP_MEAN, CLIP_STD, spatial_views=3)(grey),
    ]
    for out in outputs:
        assert torch.allclose(out, expected.expand_as(out), atol=1e-4)


def test_three_crops_lie_along_the_long_side():
    unit = dict(mean=(0, 0, 0), std=(1, 1, 1))
    for height, width in [(16, 24), (24, 16)]:
        frames = x_gradient(2, height, width) + np.arange(height, dtype=np.uint8)[None, :, None, None] * 7
        views = TestTransform(16, **unit, spatial_views=3)(frames)  # short side already 16: no resize
        full = torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 255
        if width > height:
            crops = [full[..., :, a : a + 16] for a in (0, 4, 8)]
        else:
            crops = [full[..., a : a + 16, :] for a in (0, 4, 8)]
        for view, crop in zip(views, crops, strict=True):
            assert torch.allclose(view, crop)
        assert not torch.equal(views[0], views[1]) and not torch.equal(views[1], views[2])
    # with a resize: 32x48 -> 16x24, crops still start / centre / end (means increase left to right)
    views = TestTransform(16, **unit, spatial_views=3)(x_gradient(1, 32, 48))
    means = [float(v.mean()) for v in views]
    assert means[0] < means[1] < means[2]


def test_flip_is_off_unless_asked_and_parameters_are_shared_by_frames():
    frames = x_gradient(3, 16, 40)  # one identical frame repeated: every output frame must match
    kwargs = dict(mean=(0, 0, 0), std=(1, 1, 1), scale=(1.0, 1.0))
    plain, flipping = TrainTransform(16, **kwargs), TrainTransform(16, **kwargs, flip=True)
    mirrored = 0
    for seed in range(40):
        out = plain(frames, np.random.default_rng(seed))
        assert (out[0, 0, 0, 1:] > out[0, 0, 0, :-1]).all()  # increasing left to right: never mirrored
        assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])
        flipped = flipping(frames, np.random.default_rng(seed))
        mirrored += bool((flipped[0, 0, 0, 1:] < flipped[0, 0, 0, :-1]).all())
    assert 5 < mirrored < 35
    jittered = TrainTransform(16, (0, 0, 0), (1, 1, 1), scale=(1.0, 1.15))
    a = jittered(x_gradient(2, 32, 40), np.random.default_rng(3))
    assert torch.equal(a, jittered(x_gradient(2, 32, 40), np.random.default_rng(3)))


def test_ssv2_pipeline_randaugment_then_resized_crop_one_draw_per_clip():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (1, 40, 56, 3), dtype=np.uint8)
    frames = np.repeat(frame, 4, axis=0)  # identical frames must stay identical: one draw per clip
    ssv2 = TrainTransform(16, CLIP_MEAN, CLIP_STD, crop="resized", randaugment="rand-m7-n4-mstd0.5-inc1")
    outputs = [ssv2(frames, np.random.default_rng(seed)) for seed in range(12)]
    for out in outputs:
        assert out.shape == (3, 4, 16, 16) and out.dtype == torch.float32
        assert all(torch.equal(out[:, 0], out[:, t]) for t in range(1, 4))
    assert len({out.sum().item() for out in outputs}) == 12  # crops and ops differ between clips
    assert torch.equal(outputs[3], ssv2(frames, np.random.default_rng(3)))  # reproducible per draw
    # the crop is RandomResizedCrop: a box of a uniform-colour frame keeps the colour, any box size
    flat = np.full((2, 40, 56, 3), 200, np.uint8)
    plain = TrainTransform(16, (0, 0, 0), (1, 1, 1), crop="resized", area=(0.08, 0.1))
    assert torch.allclose(plain(flat, np.random.default_rng(1)), torch.full((3, 2, 16, 16), 200 / 255), atol=1e-5)
    # the RandAugment runs on the full decoded frames, before the crop, and is the named policy
    assert ssv2.randaugment is not None and ssv2.randaugment.num_layers == 4
    with pytest.raises(DataError, match="RandAugment"):
        TrainTransform(16, CLIP_MEAN, CLIP_STD, randaugment="rand-m7-n4-x")
    with pytest.raises(DataError, match="crop"):
        TrainTransform(16, CLIP_MEAN, CLIP_STD, crop="center")


def test_any_number_of_spatial_views_spreads_crops_along_the_long_side():
    unit = dict(mean=(0, 0, 0), std=(1, 1, 1))
    assert TestTransform(16, **unit, spatial_views=2).crop_offsets(16, 40) == [(0, 0), (0, 24)]
    assert TestTransform(16, **unit, spatial_views=3).crop_offsets(16, 40) == [(0, 0), (0, 12), (0, 24)]
    assert TestTransform(16, **unit, spatial_views=5).crop_offsets(40, 16) == [(0, 0), (6, 0), (12, 0), (18, 0),
                                                                              (24, 0)]
    assert TestTransform(16, **unit, spatial_views=4).crop_offsets(16, 16) == [(0, 0)] * 4  # square: one place
    views = TestTransform(16, **unit, spatial_views=4)(x_gradient(2, 16, 40))
    assert views.shape == (4, 3, 2, 16, 16)
    means = [float(v.mean()) for v in views]
    assert means == sorted(means) and len(set(means)) == 4


def test_transform_arguments_are_checked():
    with pytest.raises(DataError, match="spatial views must be >= 1"):
        TestTransform(16, CLIP_MEAN, CLIP_STD, spatial_views=0)
    with pytest.raises(DataError, match="unknown interpolation"):
        TrainTransform(16, CLIP_MEAN, CLIP_STD, interpolation="nearest")
    with pytest.raises(DataError, match="scale"):
        TrainTransform(16, CLIP_MEAN, CLIP_STD, scale=(0.8, 1.0))


# ----------------------------------------------------------------------------------------- dataset


@pytest.fixture(scope="module")
def prepared(videos, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    root = videos["root"]
    rows = [(str(videos["spaced"]), 1), (str(root / "grey.mp4"), 0), (str(root / "text.mp4"), 1)]
    write_prepared(out, ["grey", "textured"], {"train": rows}, source="unit-test")
    return open_prepared(out)


def train_dataset(entries, **kwargs):
    transform = TrainTransform(16, CLIP_MEAN, CLIP_STD, flip=True)
    return VideoClipDataset(entries, StrideSampler(4, 2), transform, train=True, **kwargs)


def test_train_items_are_deterministic_per_seed_epoch_index(prepared):
    dataset = train_dataset(prepared.entries("train"), seed=3)
    item = dataset[0]
    assert item["video"].shape == (3, 4, 16, 16) and item["label"] == 1 and item["index"] == 0
    assert torch.equal(item["video"], dataset[0]["video"])
    assert torch.equal(item["video"], train_dataset(prepared.entries("train"), seed=3)[0]["video"])
    dataset.set_epoch(1)
    assert not torch.equal(item["video"], dataset[0]["video"])
    dataset.set_epoch(0)
    assert torch.equal(item["video"], dataset[0]["video"])
    assert not torch.equal(item["video"], train_dataset(prepared.entries("train"), seed=4)[0]["video"])


def test_eval_items_hold_all_views_temporal_major(videos):
    entries = [VideoEntry(videos["grey"], 0)]
    transform = TestTransform(16, (0, 0, 0), (1, 1, 1), spatial_views=3)
    dataset = VideoClipDataset(entries, StrideSampler(4, 2), transform, train=False, temporal_views=2)
    video = dataset[0]["video"]
    assert video.shape == (6, 3, 4, 16, 16)
    # 20 frames, span 7: temporal starts int((k + 0.5) * 14 / 2) = 3 and 10
    levels = (video.mean(dim=(1, 3, 4)) * 255 / 10).round().int().tolist()
    assert levels == [[3, 5, 7, 9]] * 3 + [[10, 12, 14, 16]] * 3


def test_training_replaces_a_broken_video_and_reports_it(prepared):
    entries = prepared.entries("train")
    dataset = train_dataset(entries)
    item = dataset[2]  # text.mp4: not a video
    assert item["video"] is not None and item["index"] in (0, 1)
    assert item["label"] == entries[item["index"]].label
    assert item["replaced"] == [{"index": 2, "path": str(entries[2].path), "error": item["replaced"][0]["error"]}]
    assert "cannot decode" in item["replaced"][0]["error"] and "text.mp4" in item["replaced"][0]["error"]
    again = dataset[2]  # the replacement is drawn from (seed, epoch, index): reproducible
    assert again["index"] == item["index"] and torch.equal(again["video"], item["video"])
    batch = collate_clips([dataset[0], item])
    assert batch["video"].shape == (2, 3, 4, 16, 16) and batch["skipped"] == []
    assert batch["replaced"] == item["replaced"] and batch["index"].tolist() == [0, item["index"]]


def test_training_gives_up_on_an_item_only_when_every_retry_fails(videos):
    from stadapt.data.dataset import TRAIN_RETRIES

    entries = [VideoEntry(videos["text"], 0), VideoEntry(videos["empty"], 1)]
    item = train_dataset(entries)[0]
    assert item["video"] is None and "cannot decode" in item["error"]
    assert [event["index"] for event in item["replaced"]] == [0]  # each video is tried once
    batch = collate_clips([item])
    assert batch["video"] is None and len(batch["skipped"]) == 1 and len(batch["replaced"]) == 1
    many = [VideoEntry(videos["text"], 0)] * (TRAIN_RETRIES + 5)
    item = train_dataset(many)[3]
    assert item["video"] is None and len(item["replaced"]) == TRAIN_RETRIES  # retries are bounded


def test_evaluation_reports_a_broken_video_and_never_replaces_it(prepared):
    entries = prepared.entries("train")
    transform = TestTransform(16, CLIP_MEAN, CLIP_STD)
    dataset = VideoClipDataset(entries, StrideSampler(4, 2), transform, train=False)
    broken = dataset[2]
    assert broken["video"] is None and broken["label"] == 1 and broken["index"] == 2
    assert "cannot decode" in broken["error"] and "text.mp4" in broken["error"]
    batch = collate_clips([dataset[0], broken, dataset[1]])
    assert batch["video"].shape == (2, 1, 3, 4, 16, 16)
    assert batch["label"].tolist() == [1, 0] and batch["index"].tolist() == [0, 1]
    assert batch["label"].dtype == torch.long
    assert batch["skipped"] == [{"index": 2, "path": str(entries[2].path), "error": broken["error"]}]
    empty = collate_clips([broken])
    assert empty["video"] is None and empty["label"].tolist() == [] and len(empty["skipped"]) == 1


def test_dataloader_with_workers_matches_the_main_process(prepared):
    dataset = train_dataset(prepared.entries("train"), seed=7)
    dataset.set_epoch(2)
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone.epoch == 2 and len(clone) == 3
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=collate_clips)
    batches = list(loader)
    assert [len(b["index"]) for b in batches] == [2, 1] and batches[0]["index"].tolist() == [0, 1]
    assert [s["index"] for b in batches for s in b["replaced"]] == [2]
    assert torch.equal(batches[1]["video"][0], dataset[2]["video"])
    for row, index in enumerate(batches[0]["index"].tolist()):
        assert torch.equal(batches[0]["video"][row], dataset[index]["video"])
