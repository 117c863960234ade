"""What a newcomer installs (issue 22.1): a lock any machine can install, metadata that says what the project
is and supports (licence, Python, version, types), and hints that name commands the installed tools have."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

import stadapt

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _lock_module():
    """scripts/lock.py, the one place the rule for constraints.txt lives (`make lock` runs it too)."""
    spec = importlib.util.spec_from_file_location("stadapt_lock_script", ROOT / "scripts" / "lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lock = _lock_module()


# ---- constraints.txt -------------------------------------------------------------------------------------------

def test_every_line_of_constraints_txt_is_a_pin_a_comment_or_blank():
    lines = (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines()
    assert lock.problems(lines) == []
    assert len(lock.pins(lines)) > 50


@pytest.mark.parametrize("line", [
    "execnet @ file:///tmp/wh2/execnet-2.1.2-py3-none-any.whl",
    "torch @ https://download.pytorch.org/whl/cpu/torch-2.13.0%2Bcpu-cp311-cp311-linux_x86_64.whl",
    "-e .",
    "-e file:///work/main",
    "./wheels/execnet-2.1.2-py3-none-any.whl",
    "/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",
    "--find-links /opt/wheels",
    "torch==2.13.0+cpu",
    "torch>=2.6",
    "torch",
    "torch==2.14.*",
    "torch==2.14.1,<3",
    "mkdocstrings[python]==1.0.8",
])
def test_the_rule_refuses_anything_but_a_pin(line):
    assert lock.line_problem(line) is not None


@pytest.mark.parametrize("line", [
    "", "# a comment", "av==18.1.0", "typing_extensions==4.16.0  # why", 'pywin32==311; sys_platform == "win32"',
])
def test_the_rule_takes_pins_comments_and_blank_lines(line):
    assert lock.line_problem(line) is None


def test_a_distribution_pinned_twice_is_refused():
    assert lock.problems(["av==18.1.0", "AV==18.0.0"]) == ["line 2: AV==18.0.0: AV is pinned already on line 1"]


def test_every_distribution_stadapt_all_dev_pulls_in_is_pinned_at_its_installed_version():
    """The environment `make` installs (`pip install -c constraints.txt -e '.[all,dev]'`) is what the lock
    says: a requirement installed here without a pin would be whatever is newest on another machine."""
    pinned = lock.pins((ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines())
    installed = lock.required_distributions()
    assert {"cwevals", "mkdocs", "mkdocs-material", "mkdocstrings", "mkdocstrings-python", "mkdocs-gen-files",
            "torch", "pytest-xdist"} <= set(installed)
    assert sorted(set(installed) - set(pinned)) == [], "not pinned: run `make lock` (or add them)"
    differ = {name: (pinned[name], version) for name, version in installed.items() if pinned[name] != version}
    assert differ == {}, "constraints.txt (pinned, installed) differ from this environment"


def test_the_lock_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    target = tmp_path / "constraints.txt"
    target.write_text("# the header\n# kept\nav==18.0.0\n")
    monkeypatch.setattr(lock, "required_distributions", lambda: {"av": "18.1.0", "execnet": "2.1.2"})
    monkeypatch.setattr(lock, "frozen_lines", lambda: ["execnet==2.1.2", "av==18.1.0", "pip==26.3"])
    lock.write_lock(target)
    assert target.read_text() == "# the header\n# kept\nav==18.1.0\nexecnet==2.1.2\n"
    monkeypatch.setattr(lock, "frozen_lines", lambda: ["execnet @ file:///tmp/wh2/execnet.whl", "av==18.1.0"])
    with pytest.raises(SystemExit, match="execnet @ file:///tmp/wh2/execnet.whl: a direct reference"):
        lock.write_lock(target)
    assert target.read_text() == "# the header\n# kept\nav==18.1.0\nexecnet==2.1.2\n"
    assert [p.name for p in tmp_path.iterdir()] == ["constraints.txt"]


def test_make_lock_runs_the_same_script():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    target = makefile.split("\nlock:\n", 1)[1].split("\n\n", 1)[0]
    assert "scripts/lock.py constraints.txt" in target and "pip freeze" not in target
    assert "-c constraints.txt" not in target  # the newest releases, not the old lock


# ---- what pyproject.toml declares -----------------------------------------------------------------------------

def test_the_python_versions_agree():
    """requires-python, the type checker, the linter and the classifiers name the same lowest Python, and
    the running one is allowed."""
    project = PYPROJECT["project"]
    assert project["requires-python"] == ">=3.11"
    assert sys.version_info[:2] >= (3, 11) and f"{sys.version_info[0]}.{sys.version_info[1]}" in SpecifierSet(
        project["requires-python"])
    assert PYPROJECT["tool"]["mypy"]["python_version"] == "3.11"
    assert PYPROJECT["tool"]["ruff"]["target-version"] == "py311"
    versions = [c.rsplit(" :: ", 1)[1] for c in project["classifiers"]
                if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)]
    assert versions and min(versions, key=lambda v: int(v.split(".")[1])) == "3.11"
    assert all(v in SpecifierSet(project["requires-python"]) for v in versions)


def test_the_version_has_one_source():
    assert "version" not in PYPROJECT["project"] and "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "stadapt.__version__"}
    assert metadata.version("stadapt") == stadapt.__version__


def test_the_licence_is_declared_the_pep_639_way():
    project = PYPROJECT["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    requires = PYPROJECT["build-system"]["requires"]
    assert requires == ["setuptools>=77"]  # the first setuptools with license = "SPDX" and license-files


def test_citation_and_changelog():
    import yaml

    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["cff-version"] == "1.2.0" and cff["version"] == stadapt.__version__ and cff["license"] == "Apache-2.0"
    assert {"message", "title", "authors"} <= set(cff)
    paper = cff["preferred-citation"]
    assert paper["type"] == "conference-paper" and paper["title"].startswith("ST-Adapter")
    assert [a["family-names"] for a in paper["authors"]] == ["Pan", "Lin", "Zhu", "Shao", "Li"]
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert f"## [{stadapt.__version__}]" in changelog


def _build(tmp_path: Path) -> tuple[Path, Path]:
    """A wheel and an sdist of a copy of the project (the build writes nothing into the work tree), built by
    setuptools of this environment, offline."""
    import shutil

    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("stadapt", "plugins"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path / "dist"
    out.mkdir()
    code = ("import sys; from setuptools import build_meta as b; out = sys.argv[1]; "  # the build rewrites sys.argv
            "w = b.build_wheel(out); s = b.build_sdist(out); print('BUILT', w, s)")
    done = subprocess.run([sys.executable, "-c", code, str(out)], cwd=source, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    _, wheel_name, sdist_name = done.stdout.strip().splitlines()[-1].split()
    return out / wheel_name, out / sdist_name


def test_the_wheel_and_sdist_carry_the_licence_the_version_and_py_typed(tmp_path):
    wheel, sdist = _build(tmp_path)
    version = stadapt.__version__
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = f"stadapt-{version}.dist-info"
        meta = archive.read(f"{info}/METADATA").decode()
        assert f"{info}/licenses/LICENSE" in names
        assert "stadapt/py.typed" in names
        assert "stadapt_clip/weights/tiny_synthetic.safetensors" in names
        assert "stadapt_clip/weights/stadapt-clip-tiny.json" in names  # its open_clip configuration (text tower)
    assert "License-Expression: Apache-2.0" in meta.splitlines() and "License-File: LICENSE" in meta.splitlines()
    assert f"Version: {version}" in meta.splitlines() and "Requires-Python: >=3.11" in meta.splitlines()
    assert not any(line.startswith("License:") for line in meta.splitlines())  # the old free-text field
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
        pkg_info = archive.extractfile(f"stadapt-{version}/PKG-INFO").read().decode()  # type: ignore[union-attr]
    assert {"LICENSE", "stadapt/py.typed", "pyproject.toml"} <= names
    assert "License-Expression: Apache-2.0" in pkg_info.splitlines()


# ---- the Hugging Face CLI the hints name ----------------------------------------------------------------------

SOURCES = [p for folder in ("stadapt", "plugins") for p in sorted((ROOT / folder).rglob("*"))
           if p.is_file() and p.suffix in {".py", ".md", ".txt", ".yaml", ".json", ".cff"}]
_HF_COMMAND = re.compile(r"\bhf ((?:[a-z][a-z-]*)(?: [a-z][a-z-]*)*)")


def test_no_hint_names_the_old_huggingface_cli():
    offenders = [str(p.relative_to(ROOT)) for p in SOURCES if "huggingface-cli" in p.read_text(encoding="utf-8")]
    assert offenders == []


def test_every_hf_command_a_hint_names_exists_in_the_installed_hf():
    scripts = [e for e in metadata.distribution("huggingface_hub").entry_points if e.group == "console_scripts"]
    assert "hf" in {e.name for e in scripts}, "the installed huggingface_hub ships no `hf` command"
    named = {m.group(1) for p in SOURCES for m in _HF_COMMAND.finditer(p.read_text(encoding="utf-8"))}
    assert {"download", "auth login", "auth whoami"} <= named, named
    hf = Path(sys.executable).with_name("hf")
    for command in sorted(named):
        done = subprocess.run([str(hf), *command.split(), "--help"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (command, done.stderr[-2000:])
