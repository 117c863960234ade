"""What a model and its checkpoint promise, refused in one clear line (exit 2, no traceback) when broken:
adapter blocks the backbone lacks, an st_adapter recipe that adapts no block, class names that contradict the
head's outputs, and an unknown weights tag (the error lists the plugin's real tags); through the console script."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import run_cli

from stadapt.data.synthetic import SyntheticSpec, write_synthetic

RECIPE = """\
backbone:
  name: clip:tiny
  weights: synthetic
adapter:
  bottleneck: 16
model:
  dropout: 0.0
data:
  root: {root}
  frames: 4
  stride: 2
  views: 1x1
  num_workers: 0
optim:
  lr: 1.0e-2
  batch_size: 4
  micro_batch: 2
  steps: 2
  warmup_steps: 1
train:
  device: cpu
  log_every: 1
  val_every: 100
  save_every: 100
"""


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("contract")
    write_synthetic(base / "data", SyntheticSpec(motions=("horizontal",), train_per_class=2, val_per_class=1,
                                                 frames=10, size=32, clutter=4))
    path = base / "tiny.yaml"
    path.write_text(RECIPE.format(root=json.dumps(str(base / "data"))))
    return path


@pytest.fixture(scope="module")
def checkpoint(recipe: Path) -> Path:
    out = recipe.parent / "run"
    done = run_cli("train", str(recipe), f"output.dir={out}", "-q")
    assert done.returncode == 0, done.stderr
    return out / "checkpoints" / "last"


def _one_line_refusal(done, *words: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert [line for line in done.stderr.splitlines() if "error" in line] == [done.stderr.strip()], done.stderr
    for word in words:
        assert word in done.stderr, done.stderr


@pytest.mark.parametrize("blocks", ["[0,99]", "[-5]"])
def test_an_adapter_block_the_backbone_lacks_names_the_valid_range(recipe: Path, tmp_path: Path, blocks: str) -> None:
    done = run_cli("train", str(recipe), f"adapter.blocks={blocks}", f"output.dir={tmp_path / 'run'}", "-q")
    _one_line_refusal(done, f"adapter.blocks: block {blocks.strip('[]').split(',')[-1]} does not exist",
                      "clip:tiny has 4 blocks, valid indices are 0 to 3 (or -4 to -1")


def test_build_model_refuses_a_missing_block_as_a_stadapt_error() -> None:
    from stadapt.errors import StadaptError
    from stadapt.model.adapters import AdapterConfig
    from stadapt.model.classifier import ModelConfig, build_model

    with pytest.raises(StadaptError, match="adapter.blocks: blocks 4, 5 do not exist: clip:tiny has 4 blocks"):
        build_model(ModelConfig("clip:tiny", 3, 2, AdapterConfig(bottleneck=8, blocks=(0, 4, 5))))
    assert build_model(ModelConfig("clip:tiny", 3, 2, AdapterConfig(bottleneck=8, blocks=(0, -4)))).model.adapters


def test_st_adapter_with_no_blocks_is_a_recipe_error(recipe: Path, tmp_path: Path) -> None:
    from stadapt.recipe import load_recipe

    out = tmp_path / "run"
    done = run_cli("train", str(recipe), "adapter.blocks=[]", f"output.dir={out}", "-q")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "adapter.blocks: is empty, so tuning: st_adapter would train no adapters" in done.stderr
    assert "tuning: linear" in done.stderr
    assert not out.exists()
    # a head-only model says so: no adapters, no error
    assert load_recipe(recipe, ["adapter.blocks=[]", "tuning=linear"]).tuning == "linear"


def _edited(checkpoint: Path, folder: Path, **changes) -> Path:
    copy = folder / "edited"
    shutil.copytree(checkpoint, copy)
    meta = json.loads((copy / "stadapt.json").read_text())
    for key, value in changes.items():
        if key == "num_classes":
            meta["model"]["num_classes"] = value
        else:
            meta[key] = value
    (copy / "stadapt.json").write_text(json.dumps(meta))
    return copy


def test_class_names_that_contradict_the_head_are_refused_by_every_reader(checkpoint: Path, tmp_path: Path) -> None:
    edited = _edited(checkpoint, tmp_path, classes=["moving right"])  # 1 name, 2 logits
    video = sorted((checkpoint.parents[2] / "data" / "videos").rglob("*.mp4"))[0]
    for command in (
        ["predict", str(video), "--checkpoint", str(edited)],
        ["eval", str(edited), "-q"],
        ["export", "--onnx", "--exporter", "torchscript", "--checkpoint", str(edited), "--out",
         str(tmp_path / "m.onnx"), "-q"],
        ["visualize", str(video), "--checkpoint", str(edited), "--out", str(tmp_path / "a.png"), "-q"],
    ):
        _one_line_refusal(run_cli(*command), "lists 1 class name but the head in trainable.safetensors has 2 outputs")
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "a.png").exists()


def test_a_class_count_that_contradicts_the_head_is_refused_when_loading(checkpoint: Path, tmp_path: Path) -> None:
    from stadapt.api import load_model
    from stadapt.errors import CheckpointError

    edited = _edited(checkpoint, tmp_path, num_classes=6, classes=[f"c{i}" for i in range(6)])
    with pytest.raises(CheckpointError, match="lists 6 class names but the head in trainable.safetensors has 2"):
        load_model(edited)
    (tmp_path / "edited").rename(tmp_path / "first")
    edited = _edited(checkpoint, tmp_path, num_classes=6)
    with pytest.raises(CheckpointError, match="records num_classes 6 but the head in trainable.safetensors has 2"):
        load_model(edited)
    assert load_model(checkpoint).classes == ["moving right", "moving left"]  # the untouched one loads


def test_an_unknown_tag_lists_the_plugins_real_tags(recipe: Path, tmp_path: Path) -> None:
    done = run_cli("train", str(recipe), "backbone.weights=nosuchtag", f"output.dir={tmp_path / 'run'}", "-q")
    _one_line_refusal(done, "clip:tiny has no pretrained tag 'nosuchtag'", "tags: synthetic;")


def test_every_plugin_lists_its_own_tags_for_an_unknown_one() -> None:
    from stadapt.backbones import installed_plugins, load_plugin
    from stadapt.errors import WeightsError

    for entry in installed_plugins():
        plugin = load_plugin(entry.name)
        variant = plugin.test_variant or next(iter(plugin.variants()))
        tags = plugin.pretrained_tags(variant)
        with pytest.raises(WeightsError) as raised:
            plugin.resolve_pretrained(variant, "no-such-tag")
        assert raised.value.hint.startswith(f"tags: {', '.join(tags) or 'none'};"), (entry.name, raised.value)
