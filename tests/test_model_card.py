"""The model card `stadapt push` writes names the checkpoint's tuning method, with the installed method's
summary, and its recorded settings (issue 25.1), next to the trainable and total parameters; a checkpoint
written before `tuning` was recorded reads as st_adapter (adapters recorded) or linear (none), and a method
not installed here is still named. Tiny clip:tiny checkpoints written directly: no training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from stadapt.checkpoints.files import META_FILE
from stadapt.checkpoints.format import model_meta, write_checkpoint
from stadapt.data.input_spec import input_spec_from_data
from stadapt.model.adapters import AdapterConfig
from stadapt.model.classifier import ModelConfig, build_model
from stadapt.tools.model_card import model_card
from stadapt.tools.push import CARD_FILE, bundle
from stadapt.tuners import load_tuner

REPO = "someone/tiny-card"
CLASSES = ["moving right", "moving left"]


def _checkpoint(path: Path, tuning: str, adapter: AdapterConfig | None) -> Path:
    torch.manual_seed(0)
    built = build_model(ModelConfig("clip:tiny", len(CLASSES), 2, adapter, dropout=0.0, tuning=tuning),
                        weights="synthetic")
    spec = input_spec_from_data({"frames": 2, "stride": 2, "views": "1x1"}, built.variant)
    write_checkpoint(path, built.model.trainable_state_dict(), model_meta(built, CLASSES, input_spec=spec, step=1))
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("card")
    return {"linear": _checkpoint(root / "linear", "linear", None),
            "st_adapter": _checkpoint(root / "st_adapter", "st_adapter",
                                      AdapterConfig(bottleneck=16, positions=("pre_attn", "pre_mlp"), blocks=(-1,)))}


def _card(checkpoint: Path) -> tuple[dict, str, dict]:
    files, _ = bundle(checkpoint, REPO)
    _, front, body = files[CARD_FILE].decode("utf-8").split("---\n", 2)
    return yaml.safe_load(front), body, json.loads(files[META_FILE])


def test_a_linear_probe_card_names_its_method_and_that_it_has_no_settings(checkpoints: dict[str, Path]) -> None:
    front, body, meta = _card(checkpoints["linear"])
    summary = load_tuner("linear").summary
    assert meta["model"]["tuning"] == "linear" and meta["model"]["adapter"] is None
    assert "linear" in front["tags"] and "st-adapter" not in front["tags"]
    assert f"tuned with the method `linear`: {summary}." in body
    assert "| tuning method | `linear` |" in body
    assert "## Tuning method\n\n`linear` (from stadapt " in body and f": {summary}." in body
    assert "It takes no settings." in body and "| setting | value |" not in body
    params = meta["parameters"]
    assert params["trainable"] == 2 * 128 + 2  # the head alone: clip:tiny is 128 wide, 2 classes
    assert f"It trains {params['trainable']:,} of the model's {params['total']:,} parameters" in body
    assert f"| parameters | {params['total']:,} in all, {params['trainable']:,} trained |" in body
    assert "ST-Adapter" not in body


def test_an_st_adapter_card_names_its_method_and_each_recorded_setting(checkpoints: dict[str, Path]) -> None:
    front, body, meta = _card(checkpoints["st_adapter"])
    summary = load_tuner("st_adapter").summary
    assert "st-adapter" in front["tags"]
    assert f"tuned with the method `st_adapter`: {summary}." in body
    assert "| tuning method | `st_adapter` (settings below) |" in body
    assert "Its settings (the recipe's `adapter:` section), as recorded in `stadapt.json`:" in body
    table = body.split("| setting | value |\n|---|---|\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert table == ["| bottleneck | `16` |", "| kernel | `[3, 1, 1]` |", '| positions | `["pre_attn", "pre_mlp"]` |',
                     "| blocks | `[-1]` |"]
    assert list(meta["model"]["adapter"]) == ["bottleneck", "kernel", "positions", "blocks"]
    params = meta["parameters"]
    assert 0 < params["trainable"] < params["total"]
    assert f"It trains {params['trainable']:,} of the model's {params['total']:,} parameters" in body


def test_a_checkpoint_from_before_tuning_was_recorded_reads_as_st_adapter_or_linear(
        checkpoints: dict[str, Path]) -> None:
    for name, settings_shown in (("st_adapter", True), ("linear", False)):
        meta = json.loads((checkpoints[name] / META_FILE).read_text())
        del meta["model"]["tuning"]
        body = model_card(meta, None, REPO, None)
        assert f"tuned with the method `{name}`: {load_tuner(name).summary}." in body
        assert ("| bottleneck | `16` |" in body) is settings_shown


def test_a_method_not_installed_here_is_still_named_with_its_settings(checkpoints: dict[str, Path]) -> None:
    meta = json.loads((checkpoints["st_adapter"] / META_FILE).read_text())
    meta["model"].update(tuning="someone_elses", adapter={"rank": 4, "targets": ["qkv|proj"]})
    body = model_card(meta, None, REPO, None)
    assert "tuned with the method `someone_elses`. This repository" in body
    assert "## Tuning method\n\n`someone_elses` (not installed where this card was written" in body
    assert "| rank | `4` |" in body and '| targets | `["qkv\\|proj"]` |' in body  # a | would split the row


def test_the_card_names_no_local_path(checkpoints: dict[str, Path]) -> None:
    files, _ = bundle(checkpoints["st_adapter"], REPO)
    base = checkpoints["st_adapter"].parent
    for text in (str(base), str(base.resolve()), str(Path.home())):
        assert text not in files[CARD_FILE].decode("utf-8")
