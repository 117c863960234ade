"""Runs trained on a backbone without pretrained weights (`backbone.weights: null`, the only shipped way to
train the non-CLIP tiny backbones) are usable: the checkpoint records the seed of the random backbone and
its fingerprint, so eval, predict, export and visualize rebuild the same backbone, through the console script."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import run_cli

from stadapt.data.synthetic import SyntheticSpec, write_synthetic

RECIPE = """\
backbone:
  name: {backbone}
  weights: null
adapter:
  bottleneck: 16
  positions: [pre_attn, pre_mlp]
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
  seed: 7
  log_every: 1
  val_every: 2
  save_every: 100
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("random_init") / "data"
    write_synthetic(root, SyntheticSpec(motions=("horizontal",), train_per_class=2, val_per_class=1, frames=10,
                                        size=32, clutter=4))
    return root


def _train(backbone: str, data: Path, out: Path) -> Path:
    recipe = out.parent / f"{out.name}.yaml"
    recipe.write_text(RECIPE.format(backbone=backbone, root=json.dumps(str(data))))
    done = run_cli("train", str(recipe), f"output.dir={out}", "-q")
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def vit_run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init run on a non-CLIP tiny backbone, trained by the console script."""
    return _train("timm:vit_tiny_test", data, tmp_path_factory.mktemp("vit") / "run")


def _clean_refusal(done, *words: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr
    for word in words:
        assert word in done.stderr, done.stderr


def test_checkpoint_records_the_seed_and_fingerprint_of_the_random_backbone(vit_run: Path) -> None:
    meta = json.loads((vit_run / "checkpoints" / "last" / "stadapt.json").read_text())
    recorded = meta["backbone_weights"]
    assert recorded["random_init"] is True and recorded["seed"] == 7 and recorded["source"] is None
    assert recorded["fingerprint"].startswith("sha256:")


def test_eval_predict_and_export_work_on_a_random_init_run(vit_run: Path, data: Path, tmp_path: Path) -> None:
    evaluated = run_cli("eval", str(vit_run), "-q")
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads((vit_run / "eval.json").read_text())
    assert report["videos"] == 2 and report["skipped"] == 0
    val = [json.loads(line) for line in (vit_run / "metrics.jsonl").read_text().splitlines()]
    final_val = [row for row in val if row.get("split") == "val"][-1]
    assert report["top1"] == final_val["top1"]  # the same model as at the end of training, same views

    video = sorted((data / "videos").rglob("*.mp4"))[0]
    predicted = run_cli("predict", str(video), "--checkpoint", str(vit_run), "--json")
    assert predicted.returncode == 0, predicted.stderr
    row = json.loads(predicted.stdout.splitlines()[0])
    assert {p["class"] for p in row["top"]} == {"moving right", "moving left"}, row

    exported = run_cli("export", "--onnx", "--exporter", "torchscript", "--checkpoint", str(vit_run),
                       "--out", str(tmp_path / "m.onnx"), "--verify", "-q")
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "m.onnx").stat().st_size > 0


def test_load_model_rebuilds_the_trained_model_bit_for_bit(vit_run: Path) -> None:
    """load_model's logits equal those of the model as training built it (seeded with train.seed, then the
    trained tensors), and loading leaves the caller's random state alone."""
    from safetensors.torch import load_file

    from stadapt.api import load_model
    from stadapt.checkpoints.format import load_trainable
    from stadapt.recipe import load_recipe
    from stadapt.runtime.build import build_from_recipe

    checkpoint = vit_run / "checkpoints" / "last"
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    loaded = load_model(checkpoint)
    assert torch.equal(torch.random.get_rng_state(), before)

    recipe = load_recipe(vit_run / "recipe.yaml", check_files=False)
    torch.manual_seed(recipe.train.seed)  # what the training loop does before it builds the model
    trained = build_from_recipe(recipe, 2, device="cpu").model
    load_trainable(trained, load_file(str(checkpoint / "trainable.safetensors")), str(checkpoint))
    clip = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(clip), trained.eval()(clip))


def test_another_seed_or_no_seed_is_a_clear_error(vit_run: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "ckpt"
    shutil.copytree(vit_run / "checkpoints" / "last", checkpoint)
    meta_path = checkpoint / "stadapt.json"
    meta = json.loads(meta_path.read_text())

    meta["backbone_weights"]["seed"] = 8  # a different random backbone than the one trained on
    meta_path.write_text(json.dumps(meta))
    _clean_refusal(run_cli("eval", str(checkpoint), "-q"), "rebuilt with seed 8 differs")

    meta["backbone_weights"] = None  # as checkpoints of random-init runs were written before
    meta_path.write_text(json.dumps(meta))
    _clean_refusal(run_cli("eval", str(checkpoint), "-q"), "records neither a backbone weights file nor the seed",
                   "--backbone-weights")


def test_visualize_works_on_a_random_init_clip_run(data: Path, tmp_path: Path) -> None:
    """visualize reads attention from CLIP-style blocks only; a random-init clip:tiny run now loads for it."""
    run = _train("clip:tiny", data, tmp_path / "clip_run")
    video = sorted((data / "videos").rglob("*.mp4"))[0]
    out = tmp_path / "attention.png"
    done = run_cli("visualize", str(video), "--checkpoint", str(run), "--out", str(out), "-q")
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size > 0
