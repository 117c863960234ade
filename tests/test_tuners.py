"""Tuning methods are plugins (issue 25.1): the `stadapt.tuners` entry-point group, the four built-ins going
through it, no core module testing a method's name, a third party's method found, built, trained and
conformant, and `stadapt methods`."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import run_cli, write_distribution

import stadapt
from stadapt.errors import PluginError, RecipeError
from stadapt.model.classifier import ModelConfig
from stadapt.model.tuner_conformance import assert_tuner_conformant, check_tuner
from stadapt.recipe import Recipe, recipe_from_dict
from stadapt.runtime.build import build_from_recipe
from stadapt.training.optim import build_optimizer
from stadapt.tuners import Tuner, UnknownTunerError, clear_cache, installed_tuners, load_tuner
from stadapt.vocabulary import TUNING_MODES

BUILT_INS = ("st_adapter", "linear", "full_finetune", "partial_finetune")

THIRD_PARTY = '''
"""A third party's tuning method: a learned per-channel scale of the tokens entering each MLP branch."""
from pydantic import BaseModel
from torch import nn

from stadapt.tuners import BlockHooks, Tuner


class ScaleSettings(BaseModel):
    init: float = 0.0


class TokenScale(Tuner):
    name = "token_scale"
    summary = "a learned per-channel scale before each MLP branch"
    section = "token_scale"
    settings = ScaleSettings

    def attach(self, backbone, num_frames, settings):
        import torch
        return nn.ParameterList([nn.Parameter(torch.full((layout.width,), settings.init))
                                 for layout in backbone.block_layouts()])

    def hooks(self, modules, checkpointing, backbone=None):
        return BlockHooks(pre_mlp=lambda index, x: x * (1 + modules[index]))

    def trainable(self, parts):
        return [parts["adapters"]]


token_scale = TokenScale()
'''


@pytest.fixture(autouse=True)
def _fresh_tuners():
    clear_cache()
    yield
    clear_cache()


@pytest.fixture
def third_party(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A distribution on sys.path registering `token_scale` under `stadapt.tuners`, as pip would install it."""
    write_distribution(tmp_path, "token_scale_tuner", THIRD_PARTY,
                       "[stadapt.tuners]\ntoken_scale = token_scale_tuner:token_scale\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    clear_cache()
    return tmp_path


def test_the_built_ins_are_found_through_the_entry_point_group() -> None:
    assert set(BUILT_INS) <= set(installed_tuners())
    for name in BUILT_INS:
        tuner = load_tuner(name)
        assert isinstance(tuner, Tuner) and tuner.name == name and type(tuner).__module__.startswith("stadapt_tuners")
    assert set(TUNING_MODES) == set(BUILT_INS)  # what the JSON Schema documents


def test_an_unknown_method_is_refused_in_one_line_listing_the_installed_ones() -> None:
    with pytest.raises(UnknownTunerError) as info:
        load_tuner("no_such_method")
    assert "\n" not in str(info.value) and all(name in str(info.value) for name in BUILT_INS)
    with pytest.raises(Exception, match="tuning must be one of the installed methods"):
        Recipe.model_validate({"backbone": {"name": "clip:tiny"}, "tuning": "no_such_method", "data": {"root": "/x"}})


def test_a_broken_method_is_named_with_its_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_distribution(tmp_path, "broken_tuner", "raise RuntimeError('boom')\n",
                       "[stadapt.tuners]\nbroken = broken_tuner:tuner\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    clear_cache()
    with pytest.raises(PluginError, match="tuning method 'broken' .* from broken-tuner 0.1 failed to import: "
                                          "RuntimeError: boom"):
        load_tuner("broken")


@pytest.mark.parametrize("name", BUILT_INS)
def test_the_built_ins_pass_the_tuner_conformance_suite(name: str) -> None:
    results = assert_tuner_conformant(name)
    assert len(results) == 5


def _names_in_branches(tree: ast.AST) -> list[tuple[int, str]]:
    """String constants that name a built-in method where code branches on them: comparisons (==, !=, in,
    not in, either side), match cases, and dict keys."""
    found = []
    for node in ast.walk(tree):
        constants: list[ast.expr] = []
        if isinstance(node, ast.Compare):
            constants = [node.left, *node.comparators]
            constants += [e for c in constants if isinstance(c, (ast.Tuple, ast.List, ast.Set)) for e in c.elts]
        elif isinstance(node, ast.Dict):
            constants = [k for k in node.keys if k is not None]
        elif isinstance(node, ast.MatchValue):
            constants = [node.value]
        found += [(c.lineno, c.value) for c in constants
                  if isinstance(c, ast.Constant) and c.value in BUILT_INS]
    return found


def test_the_scan_sees_a_branch_on_a_method_name() -> None:
    source = "if tuning == 'linear': pass\nx = m in ('st_adapter', 'b')\nd = {'full_finetune': 1}\ny = 'linear'\n"
    assert [name for _, name in _names_in_branches(ast.parse(source))] == ["linear", "st_adapter", "full_finetune"]


def test_no_core_module_tests_a_methods_name() -> None:
    package = Path(stadapt.__file__).parent
    offenders = [f"{path.relative_to(package.parent)}:{line} {name!r}" for path in sorted(package.rglob("*.py"))
                 for line, name in _names_in_branches(ast.parse(path.read_text(encoding="utf-8")))]
    assert not offenders, "core modules branch on a tuning method's name (ask its Tuner instead): " + \
        ", ".join(offenders)


def test_a_third_partys_method_is_listed_builds_trains_and_conforms(third_party: Path) -> None:
    assert "token_scale" in installed_tuners()
    recipe = Recipe.model_validate({"backbone": {"name": "clip:tiny"}, "tuning": "token_scale",
                                    "token_scale": {"init": 0.1}, "model": {"dropout": 0.0},
                                    "data": {"root": "/not/read", "frames": 2}, "train": {"device": "cpu"}})
    assert recipe.tuner_section() == {"init": 0.1} and recipe.to_dict()["token_scale"] == {"init": 0.1}
    model = build_from_recipe(recipe, 5).model
    assert sorted(model.trainable_state_dict())[:2] == ["adapters.0", "adapters.1"]
    assert float(model.adapters[0][0].detach()) == pytest.approx(0.1)
    optimizer = build_optimizer(model, recipe.optim)
    assert {g["name"] for g in optimizer.param_groups} == {"adapters.no_decay", "head.decay", "head.no_decay"}
    before = model.adapters[0].detach().clone()
    clips = torch.randn(2, 3, 2, 32, 32)
    for _ in range(2):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(clips), torch.tensor([0, 1])).backward()
        optimizer.step()
    assert not torch.equal(before, model.adapters[0].detach())
    assert ModelConfig.from_dict(ModelConfig("clip:tiny", 5, 2, model.tuner.read_settings({"init": 0.1}),
                                             tuning="token_scale").to_dict()).adapter.init == 0.1
    assert all(r.ok for r in check_tuner("token_scale")), check_tuner("token_scale")
    with pytest.raises(RecipeError, match="token_scale.init: Input should be a valid number"):
        recipe_from_dict({"backbone": {"name": "clip:tiny"}, "tuning": "token_scale", "token_scale": {"init": "x"},
                          "data": {"root": "/x"}}, source="test", check_files=False)
    listed = run_cli("methods")
    assert listed.returncode == 0 and "token_scale" in listed.stdout


def test_stadapt_methods_lists_each_method_on_one_line() -> None:
    done = run_cli("methods", "--backbone", "clip:tiny")
    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines()[2:]}
    assert set(BUILT_INS) <= set(lines)
    assert lines["linear"].split()[1] == "51,600" and lines["st_adapter"].split()[2] == "no"
    unknown = run_cli("methods", "--backbone", "nope:tiny")
    assert unknown.returncode == 2 and "unknown backbone plugin 'nope'" in unknown.stderr


def test_a_method_needing_a_missing_hook_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from stadapt.backbones.base import FrameBackbone
    from stadapt_clip.backbone import ClipBackbone

    monkeypatch.setattr(ClipBackbone, "block_modules", FrameBackbone.block_modules)
    with pytest.raises(PluginError) as info:
        ModelConfig("clip:tiny", 5, 2, None, tuning="partial_finetune")
        from stadapt.model.classifier import build_model

        build_model(ModelConfig("clip:tiny", 5, 2, None, tuning="partial_finetune"))
    text = str(info.value)
    assert "needs the backbone hook block_modules, which clip:tiny does not provide" in text and "\n" not in text
    assert textwrap.shorten(text, 10000) == text.strip()
