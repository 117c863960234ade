"""`stadapt merge`: a checkpoint of a method that folds into the backbone, written as the merged model.

The method here is a third party's (a linear map after every attention output, folded into the output
projection), installed as pip would install it, so what is tested is the command and the seam, not one
built-in method; the built-ins' own merges are tested with their methods (test_zeroi2v, test_peft_methods).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from helpers import run_cli, write_distribution

from stadapt.tuners import clear_cache

METHOD = '''
from pydantic import BaseModel, ConfigDict
from torch import nn

from stadapt.tuners import BlockHooks, Tuner


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    merged: bool = False
    wrong: bool = False  # a merge that forgets the bias: must be caught


class LinOut(Tuner):
    name = "lin_out"
    summary = "a linear map after each attention output"
    section = "lin_out"
    settings = Settings
    needs = ("branch_split", "attention_projections")

    def attach(self, backbone, num_frames, settings):
        if settings.merged:
            return None
        return nn.ModuleList(nn.Linear(layout.width, layout.width) for layout in backbone.block_layouts())

    def hooks(self, modules, checkpointing, backbone=None):
        if not isinstance(modules, nn.ModuleList):
            return BlockHooks()
        return BlockHooks(attn_out=lambda index, out: modules[index](out))

    def trainable(self, parts):
        return [parts["adapters"]]

    def merge(self, backbone, modules, settings):
        for index, linear in enumerate(modules):
            proj = backbone.attention_projections(index).out_proj
            weight, bias = proj.weight.clone(), proj.bias.clone()
            proj.weight.copy_(linear.weight @ weight)
            proj.bias.copy_(linear.weight @ bias + (0 if settings.wrong else linear.bias))
        return settings.model_copy(update={"merged": True})


lin_out = LinOut()
'''


@pytest.fixture
def method_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    where = write_distribution(tmp_path_factory.mktemp("lin_out_method"), "lin_out_method", METHOD,
                               "[stadapt.tuners]\nlin_out = lin_out_method:lin_out\n")
    monkeypatch.syspath_prepend(str(where))
    clear_cache()
    yield where
    clear_cache()


def _checkpoint(out: Path, tuning: str, settings: dict | None = None) -> Path:
    """A checkpoint of `tuning` on clip:tiny with nonzero trained tensors, written as training writes one."""
    from stadapt.checkpoints.format import model_meta, write_checkpoint
    from stadapt.data.input_spec import input_spec_from_data
    from stadapt.model.classifier import ModelConfig, build_model
    from stadapt.tuners import load_tuner

    tuner = load_tuner(tuning)
    config = ModelConfig("clip:tiny", 5, 2, tuner.read_settings(settings), dropout=0.0, tuning=tuning)
    built = build_model(config, seed=0)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in built.model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    spec = input_spec_from_data({"frames": 2, "sampling": "stride", "stride": 2, "views": "1x1"}, built.variant)
    return write_checkpoint(out, built.model.trainable_state_dict(), model_meta(built, None, input_spec=spec))


def test_the_merged_checkpoint_has_the_bare_backbone_and_the_same_logits(method_dir: Path, tmp_path: Path) -> None:
    from stadapt import load_model

    source = _checkpoint(tmp_path / "trained", "lin_out")
    env = {"PYTHONPATH": os.pathsep.join([str(method_dir), os.environ.get("PYTHONPATH", "")])}
    result = run_cli("merge", str(source), "--out", str(tmp_path / "merged"), env=env)
    assert result.returncode == 0, result.stderr
    assert "merged tuning=lin_out" in result.stdout and "max |diff|" in result.stdout

    merged, original = load_model(tmp_path / "merged"), load_model(source)
    clip = torch.randn(2, 3, 2, merged.input_spec.image_size, merged.input_spec.image_size)
    with torch.no_grad():
        assert (merged(clip) - original(clip)).abs().max().item() <= 1e-4
    assert merged.config.adapter.merged and not any(True for _ in merged.adapters.parameters())
    bare = {k for k in original.state_dict() if k.startswith("backbone.")}
    assert set(merged.state_dict()) == bare | {"head.fc.weight", "head.fc.bias"}
    meta = json.loads((tmp_path / "merged" / "stadapt.json").read_text())
    assert meta["backbone_weights"]["source"] == "backbone.safetensors"
    assert meta["merged_from"]["tuning"] == "lin_out" and str(tmp_path) not in json.dumps(meta["merged_from"])


def test_a_wrong_merge_is_refused_and_writes_nothing(method_dir: Path, tmp_path: Path) -> None:
    source = _checkpoint(tmp_path / "trained", "lin_out", {"wrong": True})
    result = run_cli("merge", str(source), "--out", str(tmp_path / "merged"))
    assert result.returncode == 2 and "logits differ" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "merged").exists() and [p.name for p in tmp_path.iterdir()] == ["trained"]


def test_a_method_that_does_not_merge_and_an_existing_out_are_refused(tmp_path: Path) -> None:
    source = _checkpoint(tmp_path / "trained", "st_adapter")
    result = run_cli("merge", str(source), "--out", str(tmp_path / "merged"))
    assert result.returncode == 2 and "does not merge" in result.stderr
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    result = run_cli("merge", str(source), "--out", str(tmp_path / "mine"))
    assert result.returncode == 2 and (tmp_path / "mine" / "notes.txt").read_text() == "keep"
