"""`stadapt bench-pipeline` through the console script, on real prepared video files."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import run_cli

from stadapt.data.synthetic import SyntheticSpec, write_synthetic

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "synthetic_tiny.yaml"


def test_bench_pipeline_reports_worker_loader_and_model_side_by_side(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_synthetic(root, SyntheticSpec(motions=("horizontal",), train_per_class=2, val_per_class=1, frames=8,
                                        size=32, clutter=2))
    out = tmp_path / "report.json"
    result = run_cli("bench-pipeline", "--data", str(root), "--recipe", str(RECIPE), "-o", "data.frames=4",
                     "--clips", "3", "--batch", "2", "--batches", "1", "--model-steps", "1", "--workers", "1",
                     "--device", "cpu", "-q", "--json", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    ms = report["worker"]["ms_per_clip"]
    assert set(ms) == {"decode", "worker_uint8", "worker_float_before"}
    assert all(v["p10"] <= v["median"] <= v["p90"] for v in ms.values())
    assert set(report["worker"]["ratio_to_decode"]) == {"worker_uint8", "worker_float_before"}
    assert report["loader_clips_per_s"] > 0 and report["model"]["clips_per_s"] > 0
    assert report["data_bound"] == (report["loader_clips_per_s"] < report["model"]["clips_per_s"])
    for label in ("decode alone", "worker pipeline (uint8, now)", "clips/s with 1 worker", "data-bound"):
        assert label in result.stdout


def test_bench_pipeline_needs_exactly_one_data_source(tmp_path: Path) -> None:
    result = run_cli("bench-pipeline", "--recipe", str(RECIPE))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--data" in result.stderr
