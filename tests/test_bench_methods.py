"""`stadapt bench --methods` and `stadapt bench-train --methods`: installed tuning methods side by side, each
against st_adapter in one run, built from the registry with their default settings; a method that does not fit
the backbone gets a line, not a crash. Tiny models, few runs: no timing is asserted beyond being measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from helpers import run_cli
from typer.testing import CliRunner

from stadapt.cli.bench import bench
from stadapt.errors import StadaptError
from stadapt.model.classifier import ModelConfig, build_model
from stadapt.tools.bench.side_by_side import bench_methods, format_methods_report, method_names, unfit_reason
from stadapt.tuners import installed_tuners, load_tuner

SWIN = {"img_size": 32, "window_size": 4, "embed_dim": 16, "depths": [2, 2], "num_heads": [1, 2]}


def _counts(name: str) -> dict[str, int]:
    """The method's parameter counts with its default settings, built as training builds it."""
    config = ModelConfig("clip:tiny", 400, 2, load_tuner(name).read_settings(None), tuning=name)
    return build_model(config).model.parameter_counts()


def test_bench_methods_measures_each_method_against_the_reference() -> None:
    report = bench_methods("clip:tiny", ["linear"], frames=2, batch=1, latency_runs=2, throughput_runs=2, warmup=0,
                           device="cpu")
    assert list(report["methods"]) == ["st_adapter", "linear"] and report["reference"] == "st_adapter"
    for name, r in report["methods"].items():
        assert {"total": r["total_parameters"], "trainable": r["trainable_parameters"]} == _counts(name)
        assert r["gflops_per_clip"] > 0 and r["throughput"] > 0 and len(r["throughput_all"]) == 2
    ref, lin = report["methods"]["st_adapter"], report["methods"]["linear"]
    assert lin["gflops_per_clip"] < ref["gflops_per_clip"]  # the adapters' convolutions and projections
    ratio = report["ratio"]["linear"]
    assert ratio["throughput"] == pytest.approx(lin["throughput"] / ref["throughput"])
    assert ratio["gflops_per_clip"] == pytest.approx(lin["gflops_per_clip"] / ref["gflops_per_clip"])
    spread = report["spread"]["linear"]["throughput"]
    assert set(spread) >= {"st_adapter", "linear", "max", "effect", "noisy"}
    table = format_methods_report(report)
    rows = {line.split()[0]: line for line in table.splitlines()[2:4]}
    assert set(rows) == {"st_adapter", "linear"} and "1 (reference)" in rows["st_adapter"]
    assert f"{ratio['throughput']:.3f}" in rows["linear"] and f"{lin['trainable_parameters']:,}" in rows["linear"]


def test_merged_rows_have_the_bare_backbones_parameters_and_flops() -> None:
    """--merged: a method that merges is also measured as `stadapt merge` writes it; one that does not, is not."""
    report = bench_methods("clip:tiny", ["zeroi2v", "st_adapter"], reference="linear", frames=2, batch=1,
                           latency_runs=1, throughput_runs=1, warmup=0, device="cpu", merged=True)
    assert list(report["methods"]) == ["linear", "zeroi2v", "zeroi2v merged", "st_adapter"]
    bare, merged = report["methods"]["linear"], report["methods"]["zeroi2v merged"]
    width = build_model(ModelConfig("clip:tiny", 400, 2, None, tuning="linear")).model.backbone.feature_width
    assert merged["total_parameters"] == bare["total_parameters"] + 2 * width  # + the temporal embedding
    assert merged["gflops_per_clip"] < report["methods"]["zeroi2v"]["gflops_per_clip"]
    assert "zeroi2v merged" in format_methods_report(report)


def test_a_method_that_does_not_fit_gets_a_line_not_a_crash() -> None:
    reason = unfit_reason("timm:swinv2_tiny_window8_256", "aim", frames=2, num_classes=4, options=SWIN)
    assert reason is not None and "aim" in reason and "\n" not in reason
    assert unfit_reason("clip:tiny", "aim", frames=2, num_classes=4) is None
    report = bench_methods("timm:swinv2_tiny_window8_256", ["aim"], frames=2, num_classes=4, batch=1, latency_runs=1,
                           throughput_runs=1, warmup=0, device="cpu", options=SWIN)
    assert list(report["methods"]) == ["st_adapter"] and report["unavailable"] == {"aim": reason}
    assert f"aim               does not fit timm:swinv2_tiny_window8_256: {reason}" in format_methods_report(report)


def test_unknown_methods_are_refused_naming_the_installed_ones() -> None:
    assert method_names(["aim", "linear", "aim"]) == ["st_adapter", "aim", "linear"]
    assert method_names(["linear", "st_adapter"]) == ["st_adapter", "linear"]
    assert method_names(["all"]) == ["st_adapter", *(n for n in installed_tuners() if n != "st_adapter")]
    with pytest.raises(StadaptError, match="unknown tuning method.*nope.*installed ones: .*st_adapter"):
        method_names(["nope"])


def test_bench_cli_with_methods_writes_the_side_by_side_report(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(bench)
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["--backbone", "clip:tiny", "--frames", "2", "--batch", "1", "--runs", "1",
                                      "--device", "cpu", "--methods", "linear", "--json", str(out), "-q"])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert list(report["methods"]) == ["st_adapter", "linear"] and "linear" in report["ratio"]
    assert "x st_adapter" in result.output and "1 (reference)" in result.output


def test_bench_train_methods_reports_each_method_and_its_ratios(tmp_path: Path) -> None:
    out = tmp_path / "bench_train.json"
    done = run_cli("bench-train", "--backbone", "clip:tiny", "--frames", "2", "--micro-batch", "1", "--steps", "1",
                   "--device", "cpu", "--methods", "linear", "-q", "--json", str(out))
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert list(report["modes"]) == ["st_adapter", "linear"] and report["reference"] == "st_adapter"
    for name, r in report["modes"].items():
        assert r["trainable_parameters"] == _counts(name)["trainable"] and r["gflops_per_clip"] > 0
        assert r["step_seconds"] > 0 and r["peak_bytes"] > 0
    ratio = report["ratios"]["linear"]
    linear, ref = report["modes"]["linear"], report["modes"]["st_adapter"]
    assert ratio["step_seconds"] == pytest.approx(linear["step_seconds"] / ref["step_seconds"])
    assert ratio["peak_bytes"] == pytest.approx(linear["peak_bytes"] / ref["peak_bytes"])
    rows = {line.split()[0]: line for line in done.stdout.splitlines()[2:4]}
    assert set(rows) == {"st_adapter", "linear"} and "reference" in rows["st_adapter"]
    assert f"{ratio['step_seconds']:.2f}x" in rows["linear"]
    both = run_cli("bench-train", "--modes", "linear", "--methods", "linear")
    assert both.returncode == 2 and len(both.stderr.strip().splitlines()) == 1
