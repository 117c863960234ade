"""`stadapt export --onnx`: a tiny trained run exported, verified, and run in onnxruntime."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from helpers import run_cli, train_synthetic_run

RECIPE = """\
backbone:
  name: clip:tiny
  weights: synthetic
adapter:
  bottleneck: 32
data:
  root: {root}
  frames: 4
  stride: 2
  views: 1x1
  num_workers: 0
optim:
  lr: 1.0e-3
  batch_size: 4
  micro_batch: 2
  steps: 2
  warmup_steps: 1
train:
  device: cpu
  log_every: 1
  val_every: 2
  save_every: 100
"""

def export_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return run_cli("export", *args, cwd=cwd)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-step run on 2 synthetic classes (moving right / left)."""
    return train_synthetic_run(tmp_path_factory.mktemp("export"), RECIPE)


def test_export_verify_metadata_and_dynamic_batch(run: Path) -> None:
    from stadapt.api import load_model
    from stadapt.data.prepared import read_classes

    result = export_cli("--onnx", "--checkpoint", str(run), "--verify")
    assert result.returncode == 0, result.stderr
    path = run / "model.onnx"
    assert path.is_file() and not list(run.glob(".model.onnx.*"))  # no temp file left behind
    assert f"wrote {path}" in result.stdout and "MB" in result.stdout
    assert "verified with onnxruntime" in result.stdout and "on 4 clip(s)" in result.stdout
    diff = float(result.stdout.split("max |ONNX - PyTorch| = ")[1].split()[0])
    assert diff <= 1e-4

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)  # one file
    props = {p.key: p.value for p in proto.metadata_props}
    classes = read_classes(Path(json.loads((run / "checkpoints" / "last" / "stadapt.json").read_text())
                                ["recipe"]["data"]["root"]) / "classes.txt")
    assert json.loads(props["classes"]) == classes == ["moving right", "moving left"]
    assert json.loads(props["mean"]) == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    assert json.loads(props["std"]) == pytest.approx([0.26862954, 0.26130258, 0.27577711])
    assert props["num_frames"] == "4" and props["image_size"] == "32" and props["backbone"] == "clip:tiny"
    assert props["input_layout"] == "B,3,T,H,W normalised RGB" and props["interpolation"] in ("bicubic", "bilinear")
    assert props["stadapt_version"] and Path(props["checkpoint"]).name == "best"  # a run's best by default

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, out.name) == ("video", "logits")
    assert not isinstance(inp.shape[0], int) and inp.shape[1:] == [3, 4, 32, 32]
    video = torch.randn(3, 3, 4, 32, 32, generator=torch.Generator().manual_seed(0))  # batch 3: never exported
    model = load_model(run / "checkpoints" / "last")
    with torch.no_grad():
        expected = model(video).numpy()
    got = session.run(["logits"], {"video": video.numpy()})[0]
    assert got.shape == (3, 2)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)

    # stadapt predict gives the same answer from the exported model as from the checkpoint
    data_root = Path(json.loads((run / "checkpoints" / "last" / "stadapt.json").read_text())["recipe"]["data"]["root"])
    videos = sorted(data_root.glob("videos/val/*.mp4"))[:2]
    assert len(videos) == 2
    from_onnx = run_cli("predict", *map(str, videos), "--onnx", str(path), "--json")
    from_ckpt = run_cli("predict", *map(str, videos), "--checkpoint", str(run), "--json")
    assert from_onnx.returncode == 0 and from_ckpt.returncode == 0, from_onnx.stderr + from_ckpt.stderr
    for a, b in zip(map(json.loads, from_onnx.stdout.splitlines()), map(json.loads, from_ckpt.stdout.splitlines()),
                    strict=True):
        assert [t["class"] for t in a["top"]] == [t["class"] for t in b["top"]]
        assert a["top"][0]["probability"] == pytest.approx(b["top"][0]["probability"], abs=1e-4)


def test_export_errors_are_clear(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    first = export_cli("--onnx", "--checkpoint", str(run / "checkpoints" / "last"), "--out", str(out), "-q")
    assert first.returncode == 0, first.stderr
    assert "verified" not in first.stdout
    before = out.stat().st_mtime_ns

    again = export_cli("--onnx", "--checkpoint", str(run), "--out", str(out))
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert "already exists" in again.stderr and "--overwrite" in again.stderr
    assert out.stat().st_mtime_ns == before

    replaced = export_cli("--onnx", "--checkpoint", str(run), "--out", str(out), "--overwrite", "-q")
    assert replaced.returncode == 0, replaced.stderr

    missing = export_cli("--checkpoint", str(run), "--out", str(tmp_path / "other.onnx"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr and "--onnx" in missing.stderr
    assert not (tmp_path / "other.onnx").exists()


def test_verify_on_explicit_clips_and_failure_above_tolerance(run: Path, tmp_path: Path) -> None:
    from stadapt.errors import StadaptError
    from stadapt.tools.export import export_onnx

    checkpoint = run / "checkpoints" / "last"
    video = sorted((Path(json.loads((checkpoint / "stadapt.json").read_text())["recipe"]["data"]["root"])
                    / "videos").rglob("*.mp4"))[0]
    clip = np.random.default_rng(0).standard_normal((3, 4, 32, 32)).astype(np.float32)
    result = export_onnx(checkpoint, tmp_path / "a.onnx", verify_clips=[video, clip, tmp_path / "nope.mp4"],
                         exporter="torchscript")
    check = result["verification"]
    assert check["clips"] == 2 and check["batch_sizes"] == [1, 2] and check["max_abs_diff"] <= 1e-4
    assert len(check["skipped"]) == 1 and "nope.mp4" in check["skipped"][0]["video"]

    with pytest.raises(StadaptError, match="tolerance"):
        export_onnx(checkpoint, tmp_path / "b.onnx", verify_clips=[clip], tolerance=-1.0, exporter="torchscript")
    assert not (tmp_path / "b.onnx").exists() and not list(tmp_path.glob(".b.onnx.*"))
