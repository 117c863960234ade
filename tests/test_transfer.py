"""`stadapt finetune-transfer`: a tiny Kinetics-style run transferred to a tiny UCF-101 in its published
layout (ucfTrainTestlist/ with three splits, UCF-101/<Class>/v_*.avi), every split end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import run_cli
from safetensors.torch import load_file

from stadapt.data.encode import write_video
from stadapt.data.synthetic import SyntheticSpec, render_clip, write_synthetic

SOURCE = """\
backbone: {{name: clip:tiny, weights: synthetic}}
adapter: {{bottleneck: 16}}
data: {{root: {root}, frames: 4, stride: 2, views: 1x1, num_workers: 0}}
optim: {{lr: 1.0e-3, batch_size: 4, micro_batch: 2, steps: 2, warmup_steps: 0}}
train: {{device: cpu, log_every: 1}}
"""


@pytest.fixture(scope="module")
def source_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("source")
    data = folder / "k400ish"
    write_synthetic(data, SyntheticSpec(motions=("horizontal",), train_per_class=2, val_per_class=1, frames=8,
                                        size=32, clutter=2))
    recipe = folder / "source.yaml"
    recipe.write_text(SOURCE.format(root=json.dumps(str(data))))
    result = run_cli("train", str(recipe), f"output.dir={folder / 'run'}", "-q")
    assert result.returncode == 0, result.stderr
    return folder / "run"


def tiny_ucf(root: Path) -> Path:
    """Two UCF classes, two groups each; split N tests on group N's clips (as the real lists do)."""
    spec = SyntheticSpec(motions=("horizontal", "vertical"), frames=8, size=32, clutter=2)
    classes = {"MoveRight": 0, "MoveDown": 2}
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_bytes(b"1 MoveRight\r\n2 MoveDown\r\n")
    names = {}
    for cls, label in classes.items():
        for group in (1, 2, 3, 4):
            name = f"{cls}/v_{cls}_g{group:02d}_c01.avi"
            write_video(root / "UCF-101" / name, render_clip(spec, label, (7, group, label)), codec="mpeg4")
            names[(cls, group)] = name
    for split in (1, 2, 3):
        train = [f"{names[(c, g)]} {i + 1}" for i, c in enumerate(classes) for g in (1, 2, 3, 4) if g != split]
        test = [names[(c, split)] for c in classes]
        (lists / f"trainlist0{split}.txt").write_bytes(("\r\n".join(train) + "\r\n").encode())
        (lists / f"testlist0{split}.txt").write_bytes(("\r\n".join(test) + "\r\n").encode())
    return root


def test_three_splits_end_to_end_with_the_mean(source_run: Path, tmp_path: Path) -> None:
    root = tiny_ucf(tmp_path / "UCF101")
    out = tmp_path / "transfer"
    result = run_cli("finetune-transfer", "--from", str(source_run), "--dataset", "ucf101", "--root", str(root),
                     "--out", str(out), "optim.steps=2", "optim.batch_size=4", "optim.warmup_steps=0", "-q")
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "transfer.json").read_text())
    assert [s["split"] for s in summary["splits"]] == [1, 2, 3]
    assert all(s["videos"] == 2 and s["views"] == "2x3" for s in summary["splits"])
    assert summary["mean_top1"] == pytest.approx(sum(s["top1"] for s in summary["splits"]) / 3)
    assert "mean" in result.stdout and "split" in result.stdout
    recorded = (out / "split1" / "recipe.yaml").read_text()
    for fragment in ("stride: 8", "views: 2x3", "adapters: 0.1", "init_from:", "tuning: st_adapter"):
        assert fragment in recorded, fragment
    head = load_file(out / "split1" / "checkpoints" / "last" / "trainable.safetensors")["head.fc.weight"]
    assert head.shape[0] == 2  # a new head for UCF's classes
    assert (out / "data" / "split2" / "classes.txt").read_text().splitlines() == ["MoveRight", "MoveDown"]


def test_adapters_start_from_the_source(source_run: Path, tmp_path: Path) -> None:
    root = tiny_ucf(tmp_path / "UCF101")
    out = tmp_path / "transfer"
    result = run_cli("finetune-transfer", "--from", str(source_run), "--dataset", "ucf101", "--root", str(root),
                     "--splits", "2", "--out", str(out), "optim.steps=1", "optim.batch_size=4",
                     "optim.warmup_steps=0", "optim.lr=1e-12", "-q")
    assert result.returncode == 0, result.stderr
    source = load_file(source_run / "checkpoints" / "last" / "trainable.safetensors")
    moved = load_file(out / "split2" / "checkpoints" / "last" / "trainable.safetensors")
    adapters = [k for k in source if k.startswith("adapters.")]
    assert adapters and all(torch.allclose(moved[k], source[k], atol=1e-6) for k in adapters)
    # the source's adapters really trained (the last block's pre-MLP adapter cannot: only the CLS token,
    # which it does not touch, reaches the head after it), so equality above is not zero == zero
    assert sum(bool(source[k].abs().max() > 0) for k in adapters if ".conv." in k) >= 4


def test_bad_arguments_are_clear(source_run: Path, tmp_path: Path) -> None:
    result = run_cli("finetune-transfer", "--from", str(source_run), "--dataset", "kinetics", "--root", str(tmp_path))
    assert result.returncode == 2 and "ucf101" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("finetune-transfer", "--from", str(source_run), "--dataset", "hmdb51", "--root", str(tmp_path),
                     "--splits", "4")
    assert result.returncode == 2 and "--splits" in result.stderr


def test_zero_shot_needs_a_text_tower(tmp_path: Path) -> None:
    """An image-only source (a timm ViT) is refused in one line before any work."""
    data = tmp_path / "k400ish"
    write_synthetic(data, SyntheticSpec(motions=("horizontal",), train_per_class=1, val_per_class=1, frames=4,
                                        size=32, clutter=2))
    recipe = tmp_path / "source.yaml"
    recipe.write_text(SOURCE.format(root=json.dumps(str(data))).replace(
        "{name: clip:tiny, weights: synthetic}", "{name: timm:vit_tiny_test}").replace("steps: 2", "steps: 1"))
    assert run_cli("train", str(recipe), f"output.dir={tmp_path / 'run'}", "-q").returncode == 0
    out = tmp_path / "transfer"
    result = run_cli("finetune-transfer", "--from", str(tmp_path / "run"), "--dataset", "ucf101", "--root",
                     str(tmp_path), "--out", str(out), "--zero-shot")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "timm:vit_tiny_test" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()  # refused before any work


def test_zero_shot_labels_are_checked_before_any_work(source_run: Path, tmp_path: Path) -> None:
    """--labels names the classes as text for the zero-shot scores: one per class of the data set, and only
    with --zero-shot; either mistake is one line before anything is prepared or trained."""
    lists = tmp_path / "ucf" / "ucfTrainTestlist"  # the annotation files alone: the classes are read from them
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("1 MoveRight\n2 MoveDown\n")
    for split in (1, 2, 3):
        (lists / f"trainlist0{split}.txt").write_text("MoveRight/v_MoveRight_g01_c01.avi 1\n")
        (lists / f"testlist0{split}.txt").write_text("MoveDown/v_MoveDown_g01_c01.avi\n")
    out = tmp_path / "transfer"
    common = ["finetune-transfer", "--from", str(source_run), "--dataset", "ucf101", "--root", str(tmp_path / "ucf"),
              "--out", str(out)]
    for extra, problem in ((["--zero-shot", "--labels", "move right,move down,jump"], "3 labels for the 2 classes"),
                           (["--labels", "move right,move down"], "add --zero-shot")):
        result = run_cli(*common, *extra)
        assert result.returncode == 2 and problem in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()
