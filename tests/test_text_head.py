"""Text heads (`model.head.type: text`): a run whose classifier is the text tower's embeddings of its class
names, which then answers labels it never trained on (`predict --labels`, `eval --labels`).

A tiny open_clip model with a text tower and random weights (as tests/test_zero_shot.py builds one) is
written as one full state dict, the run's `backbone.weights`; one real run trains 2 steps of 2-frame, 32 px
clips of the synthetic set with a frozen text head. The other checkpoints are written as training writes
them, without training.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import count_encode_text, run_cli, write_tiny_open_clip

NAME = "stadapt-th-clip"
CONFIG = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16,
                                          "patch_size": 16},
          "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}
CLASSES = ["moving right", "moving left"]
RECIPE = """\
backbone: {{name: "clip:{name}", weights: {weights}}}
tuning: st_adapter
adapter: {{bottleneck: 8}}
model: {{dropout: 0.0, head: {{type: text, template: "a video of {{}}.", train: false}}}}
data: {{root: {root}, frames: 2, stride: 2, views: 1x1, num_workers: 0}}
optim: {{lr: 0.001, batch_size: 4, steps: 2}}
train: {{device: cpu, seed: 0, log_every: 1, save_every: 100, loggers: [], keep_best: false}}
"""


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The model's weights file, the synthetic data set and a run trained with a frozen text head."""
    from stadapt.data.synthetic import SyntheticSpec, write_synthetic

    base = tmp_path_factory.mktemp("text_head")
    weights = write_tiny_open_clip(base, NAME, CONFIG)
    root = base / "data"
    write_synthetic(root, SyntheticSpec(motions=("horizontal",), train_per_class=2, val_per_class=2, frames=6,
                                        size=32, clutter=2))
    recipe = base / "text.yaml"
    recipe.write_text(RECIPE.format(name=NAME, weights=json.dumps(str(weights)), root=json.dumps(str(root))))
    done = run_cli("train", str(recipe), f"output.dir={base / 'run'}", "-q")
    assert done.returncode == 0, done.stderr
    return {"weights": weights, "root": root, "run": base / "run", "recipe": recipe, "base": base}


def _built(zoo: dict, *, head: str = "text", train: bool = False, tuning: str = "partial_finetune"):
    from stadapt.model.classifier import ModelConfig, build_model
    from stadapt.model.text_head import HeadConfig

    config = ModelConfig(f"clip:{NAME}", 2, 2, None, dropout=0.0, tuning=tuning,
                         head=HeadConfig(type=head, templates=("a video of {}.", "a clip of {}."), train=train))
    return build_model(config, weights=zoo["weights"], classes=CLASSES)


def _predict(zoo: dict, *args: str) -> list[dict]:
    videos = sorted(str(p) for p in (zoo["root"] / "videos" / "val").glob("*.mp4"))
    done = run_cli("predict", *videos, "--checkpoint", str(zoo["run"]), "--json", "--workers", "0", "-q", *args)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_predict_over_the_trained_labels_gives_evals_top1(zoo: dict) -> None:
    done = run_cli("eval", str(zoo["run"]), "--workers", "0", "-q")
    assert done.returncode == 0, done.stderr
    with (zoo["run"] / "eval.predictions.csv").open(newline="") as handle:
        by_video = {Path(row["path"]).name: row["prediction_name"] for row in csv.DictReader(handle)}
    assert len(by_video) == 4
    plain = _predict(zoo)
    relabelled = _predict(zoo, "--labels", ",".join(CLASSES))
    for a, b in zip(plain, relabelled, strict=True):
        assert a["top"][0]["class"] == b["top"][0]["class"] == by_video[Path(a["video"]).name]
        assert a["top"][0]["probability"] == pytest.approx(b["top"][0]["probability"], abs=1e-5)


def test_new_labels_get_probabilities_that_sum_to_one(zoo: dict) -> None:
    labels = ["a cat", "fireworks", "a dog jumping"]
    for result in _predict(zoo, "--labels", ",".join(labels), "-k", "3"):
        assert sorted(t["class"] for t in result["top"]) == sorted(labels)
        assert sum(t["probability"] for t in result["top"]) == pytest.approx(1.0, abs=1e-4)


def test_eval_over_another_label_set(zoo: dict, tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("going right\ngoing left\n")
    out = tmp_path / "eval.json"
    done = run_cli("eval", str(zoo["run"]), "--labels", str(labels), "--out", str(out), "--workers", "0", "-q")
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["labels"] == ["going right", "going left"] and report["videos"] == 4
    assert set(report["per_class"]) == {"going right", "going left"}
    assert report["fusion"] == "mean of per-view softmax probabilities"  # a CLIP tower: softmax over the labels


def test_the_checkpoint_records_the_tower_not_a_copy_and_checks_its_fingerprint(zoo: dict, tmp_path: Path) -> None:
    from stadapt import load_model
    from stadapt.checkpoints.format import read_checkpoint
    from stadapt.errors import WeightsError
    from stadapt.model.text_head import TextHead

    meta, tensors = read_checkpoint(zoo["run"] / "checkpoints" / "last")
    assert meta["model"]["head"] == {"type": "text", "templates": ["a video of {}."], "train": False}
    assert meta["text_tower"]["source"] == str(zoo["weights"].resolve())
    assert meta["text_tower"]["fingerprint"].startswith("sha256:")
    assert not [k for k in tensors if k.startswith("head.")] and tensors  # the adapters only
    loaded = load_model(zoo["run"] / "checkpoints" / "last")
    assert isinstance(loaded.head, TextHead) and not any(p.requires_grad for p in loaded.head.parameters())
    expected = loaded.head.tower.embed_labels(CLASSES, ["a video of {}."]) * 20.0
    assert torch.allclose(loaded.head.weight, expected, atol=1e-4)
    copy = tmp_path / "ckpt"
    shutil.copytree(zoo["run"] / "checkpoints" / "last", copy)
    edited = json.loads((copy / "stadapt.json").read_text())
    edited["text_tower"]["fingerprint"] = "sha256:" + "0" * 64
    (copy / "stadapt.json").write_text(json.dumps(edited))
    with pytest.raises(WeightsError, match="text tower"):
        load_model(copy)


def test_a_trained_text_head_starts_at_the_frozen_heads_logits(zoo: dict) -> None:
    frozen, trained = _built(zoo), _built(zoo, train=True)
    heads = [[n for n, p in b.model.named_parameters() if p.requires_grad and n.startswith("head.")]
             for b in (frozen, trained)]
    assert heads == [[], ["head.fc.weight", "head.fc.bias"]]
    video = torch.randn(3, 3, 2, 32, 32)
    with torch.no_grad():
        a, b = frozen.model.eval()(video), trained.model.eval()(video)
    assert a.shape == (3, 2) and torch.allclose(a, b, atol=1e-5)
    assert frozen.text_tower is not None and frozen.text_tower["templates"] == ["a video of {}.", "a clip of {}."]
    # the logits are the zero-shot computation: logit scale x cosine of the projected feature with the labels
    tower = frozen.model.head.tower
    features = frozen.model.forward_features(video)
    cos = torch.nn.functional.normalize(tower.project_image(features), dim=-1) @ \
        tower.embed_labels(CLASSES, ["a video of {}.", "a clip of {}."]).t()
    assert torch.allclose(a, 20.0 * cos, atol=1e-4)


def test_a_linear_run_given_labels_is_refused_in_one_line(zoo: dict, tmp_path: Path) -> None:
    from stadapt.checkpoints.format import model_meta, write_checkpoint
    from stadapt.data.input_spec import input_spec_from_data

    built = _built(zoo, head="linear")
    spec = input_spec_from_data({"frames": 2, "sampling": "stride", "stride": 2, "views": "1x1"}, built.variant)
    linear = write_checkpoint(tmp_path / "linear", built.model.trainable_state_dict(),
                              model_meta(built, CLASSES, input_spec=spec))
    video = str(next((zoo["root"] / "videos" / "val").glob("*.mp4")))
    done = run_cli("predict", video, "--checkpoint", str(linear), "--labels", "a,b", "--workers", "0", "-q")
    assert done.returncode == 2 and "has a linear head" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.parametrize(("override", "expected"), [
    ("backbone.name=timm:swin_tiny_test", "timm:swin_tiny_test is an image model without a text tower"),
    ("backbone.weights=null", "text needs the backbone's pretrained weights"),
    ("model.head.template=a video", "must hold '{}' exactly once"),
    ("tuning=linear", "tuning=linear with a frozen text head trains nothing"),
])
def test_refusals_at_recipe_and_build_time(zoo: dict, tmp_path: Path, override: str, expected: str) -> None:
    done = run_cli("train", str(zoo["recipe"]), override, f"output.dir={tmp_path / 'run'}", "-q")
    assert done.returncode == 2 and expected in done.stderr and "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()  # one line, or a recipe's one problem under its file's name
    assert len(lines) == 1 or (len(lines) == 2 and "has 1 problem" in lines[0]), done.stderr
    assert not (tmp_path / "run").exists()


# A SigLIP-style text head (logit bias, each label's own sigmoid): its views fuse as the mean of their
# sigmoids, in predict (with and without --labels) and eval alike, and eval.json says so.
SIGMOID_NAME = "stadapt-th-sigmoid"


@pytest.fixture(scope="module")
def sigmoid_run(zoo: dict) -> Path:
    """A checkpoint with a frozen text head on a tower with a logit bias (sigmoid per label) and 2 temporal
    test views, written as training writes one, without training."""
    from stadapt.checkpoints.format import model_meta, write_checkpoint
    from stadapt.data.input_spec import input_spec_from_data
    from stadapt.model.classifier import ModelConfig, build_model
    from stadapt.model.text_head import HeadConfig

    weights = write_tiny_open_clip(zoo["base"], SIGMOID_NAME, {**CONFIG, "init_logit_bias": -1.0})
    config = ModelConfig(f"clip:{SIGMOID_NAME}", 2, 2, None, dropout=0.0, tuning="partial_finetune",
                         head=HeadConfig(type="text"))
    built = build_model(config, weights=weights, classes=CLASSES)
    assert built.model.head.sigmoid
    spec = input_spec_from_data({"frames": 2, "sampling": "stride", "stride": 2, "views": "2x1"}, built.variant)
    return write_checkpoint(zoo["base"] / "sigmoid", built.model.trainable_state_dict(),
                            model_meta(built, CLASSES, input_spec=spec))


def _mean_of_view_sigmoids(checkpoint: Path, videos: list[str], labels: list[str] | None) -> list[dict[str, float]]:
    """Per video, each label's sigmoid of the model's logits, averaged over the video's views (computed here)."""
    from stadapt import load_model

    loaded = load_model(checkpoint)
    if labels is not None:
        loaded.head.set_labels(labels, loaded.config.head.templates)
    transform = loaded.transform()
    with torch.no_grad():
        probs = [loaded(transform(video)).float().sigmoid().mean(dim=0) for video in videos]
    return [dict(zip(labels or CLASSES, p.tolist(), strict=True)) for p in probs]


@pytest.mark.parametrize("labels", [None, ["a cat", "fireworks", "a dog jumping"]])
def test_a_sigmoid_text_head_fuses_its_views_by_sigmoid_in_predict(zoo: dict, sigmoid_run: Path,
                                                                   labels: list[str] | None) -> None:
    videos = sorted(str(p) for p in (zoo["root"] / "videos" / "val").glob("*.mp4"))[:2]
    args = ["--labels", ",".join(labels)] if labels else []
    done = run_cli("predict", *videos, "--checkpoint", str(sigmoid_run), "--json", "--workers", "0", "-q",
                   "-k", "3", *args)
    assert done.returncode == 0, done.stderr
    expected = _mean_of_view_sigmoids(sigmoid_run, videos, labels)
    for line, want in zip(done.stdout.splitlines(), expected, strict=True):
        got = {t["class"]: t["probability"] for t in json.loads(line)["top"]}
        assert got == pytest.approx(want, abs=1e-5)


@pytest.mark.parametrize("labels", [None, ["going right", "going left"]])
def test_a_sigmoid_text_head_fuses_its_views_by_sigmoid_in_eval(zoo: dict, sigmoid_run: Path, tmp_path: Path,
                                                                labels: list[str] | None) -> None:
    out = tmp_path / "eval.json"
    args = ["--labels", ",".join(labels)] if labels else []
    done = run_cli("eval", str(sigmoid_run), "--root", str(zoo["root"]), "--list", "val.txt", "--out", str(out),
                   "--workers", "0", "-q", *args)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["fusion"] == "mean of per-view sigmoid probabilities" and report["views"] == "2x1"
    with out.with_suffix(".predictions.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4
    expected = _mean_of_view_sigmoids(sigmoid_run, [row["path"] for row in rows], labels)
    for row, want in zip(rows, expected, strict=True):
        assert float(row["probability"]) == pytest.approx(max(want.values()), abs=1e-5)


def test_an_exported_sigmoid_text_head_predicts_as_its_checkpoint(zoo: dict, sigmoid_run: Path,
                                                                   tmp_path: Path) -> None:
    """The export records the views' fusion, so predict --onnx fuses by each label's sigmoid as the
    checkpoint does (it fused by softmax)."""
    pytest.importorskip("onnxruntime")
    from stadapt.inference.onnx_meta import read_onnx_metadata

    graph = tmp_path / "model.onnx"
    done = run_cli("export", "--onnx", "--checkpoint", str(sigmoid_run), "--out", str(graph), "--exporter",
                   "torchscript", "-q")
    assert done.returncode == 0, done.stderr
    assert read_onnx_metadata(graph).fusion == "mean of per-view sigmoid probabilities"
    videos = sorted(str(p) for p in (zoo["root"] / "videos" / "val").glob("*.mp4"))[:2]
    done = run_cli("predict", *videos, "--onnx", str(graph), "--json", "--workers", "0", "-q", "-k", "2")
    assert done.returncode == 0, done.stderr
    for line, want in zip(done.stdout.splitlines(), _mean_of_view_sigmoids(sigmoid_run, videos, None), strict=True):
        assert {t["class"]: t["probability"] for t in json.loads(line)["top"]} == pytest.approx(want, abs=1e-5)


def _shown_counts(recipe: Path, *overrides: str) -> dict[str, int]:
    """`recipe show`'s parameter lines (YAML comments: the output stays a valid recipe) as numbers."""
    import re

    import yaml

    done = run_cli("recipe", "show", str(recipe), *overrides)
    assert done.returncode == 0, done.stderr
    assert isinstance(yaml.safe_load(done.stdout), dict)
    text = "\n".join(line for line in done.stdout.splitlines() if line.startswith("#   "))
    return {key: int(value.replace(",", "")) for key, value in
            re.findall(r"(backbone|adapters|head|total|trainable) ([\d,]+)", text)}


@pytest.mark.parametrize("train", [False, True], ids=["frozen", "trained"])
def test_recipe_show_counts_a_text_head_as_training_does(zoo: dict, train: bool) -> None:
    """The head line and the totals equal the run's own counts: a frozen text head trains nothing (its class
    embeddings and the projection are frozen), a trained one is a linear layer over the joint embedding."""
    from stadapt.checkpoints.format import read_checkpoint
    from stadapt.model.classifier import build_model
    from stadapt.recipe import load_recipe
    from stadapt.runtime.build import model_config

    override = f"model.head.train={str(train).lower()}"
    shown = _shown_counts(zoo["recipe"], override)
    if train:  # what `stadapt train` builds and counts for this recipe
        recipe = load_recipe(zoo["recipe"], [override])
        model = build_model(model_config(recipe, len(CLASSES)), weights=zoo["weights"], classes=CLASSES).model
        counts = model.parameter_counts()
    else:  # what the trained run recorded
        meta, _ = read_checkpoint(zoo["run"] / "checkpoints" / "last")
        counts = meta["parameters"]
        from stadapt import load_model

        model = load_model(zoo["run"] / "checkpoints" / "last")
    head = model.head
    assert shown["head"] == sum(p.numel() for p in head.parameters())
    assert {"total": shown["total"], "trainable": shown["trainable"]} == counts
    embedding = CONFIG["embed_dim"]
    trained_head = embedding * len(CLASSES) + len(CLASSES) if train else 0
    assert sum(p.numel() for p in head.parameters() if p.requires_grad) == trained_head


def test_the_checkpoint_keeps_the_class_embeddings_so_loading_does_not_embed_the_names(
        zoo: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A frozen text head's class embeddings are a checkpoint file (checksummed like the others): loading
    reads them instead of running the text tower over every class name (18 s for 400 names with ViT-B/16's
    on 2 CPU cores); new --labels still run it, once; a damaged file is refused like any checkpoint file."""
    from stadapt import load_model
    from stadapt.checkpoints.files import TEXT_HEAD_FILE

    checkpoint = zoo["run"] / "checkpoints" / "last"
    assert (checkpoint / TEXT_HEAD_FILE).is_file()
    calls = count_encode_text(monkeypatch)
    kept = load_model(checkpoint)
    assert calls == []  # nothing embedded on load
    computed = kept.head.tower.embed_labels(CLASSES, ["a video of {}."])
    assert torch.allclose(kept.head.class_embeddings, computed, atol=1e-6)  # the same as embedding them now
    copy = tmp_path / "damaged"
    shutil.copytree(checkpoint, copy)
    data = bytearray((copy / TEXT_HEAD_FILE).read_bytes())
    data[-1] ^= 0xFF
    (copy / TEXT_HEAD_FILE).write_bytes(bytes(data))
    done = run_cli("predict", str(next((zoo["root"] / "videos" / "val").glob("*.mp4"))), "--checkpoint", str(copy),
                   "--workers", "0", "-q")
    assert done.returncode == 2 and "is damaged" in done.stderr and TEXT_HEAD_FILE in done.stderr, done.stderr
