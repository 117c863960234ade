"""Recipes that inherit (`base: OTHER.yaml`), `stadapt recipe show` and `stadapt recipe schema`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers import run_cli

from stadapt.errors import RecipeError
from stadapt.recipe import load_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"

FULL = """\
name: full
backbone: {name: "clip:tiny", weights: synthetic, options: {a: 1, b: 2}}
adapter: {bottleneck: 64, positions: [pre_attn, pre_mlp]}
data:
  root: data/x
  frames: 4
  augment: {crop: resized, area: [0.5, 1.0], randaugment: rand-m7-n4-mstd0.5-inc1}
optim: {lr: 1.0e-3, batch_size: 8, steps: 5}
train: {device: cpu}
"""


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")
    return folder / name


def test_a_base_chain_resolves_to_the_same_recipe_as_the_full_file(tmp_path: Path, monkeypatch) -> None:
    """Mappings merge key by key, lists and scalars replace, through two levels, relative to each file."""
    monkeypatch.chdir(tmp_path)  # data.root stays relative to the working directory, as without base:
    write(tmp_path / "a", "grand.yaml", "name: grand\n" + FULL.split("\n", 1)[1].replace("frames: 4", "frames: 2"))
    write(tmp_path / "a", "parent.yaml", "base: grand.yaml\nname: parent\ndata: {frames: 4}\n")
    child = write(tmp_path / "a" / "b", "child.yaml", """\
base: ../parent.yaml
backbone: {options: {b: 3}}
adapter: {positions: [pre_mlp]}
data: {augment: {randaugment: null}}
""")
    full = write(tmp_path, "child.yaml", FULL.replace("name: full\n", "")
                 .replace("{a: 1, b: 2}", "{a: 1, b: 3}").replace("[pre_attn, pre_mlp]", "[pre_mlp]")
                 .replace(", randaugment: rand-m7-n4-mstd0.5-inc1", ""))
    inherited = load_recipe(child, check_files=False)
    assert inherited == load_recipe(full, check_files=False)
    assert inherited.name == "child"  # a base's name is not inherited: the run is named after its file
    assert inherited.backbone.options == {"a": 1, "b": 3} and inherited.data.augment.area == (0.5, 1.0)
    assert inherited.data.augment.randaugment is None and inherited.adapter.positions == ["pre_mlp"]
    # overrides apply to the merged recipe
    assert load_recipe(child, ["data.frames=8"], check_files=False).data.frames == 8


@pytest.mark.parametrize("name,frames,stride,micro", [("k400_vitb_16f", 16, 8, 16), ("ssv2_vitb_32f", 32, None, 8)])
def test_shipped_frame_variants_equal_their_base_with_overrides(name: str, frames: int, stride: int | None,
                                                                micro: int) -> None:
    base = "k400_vitb" if name.startswith("k400") else "ssv2_vitb"
    overrides = [f"name={name}", f"data.frames={frames}", f"optim.micro_batch={micro}"]
    overrides += [f"data.stride={stride}"] if stride else []
    assert "base:" in (RECIPES / f"{name}.yaml").read_text()
    assert load_recipe(RECIPES / f"{name}.yaml", check_files=False) == load_recipe(
        RECIPES / f"{base}.yaml", overrides, check_files=False)


def test_a_cycle_is_refused_in_one_line(tmp_path: Path) -> None:
    write(tmp_path, "one.yaml", "base: two.yaml\n" + FULL)
    write(tmp_path, "two.yaml", "base: three.yaml\n")
    write(tmp_path, "three.yaml", "base: one.yaml\n")
    with pytest.raises(RecipeError, match=r"cycle \(one.yaml -> two.yaml -> three.yaml -> one.yaml\)"):
        load_recipe(tmp_path / "one.yaml", check_files=False)
    write(tmp_path, "self.yaml", "base: self.yaml\n")
    done = run_cli("recipe", "show", str(tmp_path / "self.yaml"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "cycle (self.yaml -> self.yaml)" in done.stderr


@pytest.mark.parametrize("text,message", [("base: nowhere.yaml\n", "is not a recipe file"),
                                          ("base: [a.yaml]\n", "must name a recipe file"),
                                          ("base: list.yaml\n", "is not a mapping of sections")])
def test_a_bad_base_is_refused(tmp_path: Path, text: str, message: str) -> None:
    write(tmp_path, "list.yaml", "- 1\n- 2\n")
    with pytest.raises(RecipeError, match=message):
        load_recipe(write(tmp_path, "r.yaml", text + FULL), check_files=False)


def test_recipe_show_prints_the_resolved_recipe_and_the_parameter_counts(tmp_path: Path, monkeypatch) -> None:
    from stadapt.model.adapters import AdapterConfig
    from stadapt.tools.bench.params import parameter_report

    done = run_cli("recipe", "show", str(RECIPES / "synthetic_tiny.yaml"), "adapter.bottleneck=32", "--classes", "7",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    shown = yaml.safe_load(done.stdout)
    monkeypatch.chdir(tmp_path)
    expected = load_recipe(RECIPES / "synthetic_tiny.yaml", ["adapter.bottleneck=32"], check_files=False)
    assert shown["adapter"]["bottleneck"] == 32 and shown["output"]["dir"] == str(tmp_path / "runs/synthetic_tiny")
    assert shown == expected.to_dict()
    report = parameter_report("clip:tiny", adapter=AdapterConfig(bottleneck=32), num_classes=7, frames=8)
    assert f"adapters {report['parts']['adapters']:,}" in done.stdout
    assert f"trainable {report['with_adapters']['trainable']:,}" in done.stdout and "7 classes" in done.stdout
    linear = run_cli("recipe", "show", str(RECIPES / "synthetic_tiny.yaml"), "tuning=linear", "--classes", "7")
    assert f"adapters 0  head {report['parts']['head']:,}" in linear.stdout
    assert f"trainable {report['without_adapters']['trainable']:,}" in linear.stdout


def test_recipe_schema_is_pydantics_plus_base(tmp_path: Path) -> None:
    from stadapt.recipe import Recipe

    out = tmp_path / "recipe.schema.json"
    done = run_cli("recipe", "schema", "--out", str(out))
    assert done.returncode == 0, done.stderr
    schema = json.loads(out.read_text())
    assert schema["properties"]["base"]["type"] == "string"
    assert schema["$defs"] == Recipe.model_json_schema()["$defs"]
    assert schema["$defs"]["OptimSection"]["properties"]["lr"]["default"] == 5e-4
    again = run_cli("recipe", "schema", "--out", str(out))  # never overwrites what a user may have edited
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert json.loads(run_cli("recipe", "schema").stdout) == schema
