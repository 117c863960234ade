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
