"""`stadapt compare RUN...`: one row per run (method, parameters from its checkpoint, top-1/top-5 from its eval.json,
GFLOPs and clips/s measured, the training memory it logged), one PNG that is never replaced without --overwrite,
and one line with exit status 2 for what is not a run. The runs are written as training writes them (the
checkpoint writer, the run marker, the metrics log) around real tiny models, without training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import run_cli

from stadapt.checkpoints.format import model_meta, write_checkpoint
from stadapt.data.input_spec import input_spec_from_data
from stadapt.fileio import png_by_stadapt
from stadapt.model.adapters import AdapterConfig
from stadapt.model.classifier import ModelConfig, build_model
from stadapt.runs.layout import RunDir
from stadapt.runs.metrics import MetricsLog

FAST = ("--runs", "1", "--batch", "1", "--device", "cpu", "-q")


def _run(folder: Path, tuning: str, adapter: AdapterConfig | None, *, top1: float | None) -> dict:
    """A run folder of a tiny model as `stadapt train` leaves it (and `stadapt eval` when `top1` is given);
    returns the parameter counts its checkpoint records."""
    built = build_model(ModelConfig("clip:tiny", 2, 2, adapter, dropout=0.0, tuning=tuning), weights="synthetic")
    run = RunDir(folder)
    run.begin("new")
    run.recipe.write_text(f"# resolved by stadapt\nbackbone:\n  name: clip:tiny\ntuning: {tuning}\n")
    spec = input_spec_from_data({"frames": 2, "stride": 2, "views": "1x1"}, built.variant)
    meta = model_meta(built, ["right", "left"], input_spec=spec, step=4)
    write_checkpoint(run.last, built.model.trainable_state_dict(), meta)
    log = MetricsLog(run.metrics)
    log.write({"step": 0, "split": "info", "device": "cpu", "tuning": tuning})
    for step, peak in ((2, 700.0), (4, 812.5)):
        log.write({"step": step, "split": "train", "loss": 0.5, "peak_memory_mb": peak})
    log.close()
    if top1 is not None:
        (folder / "eval.json").write_text(json.dumps({"stadapt_version": "0", "checkpoint_sha256": "x", "step": 4,
                                                      "top1": top1, "top5": 1.0, "top5_k": 2}))
    return meta["parameters"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    base = tmp_path_factory.mktemp("compare")
    adapted, probe = base / "adapted", base / "probe"
    return {"st_adapter": (adapted, _run(adapted, "st_adapter", AdapterConfig(bottleneck=8), top1=0.75)),
            "linear": (probe, _run(probe, "linear", None, top1=None))}


def test_one_row_per_run_with_its_method_parameters_and_top1(runs: dict, tmp_path: Path) -> None:
    (adapted, counts), (probe, probe_counts) = runs["st_adapter"], runs["linear"]
    done = run_cli("compare", str(adapted), str(probe), *FAST, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "cpu" in lines[0] and "batch 1" in lines[0]
    rows = {line.split()[0]: line.split() for line in lines[2:4]}
    assert rows["adapted"][1:4] == ["st_adapter", "clip:tiny", "2"] and rows["probe"][1] == "linear"
    assert rows["adapted"][4:6] == ["75.0%", "100.0%"] and rows["probe"][4:6] == ["-", "-"]
    assert any(line.startswith("probe: top-1/top-5 -: not evaluated") for line in lines)
    assert "0.79 GiB (cpu)" in lines[2]  # the largest peak the run logged: 812.5 MiB
    assert counts["trainable"] > probe_counts["trainable"] and counts["total"] > probe_counts["total"]
    png = tmp_path / "compare.png"  # the default, in the working directory
    assert png_by_stadapt(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert lines[-1] == "wrote compare.png"

    as_json = run_cli("compare", str(adapted), str(probe), *FAST, "--json", "--png", str(tmp_path / "b.png"))
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    got = {r["tuning"]: r for r in report["runs"]}
    assert got["st_adapter"]["trainable_parameters"] == counts["trainable"]
    assert got["linear"]["total_parameters"] == probe_counts["total"]
    assert got["st_adapter"]["top1"] == 0.75 and got["linear"]["top1"] is None
    assert got["st_adapter"]["gflops_per_clip"] > got["linear"]["gflops_per_clip"] > 0
    assert all(r["clips_per_s"] > 0 for r in report["runs"]) and report["batch"] == 1


def test_an_existing_png_is_kept_unless_overwrite(runs: dict, tmp_path: Path) -> None:
    adapted, _ = runs["st_adapter"]
    png = tmp_path / "mine.png"
    assert run_cli("compare", str(adapted), *FAST, "--png", str(png)).returncode == 0
    before = png.read_bytes()
    again = run_cli("compare", str(adapted), *FAST, "--png", str(png))
    assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1 and "--overwrite" in again.stderr
    assert png.read_bytes() == before
    assert run_cli("compare", str(adapted), *FAST, "--png", str(png), "--overwrite").returncode == 0
    users = tmp_path / "photo.png"
    users.write_bytes(b"\x89PNG\r\n\x1a\n not stadapt's")
    refused = run_cli("compare", str(adapted), *FAST, "--png", str(users), "--overwrite")
    assert refused.returncode == 2 and users.read_bytes() == b"\x89PNG\r\n\x1a\n not stadapt's"


def test_what_is_not_a_run_with_a_checkpoint_is_one_line_exit_2(runs: dict, tmp_path: Path) -> None:
    adapted, _ = runs["st_adapter"]
    empty = tmp_path / "empty_run"
    RunDir(empty).begin("new")
    (empty / "recipe.yaml").write_text("# resolved by stadapt\n")
    for bad, why in ((tmp_path, "is not a run folder"), (tmp_path / "missing", "is not a run folder"),
                     (empty, "has no checkpoint")):
        done = run_cli("compare", str(adapted), str(bad), *FAST, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1 and why in done.stderr and str(bad) in done.stderr
    assert not (tmp_path / "compare.png").exists()  # refused before anything was measured or written


def test_measured_training_memory_builds_the_runs_own_method_settings(runs: dict) -> None:
    """--measure-memory runs bench-train's step on the run's model config: its method's recorded settings (a
    bottleneck of 8 here, not the default 384) and, where the checkpoint records no recipe, bench-train's memory
    defaults."""
    from stadapt.tools.bench.train_memory import measure_mode
    from stadapt.tools.compare import _memory_cell, read_run

    adapted, counts = runs["st_adapter"]
    row = read_run(adapted)
    assert row["training"] == {"micro_batch": 1, "precision": "auto", "backbone_storage": "auto",
                               "checkpointing": "adapters"}
    result = measure_mode(row["backbone"], row["tuning"], frames=2, micro_batch=1, steps=1, warmup=0, device="cpu",
                          num_classes=2, method_settings=row["model"]["adapter"])
    assert result["trainable_parameters"] == counts["trainable"] and result["peak_bytes"] > 0
    row["measured_memory"] = {"micro_batch": 1, "peak_increase_bytes": 3 * 2**29}
    assert _memory_cell(row) == "1.50 GiB (b=1)"
