"""`stadapt bench`: Table 4 (parameters, latency, throughput with and without adapters) on tiny models."""

import json

import pytest
import typer
from typer.testing import CliRunner

from stadapt.cli.bench import bench
from stadapt.errors import StadaptError
from stadapt.model.adapters import AdapterConfig
from stadapt.model.classifier import ModelConfig, build_model
from stadapt.tools.bench.inference import bench_inference, build_pair, format_report


def _reference_counts(adapter):
    return build_model(ModelConfig("clip:tiny", 400, 4, adapter,
                                   tuning="linear" if adapter is None else "st_adapter")).model.parameter_counts()


def test_both_models_are_measured_with_exact_parameter_counts():
    report = bench_inference("clip:tiny", frames=4, bottleneck=16, batch=2, latency_runs=2, throughput_runs=2,
                             warmup=1, device="cpu")
    plain, adapted = report["models"]["without_adapters"], report["models"]["with_adapters"]
    assert _reference_counts(None) == {"total": plain["total_parameters"], "trainable": plain["trainable_parameters"]}
    assert _reference_counts(AdapterConfig(bottleneck=16)) == {"total": adapted["total_parameters"],
                                                              "trainable": adapted["trainable_parameters"]}
    assert plain["adapter_parameters"] == 0 and adapted["adapter_parameters"] > 0
    assert plain["total_parameters"] == plain["backbone_parameters"] + plain["head_parameters"]
    assert plain["trainable_parameters"] == plain["head_parameters"]
    assert adapted["total_parameters"] == plain["total_parameters"] + adapted["adapter_parameters"]
    assert adapted["trainable_parameters"] == adapted["adapter_parameters"] + adapted["head_parameters"]
    for r in (plain, adapted):
        assert r["latency_ms"] > 0 and r["throughput"] > 0 and r["batch_seconds"] > 0
        assert len(r["latency_ms_all"]) == 2 and len(r["throughput_all"]) == 2
    ratio = report["ratio"]
    assert ratio["throughput"] == pytest.approx(adapted["throughput"] / plain["throughput"])
    assert ratio["latency"] == pytest.approx(adapted["latency_ms"] / plain["latency_ms"])
    assert report["batch"] == 2 and report["precision"] == "fp32" and report["device"] == "cpu"
    table = format_report(report)
    assert "w/o adapters" in table and "w/ adapters" in table and "throughput" in table


def test_the_two_models_share_one_backbone():
    pair = build_pair("clip:tiny", frames=4, num_classes=3, bottleneck=8, positions=("pre_attn", "pre_mlp"))
    assert pair["without_adapters"].backbone is pair["with_adapters"].backbone
    assert len(pair["without_adapters"].adapters) == 0 and pair["with_adapters"].tuning == "st_adapter"


def test_batch_one_keeps_latency_and_throughput_runs_apart():
    report = bench_inference("clip:tiny", frames=4, bottleneck=8, batch=1, latency_runs=3, throughput_runs=2,
                             warmup=0, device="cpu")
    for r in report["models"].values():
        assert len(r["latency_ms_all"]) == 3 and len(r["throughput_all"]) == 2


def test_bad_counts_are_errors():
    with pytest.raises(StadaptError, match="batch"):
        bench_inference("clip:tiny", frames=4, batch=0, device="cpu")


def test_cli_prints_the_table_and_writes_json(tmp_path):
    app = typer.Typer()
    app.command()(bench)
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["--backbone", "clip:tiny", "--frames", "4", "--bottleneck", "16", "--batch",
                                      "2", "--runs", "2", "--device", "cpu", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "with / without adapters: throughput" in result.output
    report = json.loads(out.read_text())
    assert set(report["models"]) == {"without_adapters", "with_adapters"}
    assert report["latency_runs"] == report["throughput_runs"] == 2 and report["batch"] == 2
    assert report["ratio"]["of"] == "with_adapters / without_adapters"


def test_option_builds_the_backbone_with_it(tmp_path):
    """--option KEY=VALUE reaches the backbone's build like backbone.options in a recipe (e.g. timm's img_size:
    DINOv2 is built at 518 px by default, the paper's setting is 224)."""
    app = typer.Typer()
    app.command()(bench)
    out = tmp_path / "bench.json"
    args = ["--backbone", "timm:vit_tiny_test", "--frames", "2", "--bottleneck", "8", "--batch", "1", "--runs", "1",
            "--device", "cpu", "--json", str(out)]
    result = CliRunner().invoke(app, [*args, "--option", "img_size=48"])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["image_size"] == 48 and report["backbone_options"] == {"img_size": 48}
    default = CliRunner().invoke(app, args)
    assert default.exit_code == 0 and json.loads(out.read_text())["image_size"] == 32
