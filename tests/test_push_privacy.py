"""What `stadapt push` publishes names no absolute path of the machine that trained (issue 23.10): the recipe's
data root and output dir, eval.json's checkpoint, list and skipped videos, and the model card say where things
are relative to the run or as `<local>`, while the local checkpoint keeps its paths and the pushed one still
loads to the same logits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import run_cli, train_synthetic_run
from test_push_hub import RECIPE, REPO


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run under an absolute tmp folder, evaluated with one validation video broken (a skipped video)."""
    trained = train_synthetic_run(tmp_path_factory.mktemp("private"), RECIPE)
    broken = trained.parent / "data" / "videos" / "val" / "01_0001.mp4"
    broken.write_bytes(b"not a video")
    evaluated = run_cli("eval", str(trained), "-q")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads((trained / "eval.json").read_text())["skipped"] == 1
    return trained


def test_no_pushed_file_names_an_absolute_local_path(run: Path) -> None:
    from stadapt.api import load_model

    base = run.parent
    out = base / "to_upload"
    result = run_cli("push", str(run), "--repo", REPO, "--to-dir", str(out))
    assert result.returncode == 0, result.stderr
    prefixes = {str(base).encode(), str(base.resolve()).encode()}
    assert str(base).encode() in (run / "eval.json").read_bytes()  # the local files keep their paths
    for path in out.iterdir():
        data = path.read_bytes()
        assert not [p for p in prefixes if p in data], path.name
    meta = json.loads((out / "stadapt.json").read_text())
    assert meta["recipe"]["data"]["root"] == "<local>" and meta["recipe"]["output"]["dir"] == "."
    report = json.loads((out / "eval.json").read_text())
    assert report["checkpoint"] == "./checkpoints/best" and report["list"] == "<local>/val.txt"
    assert "<local>/videos/val/01_0001.mp4" in json.dumps(report["skipped_videos"])
    card = (out / "README.md").read_text()
    assert "split: val" in card and "root: <local>" in card and "</details>" in card
    clip = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(load_model(run / "checkpoints" / "best")(clip), load_model(out)(clip))
    unrooted = run_cli("eval", str(out), "--out", str(base / "elsewhere.json"))
    assert unrooted.returncode == 2 and "shared without its data root (<local>); pass --root" in unrooted.stderr
