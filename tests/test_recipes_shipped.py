"""Every shipped recipe: it loads with its backbone plugin, its header says how to run it, and the
paper's recipes carry the paper's values exactly (no torch, no models).
"""

from __future__ import annotations

from functools import reduce
from pathlib import Path
from typing import Any

import pytest
import yaml

from stadapt.recipe import Recipe, load_recipe
from stadapt.recipe.chain import deep_merge

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
SHIPPED = sorted(RECIPES.glob("*.yaml"))
IDS = [p.stem for p in SHIPPED]

# ---------------------------------------------------------------- the paper's values (Table 1, appendix)

K400_AUG = {
    "data.sampling": "stride",
    "data.augment.crop": "jitter",
    "data.augment.scale": (1.0, 256 / 224),  # short side 224-256
    "data.augment.flip": True,
    "data.augment.randaugment": None,
    "data.views": "3x1",
}
SSV2_AUG = {
    "data.sampling": "segment",
    "data.augment.crop": "resized",
    "data.augment.area": (0.08, 1.0),
    "data.augment.ratio": (0.75, 4 / 3),
    "data.augment.flip": False,
    "data.augment.randaugment": "rand-m7-n4-mstd0.5-inc1",
    "data.views": "1x3",
}
COMMON = {
    "tuning": "st_adapter",
    "backbone.weights": "openai",
    "adapter.bottleneck": 384,
    "adapter.kernel": (3, 1, 1),
    "model.dropout": 0.5,
    "optim.lr": 5e-4,
    "optim.weight_decay": 1e-2,
    "optim.batch_size": 128,
}
ONE = ["pre_mlp"]
TWO = ["pre_attn", "pre_mlp"]

# recipe: (backbone, adapter positions, steps, frames, stride or None for segment sampling)
TABLE1 = {
    "k400_vitb": ("clip:ViT-B-16", ONE, 20000, 8, 16),
    "k400_vitl": ("clip:ViT-L-14", ONE, 40000, 8, 16),
    "ssv2_vitb": ("clip:ViT-B-16", TWO, 50000, 8, None),
    "ssv2_vitl": ("clip:ViT-L-14", ONE, 50000, 8, None),
}
# frame variants: recipe -> (the 8-frame recipe it varies, frames, stride or None)
FRAME_VARIANTS = {
    "k400_vitb_16f": ("k400_vitb", 16, 8),
    "k400_vitb_32f": ("k400_vitb", 32, 4),
    "ssv2_vitb_16f": ("ssv2_vitb", 16, None),
    "ssv2_vitb_32f": ("ssv2_vitb", 32, None),
}
# baselines on k400_vitb: recipe -> (tuning, optim.scale.backbone)
BASELINES = {
    "k400_vitb_full_finetune": ("full_finetune", 0.01),  # CLIP layers at 1/100 of lr and weight decay
    "k400_vitb_partial_finetune": ("partial_finetune", 1.0),  # last block + classifier, no reduction
    "k400_vitb_linear": ("linear", 1.0),  # head only
}
OTHER_BACKBONES = {"k400_swag_vitb": "swag:ViT-B-16", "k400_swin_b": "timm:swin_base_patch4_window7_224"}
PAPER = {*TABLE1, *FRAME_VARIANTS, *BASELINES, *OTHER_BACKBONES}


def expected_table1(name: str) -> dict[str, Any]:
    backbone, positions, steps, frames, stride = TABLE1[name]
    row = {
        **COMMON,
        "backbone.name": backbone,
        "adapter.positions": positions,
        "optim.steps": steps,
        "data.frames": frames,
        **(K400_AUG if stride is not None else SSV2_AUG),
    }
    if stride is not None:
        row["data.stride"] = stride
    return row


# ---------------------------------------------------------------- helpers


def path_of(name: str) -> Path:
    return RECIPES / f"{name}.yaml"


def raw(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path.name} is not a mapping of sections"
    return data


def merged(path: Path) -> dict[str, Any]:
    """The recipe's raw values with its `base:` chain merged in (still relative paths, as written)."""
    data = raw(path)
    base = data.pop("base", None)
    return deep_merge(merged(path.parent / base), data) if base else data


def header(path: Path) -> str:
    """The comment block the file starts with."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return "\n".join(lines)


def load(name: str) -> Recipe:
    return load_recipe(path_of(name), check_files=False)


def get(recipe: Recipe, key: str) -> Any:
    return reduce(getattr, key.split("."), recipe)


def values(recipe: Recipe, keys: Any) -> dict[str, Any]:
    return {key: get(recipe, key) for key in keys}


def flat(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {'optim.scale.backbone': 0.01, ...}."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(flat(value, f"{prefix}.{key}" if prefix else key))
    return out


def differing(a: Recipe, b: Recipe) -> set[str]:
    fa, fb = flat(a.to_dict()), flat(b.to_dict())
    assert fa.keys() == fb.keys()
    return {key for key in fa if fa[key] != fb[key]}


# ---------------------------------------------------------------- every shipped recipe


def test_the_papers_recipes_are_shipped() -> None:
    assert PAPER <= set(IDS), f"missing: {sorted(PAPER - set(IDS))}"


@pytest.mark.parametrize("path", SHIPPED, ids=IDS)
def test_recipe_loads_and_validates(path: Path) -> None:
    assert raw(path).get("name", path.stem) == path.stem, "name: must be the file stem"
    recipe = load_recipe(path, check_files=False)  # the backbone's plugin is installed and knows the variant
    assert recipe.name == path.stem
    assert "NOT RUNNABLE" not in header(path)


@pytest.mark.parametrize("path", SHIPPED, ids=IDS)
def test_header_says_how_to_run_it(path: Path) -> None:
    text = header(path)
    assert text, f"{path.name} has no header comment"
    assert f"stadapt train recipes/{path.name}" in text
    data = merged(path)["data"]  # a recipe with base: states only what differs
    assert "stadapt prepare-data " in text and f"--out {data['root']}" in text
    if path.stem in PAPER:
        assert f"torchrun --nproc_per_node 8 --no-python stadapt train recipes/{path.name}" in text
        assert f"stadapt eval runs/{path.stem} --views {data['views']}" in text
        assert "Paper:" in text or "Paper number: none recorded" in text
        assert "warmup_steps" in text  # says that the warmup is not the paper's


# ---------------------------------------------------------------- the paper's values


@pytest.mark.parametrize("name", sorted(TABLE1))
def test_table1_values_are_the_papers(name: str) -> None:
    expected = expected_table1(name)
    assert values(load(name), expected) == expected


def test_table1_paper_numbers_in_headers() -> None:
    assert "82.0% top-1" in header(path_of("k400_vitb"))
    assert "67.1% top-1" in header(path_of("ssv2_vitb"))


@pytest.mark.parametrize("name", sorted(FRAME_VARIANTS))
def test_frame_variants_change_only_the_frames(name: str) -> None:
    base_name, frames, stride = FRAME_VARIANTS[name]
    recipe, base = load(name), load(base_name)
    assert recipe.data.frames == frames
    if stride is not None:  # K400: the clip always spans 128 frames (8x16, 16x8, 32x4)
        assert recipe.data.sampling == "stride" and recipe.data.stride == stride
        assert recipe.data.frames * recipe.data.stride == base.data.frames * base.data.stride == 128
        changed = {"data.frames", "data.stride"}
    else:
        assert recipe.data.sampling == "segment"
        changed = {"data.frames"}
    # the rest is the 8-frame recipe (Table 1's values); only the per-device micro-batch may shrink
    assert differing(recipe, base) <= {"name", "output.dir", "optim.micro_batch", *changed}


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baselines_differ_from_k400_vitb_only_in_what_trains(name: str) -> None:
    tuning, backbone_scale = BASELINES[name]
    recipe, base = load(name), load("k400_vitb")
    assert recipe.tuning == tuning
    assert (recipe.optim.scale.backbone, recipe.optim.scale.adapters, recipe.optim.scale.head) == (
        backbone_scale,
        1.0,
        1.0,
    )
    assert differing(recipe, base) <= {"name", "output.dir", "tuning", "optim.scale.backbone"}


@pytest.mark.parametrize("name", sorted(OTHER_BACKBONES))
def test_other_backbones_use_the_k400_vitb_setting(name: str) -> None:
    recipe, base = load(name), load("k400_vitb")
    assert recipe.backbone.name == OTHER_BACKBONES[name]
    # Swin's stages differ in width: its adapters are sized from each stage (half of it, ViT-B's 384/768)
    sized = {"adapter.bottleneck_ratio"} if name == "k400_swin_b" else set()
    assert differing(recipe, base) == {"name", "output.dir", "backbone.name", "backbone.weights"} | sized
    if sized:
        assert recipe.adapter.bottleneck_ratio == 0.5


# ---------------------------------------------------------------- AIM and ZeroI2V: their repositories' configs

AIM_COMMIT = "b3580d2d3a78ff5cffa6c7a82ce993165166f00f"  # taoyang1122/adapt-image-models
ZEROI2V_COMMIT = "ce04d8bf27ec1c9bd2ed8e361b9141b6fd371b16"  # leexinhao/ZeroI2V
UPSTREAM_COMMON = {
    "backbone.name": "clip:ViT-B-16",
    "backbone.weights": "openai",
    "model.dropout": 0.5,
    "optim.lr": 3e-4,
    "optim.weight_decay": 0.05,
    "optim.betas": (0.9, 0.999),
    "optim.batch_size": 64,
    "data.augment.crop": "resized",
    "data.augment.area": (0.08, 1.0),
    "data.augment.ratio": (0.75, 4 / 3),
}
# recipe: (config file, commit, the recipe's values, the method's settings); steps = epochs x steps per epoch
# (K400: 3750 at batch 64 for about 240,000 clips; SSv2: 2640 for 168,913 videos on 8 GPUs), warm-up 2.5 epochs
UPSTREAM = {
    "k400_vitb_aim": (
        "configs/recognition/vit/vitclip_base_k400.py", AIM_COMMIT,
        {"tuning": "aim", "data.frames": 32, "data.sampling": "stride", "data.stride": 4, "data.views": "3x1",
         "data.augment.flip": True, "data.augment.randaugment": None, "optim.steps": 30 * 3750,
         "optim.warmup_steps": 9375},
        {"adapter_scale": 0.5, "num_tadapter": 1, "mlp_ratio": 0.25, "temporal_embedding": True},
    ),
    "ssv2_vitb_aim": (
        "configs/recognition/vit/vitclip_base_sthv2.py", AIM_COMMIT,
        {"tuning": "aim", "data.frames": 8, "data.sampling": "segment", "data.views": "1x3",
         "data.augment.flip": False, "data.augment.randaugment": "rand-m7-n4-mstd0.5-inc1",
         "optim.steps": 50 * 2640, "optim.warmup_steps": 6600},
        {"adapter_scale": 1.0, "num_tadapter": 2, "mlp_ratio": 0.25, "temporal_embedding": True},
    ),
    "k400_vitb_zeroi2v": (
        "configs/recognition/vit_zero_clip/vit_zero_base_clip_k400_16x8x1.py", ZEROI2V_COMMIT,
        {"tuning": "zeroi2v", "data.frames": 16, "data.sampling": "stride", "data.stride": 8, "data.views": "3x1",
         "data.augment.flip": True, "data.augment.randaugment": "rand-m7-n4-mstd0.5-inc1",
         "optim.steps": 40 * 3750, "optim.warmup_steps": 9375},
        {"adapter_scale": 0.5, "num_tadapter": 2, "mlp_ratio": 0.25, "shift_div": 12, "long_shift_div": -1,
         "long_shift_right": False, "temporal_embedding": True, "adapter_dropout": 0.1},
    ),
    "ssv2_vitb_zeroi2v": (
        "configs/recognition/vit_zero_clip/vit_zero_base_clip_sthv2_u16.py", ZEROI2V_COMMIT,
        {"tuning": "zeroi2v", "data.frames": 16, "data.sampling": "segment", "data.views": "1x3",
         "data.augment.flip": False, "data.augment.randaugment": "rand-m7-n4-mstd0.5-inc1",
         "optim.steps": 50 * 2640, "optim.warmup_steps": 6600},
        {"adapter_scale": 1.0, "num_tadapter": 2, "mlp_ratio": 0.25, "shift_div": 12, "long_shift_div": 12,
         "long_shift_right": True, "temporal_embedding": True, "adapter_dropout": 0.0},
    ),
}


@pytest.mark.parametrize("name", sorted(UPSTREAM))
def test_aim_and_zeroi2v_recipes_carry_their_repositorys_config(name: str) -> None:
    config, commit, expected, settings = UPSTREAM[name]
    recipe = load(name)
    assert values(recipe, UPSTREAM_COMMON) == UPSTREAM_COMMON
    assert values(recipe, expected) == expected
    section = recipe.tuner_section()
    assert section is not None and {key: section[key] for key in settings} == settings
    text = header(path_of(name))
    assert config in text and commit in text  # cited: repository file and commit
    assert "What stadapt does differently" in text and "warmup_steps" in text
    assert f"stadapt eval runs/{name} --views {recipe.data.views}" in text
