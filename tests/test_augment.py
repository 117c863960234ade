"""Clip-level RandAugment and RandomResizedCrop (stadapt.data.augment and .randaugment_ops) against timm, PIL
and torchvision."""

from __future__ import annotations

import math
import pickle
import random
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data import auto_augment as timm_aa
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from stadapt.data.augment import ClipRandAugment, RandomResizedCropClip, random_resized_crop_box
from stadapt.data.randaugment_ops import DEFAULT_FILL, RAND_INCREASING_TRANSFORMS, RAND_TRANSFORMS, apply_op
from stadapt.errors import DataError

ST_ADAPTER = "rand-m7-n4-mstd0.5-inc1"


def smooth_image(seed: int, height: int = 96, width: int = 128) -> torch.Tensor:
    """A (3, H, W) uint8 image with structure at several scales and no symmetry."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(2, height // 12), max(2, width // 12), generator=g) * 255
    image = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    return image.clamp(0, 255).round().to(torch.uint8)[0]


def to_pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray(image.permute(1, 2, 0).numpy())


def from_pil(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


def mean_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.int() - b.int()).abs().float().mean().item()


def one_op(name: str, magnitude: float) -> ClipRandAugment:
    """A RandAugment that always applies exactly `name` at a fixed magnitude."""
    return ClipRandAugment([name], num_layers=1, magnitude=magnitude, prob=1.0)


# ---------------------------------------------------------------------------------------------
# timm with its random sources fed from a numpy Generator, to compare decision for decision


class _FakeRandom:
    def __init__(self, rng):
        self.rng = rng

    def random(self):
        return float(self.rng.random())

    def gauss(self, mu, sigma):
        return float(self.rng.normal(mu, sigma))

    def uniform(self, a, b):
        return float(self.rng.uniform(a, b))

    def choice(self, seq):
        raise AssertionError("the interpolation is fixed, timm should not pick one")


class _FakeNumpyRandom:
    def __init__(self, rng):
        self.rng = rng

    def choice(self, ops, n, replace=True, p=None):
        assert replace and p is None
        return [ops[int(i)] for i in self.rng.integers(0, len(ops), size=n)]


def run_timm(monkeypatch, config, image, seed, record=False):
    """timm's RandAugment on a PIL image with `np.random.default_rng(seed)` behind every draw."""
    rng = np.random.default_rng(seed)
    with monkeypatch.context() as patch:
        patch.setattr(timm_aa, "random", _FakeRandom(rng))
        patch.setattr(timm_aa, "np", types.SimpleNamespace(random=_FakeNumpyRandom(rng)))
        transform = timm_aa.rand_augment_transform(config, {"interpolation": Image.BILINEAR})
        plan = []
        if record:
            for op in transform.ops:
                def recorder(img, *args, _name=op.name, **kwargs):
                    plan.append((_name, args[0] if args else None))
                    return img
                op.aug_fn = recorder
        out = transform(image)
    return out, plan


# ---------------------------------------------------------------------------------------------
# config strings


def test_st_adapter_config_parses_like_timm():
    aug = ClipRandAugment.from_config(ST_ADAPTER)
    assert (aug.num_layers, aug.magnitude, aug.magnitude_std, aug.prob) == (4, 7, 0.5, 0.5)
    assert aug.magnitude_max is None
    assert aug.ops == tuple(timm_aa._RAND_INCREASING_TRANSFORMS) == RAND_INCREASING_TRANSFORMS
    assert aug.fill == DEFAULT_FILL == timm_aa._FILL
    text = repr(aug)
    assert ST_ADAPTER in text and "n=4" in text and "m=7" in text and "increasing" in text


def test_other_timm_options_and_defaults():
    aug = ClipRandAugment.from_config("rand-m9-n3-mstd101-p0.8-mmax20")
    assert aug.magnitude_std == math.inf  # timm: mstd > 100 means uniform sampling
    assert (aug.prob, aug.magnitude_max, aug.magnitude, aug.num_layers) == (0.8, 20, 9, 3)
    assert aug.ops == tuple(timm_aa._RAND_TRANSFORMS) == RAND_TRANSFORMS  # inc absent -> standard
    plain = ClipRandAugment.from_config("rand")
    assert (plain.magnitude, plain.num_layers, plain.prob, plain.magnitude_std) == (10, 2, 0.5, 0.0)
    assert ClipRandAugment.from_config("rand-inc0").ops == RAND_TRANSFORMS


@pytest.mark.parametrize(
    ("config", "bad_part"),
    [
        ("randaug-m7-n4", "randaug"),
        ("m7-n4", "m7"),
        ("rand-m7-x3", "x3"),
        ("rand-m7.5-n4", "m7.5"),
        ("rand-mfoo", "mfoo"),
        ("rand--m7", "empty section"),
        ("rand-n4-n5", "'n'"),
        ("rand-m7-tweights", "tweights"),
        ("rand-p1.5", "p"),
        ("", "''"),
    ],
)
def test_malformed_config_raises_data_error(config, bad_part):
    with pytest.raises(DataError) as caught:
        ClipRandAugment.from_config(config)
    assert bad_part in str(caught.value)
    if config != "rand-p1.5":
        assert ST_ADAPTER in caught.value.hint  # a valid example to copy


def test_bad_constructor_arguments_raise_data_error():
    with pytest.raises(DataError, match="bicubic"):
        ClipRandAugment.from_config(ST_ADAPTER, interpolation="bicubic")
    with pytest.raises(DataError, match="fill"):
        ClipRandAugment.from_config(ST_ADAPTER, fill=(128, 128))
    with pytest.raises(DataError, match="unknown RandAugment op"):
        ClipRandAugment(["Rotate", "Cutout"])


# ---------------------------------------------------------------------------------------------
# random draws


@pytest.mark.parametrize(
    "config",
    [ST_ADAPTER, "rand-m9-n3-mstd101-p0.8", "rand-m15-n2-mmax20-inc1", "rand-n3", "rand-m5-n6-p1-inc1"],
)
def test_draws_match_timm_decision_for_decision(monkeypatch, config):
    """Same random stream -> same ops, same skips, same magnitudes, signs and arguments as timm."""
    ours = ClipRandAugment.from_config(config)
    kinds = set()
    for seed in range(60):
        _, timm_plan = run_timm(monkeypatch, config, None, seed, record=True)
        plan = ours.draw(np.random.default_rng(seed))
        assert plan == timm_plan, seed
        kinds.update(name for name, _ in plan)
    assert len(kinds) >= 10  # the seeds exercised most ops


def test_whole_augment_close_to_timm_pixels(monkeypatch):
    image = smooth_image(3)
    ours = ClipRandAugment.from_config(ST_ADAPTER)
    diffs = []
    for seed in range(20):
        reference, _ = run_timm(monkeypatch, ST_ADAPTER, to_pil(image), seed)
        out = ours(image[None], np.random.default_rng(seed))[0]
        diffs.append(mean_abs_diff(from_pil(reference), out))
    assert max(diffs) < 3.0 and float(np.median(diffs)) < 1.0, diffs


def test_every_frame_gets_the_same_ops():
    clip = torch.stack([smooth_image(seed, 48, 64) for seed in range(4)])  # four different frames
    every_op = ClipRandAugment(RAND_INCREASING_TRANSFORMS + RAND_TRANSFORMS, num_layers=12,
                               magnitude=7, magnitude_std=0.5, prob=1.0)
    for aug in (every_op, ClipRandAugment.from_config(ST_ADAPTER)):
        for seed in range(12):
            out = aug(clip, np.random.default_rng(seed))
            for t in range(len(clip)):
                alone = aug(clip[t : t + 1], np.random.default_rng(seed))
                assert torch.equal(out[t], alone[0]), (seed, t)
    # ... and a per-frame draw would have differed: the frames' plans differ between seeds
    assert every_op.draw(np.random.default_rng(0)) != every_op.draw(np.random.default_rng(1))


def test_same_seed_same_output_and_no_global_rng():
    clip = torch.stack([smooth_image(seed, 48, 64) for seed in range(3)])
    aug = ClipRandAugment.from_config(ST_ADAPTER)
    outputs = []
    for global_seed in (1, 2):  # the global generators must not matter
        torch.manual_seed(global_seed)
        np.random.seed(global_seed)
        random.seed(global_seed)
        outputs.append([aug(clip, np.random.default_rng(seed)) for seed in range(6)])
    for first, second in zip(*outputs, strict=True):
        assert torch.equal(first, second)
    plans = {tuple(aug.draw(np.random.default_rng(seed))) for seed in range(6)}
    assert len(plans) == 6
    assert not all(torch.equal(outputs[0][0], other) for other in outputs[0][1:])


def test_magnitude_noise_is_clipped_to_0_10():
    aug = one_op("Rotate", 9)
    aug.magnitude_std = 5.0
    rng = np.random.default_rng(0)
    magnitudes = np.array([aug.sample_magnitude(rng) for _ in range(2000)])
    assert magnitudes.min() == 0.0 and magnitudes.max() == 10.0
    assert (magnitudes == 10.0).mean() > 0.3 and (magnitudes == 0.0).mean() > 0.01
    angles = np.array([arg for _, arg in (aug.draw(rng)[0] for _ in range(500))])
    assert np.abs(angles).max() == 30.0 and (angles > 0).any() and (angles < 0).any()
    wide = ClipRandAugment.from_config("rand-m15-mmax20")  # timm's mmax raises the bound
    assert max(wide.sample_magnitude(rng) for _ in range(10)) == 15.0
    uniform = ClipRandAugment.from_config("rand-m8-mstd101")  # inf -> uniform(0, m)
    draws = np.array([uniform.sample_magnitude(rng) for _ in range(2000)])
    assert draws.max() <= 8.0 and abs(draws.mean() - 4.0) < 0.3


# ---------------------------------------------------------------------------------------------
# single ops against independent expectations


def test_invert_posterize_solarize_exact():
    clip = torch.stack([smooth_image(seed) for seed in range(2)])
    rng = np.random.default_rng(0)
    assert torch.equal(one_op("Invert", 7)(clip, rng), 255 - clip)
    # PosterizeIncreasing m5: keep 4 - int(0.5 * 4) = 2 top bits; m10: keep none
    assert torch.equal(one_op("PosterizeIncreasing", 5)(clip, rng), clip & 0b11000000)
    assert not one_op("PosterizeIncreasing", 10)(clip, rng).any()
    assert torch.equal(one_op("Posterize", 8)(clip, rng), clip & 0b11100000)  # keep int(0.8 * 4) = 3
    # SolarizeIncreasing m5: threshold 256 - 128 = 128; m0: threshold 256, nothing changes
    expected = torch.where(clip >= 128, 255 - clip, clip)
    assert torch.equal(one_op("SolarizeIncreasing", 5)(clip, rng), expected)
    assert torch.equal(one_op("SolarizeIncreasing", 0)(clip, rng), clip)
    # SolarizeAdd m5: add int(0.5 * 110) = 55 to pixels below 128, saturating
    expected = torch.where(clip < 128, (clip.int() + 55).clamp(max=255), clip.int()).to(torch.uint8)
    assert torch.equal(one_op("SolarizeAdd", 5)(clip, rng), expected)
    bright = torch.full((1, 3, 4, 4), 120, dtype=torch.uint8)
    assert (one_op("SolarizeAdd", 10)(bright, rng) == 230).all()  # 120 + 110


def test_enhance_increasing_factor_and_sign():
    aug = one_op("BrightnessIncreasing", 5)
    factors = {aug.draw(np.random.default_rng(seed))[0][1] for seed in range(40)}
    assert factors == {1.0 + 0.45, 1.0 - 0.45}  # 1 + v, v = (5 / 10) * 0.9, random sign
    plain = one_op("Contrast", 5).draw(np.random.default_rng(0))[0][1]
    assert plain == pytest.approx(1.0)  # non-increasing: (5 / 10) * 1.8 + 0.1, no sign


@pytest.mark.parametrize(
    ("name", "timm_fn", "arg", "tolerance"),
    [
        ("Brightness", timm_aa.brightness, 1.45, 0),
        ("Brightness", timm_aa.brightness, 0.55, 0),
        ("Sharpness", timm_aa.sharpness, 1.63, 0),
        ("Sharpness", timm_aa.sharpness, 0.37, 0),
        ("Equalize", timm_aa.equalize, None, 0),
        ("AutoContrast", timm_aa.auto_contrast, None, 1),
        ("Color", timm_aa.color, 1.63, 1),
        ("Color", timm_aa.color, 0.37, 1),
        ("Contrast", timm_aa.contrast, 1.63, 1),
        ("Contrast", timm_aa.contrast, 0.37, 1),
    ],
)
def test_colour_ops_match_timm_pil(name, timm_fn, arg, tolerance):
    image = smooth_image(1)
    image = (image.float() * 0.6 + 40).round().to(torch.uint8)  # narrow range: AutoContrast acts
    reference = from_pil(timm_fn(to_pil(image), *(() if arg is None else (arg,))))
    out = apply_op(image[None], name, arg)[0]
    assert (out.int() - reference.int()).abs().max().item() <= tolerance
    assert not torch.equal(out, image)


GEOMETRY = [
    ("Rotate", timm_aa.rotate, 21.0),
    ("Rotate", timm_aa.rotate, -9.5),
    ("ShearX", timm_aa.shear_x, 0.21),
    ("ShearX", timm_aa.shear_x, -0.12),
    ("ShearY", timm_aa.shear_y, 0.21),
    ("ShearY", timm_aa.shear_y, -0.12),
    ("TranslateXRel", timm_aa.translate_x_rel, 0.315),
    ("TranslateXRel", timm_aa.translate_x_rel, -0.1234),
    ("TranslateYRel", timm_aa.translate_y_rel, 0.315),
    ("TranslateYRel", timm_aa.translate_y_rel, -0.1234),
]


@pytest.mark.parametrize(("name", "timm_fn", "arg"), GEOMETRY)
def test_geometric_ops_match_timm_pil(name, timm_fn, arg):
    """Same geometry as timm's PIL op (non-square frame, asymmetric content); resampling differs."""
    image = smooth_image(0)
    fill = (128, 100, 60)

    def pil_op(value):
        return from_pil(timm_fn(to_pil(image), value, fillcolor=fill, resample=Image.BILINEAR))

    out = apply_op(image[None], name, arg, fill=fill)[0]
    diff = (out.int() - pil_op(arg).int()).abs()
    assert diff.float().mean().item() < 1.0
    assert (diff > 1).float().mean().item() < 0.05  # only along the edge of the filled area
    assert mean_abs_diff(out, pil_op(-arg)) > 5 * max(diff.float().mean().item(), 0.5)  # direction
    assert mean_abs_diff(out, pil_op(arg * 1.15)) > 1.5 * diff.float().mean().item()  # amount


def _centroid(image: torch.Tensor) -> tuple[float, float]:
    weight = image.float().sum(0)
    ys, xs = torch.meshgrid(torch.arange(weight.shape[0]), torch.arange(weight.shape[1]), indexing="ij")
    return (weight * ys).sum().item() / weight.sum().item(), (weight * xs).sum().item() / weight.sum().item()


def test_geometric_directions_on_a_blob():
    """Rotate +: counter-clockwise; ShearX +: lower rows move left; TranslateXRel +: content moves left."""
    blob = torch.zeros(1, 3, 101, 121, dtype=torch.uint8)
    blob[:, :, 10:20, 55:65] = 255  # near the top, centroid (row 14.5, col 59.5)
    black = (0, 0, 0)
    y, x = _centroid(apply_op(blob, "Rotate", 30.0, fill=black)[0])
    # offset from the centre (row 50, col 60) is (dx, dy) = (-0.5, -35.5); counter-clockwise on
    # screen (y down) takes it to (dx cos + dy sin, -dx sin + dy cos): up-left
    angle, dx, dy = math.radians(30.0), -0.5, -35.5
    assert x == pytest.approx(60 + dx * math.cos(angle) + dy * math.sin(angle), abs=0.5)
    assert y == pytest.approx(50 - dx * math.sin(angle) + dy * math.cos(angle), abs=0.5)
    low = torch.zeros(1, 3, 101, 121, dtype=torch.uint8)
    low[:, :, 80:90, 55:65] = 255  # centroid (row 84.5, col 59.5); PIL's continuous y = 85.0
    _, x = _centroid(apply_op(low, "ShearX", 0.2, fill=black)[0])
    assert x == pytest.approx(59.5 - 0.2 * 85.0, abs=0.5)  # out(x, y) = in(x + 0.2 y, y)
    _, x = _centroid(apply_op(low, "TranslateXRel", 0.1, fill=black)[0])
    assert x == pytest.approx(59.5 - 12.1, abs=0.5)  # 0.1 of the width, to the left
    y, _ = _centroid(apply_op(low, "TranslateYRel", -0.1, fill=black)[0])
    assert y == pytest.approx(84.5 + 10.1, abs=0.5)  # negative: down by 0.1 of the height


def test_dtype_shape_and_errors():
    clip = torch.stack([smooth_image(seed, 40, 56) for seed in range(5)])
    aug = ClipRandAugment.from_config(ST_ADAPTER)
    for seed in range(5):
        out = aug(clip, np.random.default_rng(seed))
        assert out.dtype == torch.uint8 and out.shape == clip.shape
    with pytest.raises(ValueError, match="uint8"):
        aug(clip.float(), np.random.default_rng(0))
    with pytest.raises(ValueError, match="T, 3, H, W"):
        aug(clip[0], np.random.default_rng(0))


def test_pickle_round_trip_gives_same_output():
    clip = torch.stack([smooth_image(seed, 40, 56) for seed in range(2)])
    aug = ClipRandAugment.from_config(ST_ADAPTER, fill=(0, 0, 0))
    crop = RandomResizedCropClip(32)
    aug2, crop2 = pickle.loads(pickle.dumps((aug, crop)))
    assert repr(aug2) == repr(aug) and repr(crop2) == repr(crop)
    for seed in range(4):
        assert torch.equal(aug(clip, np.random.default_rng(seed)), aug2(clip, np.random.default_rng(seed)))
        assert torch.equal(crop(clip, np.random.default_rng(seed)), crop2(clip, np.random.default_rng(seed)))


# ---------------------------------------------------------------------------------------------
# RandomResizedCrop


def test_crop_boxes_inside_and_within_bounds():
    rng = np.random.default_rng(0)
    height, width = 240, 320
    scale, ratio = (0.3, 0.6), (0.75, 4 / 3)
    seen_tops = set()
    for _ in range(2000):
        top, left, h, w = random_resized_crop_box(height, width, scale, ratio, rng=rng)
        assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
        assert scale[0] * 0.97 <= h * w / (height * width) <= scale[1] * 1.03
        assert ratio[0] * 0.97 <= w / h <= ratio[1] * 1.03
        seen_tops.add(top)
    assert len(seen_tops) > 50  # positions are drawn, not fixed


class _StubRng:
    """uniform -> the given fractions of each range, in order; integers -> the largest value."""

    def __init__(self, fractions):
        self.fractions = list(fractions)

    def uniform(self, low, high):
        return low + self.fractions.pop(0) * (high - low)

    def integers(self, low, high):
        return high - 1


def test_crop_box_follows_torchvision_algorithm():
    # area 0.08 + 0.5 * 0.92 = 0.54 of 100 x 100; log-uniform midpoint of (3/4, 4/3) is exactly 1
    assert random_resized_crop_box(100, 100, rng=_StubRng([0.5, 0.5])) == (27, 27, 73, 73)
    # linear-uniform would give aspect 1.0417 -> (72, 75); the ratio's upper end: aspect 4/3
    assert random_resized_crop_box(100, 100, rng=_StubRng([0.5, 1.0])) == (36, 15, 64, 85)
    # a box too wide is redrawn (up to 10 tries): 1.0 area at aspect 4/3 does not fit
    assert random_resized_crop_box(100, 100, rng=_StubRng([1.0, 1.0, 0.5, 0.5])) == (27, 27, 73, 73)


def test_crop_box_fallback_and_determinism():
    tall = random_resized_crop_box(1000, 10, rng=np.random.default_rng(0))
    assert tall == (493, 0, 13, 10)  # centre crop, width kept, aspect clamped to 3/4
    wide = random_resized_crop_box(10, 1000, rng=np.random.default_rng(0))
    assert wide == (0, 493, 10, 13)
    no_fit = random_resized_crop_box(100, 100, (1.0, 1.0), (2.0, 3.0), rng=np.random.default_rng(0))
    assert no_fit == (25, 0, 50, 100)  # no try fits a square frame: full width, aspect 2
    first = [random_resized_crop_box(120, 160, rng=np.random.default_rng(7)) for _ in range(3)]
    assert first[0] == first[1] == first[2]
    boxes = {random_resized_crop_box(120, 160, rng=np.random.default_rng(seed)) for seed in range(10)}
    assert len(boxes) == 10


def test_random_resized_crop_clip_one_box_for_all_frames():
    base = smooth_image(2, 60, 80).float()
    clip = torch.stack([base + 10.0 * t for t in range(4)])  # frames differ by a constant
    crop = RandomResizedCropClip(32, interpolation="bicubic")
    out = crop(clip, np.random.default_rng(3))
    assert out.shape == (4, 3, 32, 32) and out.dtype == torch.float32
    for t in range(4):  # resizing is linear and preserves constants: same box <=> out_t = out_0 + 10 t
        torch.testing.assert_close(out[t], out[0] + 10.0 * t, atol=1e-3, rtol=0)
    top, left, h, w = random_resized_crop_box(60, 80, rng=np.random.default_rng(3))
    expected = TF.resized_crop(clip, top, left, h, w, [32, 32], interpolation=InterpolationMode.BICUBIC,
                               antialias=True)
    assert torch.equal(out, expected)
    uint8 = RandomResizedCropClip(24)(clip.clamp(0, 255).to(torch.uint8), np.random.default_rng(0))
    assert uint8.shape == (4, 3, 24, 24) and uint8.dtype == torch.uint8


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scale": (0.0, 1.0)},
        {"scale": (0.5, 0.2)},
        {"scale": (0.1, 1.5)},
        {"ratio": (4 / 3, 3 / 4)},
        {"ratio": (-1.0, 1.0)},
        {"size": 0},
        {"interpolation": "lanczos"},
    ],
)
def test_random_resized_crop_validation(kwargs):
    arguments = {"size": 32, **kwargs}
    with pytest.raises(DataError):
        RandomResizedCropClip(**arguments)
    if "scale" in kwargs or "ratio" in kwargs:
        with pytest.raises(DataError):
            scale, ratio = kwargs.get("scale", (0.08, 1.0)), kwargs.get("ratio", (0.75, 1.25))
            random_resized_crop_box(10, 10, scale, ratio, rng=np.random.default_rng(0))
