"""The console script as a new user meets it."""

import json

from helpers import run_cli


def test_version_and_help():
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == "stadapt 0.1.0"
    helped = run_cli("--help")
    assert helped.returncode == 0 and "backbones" in helped.stdout and "import-checkpoint" in helped.stdout


def test_backbones_lists_the_clip_variants():
    result = run_cli("backbones", "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["backbone"]: r for r in json.loads(result.stdout)["backbones"]}
    assert {"clip:ViT-B-16", "clip:ViT-L-14", "clip:ViT-L-14-336", "clip:tiny"} <= set(rows)
    assert rows["clip:ViT-L-14-336"]["input"] == 336 and "openai" in rows["clip:ViT-B-16"]["pretrained_tags"]
    # which models zero-shot and text heads can use (the conformance suite holds each plugin to it)
    assert rows["clip:ViT-B-16"]["text_tower"] and rows["clip:tiny"]["text_tower"]
    assert not rows["timm:vit_tiny_test"]["text_tower"] and not rows["swag:ViT-B-16"]["text_tower"]


def test_conformance_from_the_cli():
    result = run_cli("backbones", "--check", "clip")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASS") >= 7 and "FAIL" not in result.stdout


def test_unknown_plugin_check_is_a_one_line_error():
    result = run_cli("backbones", "--check", "clipp")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == result.stderr.strip().splitlines()[0]
    assert "unknown backbone plugin 'clipp'" in result.stderr and "did you mean 'clip'" in result.stderr


def test_bench_train_rejects_an_unknown_checkpointing_level():
    result = run_cli("bench-train", "--backbone", "clip:tiny", "--checkpointing", "blocks")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "unknown --checkpointing 'blocks'" in result.stderr and "false, adapters, mlp, true" in result.stderr
