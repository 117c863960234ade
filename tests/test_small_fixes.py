"""Small dead ends of issue 23: what a refusal tells the user to type is what the command then takes."""

from __future__ import annotations

from pathlib import Path

from helpers import run_cli


def test_push_repo_refusal_names_what_repo_takes(tmp_path: Path) -> None:
    """23.11: `push --repo acme` asked for `hf-hub:ORG/NAME`, which --repo refuses."""
    result = run_cli("push", str(tmp_path), "--repo", "acme", "--to-dir", str(tmp_path / "out"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "--repo ORG/NAME" in result.stderr and "hf-hub:" not in result.stderr
    prefixed = run_cli("push", str(tmp_path), "--repo", "hf-hub:acme/model", "--to-dir", str(tmp_path / "out"))
    assert prefixed.returncode == 2 and "--repo acme/model" in prefixed.stderr


def test_backbones_check_refuses_a_name_the_plugin_does_not_take_as_params_does() -> None:
    """23.12: an unknown or unsupported name is the user's mistake (one line, rc 2), not a broken plugin; an
    empty variant is refused rather than checking the whole plugin."""
    for name in ("clip:tinyy", "timm:resnet50"):
        check, params = run_cli("backbones", "--check", name), run_cli("backbones", "--params", name)
        assert check.returncode == params.returncode == 2, check.stdout + check.stderr
        assert check.stderr == params.stderr and len(check.stderr.strip().splitlines()) == 1
        assert "FAIL" not in check.stdout
    empty = run_cli("backbones", "--check", "clip:")
    assert empty.returncode == 2 and len(empty.stderr.strip().splitlines()) == 1 and not empty.stdout
    assert "--check clip:VARIANT" in empty.stderr
