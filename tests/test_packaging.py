"""What a newcomer installs (issue 22.1): a lock any machine can install, metadata that says what the project
is and supports (licence, Python, version, types), and hints that name commands the installed tools have."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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
