"""Packaging: a command whose optional extra is missing names the extra to install (one line, exit 2), the
extras in pyproject.toml, `-h` as `--help` everywhere, and shell completion; through the real console script,
with a package made unimportable by a sitecustomize on the subprocess's PYTHONPATH."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import run_cli
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]

BLOCKER = '''\
import os
import sys

BLOCKED = set(filter(None, os.environ.get("STADAPT_TEST_BLOCK", "").split(",")))


class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None


sys.meta_path.insert(0, _Block())
'''


def blocked(tmp_path: Path, *packages: str) -> dict[str, str]:
    """Environment in which `packages` cannot be imported, as if they were not installed."""
    folder = tmp_path / "block"
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text(BLOCKER)
    return {"PYTHONPATH": str(folder), "STADAPT_TEST_BLOCK": ",".join(packages)}


@pytest.mark.parametrize("package", ["onnx", "onnxscript"])
def test_export_without_the_export_extra_says_which_to_install(tmp_path: Path, package: str) -> None:
    done = run_cli("export", "--onnx", "--checkpoint", str(tmp_path / "nowhere"), env=blocked(tmp_path, package))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (f"stadapt: error: stadapt export needs the package {package}, which is not "
                                   "installed; install it with: pip install 'stadapt[export]'")


def test_swag_without_classy_vision_says_which_extra_to_install(tmp_path: Path) -> None:
    done = run_cli("backbones", "--params", "swag:ViT-B-16", env=blocked(tmp_path, "classy_vision"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0
    assert "the swag backbone needs the package classy_vision, which is not installed" in done.stderr
    assert "pip install 'stadapt[swag]'" in done.stderr


def test_the_core_needs_none_of_the_extras() -> None:
    """pyproject.toml: the optional packages are extras, not core dependencies; [all] names every extra."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"]).lower()
    for package in ("onnx", "tensorboard", "wandb", "classy"):
        assert package not in core
    extras = project["optional-dependencies"]
    assert {"export", "tensorboard", "wandb", "swag", "all", "dev"} <= set(extras)
    named = extras["all"][0].split("[", 1)[1].rstrip("]").split(",")
    # torchcodec needs the system's FFmpeg; dev and docs (the docs site's builder, part of dev) are for developers
    assert set(named) == set(extras) - {"all", "dev", "docs", "torchcodec"}
    from stadapt.extras import EXTRA_OF

    assert set(EXTRA_OF.values()) - {"torchcodec"} <= set(extras)


def _commands(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [path]
    if hasattr(command, "commands"):  # a group (typer's own click types)
        for name, sub in command.commands.items():
            out += _commands(sub, (*path, name))
    return out


def test_dash_h_is_help_on_every_command() -> None:
    import typer

    from stadapt.cli import app

    paths = _commands(typer.main.get_command(app))
    assert ("recipe", "show") in paths and len(paths) > 15
    script = Path(sys.executable).with_name("stadapt")
    for path in paths:  # every command in-process, through click's own parser
        short = CliRunner().invoke(app, [*path, "-h"], prog_name=script.name)
        assert short.exit_code == 0 and short.output.startswith("Usage: stadapt"), (path, short.output)
    for path in [(), ("train",), ("recipe", "show"), ("prepare-data", "synthetic")]:  # and the console script
        assert run_cli(*path, "-h").stdout == run_cli(*path, "--help").stdout


def test_shell_completion() -> None:
    shown = run_cli("--show-completion", "bash")
    assert shown.returncode == 0 and "_stadapt_completion" in shown.stdout
    done = run_cli(env={"_STADAPT_COMPLETE": "complete_bash", "COMP_WORDS": "stadapt recipe s", "COMP_CWORD": "2"})
    assert done.stdout.split() == ["show", "schema"]
