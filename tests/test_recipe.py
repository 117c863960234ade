"""Recipes: defaults, overrides, all-problems-at-once errors, resolution and round trips (no torch)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from stadapt.errors import RecipeError
from stadapt.recipe import Recipe, describe_source, dump_recipe, load_recipe, parse_override, recipe_from_dict


def prepared(root: Path) -> Path:
    """A minimal `stadapt prepare-data` directory (contents do not matter to the recipe)."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("classes.txt", "train.txt", "val.txt"):
        (root / name).write_text("")
    return root


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip())
    return path


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    prepared(tmp_path / "data")
    return tmp_path


MINIMAL = """
backbone:
  name: clip:tiny
data:
  root: data
"""


def problems(exc: pytest.ExceptionInfo[RecipeError]) -> list[str]:
    return exc.value.message.splitlines()[1:]


def test_defaults_are_the_papers_and_the_recipe_is_resolved(workdir: Path) -> None:
    recipe = load_recipe(write(workdir / "k400.yaml", MINIMAL))
    assert recipe.adapter.bottleneck == 384
    assert recipe.adapter.kernel == (3, 1, 1)
    assert recipe.adapter.positions == ["pre_mlp"]
    assert recipe.optim.lr == 5e-4 and recipe.optim.weight_decay == 1e-2 and recipe.optim.batch_size == 128
    assert recipe.tuning == "st_adapter" and recipe.data.augment.flip is False
    assert recipe.name == "k400"
    assert recipe.output.dir == str(workdir / "runs" / "k400")
    assert recipe.data.root == str(workdir / "data")
    assert recipe.data.train_path == workdir / "data" / "train.txt"
    assert recipe.micro_batch == 128


def test_exponent_notation_is_a_number(workdir: Path) -> None:
    recipe = load_recipe(write(workdir / "r.yaml", MINIMAL + "optim:\n  lr: 5e-4\n  weight_decay: 1E-2\n"))
    assert isinstance(recipe.optim.lr, float) and recipe.optim.lr == 0.0005
    assert recipe.optim.weight_decay == 0.01
    assert parse_override("optim.lr=1e-3") == (["optim", "lr"], 0.001)


def test_overrides_apply_before_validation(workdir: Path) -> None:
    other = prepared(workdir / "other")
    path = write(workdir / "r.yaml", MINIMAL.replace("clip:tiny", "clip:tiny\n  weights: openai"))
    assert load_recipe(path).backbone.weights == "openai"  # a hub tag stays a tag
    recipe = load_recipe(
        path,
        [
            "optim.lr=1e-3",
            f"data.root={other}",
            "adapter.positions=[pre_attn,pre_mlp]",
            "backbone.weights=null",
            "train.seed=3",  # a section the file does not have
        ],
    )
    assert recipe.optim.lr == 0.001
    assert recipe.data.root == str(other)
    assert recipe.adapter.positions == ["pre_attn", "pre_mlp"]
    assert recipe.backbone.weights is None
    assert recipe.train.seed == 3


def test_parse_override_values_are_yaml() -> None:
    assert parse_override("data.root=/d") == (["data", "root"], "/d")
    assert parse_override("backbone.weights=null") == (["backbone", "weights"], None)
    assert parse_override("data.augment.flip=true") == (["data", "augment", "flip"], True)
    for bad in ("optim.lr", "=1", "optim..lr=1"):
        with pytest.raises(RecipeError):
            parse_override(bad)


def test_unknown_override_key_gets_a_suggestion(workdir: Path) -> None:
    with pytest.raises(RecipeError) as exc:
        load_recipe(write(workdir / "r.yaml", MINIMAL), ["optim.lrr=1", "optim.lr"])
    lines = problems(exc)
    assert lines[0].startswith("  optim.lrr: unknown key; did you mean 'lr'?")
    assert "optim.lr" in lines[1] and "'='" in lines[1]


def test_three_mistakes_are_one_error_in_file_order(workdir: Path) -> None:
    path = write(
        workdir / "bad.yaml",
        """
        backbone:
          name: clip:tiny
        optim:
          lr: fast
          wd: 0.1
        data:
          root: nope
        """,
    )
    with pytest.raises(RecipeError) as exc:
        load_recipe(path)
    nope = workdir / "nope"
    assert exc.value.message == (
        f"{path} has 3 problems:\n"
        "  optim.lr: expected a number, got 'fast'\n"
        "  optim.wd: unknown key; did you mean 'weight_decay'?\n"
        f"  data.root: directory {nope} does not exist; "
        "make one with `stadapt prepare-data synthetic --out DIR` or set data.root=..."
    )
    assert exc.value.hint is None


@pytest.mark.parametrize(
    ("yaml_text", "key", "words"),
    [
        ("optim:\n  steps: 1.5\n", "optim.steps", "expected a whole number, got 1.5"),
        ("optim:\n  steps: true\n", "optim.steps", "expected a whole number, got true"),
        ("data:\n  root: data\n  augment:\n    flip: maybe\n", "data.augment.flip", "expected true or false"),
        ("adapter:\n  positions: [pre_attn, pre_mpl]\n", "adapter.positions[1]", "did you mean 'pre_mlp'?"),
        ("adapter:\n  positions: [pre_mlp, pre_mlp]\n", "adapter.positions", "twice"),
        ("adapter:\n  kernel: [2, 1, 1]\n", "adapter.kernel", "odd"),
        ("adapter:\n  kernel: [3, 1]\n", "adapter.kernel", "expected a list of 3 whole numbers, got 2 items"),
        ("data:\n  root: data\n  views: 2x0\n", "data.views", "'2x0'"),
        ("model:\n  dropout: 1.0\n", "model.dropout", "must be < 1"),
        # training's short-side jitter cannot shrink below the crop: refused with the recipe, not at step 0
        ("data:\n  root: data\n  augment:\n    scale: [0.9, 1.0]\n", "data.augment.scale", "1 <= low <= high"),
        ("optim:\n  warmup_steps: 10\n  steps: 10\n", "optim.warmup_steps", "less than steps"),
        ("lr: 1\n", "lr", "did you mean optim.lr?"),
        ("optimizer: {}\n", "optimizer", "did you mean 'optim'?"),
    ],
)
def test_wrong_values_name_the_key(workdir: Path, yaml_text: str, key: str, words: str) -> None:
    with pytest.raises(RecipeError) as exc:
        load_recipe(write(workdir / "r.yaml", MINIMAL + yaml_text))
    assert any(line.startswith(f"  {key}: ") and words in line for line in problems(exc)), exc.value.message


def test_micro_batch_must_divide_the_batch(workdir: Path) -> None:
    path = write(workdir / "r.yaml", MINIMAL + "optim:\n  batch_size: 128\n  micro_batch: 48\n")
    with pytest.raises(RecipeError) as exc:
        load_recipe(path)
    assert problems(exc) == [
        "  optim.micro_batch: batch_size 128 is not a multiple of micro_batch 48; "
        "use a divisor of batch_size, e.g. micro_batch=32"
    ]
    assert exc.value.message.startswith(f"{path} has 1 problem:")
    recipe = load_recipe(path, ["optim.micro_batch=32"])
    assert recipe.micro_batch == 32


def test_a_single_position_string_is_a_list(workdir: Path) -> None:
    recipe = load_recipe(write(workdir / "r.yaml", MINIMAL + "adapter:\n  positions: pre_attn\n"))
    assert recipe.adapter.positions == ["pre_attn"]


def test_yaml_syntax_error_names_the_line(workdir: Path) -> None:
    path = write(workdir / "r.yaml", "backbone:\n  name: clip:tiny\n data: x\n")
    with pytest.raises(RecipeError) as exc:
        load_recipe(path)
    assert "has 1 problem:" in exc.value.message and "line 3" in exc.value.message


def test_duplicate_keys_and_a_non_mapping_are_problems(workdir: Path) -> None:
    with pytest.raises(RecipeError) as exc:
        load_recipe(write(workdir / "r.yaml", MINIMAL + "optim:\n  lr: 1e-3\n  lr: 1e-4\n"))
    assert problems(exc) == ["  optim.lr: appears twice (again on line 7); keep one"]
    with pytest.raises(RecipeError, match="expected a mapping"):
        load_recipe(write(workdir / "list.yaml", "- a\n- b\n"))


def test_dump_round_trips(workdir: Path) -> None:
    overrides = ["optim.lr=1e-5", "adapter.blocks=[-1, -2]"]
    recipe = load_recipe(write(workdir / "r.yaml", MINIMAL), overrides)
    out = workdir / "run" / "recipe.yaml"
    dump_recipe(recipe, out, source=describe_source(str(workdir / "r.yaml"), overrides))
    text = out.read_text()
    assert text.startswith("# resolved by stadapt ")
    assert f" from {workdir / 'r.yaml'} with optim.lr=1e-5" in text.splitlines()[0]
    assert f"root: {workdir / 'data'}" in text and "bottleneck: 384" in text  # absolute, defaults included
    assert load_recipe(out) == recipe
    assert not [p for p in out.parent.iterdir() if p.name != "recipe.yaml"]  # no temp file left


def test_unknown_backbone_gets_did_you_mean(workdir: Path) -> None:
    with pytest.raises(RecipeError) as exc:
        load_recipe(write(workdir / "r.yaml", MINIMAL.replace("clip:tiny", "clip:ViT-B-61")))
    (line,) = problems(exc)
    assert line.startswith("  backbone.name: ") and "did you mean 'ViT-B-16'" in line


def test_files_are_checked(workdir: Path) -> None:
    (workdir / "data" / "val.txt").unlink()
    path = write(workdir / "r.yaml", MINIMAL.replace("clip:tiny", "clip:tiny\n  weights: ./w.pt"))
    with pytest.raises(RecipeError) as exc:
        load_recipe(path)
    lines = problems(exc)
    assert lines[0].startswith(f"  backbone.weights: file {workdir / 'w.pt'} does not exist")
    assert lines[1].startswith(f"  data.val_list: file {workdir / 'data' / 'val.txt'} does not exist")
    assert load_recipe(path, check_files=False).backbone.weights == str(workdir / "w.pt")


def test_missing_recipe_file_and_directory(workdir: Path) -> None:
    (workdir / "recipes").mkdir()
    write(workdir / "recipes" / "k400.yaml", MINIMAL)
    with pytest.raises(RecipeError, match="recipe file recipes/k4000.yaml not found") as exc:
        load_recipe("recipes/k4000.yaml")
    assert "recipes/k400.yaml" in (exc.value.hint or "")
    with pytest.raises(RecipeError, match="is a directory"):
        load_recipe(workdir / "recipes")


def test_recipe_from_dict_reports_missing_sections() -> None:
    with pytest.raises(RecipeError) as exc:
        recipe_from_dict({}, source="inline")
    assert exc.value.message.startswith("inline has 2 problems:")
    assert [line.split(":")[0] for line in problems(exc)] == ["  backbone", "  data"]
    recipe = recipe_from_dict({"backbone": {"name": "clip:tiny"}, "data": {"root": "/x"}}, check_files=False)
    assert isinstance(recipe, Recipe) and recipe.name == "run"


def test_loading_a_recipe_does_not_import_torch(workdir: Path) -> None:
    path = write(workdir / "r.yaml", MINIMAL)
    code = f"import sys, stadapt.recipe as r; r.load_recipe({str(path)!r}); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=workdir)


def test_augmentation_keys_of_the_papers_two_pipelines(workdir: Path) -> None:
    ssv2 = MINIMAL + "  sampling: segment\n  augment:\n    crop: resized\n    randaugment: rand-m7-n4-mstd0.5-inc1\n"
    a = load_recipe(write(workdir / "ssv2.yaml", ssv2)).data.augment
    assert (a.crop, a.randaugment, a.flip, a.area, a.ratio) == ("resized", "rand-m7-n4-mstd0.5-inc1", False,
                                                                 (0.08, 1.0), (0.75, 4 / 3))
    bad = MINIMAL + "  augment:\n    randaugment: rand-m7-q3\n    area: [0.5, 2]\n"
    with pytest.raises(RecipeError) as exc:
        load_recipe(write(workdir / "bad.yaml", bad))
    lines = problems(exc)
    assert any(line.startswith("  data.augment.randaugment: ") and "unknown option 'q'" in line for line in lines)
    assert any(line.startswith("  data.augment.area: ") for line in lines)


def test_adapter_bottleneck_ratio_reaches_the_model_config(workdir: Path) -> None:
    from stadapt.runtime.build import model_config

    text = MINIMAL + "adapter:\n  bottleneck_ratio: 0.5\n"
    recipe = load_recipe(write(workdir / "ratio.yaml", text))
    assert model_config(recipe, 5).adapter.bottleneck_for(256) == 128
    with pytest.raises(RecipeError, match="adapter.bottleneck_ratio"):
        load_recipe(write(workdir / "bad.yaml", MINIMAL + "adapter:\n  bottleneck_ratio: -1\n"))


@pytest.mark.parametrize(("value", "expected"),
                         [("mlp", "mlp"), ("adapters", "adapters"), ("true", True), ("false", False)])
def test_checkpointing_takes_false_adapters_mlp_or_true(workdir: Path, value: str, expected: object) -> None:
    recipe = load_recipe(write(workdir / "ckpt.yaml", MINIMAL + f"train:\n  checkpointing: {value}\n"))
    assert recipe.train.checkpointing == expected
    assert load_recipe(write(workdir / "default.yaml", MINIMAL)).train.checkpointing == "adapters"
    with pytest.raises(RecipeError, match="train.checkpointing: expected false, adapters, mlp or true, got 'blocks'"):
        load_recipe(write(workdir / "bad.yaml", MINIMAL + "train:\n  checkpointing: blocks\n"))


def test_a_methods_section_is_resolved_with_its_defaults_and_kept_when_another_method_runs(workdir: Path) -> None:
    text = MINIMAL + "tuning: aim\naim:\n  adapter_scale: 1.0\n"
    recipe = load_recipe(write(workdir / "r.yaml", text))
    assert recipe.to_dict()["aim"] == {"mlp_ratio": 0.25, "adapter_scale": 1.0, "num_tadapter": 1,
                                       "temporal_embedding": True}  # what the run is built with, defaults included
    out = workdir / "run" / "recipe.yaml"
    dump_recipe(recipe, out)
    assert load_recipe(out) == recipe
    baseline = load_recipe(workdir / "r.yaml", ["tuning=linear"])  # the baseline on the AIM recipe
    assert baseline.tuning == "linear" and baseline.to_dict()["aim"] == {"adapter_scale": 1.0}
    with pytest.raises(RecipeError, match="aimm: unknown key"):
        load_recipe(workdir / "r.yaml", ["aimm.x=1"])
