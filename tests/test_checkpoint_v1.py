"""The typed checkpoint contract against what users already have and what the importer writes:

- a checkpoint written by stadapt before the contract (tests/fixtures/checkpoint_v1: stadapt.json format 1,
  `adapters.safetensors`) loads through the one converter and evaluates and predicts with the numbers
  that commit's `stadapt eval` / `stadapt predict` gave (expected.json), through the console script;
- eval and predict honour `--precision bf16` on the CPU (outputs move by a bf16-sized amount) and record it;
- a checkpoint imported from the reference implementation is fed as its import options state (K400: 3x1
  views at stride 128/frames; SSv2: segment sampling, 1x3 views), not with a reader's default.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from helpers import run_cli

FIXTURE = Path(__file__).parent / "fixtures" / "checkpoint_v1"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())


@pytest.fixture(scope="module")
def old_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the fixture (eval must never write into tests/)."""
    copy = tmp_path_factory.mktemp("v1") / "checkpoint"
    shutil.copytree(FIXTURE / "checkpoint", copy)
    return copy


def _eval(checkpoint: Path, out: Path, *extra: str) -> tuple[dict, list[dict]]:
    done = run_cli("eval", str(checkpoint), "--root", str(FIXTURE / "data"), "--list", "val.txt", "--out", str(out),
                   "--device", "cpu", "--workers", "0", "-q", *extra)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(out.with_suffix(".predictions.csv").open()))
    return json.loads(out.read_text()), rows


def test_old_checkpoint_reads_through_the_converter(old_checkpoint: Path) -> None:
    import stadapt
    from stadapt.checkpoints.files import tensors_path
    from stadapt.checkpoints.format import FORMAT_VERSION

    assert json.loads((old_checkpoint / "stadapt.json").read_text())["format_version"] == 1
    assert tensors_path(old_checkpoint).name == "adapters.safetensors"  # the old name still loads
    loaded = stadapt.load_model(old_checkpoint)
    spec = loaded.input_spec
    assert (spec.frames, spec.sampling, spec.stride, spec.views) == (4, "stride", 3, (2, 3))  # from its recipe
    assert (spec.image_size, spec.interpolation) == (32, "bicubic")
    assert loaded.classes == ["moving right", "moving left", "moving down", "moving up"]
    assert loaded.meta["format_version"] == FORMAT_VERSION and loaded.meta["upgraded_from"] == 1
    assert loaded.loaded_from.precision == "fp32" and not loaded.training


@pytest.mark.parametrize("views, key", [(None, "eval_recipe_views"), ("1x1", "eval_1x1")])
def test_old_checkpoint_evaluates_with_the_same_numbers(old_checkpoint: Path, tmp_path: Path, views, key) -> None:
    expected = EXPECTED[key]
    report, rows = _eval(old_checkpoint, tmp_path / "eval.json", *(["--views", views] if views else []))
    assert (report["views"], report["frames"], report["stride"]) == (expected["views"], 4, 3)
    assert report["top1"] == expected["top1"] and report["confusion"] == expected["confusion"]
    assert report["precision"] == "fp32" and report["input"]["stride"] == 3
    for row, want in zip(rows, expected["predictions"], strict=True):
        assert Path(row["path"]).name == want["video"] and int(row["prediction"]) == want["prediction"]
        assert float(row["probability"]) == pytest.approx(want["probability"], abs=2e-6)


def test_eval_in_bf16_on_the_cpu(old_checkpoint: Path, tmp_path: Path) -> None:
    """--precision bf16: autocast on the CPU; probabilities move by a bf16-sized amount (bf16 keeps 8
    significant bits: ~4e-3 relative per op), not zero and not more; eval.json records it."""
    report, rows = _eval(old_checkpoint, tmp_path / "eval.json", "--precision", "bf16")
    assert report["precision"] == "bf16"
    diffs = [abs(float(r["probability"]) - w["probability"])
             for r, w in zip(rows, EXPECTED["eval_recipe_views"]["predictions"], strict=True)]
    assert 1e-5 < max(diffs) < 2e-2


def test_predict_same_numbers_and_bf16(old_checkpoint: Path) -> None:
    videos = sorted((FIXTURE / "data" / "videos" / "val").glob("*.mp4"))[:3]
    outputs = {}
    for precision in ("auto", "bf16"):
        done = run_cli("predict", "--checkpoint", str(old_checkpoint), "--device", "cpu", "--json", "--precision",
                       precision, *map(str, videos))
        assert done.returncode == 0, done.stderr
        outputs[precision] = [json.loads(line) for line in done.stdout.splitlines()]
    for fp32, bf16 in zip(outputs["auto"], outputs["bf16"], strict=True):
        want = EXPECTED["predict"][Path(fp32["video"]).name]
        assert fp32["precision"] == "fp32" and bf16["precision"] == "bf16"
        assert [t["index"] for t in fp32["top"]] == [t["index"] for t in want]
        assert [t["probability"] for t in fp32["top"]] == pytest.approx([t["probability"] for t in want], abs=2e-6)
        moved = max(abs(a["probability"] - b["probability"]) for a, b in zip(fp32["top"], bf16["top"], strict=True))
        assert 1e-5 < moved < 2e-2


@pytest.mark.parametrize("dataset, extra, sampling, stride, views", [
    ("ssv2", [], "segment", 32, "1x3"),
    ("k400", [], "stride", 32, "3x1"),  # 4 frames: stride 128 / 4
    ("k400", ["--views", "2x1", "--stride", "5"], "stride", 5, "2x1"),
])
def test_imported_checkpoint_is_fed_as_its_import_options_state(tmp_path: Path, dataset, extra, sampling, stride,
                                                                 views) -> None:
    from test_import_checkpoint import FRAMES, _reference_checkpoint

    from stadapt.data.synthetic import SyntheticSpec, write_synthetic
    from stadapt.inference.evaluate import run_eval

    data = tmp_path / "data"
    write_synthetic(data, SyntheticSpec(train_per_class=1, val_per_class=1, frames=12, size=32, clutter=2))
    _, archive, ckpt, _ = _reference_checkpoint(tmp_path)
    out = tmp_path / "imported"
    done = run_cli("import-checkpoint", "--checkpoint", str(ckpt), "--backbone-weights", str(archive), "--backbone",
                   "clip:tiny", "--num-frames", str(FRAMES), "--out", str(out), "--classes", str(data / "classes.txt"),
                   "--dataset", dataset, *extra)
    assert done.returncode == 0, done.stderr
    assert f"views {views}" in done.stdout
    written = json.loads((out / "stadapt.json").read_text())["input"]
    assert (written["sampling"], f"{written['temporal_views']}x{written['spatial_views']}") == (sampling, views)
    if sampling == "stride":
        assert written["stride"] == stride
    report, _ = run_eval(out, root=data, data_list=Path("val.txt"), workers=0, device="cpu", progress=False,
                         out=tmp_path / "eval.json")
    assert (report["views"], report["sampling"], report["input"]["stride"]) == (views, sampling, written["stride"])
    assert report["videos"] == 6 and report["precision"] == "fp32"


def _without_method(source: Path, target: Path, *, head_only: bool = False) -> Path:
    """A copy of checkpoint `source` as written before stadapt recorded the tuning method (no `tuning` in
    stadapt.json, its model or its recipe); `head_only`: a linear probe's (no adapter settings or tensors)."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(source, target)
    meta = json.loads((target / "stadapt.json").read_text())
    for part in (meta, meta["model"], meta["recipe"]):
        part.pop("tuning", None)
    if head_only:
        meta["model"]["adapter"] = None
        meta["recipe"].pop("adapter", None)
        tensors = load_file(target / "adapters.safetensors")
        save_file({k: v for k, v in tensors.items() if k.startswith("head.")}, target / "adapters.safetensors")
    (target / "stadapt.json").write_text(json.dumps(meta))
    return target


def test_checkpoints_from_before_the_method_was_recorded_load_as_st_adapter_or_linear(old_checkpoint: Path,
                                                                                       tmp_path: Path) -> None:
    import torch

    import stadapt

    bare = _without_method(old_checkpoint, tmp_path / "bare")
    assert stadapt.load_model(bare).config.tuning == "st_adapter"
    report, rows = _eval(bare, tmp_path / "eval.json")  # the fixture's numbers, as with the method recorded
    expected = EXPECTED["eval_recipe_views"]
    assert report["top1"] == expected["top1"] and report["confusion"] == expected["confusion"]
    for row, want in zip(rows, expected["predictions"], strict=True):
        assert int(row["prediction"]) == want["prediction"]
        assert float(row["probability"]) == pytest.approx(want["probability"], abs=2e-6)

    probe = stadapt.load_model(_without_method(old_checkpoint, tmp_path / "probe", head_only=True))
    assert probe.config.tuning == "linear" and probe.config.adapter is None
    named = _without_method(old_checkpoint, tmp_path / "named", head_only=True)
    meta = json.loads((named / "stadapt.json").read_text())
    meta["model"]["tuning"] = "linear"
    (named / "stadapt.json").write_text(json.dumps(meta))
    clips = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(probe(clips), stadapt.load_model(named)(clips))  # the head on the frozen backbone
        # the same head and backbone as the adapted model, without its adapters: other logits
        assert not torch.allclose(probe(clips), stadapt.load_model(bare)(clips))
