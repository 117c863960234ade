"""One source for each piece of vocabulary (issue 17.3): the recipe schema, the model and the CLIs take
their allowed values and rules from stadapt.vocabulary, so they cannot disagree."""

from __future__ import annotations

import typing

import pytest
from helpers import run_cli

from stadapt.recipe import load_recipe
from stadapt.recipe.schema import Recipe, TrainSection
from stadapt.vocabulary import PRECISIONS, TUNING_MODES, closest, did_you_mean, weights_is_path


def test_the_schema_allows_exactly_the_vocabularys_words() -> None:
    # any installed tuning method is allowed; the JSON Schema documents the built-in ones
    assert Recipe.model_json_schema()["properties"]["tuning"]["examples"] == list(TUNING_MODES)
    assert typing.get_args(TrainSection.model_fields["precision"].annotation) == PRECISIONS


def test_a_recipe_spells_checkpointing_as_the_cli_does() -> None:
    """bench-train read --checkpointing ADAPTERS case-blind while the recipe refused it: one rule now."""
    recipe = load_recipe("recipes/synthetic_tiny.yaml", ["train.checkpointing=ADAPTERS"], check_files=False)
    assert recipe.train.checkpointing == "adapters"


def test_one_did_you_mean_for_keys_values_and_variants() -> None:
    assert closest("wd", ["lr", "weight_decay"]) == ["weight_decay"]  # initials (was recipe-only)
    assert closest("vit-b-16", ["ViT-B-16", "ViT-L-14"]) == ["ViT-B-16"]  # case and dashes
    assert closest("bottle", ["bottleneck", "kernel"]) == ["bottleneck"]
    assert did_you_mean("zzz", ["lr"]) == ""
    assert did_you_mean("ViT-B-61", ["ViT-B-16", "ViT-B-32"], n=1) == "did you mean 'ViT-B-16'? "


@pytest.mark.parametrize(("value", "is_path"), [("openai", False), ("laion2b_s34b_b88k", False),
                                                 ("weights.pt", True), ("dir/file", True)])
def test_one_tag_or_path_rule(value: str, is_path: bool) -> None:
    assert weights_is_path(value) is is_path


def test_bench_train_names_every_checkpointing_word() -> None:
    result = run_cli("bench-train", "--checkpointing", "some", "--backbone", "clip:tiny")
    assert result.returncode == 2
    assert "unknown --checkpointing 'some'" in result.stderr and "false, adapters, mlp, true" in result.stderr
