"""The public Python API as timm / open_clip / transformers users know it: `stadapt.load_model` returns the
`nn.Module` itself (eval mode, carrying `input_spec`, `classes`, `config`, `meta`, `loaded_from`) from a
checkpoint folder or a run folder (`which` best / last); `stadapt.create_model` builds a fresh model;
`stadapt.list_backbones` names what the installed plugins offer. The run folder here is written directly
(two checkpoints of one tiny model with different heads), so nothing trains."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import stadapt
from stadapt.checkpoints.format import model_meta, write_checkpoint
from stadapt.data.input_spec import InputSpec, input_spec_from_data
from stadapt.errors import StadaptError
from stadapt.model.adapters import AdapterConfig
from stadapt.model.classifier import ModelConfig, VideoClassifier, build_model

CLASSES = ["moving right", "moving left"]
FRAMES = 4


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RUN/checkpoints/best (step 1) and RUN/checkpoints/last (step 2): one tiny model, two heads."""
    root = tmp_path_factory.mktemp("public_api") / "run"
    for name, step in (("best", 1), ("last", 2)):
        torch.manual_seed(step)
        built = build_model(ModelConfig("clip:tiny", len(CLASSES), FRAMES, AdapterConfig(bottleneck=16)),
                            weights="synthetic")
        spec = input_spec_from_data({"frames": FRAMES, "stride": 2, "views": "1x2"}, built.variant)
        meta = model_meta(built, CLASSES, input_spec=spec, step=step)
        write_checkpoint(root / "checkpoints" / name, built.model.trainable_state_dict(), meta)
    return root


def _clips(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 3, FRAMES, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_load_model_returns_the_module_itself(run: Path, tmp_path: Path) -> None:
    from stadapt.data import write_video

    checkpoint = run / "checkpoints" / "last"
    model = stadapt.load_model(checkpoint)
    assert isinstance(model, nn.Module) and isinstance(model, VideoClassifier)
    assert isinstance(model, stadapt.LoadedModel) and not model.training
    assert model.eval() is model and model.to("cpu") is model
    assert sum(p.numel() for p in model.parameters()) == model.meta["parameters"]["total"]
    assert isinstance(model.input_spec, InputSpec) and model.input_spec.frames == FRAMES
    assert model.input_spec.views == (1, 2) and model.classes == CLASSES
    assert model.meta["step"] == 2 and model.meta["format_version"] == 2
    assert model.config.backbone == "clip:tiny" and model.config.num_classes == len(CLASSES)
    assert model.loaded_from.path == checkpoint and model.loaded_from.precision == "fp32"
    with torch.no_grad():
        logits = model(_clips())
    assert logits.shape == (2, len(CLASSES)) and logits.dtype == torch.float32
    video = write_video(tmp_path / "clip.mp4", np.full((10, 32, 40, 3), 128, dtype=np.uint8))
    views = model.transform()(video)  # the input transform from input_spec: a path -> the model's input views
    assert views.shape == (2, 3, FRAMES, 32, 32)  # 1x2 views: two crops along the long side
    assert model(views).shape == (2, len(CLASSES))
    model.train()  # a module like any other: it trains, and the frozen backbone keeps inference behaviour
    assert model.training and not model.backbone.training


def test_load_model_takes_a_run_folder_and_picks_best_or_last(run: Path) -> None:
    best, last = run / "checkpoints" / "best", run / "checkpoints" / "last"
    default = stadapt.load_model(run)
    assert default.loaded_from.path == best and default.meta["step"] == 1  # best when the run keeps one
    assert stadapt.load_model(run, which="best").loaded_from.path == best
    chosen = stadapt.load_model(str(run), which="last")
    assert chosen.loaded_from.path == last and chosen.meta["step"] == 2
    with torch.no_grad():
        assert torch.equal(chosen(_clips()), stadapt.load_model(last)(_clips()))
        assert not torch.equal(chosen(_clips()), default(_clips()))  # two heads: two models
    with pytest.raises(StadaptError, match="picks a checkpoint of a run"):
        stadapt.load_model(last, which="best")


def test_create_model_builds_a_fresh_video_classifier() -> None:
    model = stadapt.create_model("clip:tiny", 5, num_frames=FRAMES, weights="synthetic")
    assert type(model) is VideoClassifier and model.training  # as timm's create_model: train mode
    assert model.head.fc.out_features == 5 and model.num_frames == FRAMES and model.tuning == "st_adapter"
    assert len(model.adapters) > 0 and all(p.requires_grad for p in model.adapters.parameters())
    with torch.no_grad():
        assert model.eval()(_clips()).shape == (2, 5)
    probe = stadapt.create_model("clip:tiny", 3, tuning="linear", num_frames=FRAMES)
    assert len(probe.adapters) == 0
    assert [n for n, p in probe.named_parameters() if p.requires_grad] == ["head.fc.weight", "head.fc.bias"]


def test_list_backbones_names_what_create_model_takes() -> None:
    listed = stadapt.list_backbones()
    assert "clip:tiny" in listed and all(":" in name for name in listed)
    # a plain word matches anywhere; the tiny open_clip configurations other tests register in this process
    # (stadapt-zeroi2v-tiny, ...: all named stadapt-*) are models the clip plugin lists too, so they are set aside
    assert [n for n in stadapt.list_backbones("clip:tiny") if not n.startswith("clip:stadapt-")] == ["clip:tiny"]
    assert stadapt.list_backbones("swag:*tiny*") == ["swag:tiny"]
    assert "clip:tiny" in stadapt.list_backbones("TINY") and "swag:tiny" in stadapt.list_backbones("tiny")
    assert stadapt.list_backbones("nosuchplugin:*") == []


def test_the_public_names_are_exported_lazily_from_the_package() -> None:
    for name in ("load_model", "create_model", "list_backbones", "LoadedModel"):
        assert name in stadapt.__all__ and getattr(stadapt, name) is getattr(stadapt.api, name)
