"""`stadapt quickstart --methods`: the named methods side by side in one table, on the quickstart's smallest
settings (what the run measures on the real task: README, docs/getting-started.md); names that are not
installed and methods that do not fit the quickstart's backbone refused in one line before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import run_cli, write_distribution

from stadapt.data.synthetic import SyntheticSpec
from stadapt.tools.quickstart import run_quickstart
from stadapt.tools.quickstart.methods import QuickstartMethodError, format_methods
from stadapt.tuners import clear_cache

SPEC = SyntheticSpec(motions=("horizontal",), train_per_class=3, val_per_class=2, frames=8, size=32, clutter=2)

NEVER_FITS = '''
from stadapt.tuners import ModelConfigError, Tuner


class NeverFits(Tuner):
    name = "never_fits"
    summary = "a method whose check refuses every backbone"

    def check_fits(self, settings, backbone, backbone_name):
        raise ModelConfigError(f"never_fits cannot adapt {backbone_name}", "use another method")

    def trainable(self, parts):
        return [parts["head"]]


never_fits = NeverFits()
'''


@pytest.fixture
def never_fits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An installed third-party method that fits no backbone."""
    site = write_distribution(tmp_path / "site", "never_fits_tuner", NEVER_FITS,
                              "[stadapt.tuners]\nnever_fits = never_fits_tuner:never_fits\n")
    monkeypatch.syspath_prepend(str(site))
    clear_cache()
    yield
    clear_cache()


def test_two_methods_give_one_table_with_both_rows(tmp_path: Path) -> None:
    summary = run_quickstart(tmp_path / "qs", spec=SPEC, steps=2, progress=False,
                             summary_file=tmp_path / "quickstart.json", methods=["aim", "linear"])
    written = json.loads((tmp_path / "quickstart.json").read_text())
    assert [row["tuning"] for row in written["models"]] == ["aim", "linear"]
    aim, linear = written["models"]
    assert aim["trainable_parameters"] > linear["trainable_parameters"] > 0
    assert aim["total_parameters"] > linear["total_parameters"]  # the same backbone, AIM's adapters on top
    assert all(row["steps"] == 2 and row["videos"] == 4 for row in written["models"])
    table = format_methods(summary).splitlines()
    assert table[0].split() == ["method", "head", "trainable", "top-1", "steps", "train", "s"]
    for line, row in zip(table[1:3], written["models"], strict=True):
        assert line.split()[:3] == [row["tuning"], "linear", f"{row['trainable_parameters']:,}"]
        assert line.split()[3] == f"{100 * row['top1']:.1f}%"
    assert "time-reversal pair" in table[4]  # then what the table shows


def test_heads_add_the_zero_shot_row_and_a_text_head_per_method_that_trains(tmp_path: Path) -> None:
    summary = run_quickstart(tmp_path / "qs", spec=SPEC, steps=2, progress=False, summary_file=tmp_path / "q.json",
                             methods=["st_adapter", "linear"], heads=["linear", "text"])
    rows = summary["models"]
    # linear with a frozen text head would train nothing: the zero-shot row is that model
    assert [(row["tuning"], row["head"]) for row in rows] == [
        ("zero-shot", "text"), ("st_adapter", "linear"), ("st_adapter", "text"), ("linear", "linear")]
    zero, adapted_linear, adapted_text, _ = rows
    assert zero["steps"] == 0 and zero["trainable_parameters"] == 0 and zero["videos"] == 4
    assert json.loads(Path(zero["eval"]).read_text())["zero_shot"]["labels"] == ["moving right", "moving left"]
    # the frozen text head trains no head at all: only the adapters, where the linear head adds width x classes
    assert adapted_text["trainable_parameters"] < adapted_linear["trainable_parameters"]
    assert Path(adapted_text["run"]).name == "quickstart_st_adapter_text_head"
    assert "st_adapter (text head)" in format_methods(summary)


def test_unknown_heads_exit_2_naming_the_choices(tmp_path: Path) -> None:
    done = run_cli("quickstart", "--heads", "linear,cosine", "--out", str(tmp_path / "qs"), "-q")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "unknown head(s) cosine" in done.stderr and "linear, text, text-trained" in done.stderr
    assert not (tmp_path / "qs").exists()


def test_unknown_names_exit_2_listing_the_installed_methods(tmp_path: Path) -> None:
    done = run_cli("quickstart", "--methods", "st_adapter,no_such_method", "--out", str(tmp_path / "qs"), "-q")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no_such_method" in lines[0] and "Traceback" not in done.stderr
    assert "installed: " in lines[0] and "st_adapter" in lines[0] and "linear" in lines[0]
    assert not (tmp_path / "qs").exists()  # refused before any data is written


def test_a_method_that_does_not_fit_is_refused_before_any_work(tmp_path: Path, never_fits: None) -> None:
    with pytest.raises(QuickstartMethodError) as refused:
        run_quickstart(tmp_path / "qs", spec=SPEC, steps=2, progress=False,
                       summary_file=tmp_path / "quickstart.json", methods=["linear", "never_fits"])
    message = str(refused.value)
    assert "\n" not in message and "never_fits" in message and "clip:tiny" in message
    assert "leave never_fits out of --methods" in message
    assert not (tmp_path / "qs").exists() and not (tmp_path / "quickstart.json").exists()
